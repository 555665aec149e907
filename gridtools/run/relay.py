"""One child's pipes and exit on the event loop: stdin blocks written as the
pipe takes them, stdout and stderr read and handed on, the exit noticed
through the pidfd, and one report once the child has exited and both pipes
are done.  The worker and gridmap's local pool both run their jobs through
it; it knows no protocol.  Shipped with the worker: stdlib only.
"""

import collections
import os
import signal

READ_SIZE = 1 << 16
SPLICE_F_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)
_BYTES = (bytes, bytearray, memoryview)


class Relay:
    """Relays a runner.Child on a Loop.

    output(fd_no, data) gets what the child writes on fd 1 or 2;
    done(exitcode, signal) is called exactly once, after the child exited and
    both its pipes reached EOF (or, once it exited, ran dry: a background
    grandchild holding them open must not hold the job up).  taken(n), if
    given, hears how many queued stdin bytes each write consumed, counting
    those dropped because the child closed its stdin.  lifeline, if given,
    is told before the child is reaped.

    A stdin block is bytes-like, or an object with fd, offset and length
    (and len()) whose byte range is spliced from that file into the pipe
    without a copy through Python.
    """

    __slots__ = ("loop", "child", "output", "done", "taken", "lifeline", "status",
                 "reading", "inq", "inpos", "input_done", "writing", "written", "over")

    def __init__(self, loop, child, output, done, taken=None, lifeline=None):
        self.loop = loop
        self.child = child
        self.output = output
        self.done = done
        self.taken = taken
        self.lifeline = lifeline
        self.status = None              # (exitcode, signal) once reaped
        self.reading = True
        self.inq = collections.deque()
        self.inpos = 0                  # bytes of inq[0] already written
        self.input_done = False
        self.writing = False            # waiting for stdin to be writable
        self.written = 0                # stdin bytes the child has taken
        self.over = False
        for fd_no, fd in ((1, child.stdout), (2, child.stderr)):
            if fd is not None:
                loop.add_reader(fd, self._readable, fd_no)
        loop.add_reader(child.pidfd, self._exited)

    # -- stdin ----------------------------------------------------------------

    def feed(self, block):
        """Queue a block for the child's stdin (dropped if it is closed)."""
        if self.child.stdin is None or self.input_done:
            return
        self.inq.append(block)
        if not self.writing:
            self._write()

    def end_input(self):
        """No more stdin after what is queued: the pipe closes once it is out."""
        self.input_done = True
        if not self.inq:
            self._close_stdin()

    def pending_input(self):
        """Bytes queued for stdin and not yet written."""
        return sum(len(b) for b in self.inq) - self.inpos if self.inq else 0

    def _write(self):
        """Write what the pipe takes now; wait for writability for the rest.
        Tried at once rather than after a wait: a block that fits the pipe
        costs one write and no selector calls."""
        fd = self.child.stdin
        if fd is None:
            return
        inq = self.inq
        taken = 0
        try:
            while inq:
                block = inq[0]
                if isinstance(block, _BYTES):
                    n = os.write(fd, memoryview(block)[self.inpos:])
                else:
                    # splice moves page-cache pages into the pipe; n == 0:
                    # the file ended early (it shrank under us), and what
                    # is missing will never come.
                    n = os.splice(block.fd, fd, block.length - self.inpos,
                                  offset_src=block.offset + self.inpos,
                                  flags=SPLICE_F_NONBLOCK)
                    if n == 0:
                        taken += block.length - self.inpos
                        inq.popleft()
                        self.inpos = 0
                        continue
                self.inpos += n
                taken += n
                self.written += n
                if self.inpos >= len(block):
                    inq.popleft()
                    self.inpos = 0
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            # The child stopped reading; what it did not take is not ours to
            # force on it, and its exit status tells the story.
            taken += self.pending_input()
            inq.clear()
            self.inpos = 0
            self.input_done = True
        if inq:
            if not self.writing:
                self.writing = True
                self.loop.add_writer(fd, self._write)
        elif self.input_done:
            self._close_stdin()
        elif self.writing:
            self.writing = False
            self.loop.remove_writer(fd)
        if taken and self.taken is not None:
            self.taken(taken)

    def _close_stdin(self):
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.child.stdin)
        self.child.close_stdin()

    # -- stdout and stderr ----------------------------------------------------

    def pause_reading(self):
        """Stop reading stdout and stderr: the child blocks once they fill."""
        if self.reading:
            self.reading = False
            for fd in (self.child.stdout, self.child.stderr):
                if fd is not None:
                    self.loop.remove_reader(fd)

    def resume_reading(self):
        if self.reading or self.over:
            return
        self.reading = True
        if self.status is not None:
            self._drain()           # it exited meanwhile: take what is left, finish
            return
        for fd_no, fd in ((1, self.child.stdout), (2, self.child.stderr)):
            if fd is not None:
                self.loop.add_reader(fd, self._readable, fd_no)

    def _readable(self, fd_no):
        fd = self.child.stdout if fd_no == 1 else self.child.stderr
        if fd is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if data:
            self.output(fd_no, data)
            return
        self._close_out(fd_no)
        self._maybe_done()

    def _close_out(self, fd_no):
        child = self.child
        fd = child.stdout if fd_no == 1 else child.stderr
        if fd is None:
            return
        if self.reading:
            self.loop.remove_reader(fd)
        os.close(fd)
        if fd_no == 1:
            child.stdout = None
        else:
            child.stderr = None

    # -- the exit -------------------------------------------------------------

    def _exited(self):
        child = self.child
        self.loop.remove_reader(child.pidfd)
        if self.lifeline is not None:
            self.lifeline.ended(child)
        self.status = child.reap()
        if self.reading:
            self._drain()

    def _drain(self):
        """After the exit: what the child wrote is in the pipes; read it up
        to EOF or until the pipe is empty, then close (unless paused)."""
        child = self.child
        for fd_no in (1, 2):
            fd = child.stdout if fd_no == 1 else child.stderr
            while fd is not None and self.reading:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.output(fd_no, data)
            if self.reading:
                self._close_out(fd_no)
        self._maybe_done()

    def _maybe_done(self):
        child = self.child
        if self.status is None or child.stdout is not None or child.stderr is not None \
                or self.over:
            return
        self.over = True
        self._close_stdin()
        self.inq.clear()
        self.done(*self.status)

    def kill(self, sig=signal.SIGTERM):
        """Signal the child's process group."""
        self.child.kill(sig)

    def abandon(self):
        """Nobody wants this job's result any more: SIGKILL its group, reap
        it, close everything; done is not called."""
        if self.over:
            return
        self.over = True
        child = self.child
        child.kill(signal.SIGKILL)
        if self.status is None:
            self.loop.remove_reader(child.pidfd)
            if self.lifeline is not None:
                self.lifeline.ended(child)
            self.status = child.reap()
        for fd_no in (1, 2):
            self._close_out(fd_no)
        self._close_stdin()
        self.inq.clear()
