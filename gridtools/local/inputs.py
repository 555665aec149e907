"""Inputs: split byte streams into items, combine input sources, group items
into jobs.  Pure functions and small generators, no I/O of their own.

An item is a str (bytes decoded with surrogateescape, so any byte sequence
reaches the job unchanged).  A record is a tuple of fields: one per input
source, or one per column with --colsep.  A job's arguments are the fields
of its records, flattened.
"""

import itertools
import os
import re

from gridtools.proto import errors

# The most bytes one input item may hold: Linux's limit on one argument
# (MAX_ARG_STRLEN), so no longer item could reach a command anyway, and an
# input with no delimiter cannot grow gridmap's memory without bound.
MAX_ITEM = 128 * 1024


def decode(b):
    return os.fsdecode(b) if b else ""


class Splitter:
    """Incremental splitter: feed it chunks, get back complete items.

    A trailing delimiter ends the last item; it does not start an empty one.
    Empty items between delimiters are items (an empty line is an input).
    """

    def __init__(self, delim=b"\n", limit=MAX_ITEM):
        self.delim = delim
        self.limit = limit
        self.tail = b""

    def feed(self, chunk):
        if not chunk:
            return []
        data = self.tail + chunk if self.tail else chunk
        parts = data.split(self.delim)
        self.tail = parts.pop()
        if len(data) > self.limit and max([len(self.tail), *map(len, parts)]) > self.limit:
            raise errors.DataError(
                f"an input item is longer than {self.limit} bytes, the most one argument "
                f"may hold (for data, use --pipe)")
        return [decode(p) for p in parts]

    def finish(self):
        tail, self.tail = self.tail, b""
        return [decode(tail)] if tail else []


def split_items(chunks, delim=b"\n"):
    """Generator: items from an iterable of byte chunks."""
    s = Splitter(delim)
    for chunk in chunks:
        yield from s.feed(chunk)
    yield from s.finish()


def read_chunks(fd, size=1 << 16):
    """Generator: blocking reads from fd until EOF."""
    while True:
        chunk = os.read(fd, size)
        if not chunk:
            return
        yield chunk


def parse_delimiter(text):
    """-d DELIM: C-style escapes allowed (\\n, \\t, \\0, \\xHH)."""
    try:
        d = text.encode("latin-1").decode("unicode_escape").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError):
        d = os.fsencode(text)
    return d or None


_BLANK = re.compile(r"\s*\Z")


class ItemFilter:
    """xargs's rules for input items, as GNU parallel applies them to each
    input source: an item equal to the end-of-file string (-E) ends the
    source; with -L/-l an item ending in a blank is continued by the next;
    with -r an item that is empty or only blanks is skipped.

    feed(items) returns the items that pass; done is set once the
    end-of-file string was met (read no more); finish() returns a continued
    item left at the end.
    """

    def __init__(self, eof=None, continue_lines=False, skip_blank=False):
        self.eof = eof
        self.continue_lines = continue_lines
        self.skip_blank = skip_blank
        self.prepend = None
        self.done = False

    def feed(self, items):
        out = []
        for item in items:
            if self.done:
                break
            if self.eof is not None and item == self.eof:
                self.done = True
                out.extend(self.finish())
                break
            if self.prepend is not None:
                item, self.prepend = self.prepend + item, None
            if self.skip_blank and _BLANK.match(item):
                continue
            if self.continue_lines and item[-1:].isspace():
                self.prepend = item
                continue
            out.append(item)
        return out

    def finish(self):
        tail, self.prepend = self.prepend, None
        return [tail] if tail is not None else []

    def apply(self, items):
        """All of a finite list of items."""
        return self.feed(items) + self.finish()


def make_filter(eof=None, continue_lines=False, skip_blank=False):
    """An ItemFilter, or None when there is nothing to filter."""
    if eof is None and not continue_lines and not skip_blank:
        return None
    return ItemFilter(eof, continue_lines, skip_blank)


TRIMS = {
    "n": lambda s: s,
    "l": str.lstrip,
    "r": str.rstrip,
    "lr": str.strip,
    "rl": str.strip,
}


def make_record(trim=None, colsep=None):
    """The function turning one item into a record (a tuple of fields)."""
    t = TRIMS[trim or "n"]
    if colsep is None:
        return lambda item: (t(item),)
    rx = re.compile(colsep)
    return lambda item: tuple(t(f) for f in rx.split(item))


def combine(sources, wrap=False):
    """Records from several finite sources.

    sources: list of (values, linked) where linked means the source was
    given with :::+ or ::::+ and pairs up with the one before it instead of
    multiplying.  Unlinked groups form a cartesian product; linked sources
    run side by side and stop with the shortest.  With wrap (--link) all
    sources run side by side and the shorter ones wrap around.  Each value
    is a record;
    the fields of combined records are concatenated.
    """
    if wrap:
        # --link: every source side by side, the shorter ones wrapping
        # around until the longest ends (GNU parallel's --link).
        lists = [values for values, _ in sources]
        if not all(lists):
            return
        for i in range(max(map(len, lists))):
            yield _concat([v[i % len(v)] for v in lists])
        return
    groups = []
    for values, linked in sources:
        if linked and groups:
            groups[-1].append(values)
        else:
            groups.append([values])
    zipped = [[_concat(r) for r in zip(*g)] for g in groups]
    for combo in itertools.product(*zipped):
        yield _concat(combo)


def _concat(records):
    out = ()
    for r in records:
        out += r
    return out


def fields(records):
    """A job's arguments: the fields of its records, in order."""
    if len(records) == 1:
        return list(records[0])
    out = []
    for r in records:
        out.extend(r)
    return out


def line_length(records):
    """Roughly how many bytes these records add to a command line."""
    return sum(len(f) + 3 for r in records for f in r)
