"""The hub's durable jobs (gridsub) and its control verbs (gridd ctl):
SUBMIT, RESULT, RESULTS, FORGET, CANCEL, STATUS, WORKERS, JOBS, DRAIN,
SHUTDOWN.
A mixin of gridtools.hub.server.Hub."""

import json
import os
import time

from gridtools.hub import journal, sched
from gridtools.proto import errors, wire
from gridtools.hub.jobs import log
from gridtools.hub.sched import JOBS_LISTED


class Durable:
    # -- durable jobs (gridsub) -------------------------------------------------

    def on_submit(self, conn, msg):
        if self.refuse_new(conn):
            return
        if self.journal is None:
            raise wire.WireError("this hub keeps no journal (no --state)", wire.E_UNAVAILABLE)
        if not msg.body:
            raise wire.WireError("SUBMIT: needs a command as its body (bytes=N)", wire.E_USAGE)
        reqs, timeout = self._job_options(msg)
        retries = msg.int("retries", 0, 0, sched.MAX_RETRIES)
        argv = msg.get("argv") == "1"
        ref = msg.get("ref")
        try:
            did = self.journal.add(msg.body, argv, reqs, retries, timeout)
        except journal.JournalError as e:
            self.journal_failed(e)
            raise wire.WireError(f"SUBMIT: not stored, try again later: {e}",
                                 wire.E_TEMPFAIL) from None
        job = self._new_job(msg.body, argv, False, reqs, retries, timeout)
        job.did = did

        def stored():
            self.durable[did] = job
            self.counts["submitted"] += 1
            self.send(conn, wire.format("JOB", did, ref=ref))
            self.push(job)

        def refused():
            self.send(conn, wire.error(wire.E_TEMPFAIL, f"SUBMIT: not stored, try again "
                                       f"later: {self.journal_problem}", ref=ref))
        # Acknowledge only once the journal is committed (end of this turn).
        self.after_commit.append((conn, stored, refused))

    def reset_output(self, job):
        self.close_output(job)
        job.outfds = {}
        job.note = None
        job.attempt += 1
        self.wake(job)
        for fd_no in (1, 2):
            try:
                os.unlink(self.journal.out_path(job.did, fd_no))
            except OSError:
                pass                # not there yet, or nothing we can do about it

    def close_output(self, job):
        if job.outfds:
            for fd in job.outfds.values():
                os.close(fd)
        job.outfds = {}

    def on_result(self, conn, msg):
        did = msg.id_arg(0)
        job = self.durable.get(did)
        if job is not None:
            if msg.get("wait") != "1":
                self.send(conn, wire.format("PENDING", did, state=job.state))
                return
            # Follow it: what it wrote so far, then the rest as it comes.
            job.waiters.append(conn)
        elif self.journal is None or self.journal.get(did) is None:
            raise wire.WireError(f"no such job {did} (never submitted, or collected)",
                                 wire.E_DATA)
        conn.feeders.append(self._tail(did, job))
        self.dirty.add(conn)

    def _tail(self, did, job):
        """OUT messages from a durable job's stored output, like tail -f,
        then its DONE once the result is in the journal.  Yields None when
        there is nothing more yet (the job's next output wakes us).

        Only the last try's output is sent, once: a try that may still be
        retried is held back, and its files are read only if the job ends
        with it (they hold that try's output alone: a new try starts them
        afresh).  A try that cannot be retried is followed live."""
        offsets = {1: 0, 2: 0}
        files = {}
        attempt = None
        try:
            while True:
                finished = job is None or job.committed
                if not finished and not last_try_running(job):
                    yield None          # queued, or a try that may be retried
                    continue
                if job is not None and job.attempt != attempt:
                    attempt = job.attempt
                    for f in files.values():
                        os.close(f)
                    files.clear()
                    offsets = {1: 0, 2: 0}
                progressed = False
                for fd_no in (1, 2):
                    fd = files.get(fd_no)
                    if fd is None:
                        try:
                            fd = files[fd_no] = os.open(self.journal.out_path(did, fd_no),
                                                        os.O_RDONLY | os.O_CLOEXEC)
                        except FileNotFoundError:
                            continue
                    data = os.pread(fd, 1 << 18, offsets[fd_no])
                    if data:
                        offsets[fd_no] += len(data)
                        progressed = True
                        yield wire.format("OUT", did, fd=fd_no, body=data)
                if progressed:
                    continue
                if finished:
                    break
                yield None
        finally:
            for f in files.values():
                os.close(f)
        row = self.journal.get(did)
        if row is None:
            yield wire.error(wire.E_DATA, f"no such job {did}", job=did)
            return
        yield wire.format("DONE", did, exit=row["exit"], sig=row["sig"],
                          outcome=row["outcome"], tries=row["tries"], worker=row["worker"],
                          note=row["note"])

    def on_results(self, conn, msg):
        """The durable jobs nobody has collected (for a script that lost an
        id): the newest JOBS_LISTED, oldest first, fewer if they would not
        fit in one body; a job not finished says what the hub knows of it now."""
        if self.journal is None:
            raise wire.WireError("this hub keeps no journal (no --state)", wire.E_UNAVAILABLE)
        now = time.time()
        rows = []
        room = wire.MAX_BODY - 2            # the list's brackets
        for r in reversed(self.journal.results(JOBS_LISTED)):
            state, tries, worker = r["state"], r["tries"], r["worker"]
            job = self.durable.get(r["id"])
            if job is not None:
                state, tries = job.state, job.tries
                worker = job.worker.name if job.worker is not None else None
            cmd = r["command"].replace(b"\0", b" ") if r["argv"] else r["command"]
            row = {"id": r["id"], "state": state, "tries": tries, "worker": worker,
                   "exit": r["exit"], "sig": r["sig"], "outcome": r["outcome"],
                   "note": r["note"], "submitted": r["submitted"],
                   "finished": r["finished"], "age": round(now - r["submitted"], 1),
                   "command": cmd.decode("utf-8", "replace")}
            room -= len(json.dumps(row, sort_keys=True)) + 2    # and ", " (as info() writes)
            if room < 0:
                break
            rows.append(row)
        rows.reverse()
        self.info(conn, "results", rows)

    def on_forget(self, conn, msg):
        did = msg.id_arg(0)
        if did in self.durable:
            raise wire.WireError(f"FORGET: job {did} has not finished", wire.E_USAGE)
        if self.journal is None or self.journal.get(did) is None:
            raise wire.WireError(f"no such job {did}", wire.E_DATA)
        try:
            self.journal.forget(did)
        except journal.JournalError as e:
            self.journal_failed(e)
            raise wire.WireError(f"FORGET: try again later: {e}", wire.E_TEMPFAIL) from None
        self.after_commit.append((conn, lambda: self.send(conn, wire.format("OK", did)),
                                  lambda: self.send(conn, wire.error(
                                      wire.E_TEMPFAIL, f"FORGET: try again later: "
                                      f"{self.journal_problem}", job=did))))

    def on_cancel(self, conn, msg):
        arg = msg.arg(0)
        job = None
        if not arg.startswith("s"):
            job = self.durable.get(msg.id_arg(0))
        else:
            hid = wire.uint(arg[1:], "CANCEL: session job id", 0, wire.MAX_ID, field="id")
            for c in self.conns.values():
                if c.slots is not None and hid in c.slots.jobs:
                    job = c.slots.jobs[hid]
            for q in self.sched.queues.values():
                for j in q:
                    if j.hid == hid and j.state == sched.QUEUED:
                        job = j
        if job is None:
            raise wire.WireError(f"CANCEL: no queued or running job {arg}", wire.E_DATA)
        job.cancelled = True
        if job.worker is not None:
            self.send(job.worker, wire.format("CANCEL", job.hid))
        elif job.state == sched.QUEUED:
            self.sched.dequeue(job)
            self.finished(job, None, None, errors.CANCELLED, None)
        self.send(conn, wire.format("OK", arg))

    # -- control (gridd ctl) ----------------------------------------------------

    def info(self, conn, what, data):
        body = json.dumps(data, sort_keys=True).encode()
        self.send(conn, wire.format("INFO", what, body=body))

    def worker_rows(self):
        rows = []
        for c in self.conns.values():
            if c.slots is None:
                continue
            s = c.slots
            rows.append({"name": s.name, "peer": c.peer, "slots": s.slots,
                         "running": len(s.jobs), "tags": s.tags,
                         "state": "draining" if s.draining else "up"})
        return rows

    def on_status(self, conn, msg):
        workers = self.worker_rows()
        clients = sum(1 for c in self.conns.values() if c.role == "client")
        self.info(conn, "status", {
            "addresses": [str(a) for a in self.addresses],
            "workers": len(workers), "slots": sum(w["slots"] for w in workers),
            "running": sum(w["running"] for w in workers),
            "queued": self.sched.waiting(), "clients": clients,
            "durable": len(self.durable), "done": self.counts["done"],
            "lost": self.counts["lost"], "submitted": self.counts["submitted"],
            "uptime": round(time.time() - self.started, 1),
            "state": "draining" if self.draining else "up",
            "journal": self.opts.state_dir,
            "journal_state": "ok" if self.journal is None or self.journal.writable
            else self.journal_problem or f"journal {self.journal.problem}",
            "unstored": len(self.unstored)})

    def on_workers(self, conn, msg):
        self.info(conn, "workers", self.worker_rows())

    def on_jobs(self, conn, msg):
        rows = []

        def row(job, where):
            cmd = job.command
            text = " ".join(wire.decode_argv(cmd)) if job.argv else cmd.decode(
                "utf-8", "replace")
            why = None
            if where is None:
                why = self.why_waiting(job.reqs) if job.reqs else None
                why = why or "waiting for a free slot"
            where = where[:200] if where else where
            rows.append({"id": job.name, "state": job.state, "worker": where,
                         "tries": job.tries, "kind": "durable" if job.did else "session",
                         "command": text[:200], "why": why})
        for c in self.conns.values():
            if c.slots is not None:
                for job in c.slots.jobs.values():
                    row(job, c.name)
        for q in self.sched.queues.values():
            for job in q:
                if job.state == sched.QUEUED and len(rows) < JOBS_LISTED:
                    row(job, None)
        self.info(conn, "jobs", rows)

    def on_drain(self, conn, msg):
        name = msg.arg(0)
        found = [c for c in self.conns.values() if c.slots is not None and c.slots.name == name]
        if not found:
            raise wire.WireError(f"DRAIN: no worker named {name!r}", wire.E_DATA)
        for c in found:
            self.sched.drain(c, c.slots)
            if not c.slots.jobs:
                self.send(c, b"BYE\n")
            log(f"worker {name}: draining")
        self.send(conn, wire.format("OK", name))

    def on_shutdown(self, conn, msg):
        self.send(conn, wire.format("OK", "shutdown"))
        self.start_drain(f"shutdown asked by {conn.peer}")

    def on_ping(self, conn, msg):
        self.send(conn, b"PONG\n")

    def on_pong(self, conn, msg):
        pass

    def on_quit(self, conn, msg):
        self.send(conn, b"BYE\n")
        self.flush(conn)
        self.close(conn)

    def on_err(self, conn, msg):
        log(f"{conn.name} says: ERR {' '.join(msg.args)}")


def last_try_running(job):
    """True while job runs a try the hub will not retry: its output is the
    result's, and may be followed live.  (After a hub restart a job's tries
    count from 0 again: its first try then is not the last.)"""
    return job.state == sched.RUNNING and job.tries > job.retries
