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
{/..} {/...} {+/} {+.} {+..} {+...} and the counts {##} {0#} {0%}.  Any of
them may be renamed (-I, --er, --bnr, --dnr, --bner, --seqreplace,
--slotreplace), and Perl expressions {= ... =} (positional {=N ... =}) and
--rpl tags stand for values a Perl coprocess computes (perl.py); the
template only says which expression, on which input, is needed.
"""

import re
import shlex

from gridtools.run import runner

TOKEN = re.compile(r"\{(-?[1-9][0-9]*)?(\.|/\.|//|/)?\}|\{#\}|\{%\}")
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


# The replacement strings GNU parallel defines, by tag: (kind, modifier).
BUILTIN = {"{}": ("arg", None), "{.}": ("arg", "."), "{/}": ("arg", "/"),
           "{//}": ("arg", "//"), "{/.}": ("arg", "/."), "{#}": ("seq", None),
           "{%}": ("slot", None)}
PLUS = {"{+/}": ("arg", "+/"), "{+.}": ("arg", "+."), "{+..}": ("arg", "+.."),
        "{+...}": ("arg", "+..."), "{..}": ("arg", ".."), "{...}": ("arg", "..."),
        "{/..}": ("arg", "/.."), "{/...}": ("arg", "/..."), "{##}": ("total", None),
        "{0#}": ("seq0", None), "{0%}": ("slot0", None)}
# {= perl =}, the shortest one (no {= or =} inside), as GNU parallel finds it.
PERL = re.compile(r"\{=((?:(?!\{=|=\}).)*?)=\}", re.S)
_POSITION = re.compile(r"(-?[0-9]+)? *")
_TAG_PARTS = re.compile(r"([^(]*)(\(.*\))?([^)]*)", re.S)
# --cat and --fifo: {} is the temporary file's name, in this variable.
TMP = "\0PARALLEL_TMP"


class Tags:
    """The replacement strings in force: GNU parallel's, renamed as -I,
    --er, --bnr, --dnr, --bner, --seqreplace and --slotreplace say, with
    --plus's and --rpl's added.  A tag that starts with { has positional
    forms too ({2.} for {.}, {2x} for -I {x}).

    renames: (old, new) pairs in the order GNU parallel applies them;
    rpl: --rpl values, "TAG PERL", where TAG may hold a (regex) whose
    matches the Perl code reads as $$1, $$2 ...
    """

    def __init__(self, plus=False, renames=(), rpl=(), parens="{==}"):
        # --parens: its first half opens a Perl expression, the rest ends it.
        n = len(parens) // 2
        if not n:
            raise ValueError(f"--parens: need two strings, as {{==}}, got {parens!r}")
        self.left = parens[:n]
        self.perl_rx = PERL if parens == "{==}" else re.compile(
            "%s((?:(?!%s|%s).)*?)%s" % (re.escape(parens[:n]), re.escape(parens[:n]),
                                      re.escape(parens[n:]), re.escape(parens[n:])), re.S)
        table = dict(BUILTIN)
        if plus:
            table = {**PLUS, **table}
        for old, new in renames:
            if old != new:
                table[new] = table.pop(old, None)
        for text in rpl:
            tag, _, code = _split_rpl(text)
            table[tag] = ("perl", code)
        self.matchers = []
        self.first = {self.left[0], "{"}       # where a token may start
        for tag in sorted((t for t in table if table[t] is not None), key=len, reverse=True):
            kind, value = table[tag]
            prefix, group, postfix = _TAG_PARTS.fullmatch(tag).groups()
            body = re.escape(prefix) + (group or "") + re.escape(postfix)
            try:
                rx = re.compile(body, re.S)
                pos = re.compile(r"\{(-?[1-9][0-9]*)" + body[len(re.escape("{")):], re.S) \
                    if tag.startswith("{") and kind in ("arg", "perl") else None
            except re.error as e:
                raise ValueError(f"replacement string {tag!r}: {e}") from None
            self.matchers.append((rx, pos, kind, value))
            # A tag that starts with its (regex) may start anywhere.
            self.first.add(prefix[0] if prefix else None)

    def match(self, text, i, exprs):
        """The token at text[i:] as (kind, position, modifier, end), or None.
        A Perl expression's code is added to exprs; its modifier is its
        index there."""
        if text.startswith(self.left, i):
            m = self.perl_rx.match(text, i)
            if m:
                p = _POSITION.match(m.group(1))
                position = int(p.group(1)) if p.group(1) and int(p.group(1)) else None
                return ("perl", position, _expr(exprs, m.group(1)[p.end():]), m.end())
        for rx, pos, kind, value in self.matchers:
            position = None
            m = rx.match(text, i)
            groups = 1
            if m is None and pos is not None:
                m = pos.match(text, i)
                if m is not None:
                    position, groups = int(m.group(1)), 2
            if m is None:
                continue
            if kind == "perl":
                value = _expr(exprs, _with_groups(value, m.groups()[groups - 1:]))
            return (kind, position, value, m.end())
        return None


def _split_rpl(text):
    """--rpl 'TAG PERL': split at the first white space, as GNU parallel."""
    parts = re.split(r"\s", text, maxsplit=1)
    if len(parts) < 2 or not parts[0]:
        raise ValueError(f"--rpl: expected 'TAG PERL-EXPRESSION', got {text!r}")
    return parts[0], "", parts[1]


def _with_groups(code, groups):
    """GNU parallel's --rpl with (groups): $$N in the code is the tag's Nth
    match, set first as a Perl string."""
    code = re.sub(r"\$\$([0-9]+)", r"$_pAr_gRp\1", code)
    head = "".join('$_pAr_gRp%d = "%s";' % (n, re.sub(r'[\\"$@]', r"\\\g<0>", g or ""))
                   for n, g in enumerate(groups, 1) if g is not None)
    return head + code


def _expr(exprs, code):
    if code not in exprs:
        exprs.append(code)
    return exprs.index(code)


class Template:
    """A parsed command template.

    The text is kept as a list of words, each a list of pieces: str for
    literal text, or a token (kind, position, modifier, quoting) where kind is
    "arg" (position None: all inputs), "seq", "slot", the --plus counts, or
    "perl" (modifier: the index of its code in self.perl), and quoting is the
    shell quoting the token stands in (None, "'" or '"').  Words are split at
    unquoted whitespace; seps holds the whitespace before each word, so the
    shell line keeps the user's spacing (a newline still ends a command).

    With Perl expressions, self.evaluator (perl.Coprocess) computes them:
    each job's are asked for in one exchange.  tmpfile ("cat" or "fifo"):
    --pipe's block reaches the command as a file named by {}.
    """

    def __init__(self, text, context=False, replace="{}", plus=False, tags=None,
                 tmpfile=None):
        self.text = text
        self.context = context          # -X: repeat a word per input
        self.total = 0                  # --plus {##}: the number of jobs
        self.slots = 1                  # --plus {0%}: the number of slots
        if tags is None:
            tags = Tags(plus, [("{}", replace)] if replace != "{}" else ())
        self.perl = []                  # the Perl expressions' code
        self.evaluator = None
        self._key = None                # the job whose Perl values are in _pv
        self._pv = {}                   # (expression, input) -> (value, unquoted)
        self.seps, self.words = _parse(text, tags, self.perl)
        self.needs_total = any(not isinstance(p, str) and p[0] in ("total", "seq0")
                               for w in self.words for p in w) or \
            any("total_jobs" in code for code in self.perl)
        self.has_token = any(not isinstance(p, str) for w in self.words for p in w)
        if not self.has_token:
            # No replacement string: the inputs are appended.
            self.seps.append(" ")
            self.words.append([("arg", None, None, None)])
        self.tmpfile = tmpfile
        self.direct = not tmpfile and not runner.needs_shell(
            ["".join(p if isinstance(p, str) else "x" for p in w) for w in self.words])

    def shell(self, args, seq, slot):
        """The command as a shell line, inputs quoted for where they stand."""
        quote = _quote
        if self.tmpfile:
            args, quote = [TMP], _quote_tmp
        if self.perl:
            self._evaluate(args, seq, slot)
        out = []
        for sep, word in zip(self.seps, self.words):
            if self.context and _multi(word):
                text = " ".join(_shell_word(word, [a], seq, slot, self, quote) for a in args)
            else:
                text = _shell_word(word, args, seq, slot, self, quote)
            if text:
                out.append(sep if out else "")
                out.append(text)
        line = "".join(out)
        return WRAPPERS[self.tmpfile] % line if self.tmpfile else line

    def argv(self, args, seq, slot):
        """The argv to execute directly, or None when a shell is needed."""
        if not self.direct:
            return None
        if self.perl:
            self._evaluate(args, seq, slot)
            if any(uq for _, uq in self._pv.values()):
                return None         # uq(): the value is shell code
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

    def _evaluate(self, args, seq, slot):
        """Ask the coprocess for every Perl value this job needs, once."""
        key = (seq, slot, tuple(args))
        if key == self._key:
            return
        pairs = []
        for word in self.words:
            for p in word:
                if not isinstance(p, str) and p[0] == "perl":
                    for s in _perl_inputs(p[1], args):
                        if (p[2], s) not in pairs:
                            pairs.append((p[2], s))
        self._key = None
        self._pv = dict(zip(pairs, self.evaluator.evaluate(seq, slot, self.total, args, pairs)))
        self._key = key

    def perl_values(self, index, strs):
        out = []
        for s in strs:
            if (index, s) not in self._pv:        # -X: one input of a word's copy
                self._pv[(index, s)] = self.evaluator.evaluate(
                    *self._key[:2], self.total, list(self._key[2]), [(index, s)])[0]
            out.append(self._pv[(index, s)])
        return out


def _perl_inputs(position, args):
    """The inputs a Perl expression is evaluated on: each one (or "" when
    there is none), or the one at its position."""
    if position is None:
        return list(args) or [""]
    index = position - 1 if position > 0 else len(args) + position
    return [args[index]] if 0 <= index < len(args) else []


# --cat and --fifo, as GNU parallel: the job's stdin (its block) is put in
# a file, or fed to a fifo, named $PARALLEL_TMP; the file goes when the
# command ends, and the command's exit status is the job's.
WRAPPERS = {
    "cat": 'PARALLEL_TMP=$(mktemp "${TMPDIR:-/tmp}/gridmap-cat.XXXXXX") || exit 75; '
           'export PARALLEL_TMP; cat > "$PARALLEL_TMP"; (%s); _gm_s=$?; '
           'rm -f -- "$PARALLEL_TMP"; exit $_gm_s',
    "fifo": '_gm_d=$(mktemp -d "${TMPDIR:-/tmp}/gridmap-fifo.XXXXXX") || exit 75; '
            'PARALLEL_TMP=$_gm_d/fifo; export PARALLEL_TMP; '
            'mkfifo -m 600 "$PARALLEL_TMP" || exit 75; (%s) & cat > "$PARALLEL_TMP"; '
            'wait $!; _gm_s=$?; rm -rf -- "$_gm_d"; exit $_gm_s',
}
TMP_REF = {None: '"$PARALLEL_TMP"', "'": "'\"$PARALLEL_TMP\"'", '"': "$PARALLEL_TMP"}


def _parse(text, tags, exprs):
    """Split text into (seps, words) at unquoted whitespace, finding tokens
    and the quoting each one stands in."""
    seps, words = [], []
    sep, word, lit = "", [], []
    quote = None
    i, n = 0, len(text)
    first = tags.first

    def flush_lit():
        if lit:
            word.append("".join(lit))
            lit.clear()

    while i < n:
        ch = text[i]
        m = tags.match(text, i, exprs) if ch in first or None in first else None
        if m:
            flush_lit()
            word.append((m[0], m[1], m[2], quote))
            i = m[3]
            continue
        if quote is None and ch.isspace():
            flush_lit()
            if word:
                seps.append(sep)
                words.append(word)
                word, sep = [], ""
            sep += ch
            i += 1
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


def _multi(word):
    return any(not isinstance(p, str) and p[0] in ("arg", "perl") and p[1] is None
               for p in word)


def _values(piece, args, seq, slot, ctx=None):
    """The list of values a token stands for (ctx: the Template, for the
    counts --plus gives and the Perl values); a Perl value comes as
    (value, unquoted)."""
    kind, position, modifier = piece[:3]
    if kind == "seq":
        return [str(seq)]
    if kind == "slot":
        return [str(slot)]
    if kind == "perl":
        return ctx.perl_values(modifier, _perl_inputs(position, args))
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


def _quote_tmp(value, quote):
    """--cat, --fifo: the input is the temporary file's name, a variable
    the shell expands where it stands."""
    return TMP_REF[quote] if value == TMP else _quote(value, quote)


def _shell_word(word, args, seq, slot, ctx=None, quote=_quote):
    text = []
    for piece in word:
        if isinstance(piece, str):
            text.append(piece)
        else:
            vals = _values(piece, args, seq, slot, ctx)
            if piece[0] == "arg":
                vals = [quote(v, piece[3]) for v in vals]
            elif piece[0] == "perl":
                vals = [v if uq else _quote(v, piece[3]) for v, uq in vals]
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
        if piece[0] == "perl":
            vals = [v for v, _ in vals]
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
