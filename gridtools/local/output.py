"""Where finished jobs go: their output on our stdout and stderr (grouped, in
order with -k, or line by line), the joblog, --json records.

Memory stays bounded with -k: while an early job holds back later ones,
finished outputs beyond a small in-memory budget are appended to one spill
file, and only their offsets are kept.
"""

import array
import os
import struct
import sys

from gridtools.local import inputs
from gridtools.local.results import exit_value
from gridtools.local.writer import Writer
from gridtools.proto import errors

JOBLOG_HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"

# A finished job's outcome as the tools print it (named once, in errors).
OK, FAILED, SIGNALED, TIMEOUT, CANCELLED, LOST = errors.OUTCOMES


class Result:
    """One job's final record."""

    __slots__ = ("seq", "args", "command", "exitcode", "signal", "outcome",
                 "start", "runtime", "stdout", "stderr", "tries", "slot",
                 "host", "sent", "tag", "width")

    def __init__(self, seq, args, command, exitcode, signal, outcome, start,
                 runtime, stdout=b"", stderr=b"", tries=1, slot=0, host=":",
                 sent=0, tag=b"", width=0):
        self.seq = seq
        self.args = args
        self.command = command
        self.exitcode = exitcode
        self.signal = signal
        self.outcome = outcome
        self.start = start
        self.runtime = runtime
        self.stdout = stdout
        self.stderr = stderr
        self.tries = tries
        self.slot = slot
        self.host = host
        self.sent = sent
        self.tag = tag
        self.width = width          # fields per input record

    @property
    def failed(self):
        return self.outcome != OK


def joblog_line(r):
    """One line in GNU parallel's joblog format."""
    return (f"{r.seq}\t{r.host}\t{r.start:.3f}\t{r.runtime:10.3f}\t{r.sent}\t"
            f"{len(r.stdout)}\t{exit_value(r)}\t{r.signal or 0}\t"
            f"{r.command.replace(chr(10), ' ')}\n")


def json_record(r):
    """One --json line: everything known about a finished job.

    Every string is valid Unicode, so every consumer (jq, a strict UTF-8
    decoder) can read the line: a value whose bytes are not UTF-8 is
    given with U+FFFD for the bad bytes, and its exact bytes in base64 in a
    FIELD_base64 companion (input_base64 is a list, one per input).  The
    line itself is ASCII.
    """
    import json     # only --json and -k spills pay for the import
    rec = {"seq": r.seq}
    inputs = [os.fsencode(a) for a in r.args]
    texts = [_text(a) for a in inputs]
    rec["input"] = [text for text, _ in texts]
    if any(exact is not None for _, exact in texts):
        rec["input_base64"] = [_b64(a) for a in inputs]
    _put(rec, "command", os.fsencode(r.command))
    rec.update(status=r.outcome, exit=r.exitcode, signal=r.signal)
    _put(rec, "host", os.fsencode(r.host))
    rec.update(slot=r.slot, tries=r.tries, start=round(r.start, 6),
               runtime=round(r.runtime, 6))
    _put(rec, "stdout", value(r.stdout))
    _put(rec, "stderr", value(r.stderr))
    return json.dumps(rec) + "\n"


def _put(rec, name, data):
    rec[name], exact = _text(data)
    if exact is not None:
        rec[name + "_base64"] = exact


