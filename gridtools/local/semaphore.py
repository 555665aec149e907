"""gridmap --semaphore (GNU parallel's sem): a counting semaphore for
command lines, across processes on one host.

A semaphore is a directory, $XDG_RUNTIME_DIR/gridmap/semaphores/NAME (or
~/.cache/gridmap/semaphores/NAME), holding a file per slot, slot.0 to
slot.N-1.  A slot is held by an flock(2) on its file, so a holder that is
killed releases its slot with its last descriptor: no stale lock is ever
left to clean up.  A waiting gridmap tries the slots again after a pause
that grows from 1 ms to MAX_PAUSE, as GNU parallel's sem does.
"""

import fcntl
import os
import re
import time

from gridtools.proto import errors

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
MAX_PAUSE = 0.5         # seconds between tries while waiting for a slot
MAX_SLOTS = 100000      # slot files in one semaphore
_TIME = re.compile(r"\s*(-?)([0-9]{1,9}(?:\.[0-9]{1,9})?)([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_timeout(text):
    """--semaphoretimeout SECS: seconds, signed, with an s, m, h or d."""
    m = _TIME.fullmatch(text)
    if not m:
        raise errors.UsageError(
            f"--semaphoretimeout: not a time: {text!r} (e.g. 10, -10, 2m)")
    secs = float(m.group(2)) * _UNITS[m.group(3)]
    return -secs if m.group(1) else secs


def directory(env):
    """Where the semaphores of this user live."""
    run = env.get("XDG_RUNTIME_DIR")
    if run and os.path.isabs(run):
        return os.path.join(run, "gridmap", "semaphores")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".cache", "gridmap", "semaphores")


def default_name():
    """GNU parallel's default: the controlling terminal's name."""
    try:
        tty = os.ttyname(0)
    except OSError:
        return "notty"
    return "tty" + re.sub(r"[^A-Za-z0-9._-]", "_", tty)


def check_name(name):
    if not NAME.fullmatch(name):
        raise errors.UsageError(
            f"--id: a semaphore name is 1 to 100 letters, digits, . _ or -, "
            f"not starting with . or -: {name!r}")
    return name


class Semaphore:
    """The semaphore at path with slots slots."""

    def __init__(self, path, slots):
        self.path = path
        self.slots = min(slots, MAX_SLOTS)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise errors.GridError(f"--semaphore: cannot make {path}: {e.strerror}",
                                   errors.CANTCREAT)

    def _open(self, i):
        name = os.path.join(self.path, f"slot.{i}")
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise errors.GridError(f"--semaphore: cannot open {name}: {e.strerror}",
                                   errors.CANTCREAT)

    def try_take(self):
        """A descriptor holding a free slot, or None when all are held."""
        for i in range(self.slots):
            fd = self._open(i)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        return None

    def take(self, timeout=0.0, clock=time.monotonic, sleep=time.sleep):
        """Wait for a slot: its descriptor, or None when timeout (seconds,
        0: none) ran out first."""
        t0 = clock()
        pause = 0.001
        while True:
            fd = self.try_take()
            if fd is not None:
                return fd
            if timeout and clock() - t0 >= abs(timeout):
                return None
            sleep(pause)
            pause = min(pause * 1.1, MAX_PAUSE)

    def wait_all(self):
        """--wait: until no slot of this semaphore is held (each one is
        taken in turn, blocking, and given back)."""
        try:
            names = os.listdir(self.path)
        except OSError as e:
            raise errors.GridError(f"--semaphore: cannot read {self.path}: {e.strerror}",
                                   errors.NOINPUT)
        for name in sorted(names):
            m = re.fullmatch(r"slot\.([0-9]{1,6})", name)
            if m:
                fd = self._open(int(m.group(1)))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                finally:
                    os.close(fd)


def _run(argv):
    """Run argv here and wait: its exit status, or 128+N for signal N."""
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def run(command, name, slots, env, fg=False, wait=False, timeout=0.0, warn=None,
        shell=None):
    """gridmap --semaphore: return the exit status.

    command: the command line (a str; empty with --wait alone).  Without
    fg the command runs in the background, holding its slot, and this
    returns 0 as soon as it started.  timeout > 0: after that many seconds
    run it without a slot; < 0: give up (exit 75).
    """
    sem = Semaphore(os.path.join(directory(env), check_name(name)), slots)
    if wait and not command:
        sem.wait_all()
        return 0
    fd = sem.take(timeout)
    if fd is None:
        if timeout < 0:
            warn("Semaphore timed out. Exiting.")
            return errors.TEMPFAIL
        warn("Semaphore timed out. Stealing the semaphore.")
    argv = shell.argv(command)
    if fg:
        try:
            return _run(argv)
        finally:
            if fd is not None:
                os.close(fd)
    pid = os.fork()
    if pid == 0:                    # the holder: runs the command, keeps the slot
        code = 70
        try:
            code = _run(argv)
        except OSError:
            code = 127
        finally:
            os._exit(code & 0xFF)
    if fd is not None:
        os.close(fd)                # the holder has it now
    if wait:
        sem.wait_all()
    return 0
