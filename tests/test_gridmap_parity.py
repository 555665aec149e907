"""gridmap against GNU parallel where gridmap once meant something else:
--retries (N tries in all), --halt with P% (of all jobs, exit status the
percentage of failures), the joblog of a job killed by a signal (Exitval 0),
-X/-m with -n (at most N inputs per job); and short options bundled as
getopt bundles them (-kj2, -0kj 2); xargs's options (-P, -v, -I, -i,
-E, -e, -r, -L, -l, -s); --link, -q, --arg-sep, --arg-file-sep, --nice.

Each case was recorded twice with GNU parallel 20221122 (identical both
times): its stdout, exit status and joblog columns Seq, Exitval, Signal
(`cut -f1,7,8`).  When `parallel` is on PATH the cases are also compared
live, and a few run through a hub must give the same.
"""

import pathlib

import pytest

from conftest import run_gridmap, run_parallel
from hubfixtures import grid  # noqa: F401  (the fixture)

# (id, arguments, stdin, stdout, exit status, joblog Seq/Exitval/Signal rows)
CASES = [
    ('retries_in_all', ['-j1', '-k', '--retries', '3', 'echo x >> {}.n; n=$(wc -l < {}.n); echo {}$n; exit 1', ':::', 'a', 'b'], b'', b'a3\nb3\n', 2, '1\t1\t0\n2\t1\t0\n'),
    ('retries_one_is_one_try', ['-j1', '-k', '--retries', '1', 'echo x >> {}.n; n=$(wc -l < {}.n); echo {}$n; exit 1', ':::', 'a'], b'', b'a1\n', 1, '1\t1\t0\n'),
    ('retries_until_success', ['-j1', '-k', '--retries', '3', 'echo x >> {}.n; n=$(wc -l < {}.n); echo {}$n; [ $n -ge 2 ]', ':::', 'a', 'b'], b'', b'a2\nb2\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('joblog_signal', ['-j1', '-k', 'kill -{} $$', ':::', 'TERM', 'KILL', 'HUP'], b'', b'', 3, '1\t0\t15\n2\t0\t9\n3\t0\t1\n'),
    ('joblog_signal_and_exit', ['-j1', '-k', 'echo {}; kill -{} $$', ':::', 'INT', '0'], b'', b'INT\n0\n', 1, '1\t0\t2\n2\t0\t0\n'),
    ('halt_now,fail=30%', ['-j1', '-k', '--halt', 'now,fail=30%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n3\n', 30, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n5\t3\t0\n'),
    ('halt_soon,fail=30%', ['-j1', '-k', '--halt', 'soon,fail=30%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n3\n', 30, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n5\t3\t0\n'),
    ('halt_now,fail=50%', ['-j1', '-k', '--halt', 'now,fail=50%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n3\n0\n0\n4\n0\n0\n', 40, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n5\t3\t0\n6\t0\t0\n7\t0\t0\n8\t4\t0\n9\t0\t0\n10\t0\t0\n'),
    ('halt_soon,success=50%', ['-j1', '-k', '--halt', 'soon,success=50%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n3\n0\n0\n4\n0\n', 0, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n5\t3\t0\n6\t0\t0\n7\t0\t0\n8\t4\t0\n9\t0\t0\n'),
    ('halt_now,done=50%', ['-j1', '-k', '--halt', 'now,done=50%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n3\n', 30, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n5\t3\t0\n'),
    ('halt_soon,fail=1', ['-j1', '-k', '--halt', 'soon,fail=1', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n', 1, '1\t0\t0\n2\t1\t0\n'),
    ('halt_now,fail=1', ['-j1', '-k', '--halt', 'now,fail=1', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n', 1, '1\t0\t0\n2\t1\t0\n'),
    ('halt_now,success=2', ['-j1', '-k', '--halt', 'now,success=2', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n', 0, '1\t0\t0\n2\t1\t0\n3\t0\t0\n'),
    ('halt_soon,done=3', ['-j1', '-k', '--halt', 'soon,done=3', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n', 1, '1\t0\t0\n2\t1\t0\n3\t0\t0\n'),
    ('halt_soon,fail=2', ['-j1', '-k', '--halt', 'soon,fail=2', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n', 2, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n'),
    ('halt_soon,fail=10%', ['-j1', '-k', '--halt', 'soon,fail=10%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n', 1, '1\t0\t0\n2\t1\t0\n'),
    ('halt_soon,done=1', ['-j1', '-k', '--halt', 'soon,done=1', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n', 0, '1\t0\t0\n'),
    ('halt_20%', ['-j1', '-k', '--halt', '20%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n', 20, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n'),
    ('halt_-1', ['-j1', '-k', '--halt', '-1', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n', 0, '1\t0\t0\n'),
    ('halt_now,done=10%', ['-j1', '-k', '--halt', 'now,done=10%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n', 0, '1\t0\t0\n'),
    ('halt_soon,fail=95%', ['-j1', '-k', '--halt', 'soon,fail=95%', 'echo {}; exit {}', ':::', '0', '1', '0', '2', '3', '0', '0', '4', '0', '0'], b'', b'0\n1\n0\n2\n3\n0\n0\n4\n0\n0\n', 40, '1\t0\t0\n2\t1\t0\n3\t0\t0\n4\t2\t0\n5\t3\t0\n6\t0\t0\n7\t0\t0\n8\t4\t0\n9\t0\t0\n10\t0\t0\n'),
    ('halt_pct_stdin', ['-j1', '-k', '--halt', 'now,fail=25%', 'echo {}; exit {}'], b'0\n5\n0\n6\n7\n0\n0\n0\n', b'0\n5\n0\n6\n', 25, '1\t0\t0\n2\t5\t0\n3\t0\t0\n4\t6\t0\n'),
    ('xargs_-X-n2-j1', ['-k', '-X', '-n2', '-j1', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5', '6', '7'], b'', b'a1b a2b\na3b a4b\na5b a6b\na7b\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('xargs_-X-n2-j2', ['-k', '-X', '-n2', '-j2', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5', '6', '7'], b'', b'a1b a2b\na3b a4b\na5b a6b\na7b\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('xargs_-m-n2-j1', ['-k', '-m', '-n2', '-j1', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5', '6', '7'], b'', b'a1 2b\na3 4b\na5 6b\na7b\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('xargs_-X-n3-j2', ['-k', '-X', '-n3', '-j2', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5', '6', '7'], b'', b'a1b a2b a3b\na4b a5b a6b\na7b\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('xargs_-X-N2-j3', ['-k', '-X', '-N2', '-j3', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5', '6', '7'], b'', b'a1b a2b\na3b a4b\na5b a6b\na7b\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('xargs_-m-n3-j4', ['-k', '-m', '-n3', '-j4', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5', '6', '7'], b'', b'a1 2 3b\na4 5 6b\na7b\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('X_n2_stdin', ['-k', '-X', '-n2', '-j1', 'echo', 'a{}b'], b'1\n2\n3\n', b'a1b a2b\na3b\n', 0, '1\t0\t0\n2\t0\t0\n'),
    # Short options bundled as getopt takes them.
    ('bundle_kj1', ['-kj1', 'echo', ':::', 'a', 'b', 'c'], b'', b'a\nb\nc\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('bundle_kXj1_n2', ['-kXj1', '-n2', 'echo', 'x{}', ':::', '1', '2', '3'], b'', b'x1 x2\nx3\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('bundle_0kj_next_word', ['-0kj', '2', 'echo', '[{}]'], b'a b\x00c\x00', b'[a b]\n[c]\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('bundle_kn2', ['-kn2', 'echo'], b'1\n2\n3\n', b'1 2\n3\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('bundle_value_rest', ['-kd,', 'echo', '[{}]'], b'a,b,c', b'[a]\n[b]\n[c]\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    # xargs's options, as GNU parallel keeps them.
    ('P_is_j', ['-kP2', 'echo', ':::', 'a', 'b', 'c'], b'', b'a\nb\nc\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('v_prints_commands', ['-kv', '-j1', 'echo', ':::', 'a', 'b c'], b'', b"echo a\na\necho 'b c'\nb c\n", 0, '1\t0\t0\n2\t0\t0\n'),
    ('I_replace', ['-k', '-I', 'XX', 'echo', 'XX', '{}', '{.}', ':::', 'a.b', 'c'], b'', b'a.b {} a\nc {} c\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('I_glued', ['-k', '-I@', 'echo', 'x@y', ':::', 'a', 'b'], b'', b'xay\nxby\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('i_replace_default', ['-k', '-i', '-j1', 'echo', '[{}]', ':::', 'a'], b'', b'[a]\n', 0, '1\t0\t0\n'),
    ('i_replace_glued', ['-k', '-iZZ', 'echo', '{}', 'ZZ', ':::', 'a.b'], b'', b'{} a.b\n', 0, '1\t0\t0\n'),
    ('E_eof', ['-k', '-E', 'STOP', 'echo'], b'a\nb\nSTOP\nc\n', b'a\nb\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('e_eof_glued', ['-k', '-eSTOP', 'echo', '[{}]'], b'a\nSTOP\nc\n', b'[a]\n', 0, '1\t0\t0\n'),
    ('E_each_source', ['-k', '-E', 'b', 'echo', ':::', 'a', 'b', 'c', ':::', '1', 'b', '2'], b'', b'a 1\n', 0, '1\t0\t0\n'),
    ('r_skips_blank', ['-k', '-r', 'echo', 'x{}y'], b'a\n\n  \nb\n\t\n', b'xay\nxby\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('r_list', ['-k', '-r', 'echo', 'x{}y', ':::', 'a', '', ' ', 'c'], b'', b'xay\nxcy\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('r_all_blank', ['-k', '-r', 'echo', 'x'], b'\n \n', b'', 0, ''),
    ('L1_continuation', ['-k', '-L1', 'echo', 'x{}y'], b'a b\nc \nd\ne\n', b'xa by\nxc dy\nxey\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('L2', ['-k', '-L', '2', 'echo', 'x{}y'], b'a b\nc\nd\ne\nf\n', b'xa by xcy\nxdy xey\nxfy\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('l_default', ['-k', '-l', 'echo'], b'a \nb\nc\n', b'a b\nc\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('l_next_word', ['-k', '-l', '2', 'echo'], b'a\nb\nc\n', b'a b\nc\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('s_X', ['-k', '-s', '20', '-X', 'echo', ':::', 'aaaa', 'bbbb', 'cccc', 'dddd', 'eeee'], b'', b'aaaa bbbb cccc\ndddd\neeee\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('s_m_j2', ['-k', '-j2', '-s', '20', '-m', 'echo', 'a{}b', ':::', 'aaaa', 'bbbb', 'cccc', 'dddd', 'eeee'], b'', b'aaaaa bbbbb\nacccc ddddb\naeeeeb\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('s_X_n2', ['-k', '-j1', '-s', '25', '-X', '-n2', 'echo', 'a{}b', ':::', 'aaaa', 'bbbb', 'cccc', 'dddd', 'eeee'], b'', b'aaaaab abbbbb\naccccb addddb\naeeeeb\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('s_fits', ['-k', '-s', '30', 'echo', ':::', 'a', 'bb'], b'', b'a\nbb\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('kr_bundle', ['-kr', 'echo', 'x{}y'], b'a\n\nb\n', b'xay\nxby\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('kt_bundle', ['-ktj1', 'echo', ':::', 'a'], b'', b'a\n', 0, '1\t0\t0\n'),
    # --link/--xapply, -q, --arg-sep, --arg-file-sep, --nice, --will-cite,
    # --linebuffer.
    ('link_wraps', ['-k', '--link', 'echo', ':::', 'a', 'b', 'c', ':::', '1', '2'], b'', b'a 1\nb 2\nc 1\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('xapply_three', ['-k', '--xapply', 'echo', ':::', 'a', 'b', ':::', '1', '2', '3', ':::', 'x'], b'', b'a 1 x\nb 2 x\na 3 x\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('link_with_plus', ['-k', '--link', 'echo', ':::', 'a', 'b', ':::+', '1', '2', '3', ':::', 'x', 'y', 'z'], b'', b'a 1 x\nb 2 y\na 3 z\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('quote', ['-k', '-q', 'printf', '%s|\\n', ':::', 'a b', "c'd"], b'', b"a b|\nc'd|\n", 0, '1\t0\t0\n2\t0\t0\n'),
    ('quote_dollar', ['-k', '-q', 'echo', '$HOME', '{}', ':::', 'a'], b'', b'$HOME a\n', 0, '1\t0\t0\n'),
    ('arg_sep', ['-k', '--arg-sep', ',,', 'echo', ',,', 'a', 'b', ':::', 'c'], b'', b'a\nb\n:::\nc\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('arg_file_sep', ['-k', '--arg-file-sep', '//', 'echo', 'x{}', '//', '-'], b'f1\nf2\n', b'xf1\nxf2\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('nice', ['-k', '--nice', '3', 'nice; echo {}', ':::', 'a'], b'', b'3\na\n', 0, '1\t0\t0\n'),
    ('will_cite_linebuffer', ['-k', '--will-cite', '--linebuffer', 'echo', ':::', 'a', 'b'], b'', b'a\nb\n', 0, '1\t0\t0\n2\t0\t0\n'),
]

IDS = [c[0] for c in CASES]


def joblog_cut(path):
    """`cut -f1,7,8` of a joblog, without its header."""
    rows = path.read_text().splitlines()[1:]
    return "".join("\t".join(line.split("\t")[i] for i in (0, 6, 7)) + "\n" for line in rows)


def run_case(tmp_path, runner, args, stdin, **kw):
    d = tmp_path / "run"
    d.mkdir()
    p = runner(["--joblog", "jl", *args], input=stdin, cwd=d, **kw)
    return p.stdout, p.returncode, joblog_cut(d / "jl")


@pytest.mark.parametrize("args,stdin,stdout,status,joblog", [c[1:] for c in CASES], ids=IDS)
def test_parity_golden(tmp_path, args, stdin, stdout, status, joblog):
    assert run_case(tmp_path, run_gridmap, args, stdin) == (stdout, status, joblog)


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in CASES], ids=IDS)
def test_parity_live(tmp_path, args, stdin):
    (tmp_path / "gnu").mkdir()
    theirs = run_case(tmp_path / "gnu", run_parallel, args, stdin, env={"SHELL": "/bin/sh"})
    assert run_case(tmp_path, run_gridmap, args, stdin) == theirs


HUB_CASES = ["nice", "quote", "link_wraps", "r_list", "retries_in_all", "retries_until_success", "joblog_signal", "halt_now,fail=30%",
             "halt_soon,success=50%", "halt_soon,fail=2", "halt_soon,fail=95%",
             "halt_pct_stdin", "xargs_-X-n2-j1"]


def test_parity_through_a_hub(grid):  # noqa: F811
    """The same results when the jobs run on a hub's worker."""
    grid.start_hub()
    grid.start_worker(slots=1)
    tmp = pathlib.Path(grid.tmp)
    for cid, args, stdin, stdout, status, joblog in (c for c in CASES if c[0] in HUB_CASES):
        for f in tmp.glob("*.n"):
            f.unlink()
        p = grid.run("gridmap", "--joblog", "jl", *args, input=stdin)
        assert (p.stdout, p.returncode, joblog_cut(tmp / "jl")) == (stdout, status, joblog), cid


@pytest.mark.parametrize("args", [["-t", "-j1", "-k", "echo", ":::", "a", "b c"],
                                  ["--verbose", "-j1", "printf", "%s", ":::", "x"]])
def test_verbose_prints_commands_on_stderr(tmp_path, args):
    ours = run_gridmap(args)
    assert ours.stderr == b"".join(b"%s\n" % c for c in {
        "-t": [b"echo a", b"echo 'b c'"], "--verbose": [b"printf %s x"]}[args[0]])
    theirs = run_parallel(args, env={"SHELL": "/bin/sh"})
    assert (ours.stdout, ours.stderr, ours.returncode) == \
        (theirs.stdout, theirs.stderr, theirs.returncode)


def test_a_command_line_too_long_for_s_stops_the_run(tmp_path):
    # GNU parallel exits 255 ("Command line too long (13 >= 12) at input 0");
    # gridmap exits 65, bad data, having run nothing.
    p = run_gridmap(["-k", "-s", "12", "echo", "xx", ":::", "aaaaa", "a"])
    assert (p.stdout, p.returncode) == (b"", 65)
    assert p.stderr == b"gridmap: error: command line too long (13 >= 12) at input 1: aaaaa\n"
    assert run_parallel(["-k", "-s", "12", "echo", "xx", ":::", "aaaaa", "a"]).stdout == b""


def test_show_limits_then_runs():
    p = run_gridmap(["--show-limits", "echo", ":::", "a"])
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("Maximal size of command: ")
    assert lines[1].startswith("Maximal usable size of command: ")
    assert lines[-1] == "a" and p.returncode == 0


def test_delay_spaces_the_starts(tmp_path):
    # --delay is a lower bound gridmap enforces itself: each start at least
    # that long after the one before, on any machine.
    log = tmp_path / "jl"
    p = run_gridmap(["-j4", "-k", "--delay", "0.2", "--joblog", str(log), "echo", ":::",
                     "a", "b", "c"])
    assert (p.stdout, p.returncode) == (b"a\nb\nc\n", 0)
    starts = sorted(float(line.split("\t")[2]) for line in log.read_text().splitlines()[1:])
    assert all(b - a >= 0.2 - 0.0015 for a, b in zip(starts, starts[1:])), starts
    theirs = run_parallel(["-j4", "-k", "--delay", "0.2", "echo", ":::", "a", "b", "c"])
    assert (p.stdout, p.returncode) == (theirs.stdout, theirs.returncode)


@pytest.mark.parametrize("runner", [run_gridmap, run_parallel], ids=["gridmap", "parallel"])
@pytest.mark.parametrize("args,stdin", [
    (["-k", "--shuf", "echo", "{#}", "{}", ":::", *"abcdefgh"], b""),
    (["-k", "--shuf", "echo", "{#}", "{}"], b"a\nb\nc\nd\ne\nf\ng\nh\n"),
], ids=["list", "stdin"])
def test_shuf_shuffles_inputs_then_numbers_them(runner, args, stdin):
    # Both tools: every input once, and {#} counts the jobs in the order
    # they run, whatever order the shuffle chose.
    p = runner(args, input=stdin)
    rows = [line.split() for line in p.stdout.decode().splitlines()]
    assert [int(n) for n, _ in rows] == list(range(1, 9))
    assert sorted(x for _, x in rows) == list("abcdefgh")
    assert p.returncode == 0


def test_tmpdir_holds_big_outputs(tmp_path):
    # A job's output beyond 1 MiB waits in an (unlinked) file in --tmpdir:
    # once the job has written 2 MB, gridmap has such a file open there.
    td = tmp_path / "td"
    td.mkdir()
    p = run_gridmap(["--tmpdir", str(td),
                     "head -c 2000000 /dev/zero; ls -l /proc/$PPID/fd/ >&2; true", ":::", "a"])
    assert (len(p.stdout), p.returncode) == (2000000, 0)
    assert str(td) in p.stderr.decode()
    p = run_gridmap(["--tmpdir", str(tmp_path / "none"), "echo", ":::", "a"])
    assert (p.stdout, p.returncode) == (b"", 73)
    assert p.stderr == f"gridmap: error: --tmpdir: cannot write in {tmp_path / 'none'}\n".encode()
