"""--results FILE.csv, FILE.tsv, FILE.json: one record per finished job in
one file, in GNU parallel's format (its columns, quoting and number
forms), instead of the jobs' output on stdout.  -.csv, -.tsv and -.json
write the records on stdout.

CSV and TSV: a header line (Seq, Host, Starttime, JobRuntime, Send,
Receive, Exitval, Signal, Command, V1..Vn or the --header names, Stdout,
Stderr) before the first record; a field is quoted ("...", with "" for
a quote) when it holds a quote, white space, the separator or a NUL.
JSON: one object a line, strings with \\, " and the control characters
escaped and every other byte as it is.
"""

import os
import re

from gridtools.proto import errors

COLUMNS = (b"Seq", b"Host", b"Starttime", b"JobRuntime", b"Send", b"Receive",
           b"Exitval", b"Signal", b"Command")
SEPARATORS = {".csv": b",", ".tsv": b"\t"}


def kind(name):
    """".csv", ".tsv" or ".json" when --results NAME asks for one file of
    records (as GNU parallel decides: by the suffix, in any case), else
    None."""
    if name is None:
        return None
    m = re.search(r"\.(csv|tsv|json)\Z", name, re.I)
    return "." + m.group(1).lower() if m else None


def exit_value(r):
    """The Exitval column: a job killed by a signal has 0 and the signal,
    as in GNU parallel; -1 only when there was no exit at all."""
    return r.exitcode if r.exitcode is not None else 0 if r.signal else -1


def _needs_quotes(sep):
    return re.compile(rb"[\s\0" + re.escape(sep) + rb"]")


def csv_field(value, sep, special=None):
    """One field (bytes) as GNU parallel writes it."""
    special = special or _needs_quotes(sep)
    if b'"' in value or special.search(value):
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


def csv_line(values, sep, special=None):
    special = special or _needs_quotes(sep)
    return sep.join(csv_field(v, sep, special) for v in values) + b"\n"


_CONTROL = re.compile(rb'[\\"\x00-\x1f]')


def _json_char(m):
    c = m.group(0)
    return b"\\" + c if c in (b"\\", b'"') else b"\\u%04x" % c[0]


def json_string(value):
    return b'"' + _CONTROL.sub(_json_char, value) + b'"'


def _common(r, out, err):
    """The first nine columns, as bytes."""
    return [str(r.seq).encode(), os.fsencode(r.host), b"%.3f" % r.start,
            b"%.3f" % r.runtime, str(r.sent).encode(), str(len(out)).encode(),
            str(exit_value(r)).encode(), str(r.signal or 0).encode(),
            os.fsencode(r.command)]


def json_line(r, out, err):
    c = _common(r, out, err)
    v = b",".join(json_string(os.fsencode(a)) for a in r.args)
    return (b'{ "Seq": %s, "Host": %s, "Starttime": %s, "JobRuntime": %s, '
            b'"Send": %s, "Receive": %s, "Exitval": %s, "Signal": %s, '
            b'"Command": %s, "V": [ %s ], "Stdout": %s, "Stderr": %s }\n'
            % (c[0], json_string(c[1]), c[2], c[3], c[4], c[5], c[6], c[7],
               json_string(c[8]), v, json_string(out), json_string(err)))


class Table:
    """The records of one --results FILE.csv|.tsv|.json run."""

    def __init__(self, name, headers=None):
        self.kind = kind(name)
        self.sep = SEPARATORS.get(self.kind)
        self.special = _needs_quotes(self.sep) if self.sep else None
        self.headers = headers or {}        # --header: column number -> name
        self.headed = False
        self.fd = None                      # None: our stdout
        self.name = name
        if name not in ("-.csv", "-.tsv", "-.json"):
            try:
                self.fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                  0o666)
            except OSError as e:
                raise errors.GridError(f"--results: cannot write {name}: {e.strerror}",
                                       errors.CANTCREAT)

    def record(self, r, out, err):
        """The bytes for r (out, err: its whole stdout and stderr), with
        the header line first if it is the first."""
        if self.kind == ".json":
            return json_line(r, out, err)
        head = b""
        if not self.headed:
            self.headed = True
            names = [os.fsencode(str(self.headers[n])) if n in self.headers else b"V%d" % n
                     for n in range(1, len(r.args) + 1)]
            head = csv_line([*COLUMNS, *names, b"Stdout", b"Stderr"], self.sep, self.special)
        return head + csv_line([*_common(r, out, err), *map(os.fsencode, r.args), out, err],
                               self.sep, self.special)

    def save(self, r, out_writer):
        """Write r's record: to the file, or to out_writer (gridmap's
        stdout) for -.csv.  Nothing else of the job is printed."""
        from gridtools.local import output
        data = self.record(r, output.value(r.stdout), output.value(r.stderr))
        output.close(r.stdout)
        output.close(r.stderr)
        if self.fd is None:
            out_writer.write(data)
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            raise errors.GridError(f"--results: cannot write {self.name}: {e.strerror}",
                                   errors.IOERR)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
