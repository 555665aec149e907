"""The one child relay (gridtools/run/relay.py) with real children on a real
loop: output, stdin, exit, pause/resume, early-closed pipes, grandchildren."""

import os
import signal
import tempfile
import time

import pytest

from gridtools.io.loop import Loop
from gridtools.run import runner
from gridtools.run.relay import Relay


class Run:
    """One child relayed on a fresh loop, with what it reported."""

    def __init__(self, argv, stdin=False, **kw):
        self.loop = Loop()
        self.out = {1: bytearray(), 2: bytearray()}
        self.status = []
        self.taken = 0
        self.child = runner.spawn(argv, stdin=runner.PIPE if stdin else None)
        self.relay = Relay(self.loop, self.child, self.output, self.done, taken=self.took,
                           **kw)

    def output(self, fd_no, data):
        self.out[fd_no] += data

    def done(self, code, sig):
        self.status.append((code, sig))
        self.loop.stop()

    def took(self, n):
        self.taken += n

    def wait(self, timeout=20):
        t = self.loop.call_later(timeout, self.loop.stop)
        self.loop.run_forever()
        t.cancel()
        assert self.status, "the relay did not finish in time"
        return self.status[0]

    def close(self):
        self.loop.close()


@pytest.fixture
def runs():
    made = []

    def make(*a, **kw):
        r = Run(*a, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.relay.abandon()
        r.close()


def test_output_of_both_pipes_and_the_exit_status(runs):
    r = runs(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r.wait() == (3, None)
    assert (bytes(r.out[1]), bytes(r.out[2])) == (b"out\n", b"err\n")
    assert r.child.stdout is None and r.child.stderr is None and r.child.pidfd == -1


def test_a_signal_death_and_kill_reaches_the_group(runs):
    r = runs(["sh", "-c", "sleep 30 & wait"])
    r.loop.call_later(0.1, r.relay.kill, signal.SIGTERM)
    assert r.wait() == (None, signal.SIGTERM)


def test_done_is_reported_exactly_once(runs):
    r = runs(["true"])
    r.wait()
    # More turns: nothing left to report, nothing registered.
    r.loop.call_later(0.05, r.loop.stop)
    r.loop.run_forever()
    assert r.status == [(0, None)]
    assert not r.loop.watching()


def test_yes_into_head_ends(runs):
    r = runs(["sh", "-c", "yes | head -n 3"])
    assert r.wait() == (0, None)
    assert bytes(r.out[1]) == b"y\ny\ny\n"


def test_a_child_that_closes_stdout_early(runs):
    r = runs(["sh", "-c", "exec >&-; sleep 0.2; echo late >&2"])
    assert r.wait() == (0, None)
    assert bytes(r.out[2]) == b"late\n" and not r.out[1]


def test_a_grandchild_holding_the_pipes_does_not_hold_the_job(runs):
    r = runs(["sh", "-c", "echo before; sleep 30 & echo after"])
    t0 = time.monotonic()
    assert r.wait() == (0, None)
    assert time.monotonic() - t0 < 10
    assert bytes(r.out[1]) == b"before\nafter\n"
    os.killpg(r.child.pid, signal.SIGKILL)


def test_big_stdin_through_cat(runs):
    r = runs(["cat"], stdin=True)
    blocks = [os.urandom(1 << 20) for _ in range(5)]
    for b in blocks:
        r.relay.feed(b)
    assert r.relay.pending_input() > 0           # the pipe holds far less than 5 MiB
    r.relay.end_input()
    assert r.wait() == (0, None)
    assert bytes(r.out[1]) == b"".join(blocks)
    assert r.taken == r.relay.written == 5 << 20 and r.relay.pending_input() == 0


def test_stdin_from_a_file_range_is_spliced(runs):
    with tempfile.TemporaryFile() as f:
        f.write(b"skip" + b"x" * 200000 + b"tail")
        f.flush()

        class Range:
            def __init__(self, fd, offset, length):
                self.fd, self.offset, self.length = fd, offset, length

            def __len__(self):
                return self.length

        r = runs(["cat"], stdin=True)
        r.relay.feed(Range(f.fileno(), 4, 200000))
        r.relay.feed(b"!")
        r.relay.end_input()
        assert r.wait() == (0, None)
    assert bytes(r.out[1]) == b"x" * 200000 + b"!"


def test_input_the_child_refuses_is_dropped_and_counted(runs):
    r = runs(["sh", "-c", "exec 0<&-; sleep 0.2; echo ok"], stdin=True)
    r.relay.feed(b"z" * (4 << 20))
    r.relay.end_input()
    assert r.wait() == (0, None)
    assert bytes(r.out[1]) == b"ok\n" and r.taken == 4 << 20


def test_feed_after_end_input_is_dropped(runs):
    r = runs(["cat"], stdin=True)
    r.relay.feed(b"a")
    r.relay.end_input()
    r.relay.feed(b"b")
    assert r.wait() == (0, None)
    assert bytes(r.out[1]) == b"a"


def test_pause_stops_reading_and_resume_finishes(runs):
    r = runs(["sh", "-c", "head -c 1000000 /dev/zero"])
    seen = []

    def output(fd_no, data):
        r.out[fd_no] += data
        if not seen:
            seen.append(len(r.out[1]))
            r.relay.pause_reading()
            r.loop.call_later(0.5, r.loop.stop)

    r.relay.output = output
    r.loop.run_forever()
    # Paused: nothing more read, and the child, blocked on a full pipe,
    # has not exited (or has, and its output waits in the pipe).
    assert len(r.out[1]) == seen[0] and not r.status
    r.relay.resume_reading()
    assert r.wait() == (0, None)
    assert len(r.out[1]) == 1000000


def test_paused_when_the_child_exits_finishes_after_resume(runs):
    r = runs(["sh", "-c", "echo one; echo two >&2"])
    r.relay.pause_reading()
    r.loop.call_later(0.5, r.loop.stop)
    r.loop.run_forever()
    assert r.relay.status == (0, None) and not r.status and not r.out[1]
    r.relay.resume_reading()
    assert r.status == [(0, None)]
    assert (bytes(r.out[1]), bytes(r.out[2])) == (b"one\n", b"two\n")


def test_lifeline_is_told_before_the_reap(runs):
    told = []

    class Line:
        def ended(self, child):
            # Not reaped yet: the pid is still a zombie, so it is not reused.
            told.append(os.path.exists(f"/proc/{child.pid}"))

    r = runs(["true"], lifeline=Line())
    assert r.wait() == (0, None)
    assert told == [True]


def test_abandon_kills_reaps_and_closes(runs):
    r = runs(["sh", "-c", "sleep 30 & sleep 30"], stdin=True)
    r.relay.feed(b"x")
    r.relay.abandon()
    assert r.child.pidfd == -1 and r.child.stdin is None
    assert r.child.stdout is None and r.child.stderr is None
    assert not r.loop.watching() and not r.status
