"""gridmap's replacement strings against GNU parallel: the renamed strings
(-I, --er, --bnr, --dnr, --bner, --seqreplace, --slotreplace), Perl
expressions {= =} and {=N =}, --rpl and --parens.

Each case was recorded twice with GNU parallel 20221122 (the same both
times); when `parallel` is on PATH the cases are also compared live.  The
Perl cases skip where perl is missing; there gridmap must refuse them.
"""

import os
import shutil
import sys

import pytest

from conftest import run_gridmap, run_parallel

# (id, arguments, stdin, GNU parallel's stdout, its exit status)
CASES = [
    ('er', ['-k', '--er', 'EXT', 'echo', 'EXT', '{.}', '{}', ':::', 'a/b.c', 'd.e.f'], b'', b'a/b {.} a/b.c\nd.e {.} d.e.f\n', 0),
    ('bnr_dnr_bner', ['-k', '--bnr', 'BN', '--dnr', 'DN', '--bner', 'BNE', 'echo', 'BN', 'DN', 'BNE', '{/}', '{//}', '{/.}', ':::', 'a/b.c', 'x'], b'', b'b.c a b {/} {//} {/.}\nx . x {/} {//} {/.}\n', 0),
    ('seq_slot_replace', ['-k', '-j1', '--seqreplace', 'SQ', '--slotreplace', 'SL', 'echo', 'SQ', 'SL', '{#}', '{%}', ':::', 'x', 'y'], b'', b'1 1 {#} {%}\n2 1 {#} {%}\n', 0),
    ('er_braces_positional', ['-k', '--er', '{ext}', 'echo', '{ext}', '{2ext}', '{1ext}', '{.}', '{2.}', ':::', 'a.b', ':::', 'c.d'], b'', b'a c c a {.} {2.}\n', 0),
    ('I_braces_positional', ['-k', '-I', '{x}', 'echo', '{x}', '{2x}', '{}', '{2}', ':::', 'a.b', ':::', 'c.d'], b'', b'a.b c.d c.d {} {2}\n', 0),
    ('I_plain_no_positional', ['-k', '-I', 'II', 'echo', '{1}', 'II', ':::', 'a', 'b'], b'', b'{1} a\n{1} b\n', 0),
    ('bnr_no_positional', ['-k', '--bnr', 'BN', 'echo', '{2BN}', '{2/}', 'BN', ':::', 'a/b', ':::', 'c/d'], b'', b'{2b d} {2/} b d\n', 0),
    ('plus_er', ['-k', '--plus', '--er', 'EXT', 'echo', 'EXT', '{..}', ':::', 'a.b.c'], b'', b'a.b a\n', 0),
    ('perl_subst', ['-k', 'echo', '{= s/a/b/ =}', '{=2 $_.="x" =}', ':::', 'a1', 'a2', ':::', 'c'], b'', b'b1 c cx\nb2 c cx\n', 0),
    ('perl_words', ['-k', 'echo', '{=', 's/\\.gz$//', '=}', 'x'], b'a.gz\nb.tar.gz\nc\n', b'a x\nb.tar x\nc x\n', 0),
    ('perl_seq_slot_total', ['-k', '-j1', 'echo', '{= $_=$job->seq()."-".slot()."-".total_jobs() =}', ':::', 'a', 'b', 'c'], b'', b'1-1-3\n2-1-3\n3-1-3\n', 0),
    ('perl_quoting', ['-k', 'echo', '{= $_=Q($_) =}', '{= $_="x y" =}', '{= $_="x  y"; uq() =}', ':::', 'a b', "it's"], b'', b'\'a b\' x y x y\n\'it\'"\'"\'s\' x y x y\n', 0),
    ('perl_arg', ['-k', 'echo', '{= $_=$arg[2] =}', '{= $_=$arg[1] =}', ':::', 'a', 'b', ':::', 'c', 'd'], b'', b'c c a a\nd d a a\nc c b b\nd d b b\n', 0),
    ('perl_exit', ['-k', 'exit {= $_%=3 =}', ':::', '1', '2', '3', '4', '5'], b'', b'', 4),
    ('perl_pipe_seq', ['-k', '--pipe', '-N1', 'cat; echo {= $_=seq()*10 =}'], b'a\nb\n', b'a\n10\nb\n20\n', 0),
    ('perl_X', ['-k', '-j1', '-X', 'echo', 'p{=s/a/A/=}q', ':::', 'a', 'b', 'ca'], b'', b'pAq pbq pcAq\n', 0),
    ('perl_uc', ['-k', 'echo', '{= $_=uc($_) =}', '{}'], b'ab\nc d\n', b'AB ab\nC D c d\n', 0),
    ('rpl_groups', ['-k', '--rpl', '{%(.*?)} s/$$1$//;', 'echo', '{%.gz}', '{2%.c}', ':::', 'x.gz', ':::', 'y.c'], b'', b'x y.c y\n', 0),
    ('rpl_simple', ['-k', '--rpl', '{r} s/x/y/', 'echo', '{r}', '{1r}', '{-1r}', ':::', 'x1', ':::', 'x2'], b'', b'y1 y2 y1 y2\n', 0),
    ('rpl_two_groups', ['-k', '--rpl', '{/(\\w+)/(\\w*)} s/$$1/$$2/g;', 'echo', '{/a/b}', '{/o/}', ':::', 'banana', 'foo'], b'', b'bbnbnb banana\nfoo f\n', 0),
    ('rpl_override', ['-k', '--rpl', '{} s/^/>/', 'echo', '{}', ':::', 'a', 'b'], b'', b'>a\n>b\n', 0),
    ('rpl_dry_run', ['-k', '--dry-run', '--rpl', '{u} $_=uc', 'echo', '{u}', ':::', 'a b', 'c'], b'', b"echo 'A B'\necho C\n", 0),
    ('parens_commas', ['--parens', ',,,,', 'echo', 'foo', 'is', ',,s/I/O/g,,', ':::', 'FII'], b'', b'foo is FOO\n', 0),
    ('parens_brackets_positional', ['--parens', '[[]]', 'echo', '[[1 s/a/b/]]', '{= x =}', ':::', 'ab', ':::', 'cd'], b'', b'bb {= x =}\n', 0),
    ('parens_angles', ['--parens', '<<>>', '-k', 'echo', '<<$_++>>', ':::', '1', '2'], b'', b'2\n3\n', 0),
    ('tag_dot_I', ['-k', '-I', '.x.', 'echo', '.x.', '{}', ':::', 'a'], b'', b'a {}\n', 0),
]

