"""Job sources: where the pool gets its next job.

A source's next() returns a Job, WAIT (no job until more input arrives on
source.fd, which the pool watches) or None (no more jobs).  Sources read
only when asked, so input is consumed as slots free up, and stdin that is a
pipe or a terminal is read without blocking the event loop.
"""

import collections
import fcntl
import itertools
import math
import os
import stat

from gridtools.local import blocks, inputs
from gridtools.proto import errors

WAIT = object()

# A command line longer than this is split across jobs with -X and -m
# (Linux allows more, but other systems and shells do not).
MAX_LINE = 128 * 1024
# --pipe: the most one record may hold unless --block is larger (its
# half): an input with no record end must not grow memory without bound.
MAX_RECORD = 256 << 20


class Job:
    """One unit of work, from its inputs to its finished result."""

    __slots__ = ("seq", "args", "block", "command", "argv", "slot", "tries",
                 "start", "t0", "stdout", "stderr", "sent", "timer", "timed_out",
                 "cancelled", "handle", "partial", "tag", "host", "width",
                 "kill_step")

    def __init__(self, seq, args=(), block=None):
        self.seq = seq
        self.args = args
        self.block = block          # --pipe: bytes-like or FileRange
        self.command = None
        self.argv = None
        self.slot = 0
        self.tries = 0
        self.start = 0.0            # wall clock, for the joblog
        self.t0 = 0.0               # monotonic, for its run time
        self.stdout = None          # output.Capture while running
        self.stderr = None
        self.sent = 0
        self.timer = None           # --timeout: the loop timer that ends it
        self.timed_out = False
        self.cancelled = False
        self.handle = None          # the executor's own state
        self.partial = [b"", b""]   # --line-buffer: unfinished lines
        self.tag = b""
        self.host = ":"             # where it ran, as the joblog says it
        self.width = 0              # fields per input record (--results' tree)
        self.kill_step = 0          # how far the termination sequence went


class FileRange:
    """A block that is a byte range of a regular file (spliced into the job's stdin)."""

    __slots__ = ("fd", "offset", "length")

    def __init__(self, fd, offset, length):
        self.fd = fd
        self.offset = offset
        self.length = length

    def __len__(self):
        return self.length

    def read(self):
        return os.pread(self.fd, self.length, self.offset)


def is_regular(fd):
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def is_pollable(fd):
    """True for pipes, sockets and terminals: reads may block, so the event
    loop watches them.  Anything else (files, /dev/null) never blocks, and
    epoll refuses it."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def read_input(fd, size):
    """os.read that names the problem: a directory or a dead device."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        raise
    except OSError as e:
        raise errors.NoInputError(f"cannot read input: {e.strerror}")


def grow_pipe(fd, size=1 << 20):
    """Ask for a larger pipe buffer: fewer, larger reads and writes."""
    try:
        fcntl.fcntl(fd, 1031, size)      # F_SETPIPE_SZ; not a pipe: no harm
    except OSError:
        pass


class StreamFeed:
    """Records read from a file descriptor, split on a delimiter."""

    def __init__(self, fd, delim, to_record, item_filter=None):
        self.fd = fd
        self.splitter = inputs.Splitter(delim)
        self.to_record = to_record
        self.item_filter = item_filter       # -E, -L, -r
        self.records = collections.deque()
        self.eof = False
        self.pollable = is_pollable(fd)
        if self.pollable:
            os.set_blocking(fd, False)

    def fill(self, n):
        """Buffer up to n records if that needs no waiting."""
        while len(self.records) < n and not self.eof and not self.pollable:
            self.read()

    def read(self):
        try:
            chunk = read_input(self.fd, 1 << 16)
        except BlockingIOError:
            return
        items = self.splitter.feed(chunk) if chunk else self.splitter.finish()
        if not chunk:
            self.eof = True
        f = self.item_filter
        if f is not None:
            items = f.feed(items)
            if not chunk:
                items += f.finish()
            self.eof = self.eof or f.done
        self.records.extend(map(self.to_record, items))


class IterFeed:
    """Records from a finite iterator (::: lists, files, products)."""

    fd = None
    pollable = False

    def __init__(self, records):
        self.it = iter(records)
        self.records = collections.deque()
        self.eof = False

    def fill(self, n):
        while len(self.records) < n and not self.eof:
            try:
                self.records.append(next(self.it))
            except StopIteration:
                self.eof = True

    def read(self):
        self.fill(1)


