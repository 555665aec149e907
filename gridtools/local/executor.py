"""The local executor: runs the pool's jobs as child processes on this host,
each relayed by run.relay on the pool's loop (see pool.py for the
interface), and the shell that runs the commands that need one.
"""

import os
import re

from gridtools.proto import errors
from gridtools.run import runner
from gridtools.run.relay import Relay
from gridtools.local.jobs import grow_pipe


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
    """Runs jobs as local child processes, each relayed by run.relay on the
    pool's loop."""

    def __init__(self, capacity, loop, pool):
        self.capacity = capacity
        self.loop = loop
        self.pool = pool
        # --workdir: enter(job) -> the directory it runs in, leave(job)
        # once it ended (transfer.LocalWorkdir); None: ours.
        self.workdir = None

    def start(self, job):
        fed = job.block is not None or self.pool.opts.round_robin
        argv = job.argv or self.pool.opts.shell.argv(job.command)
        wd = self.workdir
        try:
            child = runner.spawn(argv, stdin=runner.PIPE if fed else None,
                                 cwd=wd.enter(job) if wd is not None else None)
        except OSError:
            if wd is not None:
                wd.leave(job)
            raise
        pool = self.pool

        def output(fd_no, data):
            pool.job_output(job, fd_no, data)

        def taken(n):
            job.sent = relay.written
            if not relay.inq and not relay.input_done:
                pool.input_taken(job)

        def done(code, sig):
            job.handle = None
            if wd is not None:
                wd.leave(job)
            pool.job_done(job, code, sig)

        relay = job.handle = Relay(self.loop, child, output, done, taken)
        if fed:
            grow_pipe(child.stdin)
            if job.block is not None:
                relay.feed(job.block)
                if not pool.opts.round_robin:
                    relay.end_input()

    def feed(self, job, block):
        job.handle.feed(block)

    def end_input(self, job):
        job.handle.end_input()

    def pending_input(self, job):
        return job.handle.pending_input()

    def kill(self, job, sig):
        if job.handle is not None:
            job.handle.kill(sig)

    def close(self):
        pass
