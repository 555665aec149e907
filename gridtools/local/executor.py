"""The local executor: runs the pool's jobs as child processes on this host,
relaying their pipes on the pool's loop (see pool.py for the interface).
"""

import collections
import os
import re

from gridtools.proto import errors
from gridtools.run import runner
from gridtools.local.jobs import FileRange, grow_pipe

SPLICE_F_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)


# The shells GNU parallel recognises in its parent processes.
SHELL_NAMES = ("ash bash bsd-csh csh dash fdsh fish fizsh ksh ksh93 lksh mksh pdksh "
               "posh rbash rc rush rzsh sash sh static-sh tcsh yash zsh -sh -csh -bash").split()
# Shells that take -- after -c (the others would run a command named --).
POSIX_SHELLS = frozenset("ash bash dash ksh ksh93 lksh mksh pdksh posh rbash sh yash zsh "
                         "rzsh".split())


class Shell:
    """The shell that runs the commands that need one, chosen as GNU
    parallel chooses it: $PARALLEL_SHELL, else the nearest ancestor process
    that is a shell (so functions exported from bash, and bash syntax, work
    when gridmap runs from bash), else $SHELL, else /bin/sh.

    Found on first use: a run whose commands need no shell never looks.
    """

    def __init__(self, env, pid=None):
        self.env = env
        self.pid = pid or os.getpid()
        self._path = None
        self._funcs = None

    @property
    def path(self):
        if self._path is None:
            self._path = choose_shell(self.env, self.pid)
        return self._path

    def argv(self, command):
        """The argv that runs command under this shell."""
        path = self.path
        if os.path.basename(path) in POSIX_SHELLS:
            return [path, "-c", "--", command]
        return [path, "-c", command]

    def wants(self, name):
        """True when a command to run directly must go to the shell after
        all: a function exported from bash shadows any program, and a name
        not on PATH is the shell's to report (or to find as a function)."""
        if self._funcs is None:
            self._funcs = frozenset(k[10:-2] for k in self.env
                                    if k.startswith("BASH_FUNC_") and k.endswith("%%"))
        return name in self._funcs or "/" not in runner.resolve(name)

    def remote_argv(self, command):
        """--hub: the argv that runs command under the same shell, by the
        same path, on the worker (so its messages read as they do here), or
        None for /bin/sh (the worker's default)."""
        if self.path == runner.SHELL:
            return None
        return self.argv(command)


def choose_shell(env, pid):
    """GNU parallel's rule; raises UsageError for a $PARALLEL_SHELL that
    names no program."""
    shell = env.get("PARALLEL_SHELL") or parent_shell(pid) or env.get("SHELL") or runner.SHELL
    if "/" not in shell:
        found = runner.resolve(shell)
        if "/" not in found:
            raise errors.UsageError(f"shell {shell!r} not found")
        shell = found
    elif not os.access(shell, os.X_OK):
        raise errors.UsageError(f"shell {shell!r} not found")
    return shell


def parent_shell(pid):
    """The path of the nearest (grand)parent of pid that is a shell, judged
    by its argv[0] as GNU parallel judges it, or None."""
    alts = "|".join(re.escape(n) for n in SHELL_NAMES + ["-sh (sh)"])
    rx = re.compile(rf"^(?:\[(-?)({alts})\]|(?:|\S+/|busybox )(-?)({alts}))(?: *$| [^(])")
    seen = set()
    while pid and pid not in seen:
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode("utf-8", "replace")
            m = rx.match(argv0)
            if m:
                name = m.group(2) or m.group(4)
                dash = m.group(1) or m.group(3)
                if name == "sh" and dash:
                    # A login shell says -sh whatever it is: ask the kernel.
                    exe = os.readlink(f"/proc/{pid}/exe")
                    if os.path.basename(exe) in SHELL_NAMES:
                        return exe
                found = runner.resolve(name.lstrip("-"))
                return found if "/" in found else None
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            # Field 4, after the command name in parentheses.
            pid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