class RecordSource:
    """Jobs made of input records: one each, -n N each, or -X/-m as many as
    fit on a command line."""

    def __init__(self, feed, per_job=1, fill_line=False, slots=1, limit=None, fits=None):
        self.feed = feed
        self.per_job = per_job      # records per job (0: one record, no args)
        self.fill_line = fill_line  # -X / -m
        self.limit = limit          # -X / -m with -n or -N: at most this many
        self.fits = fits            # -s: fits(records) -> the line is short enough
        self.slots = slots
        self.share = None           # -X at end of input: records per job
        self.seq = 0

    @property
    def fd(self):
        return self.feed.fd if self.feed.pollable and not self.feed.eof else None

    def on_readable(self):
        self.feed.read()

    def next(self):
        feed = self.feed
        want = self.per_job or 1
        if self.fill_line:
            want = self.share or (self.limit + 1 if self.limit else MAX_LINE // 3)
        feed.fill(want)
        recs = feed.records
        if not recs:
            return None if feed.eof else WAIT
        if self.fill_line:
            take = self._line_share(recs)
            if take is None:
                return WAIT
        elif len(recs) < want and not feed.eof:
            return WAIT
        else:
            take = min(want, len(recs))
        records = [recs.popleft() for _ in range(take)]
        self.seq += 1
        args = [] if self.per_job == 0 else inputs.fields(records)
        job = Job(self.seq, args)
        job.width = len(records[0]) if args else 0
        return job

    def _line_share(self, recs):
        """How many records the next -X job takes, or None to wait.

        As GNU parallel does: fill a command line, up to -n records; the
        first job that would take all that is left instead spreads it evenly
        over the job slots, and no later job takes more.
        """
        if self.share is not None:
            return min(self.share, len(recs))
        if self.fits is not None:
            take = self._fitting(recs)
            if take < len(recs):
                return take
            return self._spread(recs)
        size = 0
        for i, r in enumerate(recs):
            if self.limit and i >= self.limit:
                return i
            size += inputs.line_length([r])
            if size > MAX_LINE:
                return max(i, 1)
        return self._spread(recs)

    def _spread(self, recs):
        if not self.feed.eof:
            return None
        self.share = max(1, math.ceil(len(recs) / self.slots))
        return min(self.share, len(recs))

    def _fitting(self, recs):
        """-s: the most records whose command line fits (at least one: a
        record too long alone is the pool's error to report)."""
        n = min(len(recs), self.limit + 1 if self.limit else len(recs))
        head = list(itertools.islice(recs, n))
        if self.limit and n > self.limit:
            n = self.limit
            if self.fits(head[:n]):
                return n
        lo, hi = 1, n          # fits(head[:lo]) is assumed; find the largest
        if self.fits(head[:hi]):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.fits(head[:mid]):
                lo = mid
            else:
                hi = mid
        return lo


class ListSource:
    """The jobs of another source, all read ahead, so that their number is
    known (--halt P% counts P% of all the jobs, as GNU parallel does)."""

    fd = None

    def __init__(self, source):
        if source.fd is not None:
            os.set_blocking(source.fd, True)
        self.jobs = collections.deque()
        while True:
            job = source.next()
            if job is WAIT:
                source.on_readable()
                continue
            if job is None:
                break
            self.jobs.append(job)
        self.total = len(self.jobs)
        self.seq = source.seq

    def on_readable(self):
        pass

    def next(self):
        return self.jobs.popleft() if self.jobs else None


class PipeSource:
    """--pipe: jobs fed blocks of stdin, cut at record boundaries."""

    def __init__(self, fd, size, boundary, records=None, header=None):
        self.size = size
        self.header_rx = header     # --header: a regex matched at the start
        self.header = b""           # ... what it matched, before every block
        self.prepend = True         # --round-robin: the pool prepends it once a job
        self.boundary = boundary
        self.records = records
        self.seq = 0
        self.eof = False
        self.fd_in = fd
        self.buf = bytearray()
        self.ranges = None
        if is_regular(fd) and records is None and header is None and boundary.seekable:
            # Split a file by offsets, reading only around each cut; the
            # blocks go to the jobs with sendfile, never through Python.
            start = os.lseek(fd, 0, os.SEEK_CUR)
            end = os.fstat(fd).st_size
            self.ranges = blocks.plan_ranges(
                lambda n, off: os.pread(fd, n, off), start, end, size, boundary)
            self.pollable = False
        else:
            self.pollable = is_pollable(fd)
            if self.pollable:
                os.set_blocking(fd, False)
                grow_pipe(fd)

    @property
    def fd(self):
        return self.fd_in if self.pollable and not self.eof else None

    def on_readable(self):
        self._read()

    def _read(self):
        if len(self.buf) > max(MAX_RECORD, 2 * self.size):
            raise errors.DataError(
                f"--pipe: a record is longer than {len(self.buf) >> 20} MiB (no record end "
                f"in it): give --recend, or a --block at least half its size")
        want = max(self.size + (1 << 16) - len(self.buf), 1 << 16)
        try:
            chunk = read_input(self.fd_in, min(want, 16 << 20))
        except BlockingIOError:
            return
        if chunk:
            self.buf += chunk
        else:
            self.eof = True

    def next_block(self):
        """The next block, WAIT, or None at the end."""
        if self.ranges is not None:
            for offset, length in self.ranges:
                return FileRange(self.fd_in, offset, length)
            return None
        while True:
            if self.header_rx is not None:
                # As GNU parallel: the header is matched at the start of
                # the first block read.
                if len(self.buf) < max(self.size, 1) and not self.eof:
                    if self.pollable:
                        return WAIT
                    self._read()
                    continue
                m = self.header_rx.match(self.buf)
                if m:
                    self.header = bytes(m.group(0))
                    del self.buf[:m.end()]
                self.header_rx = None
            cut = self.boundary.cut(self.buf, self.size, self.records, self.eof)
            if cut > 0:
                block = self.buf
                self.buf = bytearray(block[cut:])
                del block[cut:]
                if self.header and self.prepend:
                    block[:0] = self.header
                return block
            if self.eof:
                return None
            if self.pollable:
                return WAIT
            self._read()

    def next(self):
        block = self.next_block()
        if block is None or block is WAIT:
            return block
        self.seq += 1
        return Job(self.seq, (), block)


class Wrapped:
    """A source made of another: its input fd, numbering and reading are
    the other's."""

    @property
    def fd(self):
        return self.source.fd

    @property
    def seq(self):
        return self.source.seq

    def on_readable(self):
        self.source.on_readable()


class SkipSource(Wrapped):
    """--resume: the jobs of another source but those the joblog lists as
    done; their numbers ({#}, Seq) stay what they were."""

    def __init__(self, source, done):
        self.source = source
        self.done = done

    def next(self):
        while True:
            job = self.source.next()
            if job is None or job is WAIT or job.seq not in self.done:
                return job


class TeeSource(Wrapped):
    """--pipe --tee: every job of another source gets all of stdin.  Stdin
    is read first, into an unlinked temporary file unless it is a regular
    file already, and each job is sent the whole of it."""

    def __init__(self, source, fd, tmpdir=None):
        self.source = source
        if is_regular(fd):
            start = os.lseek(fd, 0, os.SEEK_CUR)
            self.data = (fd, start, os.fstat(fd).st_size - start)
            return
        import tempfile
        tmp = tempfile.TemporaryFile(prefix="gridmap-tee-", dir=tmpdir)
        os.set_blocking(fd, True)
        while True:
            chunk = read_input(fd, 1 << 20)
            if not chunk:
                break
            tmp.write(chunk)
        tmp.flush()
        self.file = tmp         # kept open as long as the source lives
        self.data = (tmp.fileno(), 0, tmp.tell())

    def next(self):
        job = self.source.next()
        if job is not None and job is not WAIT:
            job.block = FileRange(*self.data)
        return job


class PartSource:
    """--pipepart: the files given with -a or :::: cut by offsets where
    GNU parallel cuts them, each part a job's stdin (after the --header
    the file starts with)."""

    def __init__(self, paths, size, boundary, header_rx, slots, per_slot=None):
        self.fds = []
        total = 0
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise errors.NoInputError(f"cannot read {path}: {e.strerror}")
            if not is_regular(fd):
                os.close(fd)
                raise errors.NoInputError(f"--pipepart: {path} is not a regular file")
            self.fds.append(fd)
            total += os.fstat(fd).st_size
        if per_slot:
            # GNU parallel: --block -N is N parts per job slot.
            size = 1 + total // slots // per_slot
        self.parts = self._plan(size, boundary, header_rx)
        self.seq = 0

    fd = None

    def _plan(self, size, boundary, header_rx):
        for fd in self.fds:
            end = os.fstat(fd).st_size
            header = b""
            if header_rx is not None:
                m = header_rx.match(os.pread(fd, 1 << 20, 0))
                header = m.group(0) if m else b""
            cuts = blocks.part_positions(lambda n, off, fd=fd: os.pread(fd, n, off),
                                         len(header), end, size, boundary)
            for a, b in zip(cuts, cuts[1:]):
                if header:
                    yield header + os.pread(fd, b - a, a)
                else:
                    yield FileRange(fd, a, b - a)

    def on_readable(self):
        pass

    def next(self):
        for block in self.parts:
            self.seq += 1
            return Job(self.seq, (), block)
        return None
