"""Replacement strings: turn a command template and a job's inputs into the
command to run.  Pure functions, no I/O.

A template is the command line the user gave (its words joined by spaces,
as GNU parallel does).  Expanding it gives two forms of the same command:
the shell line, with every input shell-quoted (shown by --dry-run, logged in
the joblog, run by /bin/sh when the template needs a shell), and, when the
template's own words need no shell, the argv to execute directly.  The two
always mean the same thing: an input is data, never code.

Replacement strings: {} {.} {/} {//} {/.} {#} {%}, positional {N} {-N}
with the same modifiers ({1/.} ...); with --plus, GNU parallel's {..} {...}
{/..} {/...} {+/} {+.} {+..} {+...} and the counts {##} {0#} {0%}.
"""

import re
import shlex

from gridtools.run import runner

TOKEN = re.compile(r"\{(-?[1-9][0-9]*)?(\.|/\.|//|/)?\}|\{#\}|\{%\}")
# --plus: GNU parallel's further replacement strings ({..} {+.} ... and
# {##} {0#} {0%}); longer modifiers first.
PLUS_TOKEN = re.compile(r"\{(-?[1-9][0-9]*)?(\+/|\+\.\.\.|\+\.\.|\+\.|\.\.\.|\.\.|/\.\.\.|"
                        r"/\.\.|\.|/\.|//|/)?\}|\{#\}|\{%\}|\{##\}|\{0#\}|\{0%\}")

_EXT = re.compile(r"\.[^/.]*$")


def no_ext(s):
    return _EXT.sub("", s)


def basename(s):
    return s.rpartition("/")[2]


def dirname(s):
    """Perl's File::Basename::dirname, which GNU parallel's {//} uses."""
    stripped = s.rstrip("/")
    if not stripped:
        return "/" if s else "."
    head = stripped.rpartition("/")[0].rstrip("/")
    if "/" not in stripped:
        return "."
    return head or "/"


def _sub(pattern, keep=False):
    """A modifier doing Perl's s/pattern/$1/ (keep) or s/pattern// once;
    with keep, no match gives "" (GNU parallel's `|| s:.*$::`)."""
    rx = re.compile(pattern)

    def fn(s):
        m = rx.search(s)
        if not m:
            return "" if keep else s
        return s[:m.start()] + (m.group(1) if keep else "") + s[m.end():]
    return fn


_EXT2 = _sub(r"\.[^/.]*\.[^/.]*$")
_EXT3 = _sub(r"\.[^/.]*\.[^/.]*\.[^/.]*$")

MODIFIERS = {
    None: lambda s: s,
    ".": no_ext,
    "/": basename,
    "//": dirname,
    "/.": lambda s: no_ext(basename(s)),
    # --plus, as GNU parallel 20221122 defines them.
    "+/": _sub(r"^(.*)/[^/]*$", keep=True),
    "+.": _sub(r"^.*\.(.*)$", keep=True),
    "+..": _sub(r"^.*\.([^/.]*\.[^/.]*)$", keep=True),
    "+...": _sub(r"^.*\.([^/.]*\.[^/.]*\.[^/.]*)$", keep=True),
    "..": _EXT2,
    "...": _EXT3,
    "/..": lambda s: _EXT2(basename(s)),
    "/...": lambda s: _EXT3(basename(s)),
}


class Template:
    """A parsed command template.

    The text is kept as a list of words, each a list of pieces: str for
    literal text, or a token (kind, position, modifier, quoting) where kind is
    "arg" (position None: all inputs), "seq" or "slot", and quoting is the
    shell quoting the token stands in (None, "'" or '"').  Words are split at
    unquoted whitespace; seps holds the whitespace before each word, so the
    shell line keeps the user's spacing (a newline still ends a command).
    """

    def __init__(self, text, context=False, replace="{}", plus=False):
        self.text = text
        self.context = context          # -X: repeat a word per input
        self.total = 0                  # --plus {##}: the number of jobs
        self.slots = 1                  # --plus {0%}: the number of slots
        self.seps, self.words = _parse(text, replace, PLUS_TOKEN if plus else TOKEN)
        self.needs_total = any(not isinstance(p, str) and p[0] in ("total", "seq0")
                               for w in self.words for p in w)
        self.has_token = any(not isinstance(p, str) for w in self.words for p in w)
        if not self.has_token:
            # No replacement string: the inputs are appended.
            self.seps.append(" ")
            self.words.append([("arg", None, None, None)])
        self.direct = not runner.needs_shell(
            ["".join(p if isinstance(p, str) else "x" for p in w) for w in self.words])

    def shell(self, args, seq, slot):
        """The command as a shell line, inputs quoted for where they stand."""
        out = []
        for sep, word in zip(self.seps, self.words):
            if self.context and _multi(word):
                text = " ".join(_shell_word(word, [a], seq, slot, self) for a in args)
            else:
                text = _shell_word(word, args, seq, slot, self)
            if text:
                out.append(sep if out else "")
                out.append(text)
        return "".join(out)

    def argv(self, args, seq, slot):
        """The argv to execute directly, or None when a shell is needed."""
        if not self.direct:
            return None
        out = []
        for word in self.words:
            if self.context and _multi(word):
                for a in args:
                    out.extend(_argv_word(word, [a], seq, slot, self))
            else:
                out.extend(_argv_word(word, args, seq, slot, self))
        if out and out[0] in ("true", "false") and out[1:] in (["--help"], ["--version"]):
            return None
        return out or None


