"""--pipe: find where to cut a stream into blocks without splitting a record.
Pure functions over buffers; the caller does the reading.

A record boundary is a place where the record end string (default "\\n")
is immediately followed by the record start string (default ""): the block
ends after the record end.  A block holds whole records: it ends at the last
boundary within the block size, or, when one record is larger than a block,
at the first boundary after it.
"""

import re

from gridtools.proto import units

parse_size = units.parse_size      # --block's grammar is every command's


class Boundary:
    """Finds record boundaries for one (recend, recstart) pair."""

    seekable = True         # plan_ranges may cut a file by offsets

    def __init__(self, recend=b"\n", recstart=b""):
        if not recend and not recstart:
            raise ValueError("--recend and --recstart cannot both be empty")
        self.recend = recend
        self.sep = recend + recstart

    def last_before(self, buf, limit, start=0):
        """The last cut position in (start, limit], or -1."""
        end = min(limit, len(buf) - len(self.sep) + len(self.recend))
        # idx + len(recend) <= end  <=>  idx + len(sep) <= end + len(recstart)
        idx = buf.rfind(self.sep, start, end - len(self.recend) + len(self.sep))
        while idx >= 0:
            pos = idx + len(self.recend)
            if pos > start:
                return pos
            idx = buf.rfind(self.sep, start, idx + len(self.sep) - 1)
        return -1

    def first_after(self, buf, start):
        """The first cut position > start, or -1."""
        idx = buf.find(self.sep, max(0, start - len(self.recend) + 1))
        while idx >= 0:
            pos = idx + len(self.recend)
            if pos > start:
                return pos
            idx = buf.find(self.sep, idx + 1)
        return -1

    def nth(self, buf, n, start=0):
        """The cut position after n records from start, or -1."""
        pos = start
        for _ in range(n):
            pos = self.first_after(buf, pos)
            if pos < 0:
                return -1
        return pos

    def slack(self):
        """Bytes needed past a block's end to judge a cut there."""
        return len(self.sep) - len(self.recend)

    def cut(self, buf, size, records=None, eof=False):
        """Where the next block ends in buf, or -1 when more data is needed.

        size: the block size; records: cut after exactly this many records
        instead (-N); eof: no more data will come, so the rest is a block.
        """
        if not buf:
            return -1
        if records is not None:
            pos = self.nth(buf, records)
        elif len(buf) > size and (eof or len(buf) >= size + self.slack()):
            # Only with enough to judge a boundary at size itself, which
            # needs the record start after it: cutting sooner would make
            # blocks from a pipe smaller than the same blocks from a file.
            pos = self.last_before(buf, size)
            if pos < 0:
                pos = self.first_after(buf, size)
        elif eof:
            pos = len(buf)
        else:
            return -1
        if pos < 0:
            return len(buf) if eof else -1
        return pos

    def find(self, buf):
        """The first cut position in buf, or -1 (--pipepart)."""
        i = buf.find(self.sep)
        return i + len(self.recend) if i >= 0 else -1


class RegexBoundary(Boundary):
    """--regexp: --recend and --recstart are regular expressions (Python's
    re, multi-line: ^ and $ match at every line); a record boundary is where
    a match of recend is followed by a match of recstart.  Matches reach at
    most SLACK bytes past a block's end: a record end longer than that is
    not seen there."""

    seekable = False
    SLACK = 1 << 16

    def __init__(self, recend=b"\n", recstart=b""):
        if not recend:
            recend = b"(?s:.)"          # as GNU parallel: --recend ''
        self.rx = re.compile(b"(?:" + recend + b")(?=" + recstart + b")", re.M)

    def _cuts(self, buf, start, stop):
        """Cut positions > start, with matches ending by stop + SLACK."""
        end = min(len(buf), stop + self.SLACK)
        for m in self.rx.finditer(buf, max(0, start), end):
            if m.end() > start:
                yield m.end()

    def last_before(self, buf, limit, start=0):
        width = 1 << 12
        lo = limit
        while lo > start:
            lo = max(start, limit - width)
            best = -1
            for pos in self._cuts(buf, lo, limit):
                if pos > limit:
                    break
                best = pos
            if best > 0:
                return best
            width *= 4
        return -1

    def first_after(self, buf, start):
        for pos in self._cuts(buf, start, len(buf)):
            return pos
        return -1

    def find(self, buf):
        return self.first_after(buf, 0)

    def slack(self):
        return self.SLACK


def plan_ranges(pread, start, end, size, boundary, window=1 << 16):
    """Block ranges (offset, length) of a seekable file region [start, end).

    Only the bytes around each cut are read (pread(n, offset) -> bytes), so
    a large file is split without reading it: the blocks themselves can then
    go to the jobs with sendfile.
    """
    pos = start
    while pos < end:
        target = pos + size
        if target >= end:
            yield pos, end - pos
            return
        cut = _scan_back(pread, pos, target, end, boundary, window)
        if cut < 0:
            cut = _scan_forward(pread, pos, target, end, boundary, window)
        yield pos, cut - pos
        pos = cut


def _scan_back(pread, pos, target, end, boundary, window):
    """The last boundary in (pos, target], or -1.

    Usually the first window before target holds one; records longer than a
    window need more, and giving up early would make the block overshoot the
    size although it holds several records.
    """
    keep = len(boundary.sep)
    window = max(window, 2 * keep)
    hi = target
    while True:
        lo = max(pos, hi - window)
        # Read past target by a separator's length: a boundary at target
        # itself needs its record start to be seen.
        buf = pread(min(hi - lo + keep, end - lo), lo)
        cut = boundary.last_before(buf, target - lo)
        if cut > 0:
            return lo + cut
        if lo == pos:
            return -1
        hi = lo + keep          # overlap: a separator may straddle lo


def _scan_forward(pread, pos, target, end, boundary, window):
    """The first boundary after target (a record longer than the block), or
    end.  The search starts a separator's length before target: a separator
    straddling target still makes a boundary after it."""
    keep = len(boundary.sep)
    window = max(window, 2 * keep)
    off = target
    while off < end:
        lo = max(pos, off - keep)
        buf = pread(min(window, end - lo), lo)
        if not buf:
            break
        cut = boundary.first_after(buf, target - lo)
        if cut > 0:
            return lo + cut
        off = lo + len(buf)
    return end


def part_positions(pread, start, end, size, boundary, window=1 << 17):
    """--pipepart: the cut positions of a file region [start, end), as GNU
    parallel finds them: from every multiple of size past the last cut,
    the first record end followed by a record start."""
    cuts = [start]
    pos = start + size
    while pos < end:
        off = pos
        buf = b""
        while True:
            chunk = pread(window, off)
            if not chunk:
                break
            buf += chunk
            off += len(chunk)
            i = boundary.find(buf)
            if i >= 0:
                pos += i
                cuts.append(pos)
                break
        pos += size
    if cuts[-1] != end:
        cuts.append(end)
    return cuts