needs_perl = pytest.mark.skipif(shutil.which("perl") is None, reason="perl is not installed")


def _marks(case):
    perl = any("{=" in a or a in ("--rpl", "--parens") for a in case[1])
    return [needs_perl] if perl else []


PARAMS = [pytest.param(*c[1:], id=c[0], marks=_marks(c)) for c in CASES]


@pytest.mark.parametrize("args,stdin,expected,status", PARAMS)
def test_golden(tmp_path, args, stdin, expected, status):
    p = run_gridmap(args, input=stdin, cwd=tmp_path)
    assert (p.stdout, p.returncode) == (expected, status), p.stderr


@pytest.mark.parametrize("args,stdin,expected,status", PARAMS)
def test_live_against_parallel(tmp_path, args, stdin, expected, status):
    theirs = run_parallel(args, input=stdin, env={"SHELL": "/bin/sh"}, cwd=tmp_path)
    ours = run_gridmap(args, input=stdin, cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode)


@needs_perl
def test_one_perl_for_the_whole_run(tmp_path):
    # $$ is the evaluating perl's pid: one value for 30 jobs, and not
    # gridmap's own process.
    p = run_gridmap(["-j4", "echo", "{= $_=$$ =}", ":::", *map(str, range(30))], cwd=tmp_path)
    pids = set(p.stdout.split())
    assert p.returncode == 0 and len(pids) == 1, (p.stdout, p.stderr)
    assert len(p.stdout.splitlines()) == 30


@needs_perl
def test_state_lasts_from_job_to_job(tmp_path):
    p = run_gridmap(["-j1", "-k", "echo", "{= $_ = ++$::n =}", ":::", "a", "b", "c"])
    assert p.stdout == b"1\n2\n3\n"


@needs_perl
def test_user_code_cannot_corrupt_the_coprocess(tmp_path):
    # print goes to stderr, and reading STDIN reads nothing.
    p = run_gridmap(["-k", "echo", '{= print "noise\\n"; $x = <STDIN>; $_ .= defined $x ? "!" : "" =}',
                     ":::", "a", "b"], input=b"stdin\n")
    assert p.returncode == 0 and p.stdout == b"a\nb\n"
    assert p.stderr.count(b"noise") == 2


@needs_perl
def test_bad_perl_is_a_usage_error_before_any_job(tmp_path):
    p = run_gridmap(["echo", "{= s/(/ =}", "; touch", str(tmp_path / "ran"), ":::", "a"])
    assert p.returncode == 64 and p.stdout == b""
    assert p.stderr.startswith(b"gridmap: error: {= =}: cannot use") and p.stderr.count(b"\n") == 1
    assert not (tmp_path / "ran").exists()


@needs_perl
def test_perl_that_dies_is_bad_data(tmp_path):
    p = run_gridmap(["-j1", "-k", "echo", '{= die "no b\\n" if $_ eq "b" =}', ":::", "a", "b", "c"])
    assert p.returncode == 65, p.stderr
    assert b"no b" in p.stderr and p.stdout.startswith(b"a\n")


@needs_perl
def test_skip_is_refused_plainly():
    p = run_gridmap(["echo", "{= skip() =}", ":::", "a"])
    assert p.returncode == 65 and b"skip() is not supported" in p.stderr


def _path_without_perl(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    os.symlink(sys.executable, bin_ / "python3")
    os.symlink(shutil.which("sh") or "/bin/sh", bin_ / "sh")
    return dict(os.environ, PATH=str(bin_))


@pytest.mark.parametrize("args,option", [
    (["echo", "{= s/a/b/ =}", ":::", "a"], b"{= =}"),
    (["--rpl", "{r} s/a/b/", "echo", "{r}", ":::", "a"], b"--rpl"),
])
def test_no_perl_refuses_naming_the_option(tmp_path, args, option):
    p = run_gridmap(args, env=_path_without_perl(tmp_path))
    assert p.returncode == 64 and p.stdout == b""
    assert p.stderr == b"gridmap: error: " + option + b": needs perl, which is not on PATH\n"


def test_no_perl_needed_without_expressions(tmp_path):
    # The fast path never looks for perl: a run without {= =} works with
    # none on PATH (and -I, --er ... are not Perl in gridmap).
    p = run_gridmap(["--dry-run", "-k", "--er", "E", "-I", "II",
                     "echo", "E", "II", ":::", "a.b"], env=_path_without_perl(tmp_path))
    assert (p.stdout, p.returncode) == (b"echo a a.b\n", 0), p.stderr


def test_empty_renamed_string_is_refused():
    p = run_gridmap(["--er", "", "echo", ":::", "a"])
    assert p.returncode == 64 and b"{.} cannot be empty" in p.stderr


def test_empty_parens_is_refused():
    p = run_gridmap(["--parens", "", "echo", ":::", "a"])
    assert p.returncode == 64 and b"--parens" in p.stderr
