"""--csv: input items read as CSV records, as GNU parallel reads them (with
Perl's Text::CSV, binary, strict about quotes): a quoted field may hold the
separator, doubled quotes and newlines.  Pure functions and one small
filter; no I/O.
"""

import re

from gridtools.proto import errors


def parse(line, sep=","):
    """The fields of one CSV record (a str), as a tuple.

    A field is either bare (no quote in it) or quoted ("..." with "" for
    a quote, and then the separator or the end); anything else is refused
    with DataError, as Text::CSV refuses it.  An empty record is one empty
    field.
    """
    fields = []
    i, n = 0, len(line)
    while True:
        if line.startswith('"', i):
            value, i = _quoted(line, i + 1)
        else:
            end = line.find(sep, i)
            end = n if end < 0 else end
            value = line[i:end]
            if '"' in value:
                raise _bad(line)
            i = end
        fields.append(value)
        if i == n:
            return tuple(fields)
        if not line.startswith(sep, i):
            raise _bad(line)
        i += len(sep)


def _quoted(line, i):
    """The value of a quoted field whose text starts at i, and where it
    ends (after its closing quote)."""
    parts = []
    while True:
        end = line.find('"', i)
        if end < 0:
            raise _bad(line)
        parts.append(line[i:end])
        if line.startswith('""', end):
            parts.append('"')
            i = end + 2
            continue
        return "".join(parts), end + 1


def _bad(line):
    shown = line if len(line) <= 60 else line[:57] + "..."
    return errors.DataError(f"--csv: CSV has unexpected format: {shown!r}")


def make_record(sep, trim=None):
    """The function turning one item into a record, for --csv."""
    from gridtools.local import inputs
    t = inputs.TRIMS[trim or "n"]
    if trim in (None, "n"):
        return lambda item: parse(item, sep)
    return lambda item: tuple(t(f) for f in parse(item, sep))


_QUOTE = re.compile('"')


class Joiner:
    """Items that hold an odd number of quotes end inside a quoted field:
    join them with the next items (and the delimiter between) until the
    record is whole, as GNU parallel does for --csv.  Then pass the whole
    records through inner, an inputs.ItemFilter or None."""

    def __init__(self, delim, inner=None):
        self.delim = delim          # the delimiter, as text
        self.inner = inner
        self.half = None            # a record begun and not yet whole

    @property
    def done(self):
        return self.inner is not None and self.inner.done

    def feed(self, items):
        out = []
        for item in items:
            odd = len(_QUOTE.findall(item)) % 2
            if self.half is not None:
                item = self.half + self.delim + item
                self.half = None
                if odd:
                    out.append(item)        # the closing quote came
                    continue
                self.half = item
                continue
            if odd:
                self.half = item
                continue
            out.append(item)
        return self.inner.feed(out) if self.inner is not None else out

    def finish(self):
        """A record still open at the end is given as it is (and is then
        refused by parse)."""
        tail, self.half = self.half, None
        rest = [tail] if tail is not None else []
        if self.inner is None:
            return rest
        return self.inner.feed(rest) + self.inner.finish()

    def apply(self, items):
        return self.feed(items) + self.finish()
