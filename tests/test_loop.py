"""The one event loop (gridtools/io/loop.py): fds, monotonic timers,
call_soon, signals through the wakeup fd, and stale events in one batch."""

import os
import signal
import socket

import pytest

from gridtools.io.loop import Loop


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


def test_reader_runs_with_its_args_and_removal_stops_it(loop):
    r, w = os.pipe()
    seen = []

    def on_read(tag):
        seen.append((tag, os.read(r, 10)))
        if len(seen) == 2:
            loop.remove_reader(r)
            loop.stop()

    loop.add_reader(r, on_read, "a")
    os.write(w, b"x")
    loop.run_once()
    os.write(w, b"y")
    loop.run_forever()
    assert seen == [("a", b"x"), ("a", b"y")]
    assert loop.remove_reader(r) is False
    os.close(r)
    os.close(w)


def test_reader_and_writer_on_one_fd_are_independent(loop):
    a, b = socket.socketpair()
    events = []
    loop.add_writer(a.fileno(), lambda: (events.append("w"), loop.remove_writer(a.fileno())))
    loop.add_reader(a.fileno(), lambda: events.append(a.recv(10)))
    loop.run_once()
    assert events == ["w"]
    b.send(b"hi")
    loop.run_once()
    assert events == ["w", b"hi"]
    assert loop.remove_reader(a.fileno()) is True
    a.close()
    b.close()


def test_a_callback_that_removes_another_reader_in_the_same_batch(loop):
    """Both pipes are ready in one select(); the first callback removes
    the second's reader, which must then not run."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    ran = []

    def first(me, other):
        ran.append(me)
        loop.remove_reader(other)

    loop.add_reader(r1, first, r1, r2)
    loop.add_reader(r2, first, r2, r1)
    os.write(w1, b"x")
    os.write(w2, b"x")
    loop.run_once()
    assert len(ran) == 1
    for fd in (r1, w1, r2, w2):
        os.close(fd)


def test_timers_run_in_time_order_and_cancel_withdraws(loop):
    out = []
    loop.call_later(0.03, out.append, "late")
    t = loop.call_later(0.01, out.append, "cancelled")
    loop.call_later(0.02, out.append, "early")
    loop.call_later(0.04, loop.stop)
    t.cancel()
    t0 = loop.time()
    loop.run_forever()
    assert out == ["early", "late"]
    assert loop.time() - t0 >= 0.04


def test_call_soon_runs_after_the_turn_and_not_before(loop):
    out = []
    loop.call_soon(out.append, 1)
    h = loop.call_soon(out.append, 2)
    h.cancel()
    assert out == []
    loop.run_once()
    assert out == [1]


def test_call_soon_from_a_soon_callback_waits_for_the_next_turn(loop):
    out = []

    def again():
        out.append("first")
        loop.call_soon(out.append, "second")

    loop.call_soon(again)
    loop.run_once()
    assert out == ["first"]
    loop.run_once()         # does not block: something is ready
    assert out == ["first", "second"]


def test_signals_arrive_as_callbacks_and_close_restores_them():
    lp = Loop()
    before = signal.getsignal(signal.SIGUSR1)
    got = []
    lp.add_signal_handler(signal.SIGUSR1, lambda: (got.append("usr1"), lp.stop()))
    os.kill(os.getpid(), signal.SIGUSR1)
    lp.run_forever()
    assert got == ["usr1"]
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_an_exception_in_a_callback_leaves_run_forever(loop):
    def boom():
        raise RuntimeError("boom")

    loop.call_soon(boom)
    with pytest.raises(RuntimeError):
        loop.run_forever()


def test_the_same_code_runs_on_an_asyncio_loop():
    """The method names are asyncio's, so the hub benchmark can measure
    both loops with one hub."""
    import asyncio
    r, w = os.pipe()
    for lp in (Loop(), asyncio.new_event_loop()):
        got = []
        lp.add_reader(r, lambda: (got.append(os.read(r, 5)), lp.remove_reader(r), lp.stop()))
        lp.call_later(0.01, os.write, w, b"ping")
        lp.run_forever()
        lp.close()
        assert got == [b"ping"]
    os.close(r)
    os.close(w)


def test_duties_keep_the_sooner_time_and_fire_once(loop):
    from gridtools.io.loop import Duties
    out = []
    d = Duties(loop)
    t0 = loop.time()
    d.arm("a", t0 + 0.05, lambda: out.append(("a", "late")))
    d.arm("a", t0 + 0.01, lambda: out.append(("a", "soon")))     # sooner: replaces
    d.arm("a", t0 + 0.03, lambda: out.append(("a", "later")))    # later: ignored
    d.arm("b", t0 + 0.02, lambda: out.append(("b",)))
    d.arm("c", t0 + 0.02, lambda: out.append(("c",)))
    d.disarm("c")
    assert "a" in d and "c" not in d
    loop.call_later(0.08, loop.stop)
    loop.run_forever()
    assert out == [("a", "soon"), ("b",)]
    assert "a" not in d and "b" not in d
    d.arm("x", loop.time() + 0.01, lambda: out.append(("x",)))
    d.clear()
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert out == [("a", "soon"), ("b",)]
