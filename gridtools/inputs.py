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


def decode(b):
    return os.fsdecode(b) if b else ""


class Splitter:
    """Incremental splitter: feed it chunks, get back complete items.

    A trailing delimiter ends the last item; it does not start an empty one.
    Empty items between delimiters are items (an empty line is an input).
    """

    def __init__(self, delim=b"\n"):
        self.delim = delim
        self.tail = b""

    def feed(self, chunk):
        if not chunk:
            return []
        data = self.tail + chunk if self.tail else chunk
        parts = data.split(self.delim)
        self.tail = parts.pop()
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


def combine(sources):
    """Records from several finite sources.

    sources: list of (values, linked) where linked means the source was
    given with :::+ or ::::+ and pairs up with the one before it instead of
    multiplying.  Unlinked groups form a cartesian product; linked sources
    run side by side and stop with the shortest.  Each value is a record;
    the fields of combined records are concatenated.
    """
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
