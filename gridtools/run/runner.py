"""Run one job as a child process: spawn, pipes, kill, exit status.

The worker's MANIFEST includes this module, so it imports nothing but the
standard library and nothing from the rest of gridtools.  It does no
waiting of its own: run.relay watches the descriptors a Child exposes
(stdout, stderr, stdin for fed jobs, and a pidfd for the exit) on the loop.

A command reaches us as an argv list.  The caller decides whether it needs a
shell (see needs_shell); an argv that cannot be executed directly (not found,
not executable, a shell builtin with no binary) is retried through /bin/sh,
so the user sees the shell's own message and status (127, 126) either way.
"""

import errno
import mmap
import os
import shlex
import signal

SHELL = "/bin/sh"

# Shell words that are keywords, or builtins with no binary or whose binary
# behaves differently (dash's echo interprets backslashes, /bin/echo does
# not; /bin/pwd defaults to -P, the builtin to -L).  A command starting with
# one of these must run through the shell.  true and false are builtins too,
# but their binaries do the same thing for any argument but a lone --help or
# --version, which direct_argv checks for.
SHELL_WORDS = frozenset("""
    ! { } case do done elif else esac fi for function if in select then time
    until while . : [ alias bg break cd chdir command continue echo eval exec
    exit export fc fg getopts hash jobs kill local printf pwd read readonly
    return set shift test times trap type ulimit umask unalias unset wait
""".split())

# Characters that mean nothing to the shell outside quotes.  A word made only
# of these (and not in SHELL_WORDS, and not an assignment in first place)
# reaches the program unchanged whether or not a shell parses it first.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                   "0123456789_@%+,./:-^")

# Signals Python ignores that a child must get back at their defaults:
# an ignored SIGPIPE would survive exec and turn `yes | head` into a hang.
_RESET_SIGNALS = tuple(s for s in (getattr(signal, "SIGPIPE", None),
                                   getattr(signal, "SIGXFSZ", None),
                                   getattr(signal, "SIGINT", None),
                                   getattr(signal, "SIGTERM", None))
                       if s is not None)


def needs_shell(words):
    """True when a command given as shell words must run through /bin/sh.

    `words` are the words of a command line as the user wrote them, before
    any inputs are substituted.
    """
    if not words:
        return True
    first = words[0]
    if first in SHELL_WORDS or not _PLAIN.issuperset(first) or "=" in first:
        return True
    return any(not w or not _PLAIN.issuperset(w.replace("=", "")) for w in words[1:])


def shell_argv(command):
    """The argv that runs the shell command line `command`.

    The -- keeps a command line that starts with - or + (an input line used
    as the command) from being taken for the shell's own options.
    """
    return [SHELL, "-c", "--", command]


def split_plain(command):
    """Split a command line into words if it needs no shell, else None."""
    words = command.split()
    if not words or needs_shell(words):
        return None
    if words[0] in ("true", "false") and words[1:] in (["--help"], ["--version"]):
        return None
    return words


def decode_status(status):
    """A waitpid status as (exit code, signal number); one of them is None."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def status_code(exitcode, sig):
    """The one-number status a shell would report: 128+N for a signal."""
    return 128 + sig if sig is not None else exitcode


class Child:
    """A running job: its pid (also its process group), pidfd and pipes.

    The pipe ends held here are non-blocking; the caller reads stdout and
    stderr until EOF, writes stdin if it asked for a pipe, and calls reap()
    once the pidfd is readable.
    """

    __slots__ = ("pid", "pidfd", "stdout", "stderr", "stdin", "argv")

    def __init__(self, pid, pidfd, stdout, stderr, stdin, argv):
        self.pid = pid
        self.pidfd = pidfd
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.argv = argv

    def kill(self, sig=signal.SIGTERM):
        """Signal the job's whole process group; quiet if it is gone."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self):
        """Collect the exit status (call once the pidfd is readable)."""
        _, status = os.waitpid(self.pid, 0)
        os.close(self.pidfd)
        self.pidfd = -1
        return decode_status(status)

    def close_stdin(self):
        if self.stdin is not None and self.stdin >= 0:
            os.close(self.stdin)
        self.stdin = None


PIPE = -1

_paths = {}