def _parse(text, replace="{}", token=TOKEN):
    """Split text into (seps, words) at unquoted whitespace, finding tokens
    and the quoting each one stands in.  replace (-I) stands for {}, which
    is then plain text; the other replacement strings stay."""
    custom = replace != "{}"
    seps, words = [], []
    sep, word, lit = "", [], []
    quote = None
    i, n = 0, len(text)

    def flush_lit():
        if lit:
            word.append("".join(lit))
            lit.clear()

    while i < n:
        ch = text[i]
        if quote is None and ch.isspace():
            flush_lit()
            if word:
                seps.append(sep)
                words.append(word)
                word, sep = [], ""
            sep += ch
            i += 1
            continue
        if custom and text.startswith(replace, i):
            flush_lit()
            word.append(("arg", None, None, quote))
            i += len(replace)
            continue
        m = token.match(text, i) if ch == "{" else None
        if m and not (custom and m.group(0) == "{}"):
            flush_lit()
            word.append(_token(m, quote))
            i = m.end()
            continue
        lit.append(ch)
        if ch == "\\" and quote != "'" and i + 1 < n:
            lit.append(text[i + 1])
            i += 2
            continue
        if quote is None and ch in "'\"":
            quote = ch
        elif ch == quote:
            quote = None
        i += 1
    flush_lit()
    if word:
        seps.append(sep)
        words.append(word)
    return seps, words


def _token(m, quote):
    tok = m.group(0)
    if tok == "{#}":
        return ("seq", None, None, quote)
    if tok == "{%}":
        return ("slot", None, None, quote)
    if tok in COUNTERS:
        return (COUNTERS[tok], None, None, quote)
    position = int(m.group(1)) if m.group(1) else None
    return ("arg", position, m.group(2), quote)


COUNTERS = {"{##}": "total", "{0#}": "seq0", "{0%}": "slot0"}


def _multi(word):
    return any(not isinstance(p, str) and p[0] == "arg" and p[1] is None for p in word)


def _values(piece, args, seq, slot, ctx=None):
    """The list of values a token stands for (ctx: the Template, for the
    counts --plus gives)."""
    kind, position, modifier = piece[:3]
    if kind == "seq":
        return [str(seq)]
    if kind == "slot":
        return [str(slot)]
    if kind in ("total", "seq0", "slot0"):
        total, slots = (ctx.total, ctx.slots) if ctx is not None else (0, 1)
        if kind == "total":
            return [str(total)]
        # GNU parallel: 1 + int(log10(n)) digits.
        n, width = (seq, total) if kind == "seq0" else (slot, slots)
        return ["%0*d" % (len(str(max(width, 1))), n)]
    fn = MODIFIERS[modifier]
    if position is None:
        return [fn(a) for a in args]
    index = position - 1 if position > 0 else len(args) + position
    if 0 <= index < len(args):
        return [fn(args[index])]
    # No such input (the last job of -N 2 may have one): nothing, as with
    # {} and no inputs, so a word that is only the token is no argument at
    # all, as in GNU parallel, rather than an empty one.
    return []


def _quote(value, quote):
    """Quote value so the shell reads it back unchanged where it stands:
    bare, inside '...', or inside "..."."""
    if quote is None:
        return shlex.quote(value)
    if quote == "'":
        return value.replace("'", "'\\''")
    return re.sub(r'([\\"$`])', r"\\\1", value)


def _shell_word(word, args, seq, slot, ctx=None):
    text = []
    for piece in word:
        if isinstance(piece, str):
            text.append(piece)
        else:
            vals = _values(piece, args, seq, slot, ctx)
            if piece[0] == "arg":
                vals = [_quote(v, piece[3]) for v in vals]
            text.append(" ".join(vals))
    return "".join(text)


def _argv_word(word, args, seq, slot, ctx=None):
    """Split one word into arguments exactly as the shell would split the
    quoted line: a token standing for several inputs yields several
    arguments, the literal text before it joining the first, the text after
    it joining the last."""
    out = [""]
    touched = False
    for piece in word:
        if isinstance(piece, str):
            out[-1] += piece
            touched = True
            continue
        vals = _values(piece, args, seq, slot, ctx)
        if not vals:
            continue
        touched = True
        out[-1] += vals[0]
        out.extend(vals[1:])
    return out if touched else []


def expand_plain(text, args, seq, slot):
    """Expand replacement strings without quoting (for --tagstring)."""
    def sub(m):
        tok = m.group(0)
        if tok == "{#}":
            return str(seq)
        if tok == "{%}":
            return str(slot)
        position = int(m.group(1)) if m.group(1) else None
        return " ".join(_values(("arg", position, m.group(2), None), args, seq, slot))
    return TOKEN.sub(sub, text)


def command_from_input(args):
    """No template at all: the inputs themselves are the command line."""
    return " ".join(args)
