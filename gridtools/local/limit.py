"""--limit "command args": GNU parallel's dynamic job limit.  Before a job
starts, the command is asked: exit 0, start it; 1 (or any other status),
start none now; 2, start none and kill the youngest running job.

The command runs through the shell with SSHLOGIN=: in its environment, its
stdout and stderr ours, as GNU parallel's system() runs it.  It is spawned
and its exit watched through a pidfd on the pool's loop: the loop never
waits for it.  It is run when a job could start, and once a second while
jobs run or wait (for its 2); never two at once.  A 0 is good for one
start within a second of it.

GNU's three built-in forms are read from /proc in-process, as GNU's
scripts compute them:

  mem SIZE   MemFree+Buffers+Cached+SwapCached under SIZE/2: 2; under SIZE: 1
  load N     processes running or waiting for a disk, more than N: 1
  io N       the busiest disk's utilisation (0-100, from io_ticks in
             /proc/diskstats since the last reading) over N: 1; with no
             earlier reading yet: 1, as GNU's io says until iostat answers
"""

import re

from gridtools.proto import errors, units
from gridtools.run import runner

AGAIN = 1.0         # seconds between two runs when the last said no, or jobs run
FRESH = 1.0         # seconds a 0 stays good for a start


def parse(text):
    """(kind, value): ("mem", bytes), ("load", n), ("io", n) or
    ("command", text)."""
    words = text.split()
    if not words:
        raise errors.UsageError("--limit: need a command")
    if words[0] in ("mem", "load", "io"):
        if len(words) != 2:
            raise errors.UsageError(f"--limit: {words[0]} takes one number: {text!r}")
        if words[0] == "mem":
            try:
                return "mem", units.parse_size(words[1])
            except ValueError as e:
                raise errors.UsageError(f"--limit: mem: {e}")
        if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", words[1]):
            raise errors.UsageError(f"--limit: {words[0]}: not a number: {words[1]!r}")
        return words[0], float(words[1])
    return "command", text


def mem_verdict(meminfo, size):
    """GNU's mem script on the text of /proc/meminfo."""
    found = re.findall(r"^(?:MemFree|Buffers|Cached|SwapCached):\s+([0-9]{1,18}) kB$",
                       meminfo, re.M)
    if not found:
        raise errors.GridError("--limit mem: /proc/meminfo has no MemFree line",
                               errors.UNAVAILABLE)
    free = sum(int(n) for n in found) * 1024
    return 2 if free < size / 2 else 1 if free < size else 0


def load_verdict(stat, n):
    """GNU's load script: 1 when more than n processes run or wait for a
    disk (the one reading not counted), from the text of /proc/stat."""
    found = dict(re.findall(r"^(procs_running|procs_blocked) ([0-9]{1,9})$", stat, re.M))
    if len(found) != 2:
        raise errors.GridError("--limit load: /proc/stat has no procs_running",
                               errors.UNAVAILABLE)
    running = max(0, int(found["procs_running"]) + int(found["procs_blocked"]) - 1)
    return 1 if running > n else 0


def io_ticks(diskstats):
    """{device: milliseconds spent doing I/O} from /proc/diskstats."""
    ticks = {}
    for line in diskstats.splitlines():
        f = line.split()
        if len(f) >= 13 and re.fullmatch(r"[0-9]{1,20}", f[12]):
            ticks[f[2]] = int(f[12])
    return ticks


def io_verdict(before, after, elapsed, n):
    """1 when the busiest disk was busy more than n% of elapsed seconds
    between two readings of io_ticks (or there is no earlier reading)."""
    if before is None or elapsed <= 0:
        return 1
    busiest = max((after[d] - before[d] for d in after if d in before), default=0)
    return 1 if n < 100 * busiest / (elapsed * 1000) else 0


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise errors.GridError(f"--limit: cannot read {path}: {e.strerror}",
                               errors.UNAVAILABLE)


class Limit:
    """The limit's last verdict, and the run that will give the next.

    loop: the pool's loop; argv: how to run a command (a list) or None for
    a built-in; wanted(): whether the pool would start or is running jobs;
    verdict(code): called on the loop with each answer."""

    def __init__(self, kind, value, loop, argv=None, wanted=None, verdict=None):
        self.kind = kind
        self.value = value
        self.loop = loop
        self.argv = argv
        self.wanted = wanted
        self.on_verdict = verdict
        self.child = None           # the command now running
        self.code = None            # the last answer ...
        self.when = 0.0             # ... and when it came
        self.timer = None
        self.ticks = None           # io: the last reading and its time
        self.ticks_at = 0.0
        self.env = None
        if kind != "command":
            self._builtin()         # unreadable /proc is refused now, not mid-run
            self.code = None

    def take(self):
        """Whether a job may start now: a fresh 0 is used up (and the
        command asked again before the next start); otherwise a run is
        begun, unless one is under way or due, and the answer is no for
        now (the verdict pokes the pool)."""
        if not self._fresh() and self.child is None and self.timer is None:
            self._run()             # a built-in answers at once
        if not self._fresh():
            return False
        self.code = None
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_soon(self._again)
        return True

    def _fresh(self):
        return self.code == 0 and self.loop.time() - self.when < FRESH

    def _run(self):
        if self.kind != "command":
            self._answer(self._builtin())
            return
        if self.env is None:
            self.env = dict(runner.environment())
            self.env[b"SSHLOGIN"] = b":"
        try:
            self.child = runner.spawn(self.argv, stdout=1, stderr=2, env=self.env)
        except OSError as e:
            raise errors.GridError(f"--limit: cannot run {self.value!r}: {e.strerror}",
                                   errors.UNAVAILABLE)
        self.loop.add_reader(self.child.pidfd, self._exited)

    def _exited(self):
        child, self.child = self.child, None
        self.loop.remove_reader(child.pidfd)
        code, _ = child.reap()
        self._answer(code if code in (0, 1, 2) else 1)

    def _builtin(self):
        if self.kind == "mem":
            return mem_verdict(_read("/proc/meminfo"), self.value)
        if self.kind == "load":
            return load_verdict(_read("/proc/stat"), self.value)
        now = self.loop.time()
        ticks = io_ticks(_read("/proc/diskstats"))
        code = io_verdict(self.ticks, ticks, now - self.ticks_at, self.value)
        self.ticks, self.ticks_at = ticks, now
        return code

    def _answer(self, code):
        self.code = code
        self.when = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(AGAIN, self._again)
        self.on_verdict(code)

    def _again(self):
        """A second after an answer: ask again if the pool still wants
        jobs or runs some (for a 2)."""
        self.timer = None
        if self.child is None and self.wanted():
            self._run()

    def close(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.child is not None:
            self.loop.remove_reader(self.child.pidfd)
            self.child.kill(9)
            self.child.reap()
            self.child = None