def resolve(name):
    """The file execvp would run for name, looked up once per name.

    Every job would otherwise try each PATH entry in turn (a dozen failed
    execve calls with a long PATH) while the parent waits.  A name not found
    is returned as it is: the spawn fails with ENOENT and the shell reports it.
    """
    if "/" in name:
        return name
    path = _paths.get(name)
    if path is None:
        path = name
        for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
            candidate = os.path.join(d or ".", name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                path = candidate
                break
        _paths[name] = path
    return path

_env = None


def environment():
    """Our environment as bytes, converted once: handing os.environ to
    posix_spawn re-encodes every variable for every job."""
    global _env
    if _env is None:
        _env = dict(os.environb)
    return _env


def spawn(argv, stdin=None, stdout=PIPE, stderr=PIPE, env=None, cwd=None):
    """Start argv in a new process group and return its Child.

    stdin: None for /dev/null, PIPE for a pipe we write, or an fd to inherit.
    stdout/stderr: PIPE for a pipe we read, or an fd to inherit.
    cwd: the directory it starts in (None: ours).
    An argv that cannot be executed is retried as a /bin/sh command line so
    the shell reports the failure the way users know (status 127 or 126).
    """
    if cwd is not None:
        # posix_spawn has no working directory (no POSIX_SPAWN_CHDIR before
        # Python 3.13), and the pool and the worker are one thread each:
        # move there for the spawn, and back.
        back = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
            return spawn(argv, stdin, stdout, stderr, env)
        finally:
            os.fchdir(back)
            os.close(back)
    try:
        return _spawn(argv, stdin, stdout, stderr, env)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR) \
                or argv[0] == SHELL:
            raise
    return _spawn(shell_argv(shlex.join(argv)), stdin, stdout, stderr, env)


def _spawn(argv, stdin, stdout, stderr, env):
    actions = []
    ours = []        # parent ends to return
    theirs = []      # child ends to close in the parent after spawning
    try:
        if stdin is None:
            fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            theirs.append(fd)
            actions.append((os.POSIX_SPAWN_DUP2, fd, 0))
            w_in = None
        elif stdin == PIPE:
            r, w_in = os.pipe2(os.O_CLOEXEC)
            theirs.append(r)
            ours.append(w_in)
            actions.append((os.POSIX_SPAWN_DUP2, r, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, stdin, 0))
            w_in = None
        outs = []
        for target, want in ((1, stdout), (2, stderr)):
            if want == PIPE:
                r, w = os.pipe2(os.O_CLOEXEC)
                ours.append(r)
                theirs.append(w)
                actions.append((os.POSIX_SPAWN_DUP2, w, target))
                outs.append(r)
            else:
                actions.append((os.POSIX_SPAWN_DUP2, want, target))
                outs.append(None)
        pid = os.posix_spawn(resolve(argv[0]), argv, environment() if env is None else env,
                              file_actions=actions, setpgroup=0,
                              setsigdef=_RESET_SIGNALS, setsigmask=())
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    for fd in ours:
        os.set_blocking(fd, False)
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in ours:
            os.close(fd)
        raise
    return Child(pid, pidfd, outs[0], outs[1], w_in, argv)



class Lifeline:
    """Jobs must not outlive their runner, even one killed by SIGKILL.

    A small watcher process, forked once at start-up, shares a table of
    the running jobs' process groups with the runner (an anonymous shared
    mapping: writing an entry is a store to memory, no system call, and
    the watcher is not woken).  The watcher waits on a pipe nobody writes
    to; when the runner dies, however it dies, the kernel closes the pipe,
    and the watcher kills every process group still in the table and exits.
    It sits in a session of its own, so a signal to the runner's process
    group does not take it along.

    Limits: a job that leaves its process group (setsid, setpgid) escapes;
    a watcher killed together with the runner kills nothing; jobs past the
    table's capacity (the runner's slots and some spare) are not watched.
    """

    def __init__(self, capacity):
        self.capacity = capacity + 16
        self.map = mmap.mmap(-1, 4 * self.capacity)     # shared with the watcher
        self.table = memoryview(self.map).cast("i")
        self.free = list(range(self.capacity - 1, -1, -1))
        self.where = {}                                 # pid -> index in table
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:                                    # the watcher
            try:
                os.close(w)
                _watch(r, self.table)
            finally:
                os._exit(0)
        os.close(r)
        self.fd = w
        self.pid = pid

    def started(self, child):
        if self.free:
            i = self.where[child.pid] = self.free.pop()
            self.table[i] = child.pid

    def ended(self, child):
        """Call before reaping: a pid is not reused while it is a zombie."""
        i = self.where.pop(child.pid, None)
        if i is not None:
            self.table[i] = 0
            self.free.append(i)

    def close(self):
        """The runner ends cleanly: the watcher kills what is left, exits."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _watch(fd, table):
    """The watcher's life: wait for the runner to die, then kill what is
    left in the table."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, signal.SIG_IGN)
    os.closerange(3, fd)
    os.closerange(fd + 1, max(fd + 1, min(os.sysconf("SC_OPEN_MAX"), 1 << 20)))
    while os.read(fd, 1):
        pass
    for pgid in table:
        if pgid > 0:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
