"""gridmap --progress and --eta (GNU parallel's report on stderr, on a
pipe as on a terminal), and --memfree and --load (jobs held back while the
host is short of memory or busy; under half of --memfree the youngest job
is killed).

The report's text is compared with GNU parallel 20221122's, line for line,
but for the seconds, which depend on how long the run took.
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import GRIDMAP, run_gridmap, run_parallel
from gridtools.cli import gridmap
from gridtools.local import gate, progress

HEAD = ("\nComputers / CPU cores / Max jobs to run\n1:local / %d / 2\n\n"
        "Computer:jobs running/jobs completed/%%of started jobs/Average seconds to complete\n"
        % (os.cpu_count() or 1))
STATUS = re.compile(r"(ETA: [0-9]+s Left: [0-9]+ AVG: [0-9]+\.[0-9]{2}s  )?"
                    r"local:([0-9]+)/([0-9]+)/([0-9]+)%/[0-9]+\.[0-9]s ")


def report(stderr):
    """(the table, the status lines, the end).  gridmap writes the table
    first; GNU parallel 20221122, on a pipe, may write it after some
    status lines, and complains about /dev/tty: both are left out here."""
    text = "".join(line for line in stderr.decode().splitlines(keepends=True)
                   if not line.startswith("sh: "))
    m = re.search(r"\nComputers / CPU cores.*?Average seconds to complete\n", text, re.S)
    head = m.group(0) if m else ""
    rest = text.replace(head, "", 1)
    return head, [line for line in rest.split("\r") if line], rest[-1:]


@pytest.mark.parametrize("opt", ["--progress", "--eta"])
def test_report_format(opt):
    p = run_gridmap(["-k", "-j2", opt, "echo", ":::", "a", "b", "c"])
    assert p.returncode == 0 and p.stdout == b"a\nb\nc\n"
    head, lines, end = report(p.stderr)
    assert head == HEAD and end == "\n"
    for line in lines:
        m = STATUS.fullmatch(line.rstrip("\n"))
        assert m and (m.group(1) is not None) == (opt == "--eta"), line
        running, done, pct = map(int, m.group(2, 3, 4))
        assert running <= 2 and pct == 100
    last = STATUS.fullmatch(lines[-1].rstrip("\n"))
    assert last.group(2, 3) == ("0", "3")
    if opt == "--eta":
        assert last.group(1).startswith("ETA: 0s Left: 0 AVG: ")


@pytest.mark.parametrize("opt", ["--progress", "--eta"])
def test_report_against_parallel(tmp_path, opt):
    args = ["-k", "-j2", opt, "echo", ":::", "a", "b", "c"]
    theirs = run_parallel(args, env={"SHELL": "/bin/sh"}, cwd=tmp_path)
    ours = run_gridmap(args, cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode)
    t, o = report(theirs.stderr), report(ours.stderr)
    # GNU parallel 20221122 on a pipe writes its table from a timer; on a
    # loaded machine all three jobs may end before it fires, and then it
    # writes none.  gridmap always writes it (test_report_format).
    assert o[0] == t[0] or (t[0] == "" and o[0] == HEAD), (o[0], t[0])
    assert o[2] == t[2]
    strip = lambda line: re.sub(r"[0-9]+\.[0-9]+s", "Xs", line)
    assert strip(o[1][-1]) == strip(t[1][-1])


def test_eta_counts_every_job_before_the_first_ends():
    p = run_gridmap(["-j1", "--eta", "true"], input=b"1\n2\n3\n4\n")
    _, lines, _ = report(p.stderr)
    assert lines[0].startswith("ETA: 0s Left: 4 AVG: 0.00s  local:1/0/100%/")


def test_eta_arithmetic():
    clock = iter([100, 100, 104, 104, 108, 108]).__next__
    r = progress.Report(eta=True, clock=clock)
    r.total = 4
    assert r.line(1, 0, 1) == "ETA: 0s Left: 4 AVG: 0.00s  local:1/0/100%/0.0s "
    assert r.line(1, 1, 2) == "ETA: 0s Left: 3 AVG: 0.00s  local:1/1/100%/4.0s "
    # smoothed: 0 after the first, then 0.5 * 0 + 0.5 * 2.0 = 1.0 s a job
    assert r.line(1, 2, 3) == "ETA: 2s Left: 2 AVG: 2.00s  local:1/2/100%/4.0s "


def test_no_report_without_the_options():
    p = run_gridmap(["echo", ":::", "a"])
    assert p.stderr == b""


# -- --memfree and --load --------------------------------------------------

def test_gates_open_run_every_job():
    p = run_gridmap(["-k", "--memfree", "1k", "--load", "1000000", "echo", ":::", "a", "b"])
    assert (p.returncode, p.stdout, p.stderr) == (0, b"a\nb\n", b"")


def test_memfree_above_all_memory_starts_nothing(tmp_path):
    """No job starts while memory is short: gridmap waits (and is stopped
    here by SIGTERM, 143)."""
    mark = tmp_path / "ran"
    proc = subprocess.Popen([GRIDMAP, "--memfree", "1000000G", "touch", str(mark), ":::", "x"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)         # two readings of /proc/meminfo at least
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not mark.exists()


@pytest.mark.parametrize("args,why", [
    (["--memfree", "lots"], b"--memfree: not a size"),
    (["--load", "x"], b"--load: not a load"),
    (["--load", "1.5.2"], b"--load: not a load"),
])
def test_bad_values_are_usage_errors(args, why):
    p = run_gridmap([*args, "echo", ":::", "a"])
    assert p.returncode == 64 and why in p.stderr


def test_units():
    assert gate.parse_load("2", 4) == 2 and gate.parse_load("50%", 4) == 2
    assert gate.parse_load("+1", 4) == 5 and gate.parse_load("-1", 4) == 3
    assert gate.parse_load("0", 4) == 0.01
    assert gate.mem_available("MemTotal:  9 kB\nMemAvailable:   2048 kB\n") == 2 << 20
    assert gate.processes_running("cpu 1 2\nprocs_running 3\nprocs_blocked 2\n") == 4
    with pytest.raises(Exception):
        gate.mem_available("MemAvailable: ² kB\n")


class FakeHost:
    """/proc texts for gate.Gate, from a list of (MemAvailable kB,
    processes running) readings; the last one stays."""

    def __init__(self, readings, first):
        self.readings = list(readings)
        self.now = self.readings[0]
        self.first = first          # the file read first in each reading

    def read(self, path):
        if path == self.first:
            self.now = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        if path == "/proc/meminfo":
            return f"MemAvailable: {self.now[0]} kB\n"
        return f"procs_running {self.now[1] + 1}\nprocs_blocked 0\n"


def run_in_process(monkeypatch, capfd, host, argv):
    monkeypatch.setattr(gate.Gate, "read", staticmethod(host.read))
    code = gridmap.main(argv)
    sys.stdout.flush()
    out, err = capfd.readouterr()
    return code, out, err


def test_memfree_kills_the_youngest_job(monkeypatch, capfd, tmp_path):
    """Real jobs; the host's memory read from a script of readings: enough
    for both jobs to start, then under half of --memfree once (the
    youngest, job 2, is killed and fails), then enough again."""
    host = FakeHost([(4096, 0), (4096, 0), (4096, 0), (100, 0), (4096, 0)], "/proc/meminfo")
    log = tmp_path / "log"
    code, out, err = run_in_process(
        monkeypatch, capfd, host,
        ["-k", "-j2", "--joblog", str(log), "--memfree", "1M",
         f"touch {tmp_path}/started{{}}; sleep {{}}; echo {{}}", ":::", "3", "60"])
    assert code == 1, err
    assert out == "3\n"
    assert "gridmap: warning: job 2 killed: 0 MiB available, under half of --memfree" in err
    rows = [line.split("\t") for line in log.read_text().splitlines()[1:]]
    assert [(r[0], r[6], r[7]) for r in rows] == [("1", "0", "0"), ("2", "0", "15")]


def test_load_holds_jobs_until_it_falls(monkeypatch, capfd):
    """Busy (5 processes, --load 2) for the first readings: no job starts
    until a reading says 0, then all run."""
    host = FakeHost([(10, 5), (10, 5), (10, 5), (10, 0)], "/proc/stat")
    code, out, err = run_in_process(monkeypatch, capfd, host,
                                    ["-k", "--load", "2", "echo", ":::", "a", "b"])
    assert (code, out, err) == (0, "a\nb\n", "")
    assert host.readings == [(10, 0)]


# -- GNU parallel's warnings -------------------------------------------------

def _fd_limit(n):
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def test_too_few_file_handles_warns_as_gnu_parallel():
    p = subprocess.run([GRIDMAP, "-j100", "echo", ":::", "a"], capture_output=True,
                       preexec_fn=_fd_limit(60), timeout=60)
    assert (p.returncode, p.stdout) == (0, b"a\n")
    assert p.stderr.startswith(b"gridmap: warning: Only enough file handles to run 5 jobs "
                               b"in parallel.\ngridmap: warning: Try increasing 'ulimit -n'")
    p = subprocess.run([GRIDMAP, "-j0", "echo", ":::", "a"], capture_output=True,
                       preexec_fn=_fd_limit(60), timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"a\n", b"")


NUL_WARNINGS = [b"A NUL character in the input was replaced with \\0.",
                b"NUL cannot be passed through in the argument list.",
                b"Did you mean to use the --null option?"]


@pytest.mark.parametrize("args,stdin,expected", [
    (["-k", "-j1", "echo"], b"a\0b\nc\0\nd\n", b"a\\0b\nc\\0\nd\n"),
    (["-k", "--tag", "echo", "{}", "x"], b"a\0b\n", b"a\\0b\ta\\0b x\n"),
])
def test_nul_in_input_becomes_backslash_zero_as_gnu_parallel(tmp_path, args, stdin, expected):
    """Recorded from GNU parallel 20221122 (twice), run from bash; its three
    warnings for each input holding a NUL.  Jobs run with bash here too:
    dash's echo, which a job from a Makefile would get, prints \\0 as a NUL,
    with GNU parallel as with gridmap."""
    p = run_gridmap(args, input=stdin, cwd=tmp_path,
                    env=dict(os.environ, PARALLEL_SHELL="/bin/bash"))
    assert (p.stdout, p.returncode) == (expected, 0)
    warned = b"".join(b"gridmap: warning: " + w + b"\n" for w in NUL_WARNINGS)
    assert p.stderr == warned * stdin.count(b"\0")
    theirs = run_parallel(args, input=stdin, env={"PARALLEL_SHELL": "/bin/bash"}, cwd=tmp_path)
    assert (theirs.stdout, theirs.returncode) == (expected, 0)
    assert [line[19:] for line in theirs.stderr.splitlines()
            if line.startswith(b"parallel: Warning: ")] == NUL_WARNINGS * stdin.count(b"\0")


def test_filter_hosts_leaves_out_a_host_that_cannot_be_reached(tmp_path):
    """--filter-hosts: a login whose ssh fails (a stand-in for an
    unreachable host) is left out, the jobs run on the one that starts
    (a stand-in ssh that runs the worker here); as without the option."""
    here = "sh -c 'exec sh -c \"$1\"'"
    dead = "sh -c 'echo \"ssh: connect to host $0: Connection refused\" >&2; exit 255'"
    for extra in ([], ["--filter-hosts"]):
        p = run_gridmap([*extra, "--ssh", dead, "-S", f"deadhost,1/{here} herehost", "-k",
                         "echo", ":::", "a", "b"], cwd=tmp_path)
        assert (p.stdout, p.returncode) == (b"a\nb\n", 0), p.stderr
        assert b"gridmap: ssh deadhost: ssh to deadhost failed" in p.stderr
