"""gridmap's stdout and stderr, written from the event loop without blocking
it: what a full pipe or terminal cannot take now waits in a queue and is
written as the reader drains it, so --timeout, --halt and signals are acted
on meanwhile.

A pipe or terminal is written through a private non-blocking open of the
same file (/proc/self/fd/N): setting O_NONBLOCK on the descriptor we were
given would change it for every process sharing it (the shell, a `tee`).
Regular files never block for long and are written directly; so is anything
that cannot be reopened (a socket), as before.
"""

import collections
import os
import select
import stat


def write_all(fd, data):
    """Write every byte, waiting when fd is non-blocking and full (for the
    few writes made with no loop running)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def reopen_nonblocking(fd):
    """A private non-blocking descriptor for the pipe or terminal fd, or
    None when fd is a regular file or cannot be reopened."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        return None
    try:
        twin = os.open(f"/proc/self/fd/{fd}",
                       os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    t = os.fstat(twin)
    if (t.st_dev, t.st_ino) != (st.st_dev, st.st_ino):
        os.close(twin)
        return None
    return twin


class Writer:
    """One output fd.  write() and write_pieces() keep the order of
    everything written; pieces are pulled from their iterator only when the
    fd can take them, so a spilled job's output is read from disk as it is
    written, never gathered in memory."""

    def __init__(self, fd):
        self.fd = fd
        self.loop = None
        self.on_drain = None
        self.twin = None            # the private non-blocking fd, once attached
        self.queue = collections.deque()    # iterators of bytes
        self.current = memoryview(b"")
        self.watching = False

    def attach(self, loop, on_drain):
        """Write from loop from now on; on_drain() runs when the queue
        empties after having waited."""
        self.twin = reopen_nonblocking(self.fd)
        if self.twin is not None:
            self.loop = loop
            self.on_drain = on_drain

    def pending(self):
        """Writes waiting for the fd (0: everything was written)."""
        return len(self.queue) + (1 if self.current else 0)

    def write(self, data):
        if data:
            self.write_pieces((data,))

    def write_pieces(self, pieces):
        if self.loop is None:
            for piece in pieces:
                write_all(self.fd, piece)
            return
        self.queue.append(iter(pieces))
        if not self.watching:
            self._pump()

    def _pump(self):
        fd = self.twin
        try:
            while True:
                if not self.current:
                    piece = self._next()
                    if piece is None:
                        break
                    self.current = memoryview(piece)
                    continue
                self.current = self.current[os.write(fd, self.current):]
        except BlockingIOError:
            if not self.watching:
                self.watching = True
                self.loop.add_writer(fd, self._pump)
            return
        if self.watching:
            self.watching = False
            self.loop.remove_writer(fd)
            self.on_drain()

    def _next(self):
        while self.queue:
            piece = next(self.queue[0], None)
            if piece is None:
                self.queue.popleft()
            elif piece:
                return piece
        return None

    def flush(self):
        """Write what waits, blocking (at the end, with the loop gone)."""
        if self.current:
            write_all(self.fd, self.current)
            self.current = memoryview(b"")
        while True:
            piece = self._next()
            if piece is None:
                break
            write_all(self.fd, piece)

    def drop(self):
        """Forget what waits (the run was stopped and nobody reads)."""
        for it in self.queue:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        self.queue.clear()
        self.current = memoryview(b"")

    def close(self):
        if self.loop is not None and self.watching:
            self.loop.remove_writer(self.twin)
            self.watching = False
        if self.twin is not None:
            os.close(self.twin)
            self.twin = None
        self.loop = None
