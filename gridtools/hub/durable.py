"""The hub's durable-jobs service (gridsub): SUBMIT, RESULT, RESULTS, FORGET
and the sqlite journal they live in.  A job is acknowledged only once the
journal has committed it (one commit per loop turn, before the writes go
out); it runs on workers through the sessions service, which hands its
output and its end back here (job.owner)."""

import collections
import json
import os
import time

from gridtools.hub import journal, sched, tail
from gridtools.hub.sessions import CLIENT, job_options, shutting_down
from gridtools.proto import errors, wire
from gridtools.hub.sched import JOBS_LISTED

EXPIRE_EVERY = 3600.0
STORE_RETRY = 2.0           # seconds between tries of a journal that could not write


class Durable:
    """jobs: did -> Job not finished; the journal, or None without --state."""

    def __init__(self, server, sessions, scheduler, opts):
        self.server = server
        self.sessions = sessions
        self.sched = scheduler
        self.opts = opts
        self.journal = None
        self.problem = None         # the last journal failure said, or None
        self.jobs = {}              # did -> Job (queued or running)
        self.pending = []           # (conn, done, failed) once the journal commits or cannot
        self.commit_planned = False
        self.unstored = []          # jobs whose result the journal could not take yet
        self.retry_timer = None
        self.counts = {"done": 0, "lost": 0, "submitted": 0}
        self.outcomes = collections.Counter()   # durable jobs ended, by outcome
        self.commits = 0            # journal commits, and the seconds they took
        self.commit_seconds = 0.0
        self._lockfd = None
        self.verbs = {
            "SUBMIT": (self.on_submit, CLIENT), "RESULT": (self.on_result, CLIENT),
            "RESULTS": (self.on_results, CLIENT), "FORGET": (self.on_forget, CLIENT),
        }

    def opened(self, conn):
        pass

    def closed(self, conn, quiet):
        pass                        # followers that left are skipped when woken

    # -- the journal ---------------------------------------------------------------

    def open(self):
        """Lock the state dir, open the journal, requeue what it holds."""
        self._lock_state()
        j = self.journal = journal.Journal(self.opts.state_dir)
        if not j.writable:
            self.problem = f"journal {j.problem}"
            self.server.log(f"{self.problem}: durable jobs are refused (ERR 75) and stored "
                            f"results served until it can write again")
            self._plan_retry()
        for row in j.queued():
            did, command, argv, reqs, retries, timeout, tries = row
            job = self.sched.new_job(command, bool(argv), False, journal.decode_reqs(reqs),
                                     retries, timeout)
            job.did = did
            job.owner = self
            self.jobs[did] = job
            self.sched.submit(job)  # tries count from 0: a restart is not the job's failure
        if self.jobs:
            n = len(self.jobs)
            self.server.log(f"journal: {n} unfinished durable job{'' if n == 1 else 's'} "
                            f"requeued")
        self.expire()

    def _lock_state(self):
        import fcntl
        os.makedirs(self.opts.state_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.opts.state_dir, "lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.GridError(f"state dir {self.opts.state_dir} is in use by another hub",
                                   errors.TEMPFAIL)
        self._lockfd = fd

    def close(self):
        if self.journal is not None:
            self.journal.close()

    def after_commit(self, conn, done, failed):
        """done() once this turn's journal writes are committed, failed()
        if they could not be (both on conn's behalf: a fault costs conn)."""
        self.pending.append((conn, done, failed))
        self._plan_commit()

    def _plan_commit(self):
        if not self.commit_planned:
            self.commit_planned = True
            self.server.before_flush(self.commit)

    def commit(self):
        """End of a turn: commit its writes, then tell whoever waited."""
        self.commit_planned = False
        j = self.journal
        ok = True
        if j.in_tx:
            t0 = time.monotonic()
            try:
                j.commit()
            except journal.JournalError as e:
                self.failed(e)
            self.commits += 1
            self.commit_seconds += time.monotonic() - t0
        if j.take_rolled_back():
            ok = False              # nothing promised this turn was stored
        todo, self.pending = self.pending, []
        for conn, done, failed in todo:
            self.server.guard(conn, done if ok else failed)

    def failed(self, exc):
        """The journal could not write: say so once, and try it again in a
        while (a retry already planned stays planned: refusals while the
        disk is full must not keep pushing it back)."""
        if self.problem != str(exc):
            self.problem = str(exc)
            self.server.log(f"{exc}: new durable jobs are refused (ERR 75) until it can write "
                            f"again")
        self._plan_retry()
        self._plan_commit()         # whatever this turn promised is withdrawn

    def _plan_retry(self):
        if self.retry_timer is None:
            self.retry_timer = self.server.call_later(STORE_RETRY, self.retry)

    def retry(self):
        self.retry_timer = None
        j = self.journal
        if j.writable and not self.unstored:
            return
        if not j.retry_write():
            self._plan_retry()
            return
        if self.problem:
            self.server.log("journal: writing again")
            self.problem = None
        todo, self.unstored = self.unstored, []
        for job in todo:
            self.store_result(job)

    def expire(self):
        """Forget results uncollected for --keep seconds; again in an hour
        (sooner while the journal cannot write)."""
        j = self.journal
        if not j.writable:
            self.server.call_later(STORE_RETRY, self.expire)
            return
        self.server.call_later(EXPIRE_EVERY, self.expire)
        try:
            n = j.expire(time.time() - self.opts.keep)
        except journal.JournalError as e:
            self.failed(e)
            n = 0
        if n:
            self.server.log(f"journal: {n} uncollected result{'' if n == 1 else 's'} expired")

    # -- a durable job's life (called by the sessions service) ------------------------

    def started(self, job):
        """A try begins: its output starts afresh."""
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

    def output(self, job, fd_no, data):
        if job.note is None:
            try:
                self.store_output(job, fd_no, data)
            except OSError as e:
                # The result will say so: never "ok" with output cut short.
                job.note = f"output not stored: {e.strerror}"
                self.server.log(f"job {job.did}: {job.note}")
                self.close_output(job)
        if job.waiters:
            self.wake(job)

    def store_output(self, job, fd_no, data):
        fds = job.outfds
        fd = fds.get(fd_no)
        if fd is None:
            fd = fds[fd_no] = os.open(self.journal.out_path(job.did, fd_no),
                                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                      0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def close_output(self, job):
        if job.outfds:
            for fd in job.outfds.values():
                os.close(fd)
        job.outfds = {}

    def finished(self, job, exitcode, sig, outcome, worker):
        """One try ended: retry it, or record its one result."""
        job.acks = 0
        self.close_output(job)
        if outcome is None:
            outcome = errors.OUTCOME_OK if exitcode == 0 else errors.SIGNALED \
                if sig is not None else errors.FAILED
        if outcome not in (errors.OUTCOME_OK, errors.CANCELLED) and not job.cancelled \
                and job.tries <= job.retries:
            if self.server.draining:
                # Its retry is the next hub's: it stays queued in the journal.
                self.server.log(f"job {job.did}: {outcome}; retried after the restart")
                job.state = sched.QUEUED
                return
            self.server.log(f"job {job.did}: {outcome}; retry {job.tries} of {job.retries}")
            self.sessions.push(job)
            return
        if job.cancelled:
            outcome = errors.CANCELLED
        note = job.note
        if note is not None:
            # What it printed is not all stored: the job failed, visibly.
            note += f" (the job ended {outcome}, exit {exitcode}, signal {sig})"
            outcome, exitcode, sig = errors.FAILED, None, None
        job.state = sched.DONE
        job.result = (job.tries, exitcode, sig, outcome, worker, note)
        self.counts["done"] += 1
        self.outcomes[outcome] += 1
        if outcome != errors.OUTCOME_OK:
            self.sessions.failed(job, outcome, exitcode, sig, worker)
        if self.server.events_on:
            self.server.event("job.done", job=job.hid, did=job.did, worker=worker,
                              outcome=outcome, exit=exitcode, sig=sig)
        self.store_result(job)

    def lost(self, job, worker, quiet):
        """job's worker went away while running it."""
        if job.cancelled:
            self.finished(job, None, None, errors.CANCELLED, worker)
        elif self.server.draining and quiet:
            self.close_output(job)      # stays queued in the journal
        elif job.tries <= job.retries:
            self.server.log(f"job {job.did}: worker {worker} lost; requeued")
            self.close_output(job)
            self.sessions.push(job)
        else:
            self.counts["lost"] += 1
            self.finished(job, None, None, errors.LOST, worker)

    def store_result(self, job):
        """Journal job's result; its followers hear of it once committed.
        A journal that cannot write keeps the job in memory, retried."""
        try:
            self.journal.finish(job.did, *job.result)
        except journal.JournalError as e:
            self.failed(e)
            self.unstored.append(job)
            return
        self.after_commit(None, lambda: self.committed(job), lambda: self.unstored.append(job))

    def committed(self, job):
        """job's result is durable: its followers may have the DONE now."""
        self.jobs.pop(job.did, None)
        job.committed = True
        self.wake(job)
        job.waiters = []

    def wake(self, job):
        for c in job.waiters:
            if not c.closing:
                self.server.refill(c)

    # -- verbs -------------------------------------------------------------------------

    def on_submit(self, conn, msg):
        if shutting_down(self.server, conn):
            return
        if self.journal is None:
            raise wire.WireError("this hub keeps no journal (no --state)", wire.E_UNAVAILABLE)
        if not msg.body:
            raise wire.WireError("SUBMIT: needs a command as its body (bytes=N)", wire.E_USAGE)
        reqs, timeout = job_options(msg)
        retries = msg.int("retries", 0, 0, wire.MAX_RETRIES)
        argv = msg.get("argv") == "1"
        ref = msg.get("ref")
        try:
            did = self.journal.add(msg.body, argv, reqs, retries, timeout)
        except journal.JournalError as e:
            self.failed(e)
            raise wire.WireError(f"SUBMIT: not stored, try again later: {e}",
                                 wire.E_TEMPFAIL) from None
        job = self.sched.new_job(msg.body, argv, False, reqs, retries, timeout)
        job.did = did
        job.owner = self

        def stored():
            self.jobs[did] = job
            self.counts["submitted"] += 1
            if self.server.events_on:
                self.server.event("job.journaled", did=did)
            self.server.send(conn, wire.format("JOB", did, ref=ref))
            self.sessions.push(job)

        def refused():
            self.server.send(conn, wire.error(wire.E_TEMPFAIL, f"SUBMIT: not stored, try "
                                              f"again later: {self.problem}", ref=ref))
        self.after_commit(conn, stored, refused)

    def on_result(self, conn, msg):
        did = msg.id_arg(0)
        job = self.jobs.get(did)
        if job is not None:
            if msg.get("wait") != "1":
                self.server.send(conn, wire.format("PENDING", did, state=job.state))
                return
            # Follow it: what it wrote so far, then the rest as it comes.
            job.waiters.append(conn)
        elif self.journal is None or self.journal.get(did) is None:
            raise wire.WireError(f"no such job {did} (never submitted, or collected)",
                                 wire.E_DATA)
        self.server.feed(conn, tail.follow(self.journal, did, job))

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
            job = self.jobs.get(r["id"])
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
        info(self.server, conn, "results", rows)

    def on_forget(self, conn, msg):
        did = msg.id_arg(0)
        if did in self.jobs:
            raise wire.WireError(f"FORGET: job {did} has not finished", wire.E_USAGE)
        if self.journal is None or self.journal.get(did) is None:
            raise wire.WireError(f"no such job {did}", wire.E_DATA)
        try:
            self.journal.forget(did)
        except journal.JournalError as e:
            self.failed(e)
            raise wire.WireError(f"FORGET: try again later: {e}", wire.E_TEMPFAIL) from None
        send = self.server.send
        self.after_commit(conn, lambda: send(conn, wire.format("OK", did)),
                          lambda: send(conn, wire.error(
                              wire.E_TEMPFAIL, f"FORGET: try again later: {self.problem}",
                              job=did)))


def info(server, conn, what, data):
    """An INFO reply: data as JSON."""
    body = json.dumps(data, sort_keys=True).encode()
    server.send(conn, wire.format("INFO", what, body=body))
