"""The exit codes a command's --help lists are those of its man page's EXIT
STATUS section: the two are written apart, and drifted apart before (the
help promised a 65 no page knew)."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT
from test_manpages import unescape

COMMANDS = ("gridmap", "gridmcast")
# A code, a range of codes or codes joined by slashes: 64, 1-100, 130/143.
_CODES = re.compile(r"\d+(?:-\d+|(?:/\d+)+)?")


def expand(token):
    if "-" in token:
        lo, hi = token.split("-")
        return set(range(int(lo), int(hi) + 1))
    return {int(n) for n in token.split("/")}


def help_codes(text):
    """Codes of the `exit status:` paragraph: the number each of its
    ;-separated items starts with."""
    _, sep, tail = text.partition("exit status:")
    assert sep, "--help has no `exit status:` paragraph"
    codes = set()
    for item in " ".join(tail.split()).split(";"):
        m = re.match(r"\s*(" + _CODES.pattern + r")\b", item)
        if m:
            codes |= expand(m.group(1))
    return codes


def page_codes(text):
    """Codes tagged in the page's EXIT STATUS section (the line after each
    .TP), ranges and lists included."""
    section = re.search(r"^\.SH EXIT STATUS\n(.*?)(?=^\.SH )", text, re.M | re.S)
    assert section, "no EXIT STATUS section"
    lines = section.group(1).splitlines()
    codes = set()
    for tag in (lines[i + 1] for i, line in enumerate(lines[:-1]) if line == ".TP"):
        tag = re.sub(r"\s*-\s*", "-", tag.replace('", "', "/").replace(",", "/"))
        for token in _CODES.findall(tag):
            codes |= expand(token)
    return codes


def test_the_parsers():
    assert help_codes("x\nexit status: 0 ok; 1-3 that many;\n64 usage, 65 no; "
                      "130/143\ninterrupted.  See x(1).") == {0, 1, 2, 3, 64, 130, 143}
    page = ".SH EXIT STATUS\n.TP\n.B 0\nok 7\n.TP\n.BR 1 \\(en 3\nn\n.TP\n" \
           '.B 130 ", " 143\ni\n.SH NEXT\n.TP\n.B 9\n'
    assert page_codes(unescape(page)) == {0, 1, 2, 3, 130, 143}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_and_man_page_list_the_same_exit_codes(cmd):
    r = subprocess.run([sys.executable, f"{ROOT}/bin/{cmd}", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    page = unescape(open(f"{ROOT}/man/{cmd}.1", encoding="utf-8").read())
    in_help, in_page = help_codes(r.stdout), page_codes(page)
    assert in_help == in_page, (f"only in --help: {sorted(in_help - in_page)}; "
                                f"only in {cmd}(1): {sorted(in_page - in_help)}")
