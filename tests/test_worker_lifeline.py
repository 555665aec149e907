"""A job must not outlive its worker: kill -9 a real worker and its jobs'
process groups go with it (runner.Lifeline), while a clean exit leaves
no watcher behind; SIGTERM, through the worker's loop, ends it at once."""

import os
import signal
import subprocess
import sys

from hubfixtures import grid, pids_alive, tool, wait_until  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gridtools.run import runner  # noqa: E402


def test_jobs_die_with_a_worker_killed_by_sigkill(grid):
    grid.start_hub()
    worker = grid.start_worker(slots=2)
    pidfile = os.path.join(grid.tmp, "pids")
    # Two jobs, each a shell with a background grandchild in its group.
    job = f"sleep 300 & echo $$ $! >> {pidfile}; wait; : {{}}"
    client = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "-j2", job],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    client.stdin.write(b"a\nb\n")
    client.stdin.close()
    assert wait_until(lambda: os.path.exists(pidfile)
                      and len(open(pidfile).read().split()) == 4, timeout=20)
    pids = [int(p) for p in open(pidfile).read().split()]
    assert len(pids_alive(pids)) == 4
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert wait_until(lambda: not pids_alive(pids), timeout=10), pids_alive(pids)
    client.kill()
    client.wait(10)


def test_a_clean_exit_leaves_no_watcher_and_kills_nothing_else():
    life = runner.Lifeline(4)
    child = runner.spawn(["sleep", "300"])
    life.started(child)
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    life.ended(child)            # named as ended: the watcher leaves it alone
    watcher = life.pid
    life.close()
    assert not pids_alive([watcher]) or open(f"/proc/{watcher}/stat").read().split()[2] == "Z"
    assert pids_alive([child.pid, other.pid]) == [child.pid, other.pid]
    child.kill(signal.SIGKILL)
    child.reap()
    other.kill()
    other.wait()


def test_the_watcher_kills_the_groups_still_named_when_the_pipe_closes():
    life = runner.Lifeline(4)
    child = runner.spawn(["sh", "-c", "sleep 300 & wait"])
    life.started(child)
    os.close(life.fd)            # as a SIGKILL of the runner would
    life.fd = None
    os.waitpid(life.pid, 0)
    assert wait_until(lambda: os.waitpid(child.pid, os.WNOHANG)[0] == child.pid, timeout=10)


def test_sigterm_ends_a_worker_and_its_jobs(grid):
    """SIGTERM reaches the worker through its loop: it kills its jobs'
    groups and exits 0."""
    grid.start_hub()
    worker = grid.start_worker(slots=1)
    pidfile = os.path.join(grid.tmp, "pids")
    client = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr,
                               f"sleep 300 & echo $$ $! >> {pidfile}; wait; : {{}}"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    client.stdin.write(b"a\n")
    client.stdin.close()
    assert wait_until(lambda: os.path.exists(pidfile)
                      and len(open(pidfile).read().split()) == 2, timeout=20)
    pids = [int(p) for p in open(pidfile).read().split()]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert wait_until(lambda: not pids_alive(pids), timeout=10), pids_alive(pids)
    client.kill()
    client.wait(10)


def test_sigterm_ends_a_worker_waiting_to_reconnect_at_once(tmp_path):
    import socket
    import time
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))            # a port nobody listens on
    port = spare.getsockname()[1]
    log = tmp_path / "log"
    with open(log, "wb") as f:
        p = subprocess.Popen([*tool("gridd"), "worker", "--connect", f"127.0.0.1:{port}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f)
    try:
        # Six refusals: the wait under way is at least 2.5 s long.
        assert wait_until(lambda: log.read_bytes().count(b"retrying") >= 6, timeout=20)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert time.monotonic() - t0 < 2.0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        spare.close()
