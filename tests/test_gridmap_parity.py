"""gridmap against GNU parallel where gridmap once meant something else:
--retries (N tries in all), --halt with P% (of all jobs, exit status the
percentage of failures), the joblog of a job killed by a signal (Exitval 0),
-X/-m with -n (at most N inputs per job); and short options bundled as
getopt bundles them (-kj2, -0kj 2).

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


HUB_CASES = ["retries_in_all", "retries_until_success", "joblog_signal", "halt_now,fail=30%",
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