def _text(data):
    """(text, None) for UTF-8 bytes; else (text with U+FFFD, base64 of data)."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), _b64(data)


def _b64(data):
    import base64
    return base64.b64encode(data).decode("ascii")


def tag_lines(prefix, data):
    """Prefix every line of data (a trailing partial line included)."""
    if not prefix or not data:
        return data
    lines = data.split(b"\n")
    last = lines.pop()
    out = b"".join(prefix + line + b"\n" for line in lines)
    return out + (prefix + last if last else b"")


class Capture:
    """One stream of a running job's output: in memory up to LIMIT bytes,
    then in an unlinked temporary file, so a job that prints gigabytes costs
    disk, not memory.  With --compress (packer), the file is written
    through the compressor and read back through the decompressor."""

    LIMIT = 1 << 20
    __slots__ = ("parts", "size", "file", "tmpdir", "packer")

    def __init__(self, tmpdir=None, packer=None):
        self.parts = []
        self.size = 0
        self.file = None
        self.tmpdir = tmpdir        # --tmpdir; None: $TMPDIR or /tmp
        self.packer = packer        # --compress: a compress.Packer

    def append(self, data):
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            return
        self.parts.append(data)
        if self.size > self.LIMIT:
            if self.packer is not None:
                self.file = self.packer.open()
            else:
                import tempfile
                self.file = tempfile.TemporaryFile(prefix="gridmap-out-", dir=self.tmpdir)
            self.file.writelines(self.parts)
            self.parts = []

    def __len__(self):
        return self.size

    def chunks(self, size=1 << 20):
        if self.file is None:
            yield from self.parts
            return
        if self.packer is not None:
            yield from self.file.chunks(size)
            return
        self.file.seek(0)           # writes what the buffer holds first
        yield from inputs.read_chunks(self.file.fileno(), size)

    def take(self):
        """All of it, emptied."""
        data = b"".join(self.chunks())
        self.close()
        return data

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
        self.parts = []
        self.size = 0


class SpillSlice:
    """A held result's output, left where it lies in the spill file."""

    __slots__ = ("file", "offset", "size")

    def __init__(self, file, offset, size):
        self.file = file
        self.offset = offset
        self.size = size

    def __len__(self):
        return self.size

    def chunks(self, size=1 << 20):
        pos, end = self.offset, self.offset + self.size
        while pos < end:
            self.file.seek(pos)
            chunk = self.file.read(min(size, end - pos))
            if not chunk:
                return
            pos += len(chunk)
            yield chunk


def _packed(data):
    """--compress: whether data is an output compressed in its file."""
    return isinstance(data, Capture) and data.packer is not None and data.file is not None


def chunks(data):
    """The pieces of some output: bytes, a Capture or a SpillSlice."""
    if isinstance(data, (bytes, bytearray)):
        return (data,) if data else ()
    return data.chunks()


def value(data):
    return data if isinstance(data, (bytes, bytearray)) else b"".join(data.chunks())


def close(data):
    if isinstance(data, Capture):
        data.close()


def pieces(data):
    """data's chunks, read as they are wanted; a Capture is closed after
    its last one (or when the writer drops it)."""
    try:
        yield from chunks(data)
    finally:
        close(data)


def tagged(prefix, pieces):
    """The pieces with every line prefixed; lines may span pieces."""
    if not prefix:
        yield from pieces
        return
    carry = b""
    for piece in pieces:
        data = carry + piece
        cut = data.rfind(b"\n") + 1
        if cut:
            yield tag_lines(prefix, data[:cut])
        carry = data[cut:]
    if carry:
        yield prefix + carry


class Results:
    """--results NAME and --files: each job's output saved in files where
    GNU parallel saves it.

    --results DIR (no replacement string): DIR/1/value/2/value/ holds
    seq, stdout and stderr, a directory level per input field named by
    its --header column (or number), values with \\ \t \0 / written as
    \\\\ \\t \\0 \\_.  A NAME with replacement strings names the stdout
    file (NAME.err, NAME.seq beside it), or the directory when it ends in
    /.  --files alone: stdout in a new file parXXXXXXXX.par in the
    temporary directory.  With --files the stdout file's name is printed.
    """

    def __init__(self, name, headers, print_names, tmpdir):
        from gridtools.local import template
        self.name = name
        self.headers = headers
        self.print_names = print_names
        self.tmpdir = tmpdir
        self.templated = name is not None and template.TOKEN.search(name) is not None

    def save(self, r, out_writer=None):
        """Write r's output; return (the name to print or None, the stderr
        still to print or None).  (out_writer: for results.Table, which
        may write on stdout.)"""
        if self.name is None:
            import tempfile
            fd, path = tempfile.mkstemp(prefix="par", suffix=".par", dir=self.tmpdir)
            _write_file(path, r.stdout, fd)
            return path, r.stderr
        if self.templated:
            from gridtools.local import template
            out = template.expand_plain(self.name, r.args, r.seq, r.slot)
            if out.endswith("/"):
                self._mkdir(out)
                paths = (out + "seq", out + "stdout", out + "stderr")
            else:
                self._mkdir(os.path.dirname(out))
                paths = (out + ".seq", out, out + ".err")
        else:
            out = self.name + "/" + self.dirname(r) + "/"
            self._mkdir(out)
            paths = (out + "seq", out + "stdout", out + "stderr")
        _write_file(paths[0], [str(r.seq).encode()])
        _write_file(paths[1], r.stdout)
        _write_file(paths[2], r.stderr)
        return (paths[1] if self.print_names else None), None

    def dirname(self, r):
        """GNU parallel's args_as_dirname: header, value, ... for each
        input record, the columns sorted by header (numbers first)."""
        width = r.width or len(r.args) or 1
        parts = []
        for i in range(0, len(r.args), width):
            record = r.args[i:i + width]
            names = {n: str(self.headers.get(n, n)) for n in range(1, len(record) + 1)}
            for n in sorted(names, key=lambda n: _perl_order(names[n])):
                parts.append(names[n])
                parts.append(record[n - 1].replace("\\", "\\\\").replace("\t", "\\t")
                             .replace("\0", "\\0").replace("/", "\\_"))
        return "/".join(parts)

    @staticmethod
    def _mkdir(path):
        if path:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                raise errors.GridError(f"--results: cannot make {path}: {e.strerror}",
                                       errors.CANTCREAT)


