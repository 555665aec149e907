"""The one event loop: callbacks when a file descriptor is ready, timers on
the monotonic clock, signals through a wakeup fd.  The pool, the hub, the
worker and gridmcast all run on it; it is shipped with the worker.

Its methods are named and behave as asyncio's low-level loop API
(add_reader, call_later, add_signal_handler, run_forever, stop), so code
written for it also runs on an asyncio loop; the hub benchmark measures both
(bench/bench_loop.py).  Unlike asyncio's, an exception from a callback is not
swallowed: it leaves run_forever(), and the caller decides what one costs.

Nothing here polls: epoll sleeps until the next timer or an event.  It is
epoll itself, not the selectors module over it: the pool adds and removes
six watches a job, and selectors' key lookups cost it 10% of its CPU.
"""

import heapq
import itertools
import math
import os
import select
import signal
import time

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
# An error or hang-up wakes both sides, as selectors reports them.
_READABLE, _WRITABLE = ~_OUT, ~_IN


class Timer:
    """A callback due at a time on the loop's clock; cancel() withdraws it."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when, fn, args):
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class Loop:
    """select() over fds, a heap of timers and a queue of callbacks to run
    soon.  One turn: wait for I/O (no longer than the next timer), run the
    ready fds' callbacks, the timers that came due, then the callbacks that
    were queued with call_soon() before the turn's end."""

    def __init__(self):
        self.epoll = select.epoll()
        self.fds = {}                   # fd -> [reader, writer]: (fn, args) or None
        self.timers = []                # heap of (when, seq, Timer)
        self.seq = itertools.count()
        self.ready = []                 # Timers queued by call_soon
        self.stopping = False
        self.signals = {}               # signum -> (fn, args)
        self.old_handlers = {}          # signum -> what was there before
        self.wake = None                # (read fd, write fd, previous wakeup fd)

    time = staticmethod(time.monotonic)

    # -- file descriptors ---------------------------------------------------

    def add_reader(self, fd, fn, *args):
        self._watch(fd, 0, (fn, args))

    def add_writer(self, fd, fn, *args):
        self._watch(fd, 1, (fn, args))

    def remove_reader(self, fd):
        return self._watch(fd, 0, None)

    def remove_writer(self, fd):
        return self._watch(fd, 1, None)

    def watching(self):
        """How many fds are watched (0: nothing left on the loop)."""
        return len(self.fds)

    def _watch(self, fd, which, handler):
        """Set (or clear, with None) fd's reader (0) or writer (1)."""
        if type(fd) is not int:
            fd = fd.fileno()
        pair = self.fds.get(fd)
        if pair is None:
            if handler is None:
                return False
            pair = self.fds[fd] = [None, None]
            pair[which] = handler
            self.epoll.register(fd, _IN if which == 0 else _OUT)
            return True
        had = pair[which] is not None
        if had == (handler is not None):
            pair[which] = handler           # a new callback, the same events
            return had
        pair[which] = handler
        events = (_IN if pair[0] else 0) | (_OUT if pair[1] else 0)
        if events:
            self.epoll.modify(fd, events)
        else:
            # A new list if fd is watched again: an event already polled
            # for this one finds it empty.
            del self.fds[fd]
            self.epoll.unregister(fd)
        return had

    # -- time -----------------------------------------------------------------

    def call_at(self, when, fn, *args):
        t = Timer(when, fn, args)
        heapq.heappush(self.timers, (when, next(self.seq), t))
        return t

    def call_later(self, delay, fn, *args):
        return self.call_at(time.monotonic() + delay, fn, *args)

    def call_soon(self, fn, *args):
        t = Timer(0.0, fn, args)
        self.ready.append(t)
        return t

    # -- signals --------------------------------------------------------------

    def add_signal_handler(self, signum, fn, *args):
        """fn(*args) runs in the loop after signum arrives.  ValueError
        outside the main thread (as signal.signal raises)."""
        if self.wake is None:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                previous = signal.set_wakeup_fd(w)
            except ValueError:
                os.close(r)
                os.close(w)
                raise
            self.wake = (r, w, previous)
            self.add_reader(r, self._on_wakeup)
        if signum not in self.old_handlers:
            self.old_handlers[signum] = signal.signal(signum, _note_signal)
        self.signals[signum] = (fn, args)

    def remove_signal_handler(self, signum):
        self.signals.pop(signum, None)
        if signum in self.old_handlers:
            signal.signal(signum, self.old_handlers.pop(signum))
            return True
        return False

    def _on_wakeup(self):
        try:
            data = os.read(self.wake[0], 512)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            handler = self.signals.get(signum)
            if handler is not None:
                handler[0](*handler[1])

    # -- running --------------------------------------------------------------

    def stop(self):
        """run_forever() returns at the end of this turn."""
        self.stopping = True

    def run_forever(self):
        self.stopping = False
        while not self.stopping:
            self.run_once()

    def run_once(self):
        timers = self.timers
        if self.ready:
            timeout = 0
        elif timers:
            while timers and timers[0][2].cancelled:
                heapq.heappop(timers)
            timeout = max(0.0, timers[0][0] - time.monotonic()) if timers else None
        else:
            timeout = None
        if timeout is None:
            timeout = -1
        elif timeout > 0:
            timeout = math.ceil(timeout * 1e3) * 1e-3     # epoll counts whole ms
        try:
            events = self.epoll.poll(timeout)
        except InterruptedError:
            events = ()
        if events:
            # The lists as they are now: a callback earlier in this batch
            # that removes a reader or writer leaves None in its list.
            fds = self.fds
            for pair, ev in [(fds.get(fd), ev) for fd, ev in events]:
                if pair is None:
                    continue
                if ev & _READABLE and pair[0] is not None:
                    fn, args = pair[0]
                    fn(*args)
                if ev & _WRITABLE and pair[1] is not None:
                    fn, args = pair[1]
                    fn(*args)
        if timers:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                t = heapq.heappop(timers)[2]
                if not t.cancelled:
                    t.cancelled = True          # it ran; cancel() is a no-op now
                    t.fn(*t.args)
        if self.ready:
            ready, self.ready = self.ready, []
            for t in ready:
                if not t.cancelled:
                    t.fn(*t.args)

    def close(self):
        """Give back the signals and the wakeup fd; epoll closes."""
        for signum in list(self.old_handlers):
            self.remove_signal_handler(signum)
        if self.wake is not None:
            r, w, previous = self.wake
            self.wake = None
            try:
                signal.set_wakeup_fd(previous)
            except ValueError:
                pass
            self.remove_reader(r)
            os.close(r)
            os.close(w)
        self.fds.clear()
        self.epoll.close()


class Duties:
    """Named one-shot timers on a loop: each duty is armed at most once,
    for the sooner of the times asked (`duty in duties` while armed)."""

    def __init__(self, loop):
        self.loop = loop
        self.armed = {}             # duty -> its Timer

    def __contains__(self, duty):
        return duty in self.armed

    def arm(self, duty, when, fn):
        """fn() at `when`, unless duty is armed for then or sooner."""
        t = self.armed.get(duty)
        if t is not None:
            if t.when <= when:
                return
            t.cancel()
        self.armed[duty] = self.loop.call_at(when, self._fire, duty, fn)

    def _fire(self, duty, fn):
        del self.armed[duty]
        fn()

    def disarm(self, duty):
        t = self.armed.pop(duty, None)
        if t is not None:
            t.cancel()

    def clear(self):
        for t in self.armed.values():
            t.cancel()
        self.armed.clear()


def _note_signal(signum, frame):
    """The Python-level handler: the wakeup fd already carries the number."""
