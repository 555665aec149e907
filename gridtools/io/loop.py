"""The one event loop: callbacks when a file descriptor is ready, timers on
the monotonic clock, signals through a wakeup fd.  The pool, the hub, the
worker and gridmcast all run on it; it is shipped with the worker.

Its methods are named and behave as asyncio's low-level loop API
(add_reader, call_later, add_signal_handler, run_forever, stop), so code
written for it also runs on an asyncio loop; the hub benchmark measures both
(bench/bench_loop.py).  Unlike asyncio's, an exception from a callback is not
swallowed: it leaves run_forever(), and the caller decides what one costs.

Nothing here polls: select() sleeps until the next timer or an event.
"""

import heapq
import itertools
import os
import selectors
import signal
import time

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


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
        self.sel = selectors.DefaultSelector()
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

    def _watch(self, fd, which, handler):
        """Set (or clear, with None) fd's reader (0) or writer (1)."""
        try:
            key = self.sel.get_key(fd)
        except (KeyError, ValueError):
            key = None
        if key is None:
            if handler is None:
                return False
            pair = [None, None]
            pair[which] = handler
            self.sel.register(fd, _READ if which == 0 else _WRITE, pair)
            return True
        pair = key.data
        had = pair[which] is not None
        pair[which] = handler
        events = (_READ if pair[0] else 0) | (_WRITE if pair[1] else 0)
        if not events:
            self.sel.unregister(fd)
        elif events != key.events:
            # modify() would make a new key with this same list: keep it,
            # so an event already selected sees the change.
            self.sel.modify(fd, events, pair)
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
        for key, mask in self.sel.select(timeout):
            # The list is the key's: a callback earlier in this batch that
            # removed this reader or writer left None there.
            pair = key.data
            if mask & _READ and pair[0] is not None:
                fn, args = pair[0]
                fn(*args)
            if mask & _WRITE and pair[1] is not None:
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
        """Give back the signals and the wakeup fd; the selector closes."""
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
        self.sel.close()


def _note_signal(signum, frame):
    """The Python-level handler: the wakeup fd already carries the number."""
