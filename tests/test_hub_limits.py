"""Per-client limits of a real hub: session jobs per client (the client is
paused, not refused), memory given back when a client leaves with queued
jobs, and the stall timeout of a client that reads nothing while its jobs
hold slots."""

import subprocess

from hubfixtures import grid, raw_client, tool, wait_until  # noqa: F401

from gridtools.hub import sched
from gridtools.proto import wire


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def run_lines(n, command=b"true", first=0):
    return b"".join(wire.format("RUN", str(i), body=command) for i in range(first, first + n))


def read_messages(f, count, verb="DONE"):
    """Read until count messages of verb arrived; all messages seen."""
    seen = []
    reader = wire.Reader()
    got = 0
    while got < count:
        data = f.read1(1 << 16)
        assert data, f"hub closed after {got} {verb}s"
        reader.feed(data)
        for msg in reader:
            seen.append(msg)
            got += msg.verb == verb
    return seen


def test_a_client_past_max_jobs_is_paused_then_served(grid):
    grid.start_hub("--max-jobs", "5")
    s, f = raw_client(grid.addr)
    s.sendall(run_lines(20))
    # With no worker, the hub takes 5 jobs and reads the client no further.
    status = grid.wait_for(lambda st: st["queued"] >= 5, "status")
    assert status["queued"] == 5, status
    # Still 5 a moment later: not refused, not read.
    assert not wait_until(lambda: grid.ctl("status")["queued"] != 5, timeout=0.5)
    grid.start_worker(slots=2)
    done = [m for m in read_messages(f, 20) if m.verb == "DONE"]
    assert sorted(int(m.arg(0)) for m in done) == list(range(20))
    assert all(m.get("exit") == "0" for m in done)
    s.close()


def test_a_client_that_leaves_gives_its_queued_jobs_memory_back(grid):
    grid.start_hub("--max-jobs", "100000")
    hub_pid = grid.hub.pid
    base = rss_kb(hub_pid)
    peaks, after = [], []
    for round_ in range(3):
        s, f = raw_client(grid.addr)
        s.sendall(run_lines(30000, b"echo " + b"x" * 200))
        grid.wait_for(lambda st: st["queued"] == 30000, "status", timeout=60)
        peaks.append(rss_kb(hub_pid))
        f.close()
        s.close()
        grid.wait_for(lambda st: st["queued"] == 0 and st["clients"] == 1, "status")
        after.append(rss_kb(hub_pid))
    # Kept, each round would add what one round holds; reused, the later
    # rounds add little.  Judged against one round's own footprint.
    held = peaks[0] - base
    assert held > 5000, (base, peaks)
    assert after[2] - after[0] < held // 2, (base, peaks, after)


def test_compact_sweeps_cancelled_jobs_out_of_the_queues():
    s = sched.Scheduler()
    jobs = [sched.Job(i, b"true") for i in range(sched.COMPACT_AFTER + 10)]
    for job in jobs:
        s.submit(job)
    for job in jobs[:-1]:
        s.dequeue(job)
    assert sum(len(q) for q in s.queues.values()) < 20
    assert s.waiting() == 1


def test_a_client_that_reads_nothing_loses_its_jobs_after_the_stall_timeout(grid):
    grid.start_hub("--stall-timeout", "1", "--heartbeat", "1")
    worker = grid.start_worker(slots=1)
    s, f = raw_client(grid.addr)
    # Output far past every buffer on the way, then a job still queued.
    s.sendall(run_lines(1, b"yes") + run_lines(1, b"true", first=1))
    # The slot comes free: another client's job runs to the end.
    r = subprocess.run([*tool("gridmap"), "--hub", grid.addr, "echo", "{}"], input=b"ok\n",
                       capture_output=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, b"ok\n"), r.stderr
    log = open(grid.hub.logpath).read()
    assert "read nothing for" in log, log
    assert worker.poll() is None
    # Should it read again, both jobs ended once, cancelled, and it says why.
    s.settimeout(30)
    done = [m for m in read_messages(f, 2) if m.verb == "DONE"]
    assert sorted(m.arg(0) for m in done) == ["0", "1"]
    assert {(m.get("outcome"), m.get("reason")) for m in done} == {("cancelled", "stalled")}
    s.close()
    assert grid.ctl("status")["running"] == 0



def test_jobs_no_worker_can_take_are_said_on_stderr_and_in_ctl_jobs(grid):
    grid.start_hub()
    grid.start_worker(slots=1, name="plain")
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--require", "site=lab9",
                          "echo", "{}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(b"a\nb\n")
    p.stdin.close()
    p.stdin = None
    # gridmap keeps as many jobs at the hub as the grid has slots: one.
    jobs = grid.wait_for(lambda rows: len(rows) == 1, "jobs")
    assert {j["why"] for j in jobs} == {"no connected worker is tagged site=lab9"}, jobs
    r = subprocess.run([*tool("gridd"), "ctl", "--hub", grid.addr, "jobs"],
                       capture_output=True, timeout=30)
    assert b"no connected worker is tagged site=lab9" in r.stdout, r.stdout
    # After a few seconds the client hears why, once; a worker with the
    # tag then takes the jobs and the run ends well.
    line = p.stderr.readline()
    assert line.startswith(b"gridmap: warning: 1 job waits: no connected worker is tagged "
                           b"site=lab9 (job 1: echo a)"), line
    grid.start_worker("--tag", "site=lab9", slots=1, name="lab9")
    out, err = p.communicate(timeout=60)
    assert (p.returncode, sorted(out.split())) == (0, [b"a", b"b"]), err
    assert b"wait:" not in err