class LocalExecutor:
    """Runs jobs as local child processes."""

    def __init__(self, capacity, loop, pool):
        self.capacity = capacity
        self.loop = loop
        self.pool = pool

    def start(self, job):
        fed = job.block is not None or self.pool.opts.round_robin
        argv = job.argv or self.pool.opts.shell.argv(job.command)
        child = runner.spawn(argv, stdin=runner.PIPE if fed else None)
        h = job.handle = _Running(child)
        self.loop.add_reader(child.stdout, self._readable, job, 1)
        self.loop.add_reader(child.stderr, self._readable, job, 2)
        self.loop.add_reader(child.pidfd, self._exited, job)
        if fed:
            grow_pipe(child.stdin)
            if job.block is not None:
                h.inq.append(job.block)
                h.input_done = not self.pool.opts.round_robin
            self._want_write(job)

    def feed(self, job, block):
        job.handle.inq.append(block)
        self._want_write(job)

    def end_input(self, job):
        job.handle.input_done = True
        self._want_write(job)

    def pending_input(self, job):
        h = job.handle
        return sum(len(b) for b in h.inq) - h.inpos if h.inq else 0

    def kill(self, job, sig):
        if job.handle is not None:
            job.handle.child.kill(sig)

    def close(self):
        pass

    # -- events ----------------------------------------------------------

    def _want_write(self, job):
        h = job.handle
        child = h.child
        if child.stdin is None:
            return
        if not h.inq:
            if h.input_done:
                self._close_stdin(job)
            return
        if not h.writing:
            self.loop.add_writer(child.stdin, self._writable, job)
            h.writing = True

    def _writable(self, job):
        h = job.handle
        if h is None or not h.writing:
            return
        fd = h.child.stdin
        try:
            while h.inq:
                block = h.inq[0]
                if isinstance(block, FileRange):
                    # splice moves page-cache pages into the pipe without
                    # copying them (sendfile to a pipe goes through a copy).
                    n = os.splice(block.fd, fd, block.length - h.inpos,
                                  offset_src=block.offset + h.inpos,
                                  flags=SPLICE_F_NONBLOCK)
                else:
                    n = os.write(fd, memoryview(block)[h.inpos:])
                h.inpos += n
                job.sent += n
                if h.inpos >= len(block) or n == 0:
                    # n == 0: splice found the end of the file early (it
                    # shrank under us); the rest of the block is gone, and
                    # waiting for it would spin on a writable pipe forever.
                    h.inq.popleft()
                    h.inpos = 0
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            # The job stopped reading; what it did not take is not ours to
            # force on it.  Its exit status tells the story.
            h.inq.clear()
            h.input_done = True
        if not h.inq:
            self.loop.remove_writer(fd)
            h.writing = False
            if h.input_done:
                self._close_stdin(job)
            else:
                self.pool.input_taken(job)

    def _close_stdin(self, job):
        h = job.handle
        if h.writing:
            self.loop.remove_writer(h.child.stdin)
            h.writing = False
        h.child.close_stdin()

    def _readable(self, job, fd_no):
        # An event from the same select() batch may arrive after the job
        # was finished by its exit event: its pipes are closed already.
        h = job.handle
        fd = None if h is None else h.child.stdout if fd_no == 1 else h.child.stderr
        if fd is None:
            return
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            self.pool.job_output(job, fd_no, data)
            return
        self._close_out(job, fd_no)
        self._maybe_done(job)

    def _close_out(self, job, fd_no):
        h = job.handle
        fd = h.child.stdout if fd_no == 1 else h.child.stderr
        if fd is None:
            return
        self.loop.remove_reader(fd)
        os.close(fd)
        if fd_no == 1:
            h.child.stdout = None
        else:
            h.child.stderr = None

    def _exited(self, job):
        h = job.handle
        if h is None:
            return
        self.loop.remove_reader(h.child.pidfd)
        h.status = h.child.reap()
        # Whatever the job wrote before exiting is in the pipes now; a
        # background grandchild holding them open must not hold us up.
        for fd_no in (1, 2):
            fd = h.child.stdout if fd_no == 1 else h.child.stderr
            while fd is not None:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.pool.job_output(job, fd_no, data)
            self._close_out(job, fd_no)
        self._maybe_done(job)

    def _maybe_done(self, job):
        h = job.handle
        if h.status is None or h.child.stdout is not None or h.child.stderr is not None:
            return
        self._close_stdin(job)
        job.handle = None
        self.pool.job_done(job, *h.status)


class _Running:
    __slots__ = ("child", "status", "inq", "inpos", "input_done", "writing")

    def __init__(self, child):
        self.child = child
        self.status = None
        self.inq = collections.deque()
        self.inpos = 0
        self.input_done = False
        self.writing = False
