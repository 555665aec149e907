"""Where finished jobs go: their output on our stdout and stderr (grouped, in
order with -k, or line by line), the joblog, --json records.

Memory stays bounded with -k: while an early job holds back later ones,
finished outputs beyond a small in-memory budget are appended to one spill
file, and only their offsets are kept.
"""

import array
import os
import select
import struct

JOBLOG_HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"

# A finished job's outcome as the tools print it.
OK, FAILED, SIGNALED, TIMEOUT, CANCELLED, LOST = (
    "ok", "failed", "signal", "timeout", "cancelled", "lost")


def write_all(fd, data):
    """Write every byte, waiting when fd is non-blocking and full."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


class Result:
    """One job's final record."""

    __slots__ = ("seq", "args", "command", "exitcode", "signal", "outcome",
                 "start", "runtime", "stdout", "stderr", "tries", "slot",
                 "host", "sent", "tag")

    def __init__(self, seq, args, command, exitcode, signal, outcome, start,
                 runtime, stdout=b"", stderr=b"", tries=1, slot=0, host=":",
                 sent=0, tag=b""):
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

    @property
    def failed(self):
        return self.outcome != OK


def joblog_line(r):
    """One line in GNU parallel's joblog format."""
    exitval = r.exitcode if r.exitcode is not None else -1
    return (f"{r.seq}\t{r.host}\t{r.start:.3f}\t{r.runtime:10.3f}\t{r.sent}\t"
            f"{len(r.stdout)}\t{exitval}\t{r.signal or 0}\t"
            f"{r.command.replace(chr(10), ' ')}\n")


def json_record(r):
    """One --json line: everything known about a finished job.

    The line is ASCII: inputs that are not UTF-8 appear as \\udcXX escapes,
    and output that is not UTF-8 goes in stdout_base64/stderr_base64 instead
    of stdout/stderr, so no byte is lost and every line is valid JSON.
    """
    import json     # only --json and -k spills pay for the import
    rec = {
        "seq": r.seq,
        "input": list(r.args),
        "command": r.command,
        "status": r.outcome,
        "exit": r.exitcode,
        "signal": r.signal,
        "host": r.host,
        "slot": r.slot,
        "tries": r.tries,
        "start": round(r.start, 6),
        "runtime": round(r.runtime, 6),
    }
    for name, data in (("stdout", r.stdout), ("stderr", r.stderr)):
        try:
            rec[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            import base64
            rec[name + "_base64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(rec) + "\n"


def tag_lines(prefix, data):
    """Prefix every line of data (a trailing partial line included)."""
    if not prefix or not data:
        return data
    lines = data.split(b"\n")
    last = lines.pop()
    out = b"".join(prefix + line + b"\n" for line in lines)
    return out + (prefix + last if last else b"")


class Sink:
    """Emits results: grouped or in order; stdout/stderr/joblog/json."""

    MEMORY_BUDGET = 8 << 20     # held output bytes before spilling
    MEMORY_JOBS = 2000          # held jobs before spilling

    def __init__(self, keep_order=False, as_json=False, joblog=None,
                 tagged=False, out_fd=1, err_fd=2, first_seq=1):
        self.keep_order = keep_order
        self.as_json = as_json
        self.joblog = joblog
        self.tagged = tagged
        self.out_fd = out_fd
        self.err_fd = err_fd
        self.next_seq = first_seq
        self.held = {}                 # seq -> Result kept in memory
        self.held_bytes = 0
        self.spill = None              # temp file of spilled results
        self.spill_at = array.array("q")   # seq - spill_base -> offset (-1: none)
        self.spill_base = first_seq
        if joblog is not None:
            joblog.write(JOBLOG_HEADER)
            joblog.flush()

    # -- grouped results -------------------------------------------------

    def add(self, r):
        """A job is finished: print it now, or hold it until its turn."""
        if not self.keep_order:
            self._emit(r)
            return
        if r.seq != self.next_seq:
            self._hold(r)
            return
        self._emit(r)
        self.next_seq += 1
        self._drain()

    def _log(self, r):
        if self.joblog is not None:
            self.joblog.write(joblog_line(r))
            self.joblog.flush()

    def skip(self, seq):
        """seq will never finish (never started): do not wait for it."""
        if self.keep_order:
            self._hold(None, seq)
            if seq == self.next_seq:
                self._drain()

    def _drain(self):
        while True:
            seq = self.next_seq
            if seq in self.held:
                r = self.held.pop(seq)
                if r is not None:
                    self.held_bytes -= len(r.stdout) + len(r.stderr)
                    self._emit(r)
            elif not self._unspill(seq):
                return
            self.next_seq += 1

    def _hold(self, r, seq=None):
        seq = r.seq if r is not None else seq
        size = len(r.stdout) + len(r.stderr) if r is not None else 0
        if r is not None and (self.held_bytes + size > self.MEMORY_BUDGET
                              or len(self.held) >= self.MEMORY_JOBS):
            self._spill(r)
            return
        self.held[seq] = r
        self.held_bytes += size

    def _spill(self, r):
        import json
        if self.spill is None:
            import tempfile
            self.spill = tempfile.TemporaryFile(prefix="gridmap-spill-")
            self.spill_base = self.next_seq
        index = r.seq - self.spill_base
        if index >= len(self.spill_at):
            self.spill_at.extend([-1] * (index + 1 - len(self.spill_at)))
        offset = self.spill.seek(0, os.SEEK_END)
        self.spill_at[index] = offset
        # The record: the whole Result as JSON-safe fields, then the bytes.
        meta = json.dumps([r.seq, r.args, r.command, r.exitcode, r.signal,
                           r.outcome, r.start, r.runtime, r.tries, r.slot,
                           r.host, r.sent, os.fsdecode(r.tag)]
                          ).encode("utf-8", "surrogateescape")
        self.spill.write(struct.pack("!III", len(meta), len(r.stdout), len(r.stderr)))
        self.spill.write(meta)
        self.spill.write(r.stdout)
        self.spill.write(r.stderr)

    def _unspill(self, seq):
        if self.spill is None:
            return False
        index = seq - self.spill_base
        if not 0 <= index < len(self.spill_at) or self.spill_at[index] < 0:
            return False
        import json
        offset = self.spill_at[index]
        self.spill_at[index] = -1
        self.spill.seek(offset)
        nmeta, nout, nerr = struct.unpack("!III", self.spill.read(12))
        meta = json.loads(self.spill.read(nmeta).decode("utf-8", "surrogateescape"))
        stdout = self.spill.read(nout)
        stderr = self.spill.read(nerr)
        (rseq, args, command, exitcode, sig, outcome, start, runtime, tries,
         slot, host, sent, tag) = meta
        self._emit(Result(rseq, args, command, exitcode, sig, outcome, start,
                          runtime, stdout, stderr, tries, slot, host, sent,
                          os.fsencode(tag)))
        return True

    def _emit(self, r):
        if self.as_json:
            write_all(self.out_fd, json_record(r).encode("ascii"))
        else:
            if r.stdout:
                write_all(self.out_fd, tag_lines(r.tag, r.stdout))
            if r.stderr:
                write_all(self.err_fd, tag_lines(r.tag, r.stderr))
        self._log(r)

    def close(self):
        if self.spill is not None:
            self.spill.close()
            self.spill = None
        if self.joblog is not None:
            self.joblog.flush()