def _perl_order(name):
    """Perl's sort { $a <=> $b or $a cmp $b }: by the number a name starts
    with (0 if none), then as strings."""
    import re
    m = re.match(r"\s*[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", name)
    try:
        num = float(m.group(0)) if m else 0.0
    except ValueError:
        num = 0.0
    return (num, name.encode("utf-8", "surrogateescape"))


def _write_file(path, data, fd=None):
    """data (bytes, a Capture or a list of bytes) into a new file at path."""
    try:
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        with open(fd, "wb") as f:
            for chunk in (data if isinstance(data, list) else pieces(data)):
                f.write(chunk)
    except OSError as e:
        raise errors.GridError(f"cannot write {path}: {e.strerror}", errors.CANTCREAT)


class Sink:
    """Emits results: grouped or in order; stdout/stderr/joblog/json."""

    MEMORY_BUDGET = 8 << 20     # held output bytes before spilling
    MEMORY_JOBS = 2000          # held jobs before spilling

    def __init__(self, keep_order=False, as_json=False, joblog=None,
                 tagged=False, out_fd=1, err_fd=2, first_seq=1, show_command=False,
                 tmpdir=None, joblog_header=True, results=None, skip=(), packer=None):
        self.keep_order = keep_order
        self.skip = skip                    # --resume: seqs that never come
        self.results = results              # --results, --files
        self.show_command = show_command    # -v: the command before its output
        self.tmpdir = tmpdir                # --tmpdir: where -k spills
        self.packer = packer                # --compress: a compress.Packer
        self.as_json = as_json
        self.joblog = joblog
        self.tagged = tagged
        self.out = Writer(out_fd)
        self.err = Writer(err_fd)
        self.log_to_out = joblog is sys.stdout      # --joblog -: in order with the output
        self.next_seq = first_seq
        self.held = {}                 # seq -> Result kept in memory
        self.held_bytes = 0
        self.spill = None              # temp file of spilled results
        self.spill_at = array.array("q")   # seq - spill_base -> offset (-1: none)
        self.spill_base = first_seq
        self.spilled = 0               # results waiting in the spill file
        if joblog is not None and joblog_header:
            self._write_log(JOBLOG_HEADER)

    # -- writing ---------------------------------------------------------

    def attach(self, loop, on_drain):
        """Write from loop, never blocking it; on_drain() when what waited
        has been written."""
        self.out.attach(loop, on_drain)
        self.err.attach(loop, on_drain)

    def pending(self):
        """Writes waiting for a reader (the pool starts no more jobs while
        too many wait)."""
        return self.out.pending() + self.err.pending()

    def write(self, fd_no, data):
        (self.out if fd_no == 1 else self.err).write(data)

    def _write_log(self, line):
        if self.log_to_out:
            self.out.write(line.encode("utf-8", "surrogateescape"))
        else:
            self.joblog.write(line)
            self.joblog.flush()

    # -- grouped results -------------------------------------------------

    def add(self, r):
        """A job is finished: print it now, or hold it until its turn."""
        if not self.keep_order:
            self._emit(r)
            return
        self._skip()
        if r.seq != self.next_seq:
            self._hold(r)
            return
        self._emit(r)
        self.next_seq += 1
        self._drain()

    def _skip(self):
        while self.next_seq in self.skip:
            self.next_seq += 1


    def _drain(self):
        while True:
            self._skip()
            seq = self.next_seq
            if seq in self.held:
                r = self.held.pop(seq)
                self.held_bytes -= len(r.stdout) + len(r.stderr)
                self._emit(r)
            elif not self._unspill(seq):
                return
            self.next_seq += 1

    def _hold(self, r):
        size = len(r.stdout) + len(r.stderr)
        if self.held_bytes + size > self.MEMORY_BUDGET or len(self.held) >= self.MEMORY_JOBS:
            self._spill(r)
            return
        self.held[r.seq] = r
        self.held_bytes += size

    def _spill(self, r):
        import json
        if self.spill is None:
            import tempfile
            self.spill = tempfile.TemporaryFile(prefix="gridmap-spill-", dir=self.tmpdir)
        if not self.spilled and not self.pending():
            # Nothing spilled is waiting (to be emitted, or written): start
            # the file afresh, so its size follows what is held, not
            # everything that ever was.
            self.spill.seek(0)
            self.spill.truncate()
            self.spill_at = array.array("q")
            self.spill_base = self.next_seq
        index = r.seq - self.spill_base
        if index >= len(self.spill_at):
            self.spill_at.extend([-1] * (index + 1 - len(self.spill_at)))
        offset = self.spill.seek(0, os.SEEK_END)
        self.spill_at[index] = offset
        self.spilled += 1
        # The record: the Result's fields as JSON, then the output bytes
        # (--compress: an output compressed in its file is copied as it is;
        # the JSON has its size decompressed).
        packed = [data.file.finish() if _packed(data) else None
                  for data in (r.stdout, r.stderr)]
        meta = json.dumps([r.seq, r.args, r.command, r.exitcode, r.signal,
                           r.outcome, r.start, r.runtime, r.tries, r.slot,
                           r.host, r.sent, os.fsdecode(r.tag), r.width,
                           len(r.stdout), len(r.stderr), [p is not None for p in packed]]
                          ).encode("utf-8", "surrogateescape")
        self.spill.write(struct.pack("!IQQ", len(meta), *(
            len(data) if p is None else p for data, p in zip((r.stdout, r.stderr), packed))))
        self.spill.write(meta)
        for data, p in zip((r.stdout, r.stderr), packed):
            for chunk in (chunks(data) if p is None else data.file.raw()):
                self.spill.write(chunk)
            close(data)

    def _unspill(self, seq):
        if not self.spilled:
            return False
        index = seq - self.spill_base
        if not 0 <= index < len(self.spill_at) or self.spill_at[index] < 0:
            return False
        import json
        offset = self.spill_at[index]
        self.spill_at[index] = -1
        self.spilled -= 1
        self.spill.seek(offset)
        nmeta, nout, nerr = struct.unpack("!IQQ", self.spill.read(20))
        meta = json.loads(self.spill.read(nmeta).decode("utf-8", "surrogateescape"))
        start = offset + 20 + nmeta
        (rseq, args, command, exitcode, sig, outcome, t0, runtime, tries,
         slot, host, sent, tag, width, sout, serr, packed) = meta
        stdout, stderr = (self.packer.slice(self.spill, at, n, size) if p
                          else SpillSlice(self.spill, at, n)
                          for at, n, size, p in ((start, nout, sout, packed[0]),
                                                 (start + nout, nerr, serr, packed[1])))
        self._emit(Result(rseq, args, command, exitcode, sig, outcome, t0,
                          runtime, stdout, stderr, tries, slot, host, sent,
                          os.fsencode(tag), width))
        return True

    def _emit(self, r):
        # The joblog line is made first: it counts the output's bytes,
        # and the writer may close the output as soon as it is written.
        log = joblog_line(r) if self.joblog is not None else None
        if self.as_json:
            self.out.write(json_record(r).encode("ascii"))
            close(r.stdout)
            close(r.stderr)
        elif self.results is not None:
            name, stderr = self.results.save(r, self.out) or (None, None)
            if name is not None:
                self.out.write(r.tag + os.fsencode(name) + b"\n")
            if stderr is not None:
                self.err.write_pieces(tagged(r.tag, pieces(stderr)))
        else:
            if self.show_command:
                self.out.write(os.fsencode(r.command.replace("\n", " ")) + b"\n")
            self.out.write_pieces(tagged(r.tag, pieces(r.stdout)))
            self.err.write_pieces(tagged(r.tag, pieces(r.stderr)))
        if log is not None:
            self._write_log(log)

    def close(self, drop=False):
        """Write what waits (blocking: the loop is over) or, with drop,
        forget it; then close the spill file."""
        for w in (self.out, self.err):
            w.close()
            if drop:
                w.drop()
            else:
                w.flush()
        if self.spill is not None:
            self.spill.close()
            self.spill = None
        if hasattr(self.results, "close"):
            self.results.close()        # --results FILE.csv
        if self.joblog is not None and not self.log_to_out:
            self.joblog.flush()

