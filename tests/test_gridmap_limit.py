"""gridmap --limit: GNU parallel's dynamic job limit, with real limit
scripts (exit 0: start a job; 1: start none; 2: kill the youngest), run
beside GNU parallel 20221122 where the outcome can be compared, and GNU's
built-in forms (mem, load, io) read from /proc.

Nothing here waits a fixed time: the tests wait for files the jobs and
the limit scripts write.
"""

import os
import signal
import subprocess
import time

import pytest

from conftest import GRIDMAP, run_gridmap
from gridtools.local import limit


def wait_for(cond, what, proc, timeout=60):
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read()!r}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no {what}")
        time.sleep(0.02)


def script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def tools():
    out = [[GRIDMAP]]
    if subprocess.run(["sh", "-c", "command -v parallel"], capture_output=True).returncode == 0:
        out.append(["parallel"])
    return out


@pytest.mark.parametrize("tool", tools(), ids=lambda t: os.path.basename(t[0]))
def test_over_the_limit_until_a_file_exists(tmp_path, tool):
    """1 holds every job back, however often it is asked; 0 lets them
    run.  The script sees SSHLOGIN=: as under GNU parallel."""
    calls = tmp_path / "calls"
    lim = script(tmp_path / "lim", f'echo "$SSHLOGIN" >> {calls}\n'
                                   f'test -e {tmp_path}/open || exit 1\n')
    proc = subprocess.Popen(tool + ["--limit", lim, "-k", "-j2",
                                    f"echo {{}}; touch {tmp_path}/ran.{{}}", ":::", "a", "b", "c"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: calls.exists() and len(calls.read_text().splitlines()) >= 3,
             "third call of the limit", proc)
    assert not list(tmp_path.glob("ran.*"))
    (tmp_path / "open").touch()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, b"a\nb\nc\n"), err
    assert set(calls.read_text().splitlines()) == {":"}


@pytest.mark.parametrize("tool", tools(), ids=lambda t: os.path.basename(t[0]))
def test_two_kills_the_youngest_job(tmp_path, tool):
    """Once both jobs run, the limit says 2 once: job 2, the youngest, is
    sent SIGTERM and fails; job 3 then runs; the exit status counts one
    failure."""
    d = tmp_path
    lim = script(d / "lim", f"if [ -e {d}/go ] && [ ! -e {d}/killed ]; then\n"
                            f"  touch {d}/killed; exit 2\nfi\nexit 0\n")
    job = (f"touch {d}/started.{{}}; echo {{}}; "
           f"while [ ! -e {d}/release ]; do sleep 0.05; done")
    log = d / "log"
    proc = subprocess.Popen(tool + ["--limit", lim, "-j2", "-k", "--joblog", str(log),
                                    job, ":::", "1", "2", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: (d / "started.1").exists() and (d / "started.2").exists(),
             "two jobs started", proc)
    (d / "go").touch()
    wait_for(lambda: (d / "killed").exists(), "the limit's 2", proc)
    wait_for(lambda: (d / "started.3").exists(), "job 3 after the kill", proc)
    (d / "release").touch()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (1, b"1\n2\n3\n"), err
    rows = {line.split("\t")[0]: line.split("\t")[7]
            for line in log.read_text().splitlines()[1:]}
    term = str(int(signal.SIGTERM))
    if tool == [GRIDMAP]:
        assert rows == {"1": "0", "2": term, "3": "0"}
        assert err.decode().startswith("gridmap: warning: job 2 killed: --limit is way over")
    else:
        # GNU parallel asks once per running job, youngest first, and
        # kills the job it was asking about when the answer is 2: the
        # answer may turn between its questions, and job 1 go instead.
        assert sorted(rows.values()) == ["0", "0", term] and rows["3"] == "0"


def test_builtins_run_every_job():
    """mem and load well under what the host has: every job runs; io 100
    (no disk is over 100% busy) after its first reading, a second apart."""
    for form in ("mem 1k", "load 1000000", "io 100"):
        p = run_gridmap(["-k", "--limit", form, "echo", ":::", "a", "b"])
        assert (p.returncode, p.stdout, p.stderr) == (0, b"a\nb\n", b""), form


@pytest.mark.parametrize("form,why", [
    ("", b"--limit: need a command"),
    ("mem lots", b"--limit: mem: not a size"),
    ("load x", b"--limit: load: not a number"),
    ("io 1 2", b"--limit: io takes one number"),
])
def test_bad_forms_are_usage_errors(form, why):
    p = run_gridmap(["--limit", form, "echo", ":::", "a"])
    assert p.returncode == 64 and why in p.stderr, p.stderr


def test_verdicts_from_proc_texts():
    meminfo = ("MemTotal: 9000 kB\nMemFree: 100 kB\nMemAvailable: 5000 kB\n"
               "Buffers: 20 kB\nCached: 300 kB\nSwapCached: 0 kB\n")
    free = 420 * 1024               # MemFree+Buffers+Cached+SwapCached, as GNU adds
    assert limit.mem_verdict(meminfo, free) == 0
    assert limit.mem_verdict(meminfo, free + 1) == 1
    assert limit.mem_verdict(meminfo, 2 * free + 1) == 2
    stat = "cpu 1 2\nprocs_running 4\nprocs_blocked 1\n"
    assert limit.load_verdict(stat, 4) == 0 and limit.load_verdict(stat, 3) == 1
    disks = "   8       0 sda 1 2 3 4 5 6 7 8 0 %d 11\n"
    before, after = limit.io_ticks(disks % 100), limit.io_ticks(disks % 600)
    assert before == {"sda": 100}
    assert limit.io_verdict(None, after, 1.0, 50) == 1       # nothing to compare yet
    assert limit.io_verdict(before, after, 1.0, 50) == 0     # 50% busy is not over 50
    assert limit.io_verdict(before, after, 1.0, 49) == 1
    assert limit.parse("mem 1k") == ("mem", 1024)
    assert limit.parse("sh -c 'exit 1'") == ("command", "sh -c 'exit 1'")
    with pytest.raises(Exception):
        limit.parse("load ²")
