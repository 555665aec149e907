"""Man pages stay in step with the commands: every option a command's --help
prints appears in its man page, and every page lints clean with mandoc."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
MAN = ROOT / "man"
CLI = ROOT / "gridtools" / "cli"

# Subcommands to ask for help even if the top-level --help does not list them.
KNOWN_SUBCOMMANDS = {"gridd": ("hub", "worker", "ctl")}

COMMANDS = sorted(p.name for p in BIN.iterdir() if p.is_file() and os.access(p, os.X_OK))
PAGES = sorted(p for p in MAN.glob("*.[1-8]") if p.is_file())

# An entry in argparse's option list: two spaces or more, then the option
# strings up to the help text (two spaces or more) or the end of the line.
_ENTRY = re.compile(r"^ {2,}(-.*?)(?: {2,}|$)")
# A subcommand listed under "positional arguments" (argparse indents the
# choices of a subparser by four spaces).
_SUBCOMMAND = re.compile(r"^ {4}([a-z][\w-]*)(?: {2,}|$)")


def run_help(cmd, *sub):
    env = {k: v for k, v in os.environ.items() if k != "GRID_DEBUG"}
    return subprocess.run([sys.executable, "-I", "-S", str(BIN / cmd), *sub, "--help"],
                          capture_output=True, text=True, timeout=60, env=env)


def help_options(text):
    """The long and short option strings an argparse --help lists."""
    opts = set()
    for line in text.splitlines():
        m = _ENTRY.match(line)
        if not m:
            continue
        for part in m.group(1).split(", "):
            word = re.match(r"--?[A-Za-z0-9][\w-]*", part)
            if word:
                opts.add(word.group(0))
    return opts


def help_subcommands(text):
    subs = []
    in_positionals = False
    for line in text.splitlines():
        if line and not line.startswith(" "):
            in_positionals = line.rstrip(":").strip().lower() in (
                "positional arguments", "commands", "subcommands")
            continue
        m = _SUBCOMMAND.match(line)
        if in_positionals and m:
            subs.append(m.group(1))
    return subs


def all_options(cmd, sub=(), depth=0):
    """Options of cmd's --help and, recursively, of its subcommands'."""
    r = run_help(cmd, *sub)
    if r.returncode != 0:
        return None
    opts = help_options(r.stdout)
    assert "--help" in opts, f"could not parse `{cmd} {' '.join(sub)} --help`:\n{r.stdout}"
    if depth < 2:
        listed = help_subcommands(r.stdout)
        extra = KNOWN_SUBCOMMANDS.get(cmd, ()) if not sub else ()
        for name in dict.fromkeys([*listed, *extra]):
            sub_opts = all_options(cmd, (*sub, name), depth + 1)
            if sub_opts is None:
                assert name not in listed, f"`{cmd} {' '.join((*sub, name))} --help` failed"
                continue
            opts |= sub_opts
    return opts


def page_text(path):
    return unescape(path.read_text(encoding="utf-8"))


def unescape(text):
    """Man page source with the escapes that hide option spellings removed."""
    text = re.sub(r"\\f(?:\[[^]]*\]|\(..|.)", "", text)     # font changes
    text = text.replace("\\-", "-").replace("\\(hy", "-").replace("\\(en", "-")
    text = text.replace("\\&", "").replace("\\%", "")
    return text


def mentions(text, option):
    return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", text) is not None


def man_page(cmd):
    pages = sorted(MAN.glob(f"{cmd}.[1-8]"))
    return pages[0] if pages else None


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_options_are_in_man_page(cmd):
    if not (CLI / f"{cmd}.py").exists():
        pytest.skip(f"{cmd}: gridtools/cli/{cmd}.py not implemented yet")
    page = man_page(cmd)
    if page is None:
        pytest.skip(f"{cmd}: no man/{cmd}.[1-8] yet")
    opts = all_options(cmd)
    assert opts is not None, f"`{cmd} --help` failed"
    text = page_text(page)
    missing = sorted(o for o in opts if not mentions(text, o))
    assert not missing, f"{page.name} does not mention {', '.join(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_man_page_lints_clean(page):
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.skip("mandoc is not installed")
    r = subprocess.run([mandoc, "-T", "lint", "-W", "warning", str(page)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_parser_finds_every_option_spelling():
    sample = """\
usage: x [options]

options:
  -h, --help            show this help message and exit
  -j N, --jobs N        jobs at once
  --line-buffer, --lb   print output a line at a time
  --trim {l,lr,n,r,rl}  trim
  -X                    as many inputs as fit
  --halt WHEN,KIND=N    stop early:
                        now|soon,fail=N
  --color[=WHEN]        colour

positional arguments:
  send|recv
    send      offer a file
    recv      join a sender
"""
    assert help_options(sample) == {"-h", "--help", "-j", "--jobs", "--line-buffer",
                                    "--lb", "--trim", "-X", "--halt", "--color"}
    assert help_subcommands(sample) == ["send", "recv"]


def test_unescape_keeps_option_spellings():
    text = unescape(r""".TP
\fB\-j\fR \fIN\fR, \fB\-\-jobs\fR \fIN\fR
.BR \-\-max\-args .
.B \-0\&
""")
    for option in ("-j", "--jobs", "--max-args", "-0"):
        assert mentions(text, option), option
    for option in ("-m", "--max", "-N", "--job"):
        assert not mentions(text, option), option
