"""gridmap templates and quoting: replacement strings as pure functions, and
hostile inputs through real jobs on both the direct (posix_spawn) path and
the /bin/sh path."""

import os
import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import nul_fields, run_gridmap
from gridtools.local import template
from gridtools.local.template import Template


# -- pure functions ------------------------------------------------------

@pytest.mark.parametrize("path,dot,base,dirn,basedot", [
    ("a/b.c/d.e.f", "a/b.c/d.e", "d.e.f", "a/b.c", "d.e"),
    ("/x/y.tar.gz", "/x/y.tar", "y.tar.gz", "/x", "y.tar"),
    ("foo", "foo", "foo", ".", "foo"),
    ("dir/", "dir/", "", ".", ""),
    ("/", "/", "", "/", ""),
    ("./rel.txt", "./rel", "rel.txt", ".", "rel"),
    ("a//b.c", "a//b", "b.c", "a", "b"),
    ("", "", "", ".", ""),
])
def test_modifiers(path, dot, base, dirn, basedot):
    # The same values GNU parallel prints (see test_gridmap_golden.py).
    m = template.MODIFIERS
    assert (m["."](path), m["/"](path), m["//"](path), m["/."](path)) == \
        (dot, base, dirn, basedot)


def test_every_replacement_string():
    t = Template("ls {} {.} {/} {//} {/.} {#} {%} {1} {2} {-1} {1/.} {-2//} {2.}")
    args = ["/a/b.c", "d/e.f"]
    assert t.argv(args, 7, 3) == [
        "ls", "/a/b.c", "d/e.f", "/a/b", "d/e", "b.c", "e.f", "/a", "d", "b", "e",
        "7", "3", "/a/b.c", "d/e.f", "d/e.f", "b", "/a", "d/e"]


def test_no_replacement_string_appends_the_inputs():
    t = Template("ls -l")
    assert t.shell(["a b", "c"], 1, 1) == "ls -l 'a b' c"
    assert t.argv(["a b", "c"], 1, 1) == ["ls", "-l", "a b", "c"]


def test_seq_and_slot_alone_do_not_append():
    t = Template("ls {#}-{%}")
    assert t.argv(["x"], 4, 2) == ["ls", "4-2"]


def test_positional_out_of_range_is_empty():
    t = Template("ls x{3}y")
    assert t.argv(["a"], 1, 1) == ["ls", "xy"]
    # Alone in its word, a missing input is no argument, not an empty one.
    t = Template("ls {3} {1} {-3/}")
    assert (t.argv(["a"], 1, 1), t.shell(["a"], 1, 1)) == (["ls", "a"], "ls a")


def test_context_replace_repeats_the_word():
    # -X repeats the word around {} per input; -m substitutes all inputs
    # space-separated, the surrounding text joining the first and last.
    assert Template("ls a{}b", context=True).argv(["1", "2 3"], 1, 1) == ["ls", "a1b", "a2 3b"]
    assert Template("ls a{}b", context=True).shell(["1", "2 3"], 1, 1) == "ls a1b a'2 3'b"
    assert Template("ls a{}b").argv(["1", "2 3"], 1, 1) == ["ls", "a1", "2 3b"]
    assert Template("ls a{}b").shell(["1", "2 3"], 1, 1) == "ls a1 '2 3'b"


@pytest.mark.parametrize("text,direct", [
    ("ls {}", True),
    ("/bin/echo -n {}", True),
    ("echo {}", False),                 # a builtin that differs from /bin/echo
    ("cd {}", False),
    ("ls {} | wc", False),
    ("ls '{}'", False),
    ("ls $HOME {}", False),
    ("X=1 ls {}", False),
    ("ls {}; true", False),
])
def test_direct_or_shell(text, direct):
    assert Template(text).direct is direct
    assert (Template(text).argv(["a"], 1, 1) is not None) is direct


def test_true_false_help_need_the_shell():
    # /bin/true --help prints help; the shell builtin does not.
    assert Template("true {}").argv(["--help"], 1, 1) is None
    assert Template("true {}").argv(["x"], 1, 1) == ["true", "x"]


def test_quoting_follows_the_quotes_around_the_token():
    # A real shell reads the line back (shlex does not know that \$ and \`
    # are escapes inside double quotes).
    t = Template("""printf %s\\\\0 "{}" '{}' {} x"{}"y""")
    v = "a$b`c\"d'e\\ f\\"
    line = t.shell([v], 1, 1)
    out = subprocess.run(["/bin/sh", "-c", line], capture_output=True, timeout=30).stdout
    assert nul_fields(out) == [v.encode()] * 3 + [b"x" + v.encode() + b"y"]


def test_template_keeps_its_spacing():
    assert Template("ls  a   {}").shell(["x"], 1, 1) == "ls  a   x"


def test_expand_plain_for_tagstring():
    assert template.expand_plain("{} {#} {%} {1/} {2.}", ["a/b", "c.d"], 3, 4) == \
        "a/b c.d 3 4 b c"


_arg = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
               max_size=12) | st.binary(max_size=8).map(os.fsdecode).filter(lambda s: "\0" not in s)
_piece = st.sampled_from(["{}", "{.}", "{/}", "{//}", "{/.}", "{#}", "{%}", "{1}", "{-1}",
                          "{2/.}", "a", "-x", "1.5", "p/q"])
_word = st.lists(_piece, min_size=1, max_size=3).map("".join)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(_word, min_size=0, max_size=4),
       args=st.lists(_arg, min_size=1, max_size=4),
       context=st.booleans())
