"""--memfree SIZE and --load MAX: whether this host may take another job
now, read from /proc at most once every SAMPLE seconds (the pool asks on
its own loop; there is no thread and, with neither option, no cost).

--memfree: no job starts while MemAvailable is under SIZE, and under half
of SIZE the pool kills its youngest job (GNU parallel's rule).  --load:
no job starts while the processes running or waiting for a disk (as GNU
parallel counts them: right now, not a 1-minute average) are MAX or more;
the jobs started since the last reading count as running.
"""

import re

from gridtools.proto import errors, units

SAMPLE = 1.0            # seconds between readings of /proc


def parse_memfree(text):
    try:
        return units.parse_size(text)
    except ValueError as e:
        raise errors.UsageError(f"--memfree: {e}")


def per_cores(sign, num, pct, cores):
    """-j's and --load's forms as a number: N, N% of the cores, cores+N
    or cores-N (sign "+" or "-", num the digits, pct "%" or "")."""
    n = float(num)
    if pct:
        return cores * n / 100
    if sign == "+":
        return cores + n
    if sign == "-":
        return cores - n
    return n


def parse_load(text, cores):
    """--load MAX as -j reads it (N, N%, +N, -N); 0 is 0.01."""
    m = re.fullmatch(r"\s*([+-]?)([0-9]{1,9}(?:\.[0-9]{1,9})?)(%?)\s*", text)
    if not m:
        raise errors.UsageError(f"--load: not a load: {text!r} (N, N%, +N or -N)")
    n = per_cores(*m.groups(), cores)
    return n if n > 0 else 0.01


def mem_available(meminfo):
    """Bytes available for new work, from the text of /proc/meminfo."""
    m = re.search(r"^MemAvailable:\s+([0-9]{1,18}) kB$", meminfo, re.M)
    if not m:
        raise errors.GridError("--memfree: /proc/meminfo has no MemAvailable line",
                               errors.UNAVAILABLE)
    return int(m.group(1)) * 1024


def processes_running(stat):
    """Processes running or in uninterruptible sleep now, from the text of
    /proc/stat, not counting the one reading it."""
    found = dict(re.findall(r"^(procs_running|procs_blocked) ([0-9]{1,9})$", stat, re.M))
    if len(found) != 2:
        raise errors.GridError("--load: /proc/stat has no procs_running and procs_blocked",
                               errors.UNAVAILABLE)
    return max(0, int(found["procs_running"]) + int(found["procs_blocked"]) - 1)


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise errors.GridError(f"cannot read {path}: {e.strerror}", errors.UNAVAILABLE)


class Gate:
    """The host's state as of the last reading, read again once it is
    SAMPLE seconds old."""

    read = staticmethod(_read)      # path -> its text

    def __init__(self, memfree=None, load=None):
        self.memfree = memfree      # bytes, or None
        self.load = load            # processes, or None
        self.when = None            # loop time of the last reading
        self.free = None
        self.running = 0
        self.started = 0            # jobs started since the last reading
        if memfree is not None:
            mem_available(self.read("/proc/meminfo"))    # refused now, not mid-run
        if load is not None:
            processes_running(self.read("/proc/stat"))

    def _sample(self, now):
        if self.when is not None and now - self.when < SAMPLE:
            return
        self.when = now
        self.started = 0
        if self.memfree is not None:
            self.free = mem_available(self.read("/proc/meminfo"))
        if self.load is not None:
            self.running = processes_running(self.read("/proc/stat"))

    def open(self, now):
        """Whether a job may start now."""
        self._sample(now)
        if self.memfree is not None and self.free < self.memfree:
            return False
        if self.load is not None and self.running + self.started >= self.load:
            return False
        return True

    def started_one(self):
        self.started += 1

    def starving(self, now):
        """--memfree: under half of it, the youngest job is to be killed."""
        if self.memfree is None:
            return False
        self._sample(now)
        return self.free < self.memfree / 2

    def next_reading(self):
        """When the next reading is due (loop time)."""
        return (self.when or 0.0) + SAMPLE
