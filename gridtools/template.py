"""Replacement strings: turn a command template and a job's inputs into the
command to run.  Pure functions, no I/O.

A template is the command line the user gave (its words joined by spaces,
as GNU parallel does).  Expanding it gives two forms of the same command:
the shell line, with every input shell-quoted (shown by --dry-run, logged in
the joblog, run by /bin/sh when the template needs a shell), and, when the
template's own words need no shell, the argv to execute directly.  The two
always mean the same thing: an input is data, never code.

Replacement strings: {} {.} {/} {//} {/.} {#} {%} and positional {N} {-N}
with the same modifiers ({1/.} ...).
"""

import re
import shlex

from gridtools import runner

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


MODIFIERS = {
    None: lambda s: s,
    ".": no_ext,
    "/": basename,
    "//": dirname,
    "/.": lambda s: no_ext(basename(s)),
}


class Template:
    """A parsed command template.

    words: the template split on whitespace, each word a list of pieces:
    str for literal text, or a (position, modifier, kind) token where kind is
    "arg" (position None means all inputs), "seq" or "slot".
    """

    def __init__(self, text, context=False):
        self.text = text
        self.context = context          # -X: repeat a word per input
        self.words = [_parse_word(w) for w in text.split()]
        self.has_token = any(not isinstance(p, str) for w in self.words for p in w)
        if not self.has_token:
            # No replacement string: the inputs are appended.
            self.words.append([("arg", None, None)])
        self.direct = not runner.needs_shell(
            ["".join(p if isinstance(p, str) else "x" for p in w) for w in self.words])

    def shell(self, args, seq, slot):
        """The command as a shell line, inputs quoted."""
        out = []
        for word in self.words:
            if self.context and _multi(word):
                out.extend(_shell_word(word, [a], seq, slot) for a in args)
            else:
                out.append(_shell_word(word, args, seq, slot))
        return " ".join(w for w in out if w)

    def argv(self, args, seq, slot):
        """The argv to execute directly, or None when a shell is needed."""
        if not self.direct:
            return None
        out = []
        for word in self.words:
            if self.context and _multi(word):
                for a in args:
                    out.extend(_argv_word(word, [a], seq, slot))
            else:
                out.extend(_argv_word(word, args, seq, slot))
        if out and out[0] in ("true", "false") and out[1:] in (["--help"], ["--version"]):
            return None
        return out or None


def _parse_word(word):
    pieces = []
    pos = 0
    for m in TOKEN.finditer(word):
        if m.start() > pos:
            pieces.append(word[pos:m.start()])
        tok = m.group(0)
        if tok == "{#}":
            pieces.append(("seq", None, None))
        elif tok == "{%}":
            pieces.append(("slot", None, None))
        else:
            position = int(m.group(1)) if m.group(1) else None
            pieces.append(("arg", position, m.group(2)))
        pos = m.end()
    if pos < len(word):
        pieces.append(word[pos:])
    return pieces


def _multi(word):
    return any(not isinstance(p, str) and p[0] == "arg" and p[1] is None for p in word)


def _values(piece, args, seq, slot):
    """The list of values a token stands for."""
    kind, position, modifier = piece
    if kind == "seq":
        return [str(seq)]
    if kind == "slot":
        return [str(slot)]
    fn = MODIFIERS[modifier]
    if position is None:
        return [fn(a) for a in args]
    index = position - 1 if position > 0 else len(args) + position
    if 0 <= index < len(args):
        return [fn(args[index])]
    return [""]


def _shell_word(word, args, seq, slot):
    text = []
    for piece in word:
        if isinstance(piece, str):
            text.append(piece)
        else:
            vals = _values(piece, args, seq, slot)
            text.append(" ".join(v if piece[0] != "arg" else shlex.quote(v) for v in vals))
    return "".join(text)


def _argv_word(word, args, seq, slot):
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
        vals = _values(piece, args, seq, slot)
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
        return " ".join(_values(("arg", position, m.group(2)), args, seq, slot))
    return TOKEN.sub(sub, text)


def command_from_input(args):
    """No template at all: the inputs themselves are the command line."""
    return " ".join(args)
