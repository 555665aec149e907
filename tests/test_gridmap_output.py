"""gridmap output: grouping under concurrency, -k order, --line-buffer,
--tag/--tagstring, -j, --dry-run, --bar.  Jobs that must run in a given order
wait for each other through files, never for a guessed amount of time."""

import os
import pty
import re
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GRIDMAP, TIMEOUT, run_gridmap

# A shell snippet: wait (at most 20 s) until file $1 exists, else fail.
WAIT_FOR = 'i=0; while [ ! -e "{f}" ]; do i=$((i+1)); [ $i -gt 400 ] && exit 99; sleep 0.05; done'


def runs(lines):
    """The sequence of keys of consecutive runs: [a, a, b, a] -> [a, b, a]."""
    out = []
    for k in lines:
        if not out or out[-1] != k:
            out.append(k)
    return out


def test_grouped_output_never_interleaves():
    # Four jobs at once, each writing many lines in bursts with pauses, more
    # than a pipe buffer in all: each job's lines come out as one piece.
    job = ("for b in 1 2 3 4 5; do seq -f {}-$b-%g 1 3000; sleep 0.05; done; "
           "seq -f {}-err-%g 1 500 >&2")
    p = run_gridmap(["-j4", job, ":::", "a", "b", "c", "d", "e", "f"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 6 * 5 * 3000
    keys = [line.split("-")[0] for line in lines]
    assert sorted(runs(keys)) == list("abcdef")
    for k in "abcdef":
        mine = [line for line in lines if line.startswith(k + "-")]
        assert mine == [f"{k}-{b}-{i}" for b in range(1, 6) for i in range(1, 3001)]
    errs = p.stderr.decode().splitlines()
    assert sorted(runs([e.split("-")[0] for e in errs])) == list("abcdef")


def test_unordered_output_follows_completion(tmp_path):
    f = tmp_path / "flag"
    jobs = f"{WAIT_FOR.format(f=f)}; echo one\ntouch {f}; echo two\n"
    p = run_gridmap(["-j2"], input=jobs.encode())
    assert p.stdout == b"two\none\n"
    os.unlink(f)
    p = run_gridmap(["-j2", "-k"], input=jobs.encode())
    assert p.stdout == b"one\ntwo\n"


def test_keep_order_many_jobs():
    p = run_gridmap(["-k", "-j4", "/bin/echo"],
                    input=b"".join(b"%d\n" % i for i in range(500)))
    assert p.stdout == b"".join(b"%d\n" % i for i in range(500))


def test_line_buffer_prints_lines_as_they_come(tmp_path):
    # Job 2 waits until job 1's first line is in gridmap's output; job 1
    # waits for job 2.  Grouped output would deadlock them (and fail).
    out = tmp_path / "out"
    flag = tmp_path / "flag"
    jobs = (f"echo A1; {WAIT_FOR.format(f=flag)}; echo A2\n"
            f"i=0; until grep -q A1 {out}; do i=$((i+1)); [ $i -gt 400 ] && exit 99; "
            f"sleep 0.05; done; echo B1; touch {flag}\n")
    with open(out, "wb") as fh:
        p = subprocess.run([GRIDMAP, "-j2", "--line-buffer"], input=jobs.encode(),
                           stdout=fh, stderr=subprocess.PIPE, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == b"A1\nB1\nA2\n"


def test_line_buffer_never_splits_a_line():
    job = ("for i in 1 2 3 4 5 6 7 8 9 10; do printf {}-$i-; sleep 0.01; "
           "printf %s-end\\\\n {}; done")
    p = run_gridmap(["-j4", "--line-buffer", job, ":::", "a", "b", "c", "d"])
    lines = sorted(p.stdout.decode().splitlines())
    assert lines == sorted(f"{k}-{i}-{k}-end" for k in "abcd" for i in range(1, 11))


def test_line_buffer_keep_order_tag():
    p = run_gridmap(["-k", "-j2", "--line-buffer", "--tag", "printf 'x\\ny'; echo {}",
                     ":::", "a", "b"])
    assert p.stdout == b"a\tx\na\tya\nb\tx\nb\tyb\n"


def test_partial_last_line_is_printed():
    p = run_gridmap(["-k", "printf", "%s", ":::", "a", "b"])
    assert p.stdout == b"ab"
    p = run_gridmap(["-k", "--tag", "printf", "%s", ":::", "a", "b"])
    assert p.stdout == b"a\tab\tb"


def test_stdout_and_stderr_stay_apart():
    p = run_gridmap(["-k", "echo out{}; echo err{} >&2", ":::", "1", "2"])
    assert p.stdout == b"out1\nout2\n"
    assert p.stderr == b"err1\nerr2\n"


def test_tag_and_tagstring_cover_stderr():
    p = run_gridmap(["-k", "--tag", "echo o; echo e >&2; : {}", ":::", "a b"])
    assert (p.stdout, p.stderr) == (b"a b\to\n", b"a b\te\n")
    p = run_gridmap(["-k", "--tagstring", "<{#}:{/.}>", "echo o; echo e >&2; : {}", ":::", "/d/f.x"])
    assert (p.stdout, p.stderr) == (b"<1:f>\to\n", b"<1:f>\te\n")


def test_big_output_is_intact():
    # Past 1 MiB a job's output goes to a temporary file.
    p = run_gridmap(["-k", "-j2", "seq", "{}"], input=b"300000\n5\n400000\n")
    expect = b"".join(b"%d\n" % i for n in (300000, 5, 400000) for i in range(1, n + 1))
    assert p.stdout == expect


def barrier(tmp_path, n):
    """A job that waits until n jobs have started (at most 20 s)."""
    return (f"touch {tmp_path}/{{}}; i=0; while [ $(ls {tmp_path} | wc -l) -lt {n} ]; do "
            "i=$((i+1)); [ $i -gt 400 ] && exit 99; sleep 0.05; done")


def test_j_runs_that_many_at_once(tmp_path):
    p = run_gridmap(["-j3", barrier(tmp_path, 3), ":::", "1", "2", "3"])
    assert p.returncode == 0, p.stderr


def test_j_defaults_to_the_cores(tmp_path):
    n = os.cpu_count()
    p = run_gridmap(["--group", barrier(tmp_path, n), ":::", *map(str, range(n))])
    assert p.returncode == 0, p.stderr
    p = run_gridmap(["-k", "echo", "{%}"], input=b"x\n" * (4 * n))
    assert set(p.stdout.split()) <= {b"%d" % i for i in range(1, n + 1)}


def test_j_percent_of_the_cores(tmp_path):
    n = 2 * os.cpu_count()
    p = run_gridmap(["-j", "200%", barrier(tmp_path, n), ":::", *map(str, range(n))])
    assert p.returncode == 0, p.stderr


def test_j_zero_runs_everything_at_once(tmp_path):
    p = run_gridmap(["-j0", barrier(tmp_path, 12), ":::", *map(str, range(12))])
    assert p.returncode == 0, p.stderr


def test_j_limits_the_slots():
    p = run_gridmap(["-k", "-j3", "echo", "{%}"], input=b"x\n" * 30)
    assert set(p.stdout.split()) <= {b"1", b"2", b"3"}


def test_dry_run_runs_nothing(tmp_path):
    f = tmp_path / "made"
    p = run_gridmap(["--dry-run", "touch", "{}"], input=f"{f}\n".encode())
    assert p.stdout == f"touch {f}\n".encode()
    assert not f.exists()


def test_bar_only_on_a_terminal():
    p = run_gridmap(["--bar", "true"], input=b"1\n2\n")
    assert (p.returncode, p.stderr) == (0, b"")
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([GRIDMAP, "--bar", "-j2", "sleep 0.3; true"],
                              input=b"1\n2\n3\n", stdout=subprocess.PIPE, stderr=slave,
                              timeout=TIMEOUT)
        os.close(slave)
        slave = None
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert proc.stdout == b""
    assert b"\r" in seen and re.search(rb"[0-9]+", seen)


# -- the sink: -k with spilling, as a pure function of the results ---------

def sink_output(order, as_json, tag, jobs_budget, bytes_budget, monkeypatch):
    import io
    import tempfile

    from gridtools.local import output
    monkeypatch.setattr(output.Capture, "LIMIT", 5)     # captures go to files too
    out, err, log = tempfile.TemporaryFile(), tempfile.TemporaryFile(), io.StringIO()
    s = output.Sink(keep_order=True, as_json=as_json, joblog=log,
                    out_fd=out.fileno(), err_fd=err.fileno())
    s.MEMORY_JOBS, s.MEMORY_BUDGET = jobs_budget, bytes_budget
    for seq in order:
        body = (b"%d\xff\n" % seq) * (seq % 4) + b"tail"
        c = output.Capture()
        c.append(body[:3])
        c.append(body[3:])
        s.add(output.Result(seq, [str(seq), "\udcff"], f"cmd {seq}", seq % 2, None,
                            "failed" if seq % 2 else "ok", 1.0, 0.5, c, b"e%d\n" % seq,
                            tag=b"T%d\t" % seq if tag else b""))
    s.close()
    out.seek(0)
    err.seek(0)
    got = out.read(), err.read(), log.getvalue()
    out.close()
    err.close()
    return got


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(1, 41)), as_json=st.booleans(), tag=st.booleans(),
       jobs_budget=st.sampled_from([0, 1, 3, 100]), bytes_budget=st.sampled_from([0, 10, 1 << 30]))
def test_keep_order_spilled_or_not(order, as_json, tag, jobs_budget, bytes_budget, monkeypatch):
    """Results finishing in any order, held in memory or spilled to the
    temporary file, print exactly as if they had finished in order."""
    got = sink_output(order, as_json, tag, jobs_budget, bytes_budget, monkeypatch)
    want = sink_output(range(1, 41), as_json, tag, 10**6, 1 << 40, monkeypatch)
    assert got == want
    assert got[2].count("\n") == 41