def test_shell_line_and_argv_agree(words, args, context):
    """The quoted shell line, split as a POSIX shell would, is the argv that
    runs directly: an input is one argument, never code."""
    t = Template(" ".join(["ls", *words]), context=context)
    argv = t.argv(args, 5, 2)
    assert argv is not None
    assert shlex.split(t.shell(args, 5, 2)) == argv


HOSTILE = [
    "x; echo PWNED", "$(echo PWNED)", "`echo PWNED`", "a\nb", "", "-n", "--",
    "\"", "'", "\\", "\\n", " sp  ", "*", "~", "{}", "{1}", "$HOME", "a\tb",
    "it's", "${IFS}", "!x", "#c", ">out", "<in", "&", "|", "\xff\xfe",
]


def hostile_bytes():
    return [s.encode("utf-8") if s != "\xff\xfe" else b"\xff\xfe" for s in HOSTILE]


@settings(max_examples=1, deadline=None)
@given(st.just(None))
def test_hostile_through_real_shell(_):
    # The quoted line through a real /bin/sh gives back every input exactly.
    t = Template("printf %s\\\\0 {}")
    line = t.shell(HOSTILE, 1, 1)
    out = subprocess.run(["/bin/sh", "-c", line], capture_output=True, timeout=30).stdout
    assert nul_fields(out) == [os.fsencode(h) for h in HOSTILE]


# -- real jobs -----------------------------------------------------------

@pytest.mark.parametrize("shape,direct", [
    ("{S} {{}}", True),
    ("exec {S} {{}}", False),
    ("{S} {{}} | cat", False),
    ('{S} "{{}}"', False),
    ("{S} '{{}}'", False),
    ("{S}", True),                       # appended
])
def test_hostile_inputs_are_one_argument(argv_script, shape, direct):
    tmpl = shape.format(S=argv_script)
    assert Template(tmpl).direct is direct
    data = b"\0".join(hostile_bytes()) + b"\0"
    p = run_gridmap(["-0", "-k", "-j2", tmpl], input=data)
    assert p.returncode == 0, p.stderr
    assert nul_fields(p.stdout) == hostile_bytes()
    assert b"PWNED" not in p.stderr


@pytest.mark.parametrize("shape", ["{S} x{{}}y", "{S} x{{}}y ;"])
def test_hostile_inputs_inside_a_word(argv_script, shape):
    data = b"\0".join(hostile_bytes()) + b"\0"
    p = run_gridmap(["-0", "-k", shape.format(S=argv_script)], input=data)
    assert nul_fields(p.stdout) == [b"x" + h + b"y" for h in hostile_bytes()]


def test_hostile_lines_from_stdin(argv_script):
    # Without -0: one input per line, everything but the newline is data.
    lines = [h for h in hostile_bytes() if b"\n" not in h]
    p = run_gridmap(["-k", argv_script], input=b"\n".join(lines) + b"\n")
    assert nul_fields(p.stdout) == lines


def test_hostile_inputs_with_X(argv_script):
    data = b"\0".join(hostile_bytes()) + b"\0"
    for tmpl in (argv_script, "exec " + argv_script, argv_script + " {} ;"):
        p = run_gridmap(["-0", "-j1", "-X", tmpl], input=data)
        assert nul_fields(p.stdout) == hostile_bytes()


def test_hostile_columns_and_sources(argv_script):
    p = run_gridmap(["-k", argv_script + " {2} {1}", ":::", "$(id)", "-n", ":::", "a;b", "`x`"])
    assert nul_fields(p.stdout) == [b"a;b", b"$(id)", b"`x`", b"$(id)",
                                    b"a;b", b"-n", b"`x`", b"-n"]
    p = run_gridmap(["-k", "--colsep", "\t", argv_script + " {2} {1}"],
                    input=b"'q\"\t$(x) y\n")
    assert nul_fields(p.stdout) == [b"$(x) y", b"'q\""]


def test_non_utf8_in_the_template(argv_script):
    p = run_gridmap([argv_script, os.fsdecode(b"\xfe{}\xff"), ":::", os.fsdecode(b"\x80")])
    assert nul_fields(p.stdout) == [b"\xfe\x80\xff"]


def test_input_line_is_the_command():
    # No template: each input line is a shell command line, run as written.
    p = run_gridmap(["-k"], input=b"echo a; echo b\nX=1; echo $X\nls /nonexistent-dir 2>&1 | wc -l\n")
    assert p.stdout == b"a\nb\n1\n1\n"


def test_direct_and_shell_paths_print_the_same():
    inputs = b"\n".join([b"a b", b"-e", b"c\\nd", b"", b"%s", b"\xff"]) + b"\n"
    assert Template("/bin/echo x{}").direct
    assert not Template("/bin/echo x{} ;").direct
    direct = run_gridmap(["-k", "/bin/echo", "x{}"], input=inputs)
    shell = run_gridmap(["-k", "/bin/echo x{} ;"], input=inputs)
    assert direct.stdout == shell.stdout == b"xa b\nx-e\nxc\\nd\nx\nx%s\nx\xff\n"


def test_missing_command_reports_like_the_shell(tmp_path):
    log = tmp_path / "log"
    direct = run_gridmap(["--joblog", str(log), "no-such-command-x", ":::", "a"])
    shell = run_gridmap(["no-such-command-x {};", ":::", "a"])
    assert direct.returncode == shell.returncode == 1
    assert direct.stderr == shell.stderr
    assert b"not found" in direct.stderr
    assert log.read_text().splitlines()[1].split("\t")[6] == "127"


def test_not_executable_reports_126(tmp_path):
    f = tmp_path / "plain"
    f.write_text("data\n")
    log = tmp_path / "log"
    p = run_gridmap(["--joblog", str(log), str(f), ":::", "a"])
    assert p.returncode == 1
    assert log.read_text().splitlines()[1].split("\t")[6] == "126"
