"""The hub's side of workers and session jobs: READY, RUN, IN, OUT, DONE,
ACK, KILL; retries, losses and the one result per job.  A mixin of
gridtools.hub.server.Hub, which owns the connections and the loop."""

import os
import signal
import sys
import time

from gridtools.hub import journal, sched
from gridtools.proto import errors, wire
from gridtools.hub.sched import ACK_EVERY, HELD_MAX, HIGH

NOTE_AFTER = 5.0            # seconds a job waits for tags no worker has before we say so


def log(text):
    sys.stderr.write(f"gridd hub: {text}\n")
    sys.stderr.flush()


class Jobs:
    # -- workers --------------------------------------------------------------

    def on_ready(self, conn, msg):
        if conn.slots is not None:
            raise wire.WireError("READY: already announced", wire.E_USAGE)
        slots = msg.int("slots", 1, 1, wire.MAX_SLOTS)
        name = msg.get("name") or conn.peer
        conn.name = name
        conn.slots = sched.Slots(name, slots, wire.parse_tags(msg.kv, "tag."))
        log(f"worker {name} joined from {conn.peer} with {slots} slot{'' if slots == 1 else 's'}")
        if self.draining:
            conn.slots.draining = True
            return
        for job in self.sched.credit(conn, conn.slots):
            self.start(conn, job)

    def start(self, wconn, job):
        """Job was given to worker wconn: send it, and its held stdin."""
        self.busy.add(wconn)
        job.started = time.time()
        self.send(wconn, wire.format_run(job.hid, wire.run_flags(job.argv, job.stdin,
                                                                 job.timeout), job.command))
        if job.inq:
            for chunk in job.inq:
                self.send(wconn, wire.format("IN", job.hid, body=chunk))
            job.inq = []
            self.unhold(job)
        if job.in_eof:
            self.send(wconn, wire.format("IN", job.hid, eof=1, body=b""))
        if job.did is not None:
            self.reset_output(job)

    def push(self, job):
        """Queue a job, or send it to a free worker at once."""
        wconn = self.sched.submit(job)
        if wconn is not None:
            self.start(wconn, job)
        elif job.reqs and job.reqs not in self.reqs_waiting:
            if not self.reqs_waiting:
                self.next_note = time.monotonic() + NOTE_AFTER
            self.reqs_waiting.add(job.reqs)

    def why_waiting(self, reqs):
        """Why jobs needing reqs wait: None when some worker could take them."""
        for c in self.conns.values():
            if c.slots is not None and not c.slots.draining and reqs <= c.slots.tagset:
                return None
        tags = " ".join(f"{k}={v}" for k, v in sorted(reqs))
        return f"no connected worker is tagged {tags}"

    def note_unmatched(self, now):
        """Tell each client, once per requirement set, that some of its jobs
        wait for tags no connected worker has (and followers of durable
        jobs the same): a NOTE line, not an error; the jobs stay queued."""
        for reqs in list(self.reqs_waiting):
            queue = self.sched.queues.get(reqs)
            if not queue:
                self.reqs_waiting.discard(reqs)
                continue
            why = self.why_waiting(reqs)
            if why is None:
                continue
            counts = {}
            for job in queue:
                if job.state != sched.QUEUED or now - job.queued_at < NOTE_AFTER:
                    continue
                for conn in ([job.client] if job.client is not None else job.waiters):
                    if conn.closing or reqs in conn.noted:
                        continue
                    first, n = counts.get(conn, (job, 0))
                    counts[conn] = (first, n + 1)
            for conn, (first, n) in counts.items():
                conn.noted.add(reqs)
                self.send(conn, wire.format("NOTE", job=first.cid or first.name, jobs=n,
                                            text=f"{n} job{' waits' if n == 1 else 's wait'}: {why}"))

    def wjob(self, conn, msg):
        if conn.slots is None:
            raise wire.WireError(f"{msg.verb}: say READY first", wire.E_PROTOCOL)
        arg = msg.arg(0)
        job = conn.slots.jobs.get(msg.id_arg(0))
        if job is None:
            self.send(conn, wire.error(wire.E_DATA, f"{msg.verb}: no job {arg} on this worker",
                                       job=arg))
        return job

    def on_out(self, conn, msg):
        job = self.wjob(conn, msg)
        data = msg.body or b""
        if job is None:
            return          # finished or cancelled meanwhile
        fd_no = msg.int("fd", 1, 1, 2)
        client = job.client
        if client is not None and not client.closing:
            self.send(client, wire.format("OUT", job.cid, fd=fd_no, body=data))
            job.acks += len(data)
            if job.acks >= ACK_EVERY:
                client.ackq.add(job)
                self.ack_conns.add(client)
            return
        if job.did is not None and self.journal is not None and job.note is None:
            try:
                self.store_output(job, fd_no, data)
            except OSError as e:
                # The result will say so: never "ok" with output cut short.
                job.note = f"output not stored: {e.strerror}"
                log(f"job {job.did}: {job.note}")
                self.close_output(job)
            if job.waiters:
                self.wake(job)
        job.acks += len(data)
        if job.acks >= ACK_EVERY:
            self.ack(job)

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

    def ack(self, job):
        if job.acks and job.worker is not None and not job.worker.closing:
            self.send(job.worker, wire.format("ACK", job.hid, n=job.acks))
        job.acks = 0

    def on_ack(self, conn, msg):
        """The worker fed n bytes of a job's stdin to it: tell the client."""
        job = self.wjob(conn, msg)
        if job is not None and job.client is not None:
            self.send(job.client, wire.format("ACK", job.cid, n=msg.int("n", 0)))

    def on_done(self, conn, msg):
        job = self.wjob(conn, msg)
        if job is None:
            return
        exitcode = msg.int("exit", None, 0, 255)
        sig = msg.int("sig", None, 1, wire.MAX_SIGNAL)
        outcome = msg.get("outcome")
        if outcome is not None and outcome not in errors.OUTCOMES:
            raise wire.WireError(f"DONE: outcome= must be one of {', '.join(errors.OUTCOMES)}, "
                                 f"got {outcome[:40]!r}", wire.E_USAGE, field="outcome",
                                 got=outcome)
        self.sched.release(conn, conn.slots, job)
        if not conn.slots.jobs:
            self.busy.discard(conn)
        self.finished(job, exitcode, sig, outcome, conn.name)
        if conn.slots.draining and not conn.slots.jobs:
            self.send(conn, b"BYE\n")
        for nxt in self.sched.credit(conn, conn.slots):
            self.start(conn, nxt)

    def finished(self, job, exitcode, sig, outcome, worker):
        """One try of a job ended: report it, retry it, or record it."""
        self.ackq_drop(job)
        if job.did is None:
            client = job.client
            if client is not None and not client.closing:
                client.jobs.pop(job.cid, None)
                self.send(client, wire.format_done(
                    job.cid.encode("ascii"), exitcode, sig, outcome,
                    None if worker is None else wire.escape(worker), job.reason))
                self.jobs_left(client)
            job.state = sched.DONE
            self.counts["done"] += 1
            return
        self.close_output(job)
        if outcome is None:
            outcome = errors.OUTCOME_OK if exitcode == 0 else errors.SIGNALED \
                if sig is not None else errors.FAILED
        if outcome not in (errors.OUTCOME_OK, errors.CANCELLED) and not job.cancelled \
                and job.tries <= job.retries:
            if self.draining:
                # Its retry is the next hub's: it stays queued in the journal.
                log(f"job {job.did}: {outcome}; retried after the restart")
                job.state = sched.QUEUED
                return
            log(f"job {job.did}: {outcome}; retry {job.tries} of {job.retries}")
            self.push(job)
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
        self.store_result(job)

    def store_result(self, job):
        """Journal job's result; its followers hear of it once committed.
        A journal that cannot write keeps the job in memory, retried."""
        try:
            self.journal.finish(job.did, *job.result)
        except journal.JournalError as e:
            self.journal_failed(e)
            self.unstored.append(job)
            return
        self.after_commit.append((None, lambda: self.committed(job),
                                  lambda: self.unstored.append(job)))

    def committed(self, job):
        """job's result is durable: its followers may have the DONE now."""
        self.durable.pop(job.did, None)
        job.committed = True
        self.wake(job)
        job.waiters = []

    def wake(self, job):
        for c in job.waiters:
            if not c.closing:
                self.dirty.add(c)

    def ackq_drop(self, job):
        if job.client is not None:
            job.client.ackq.discard(job)
        job.acks = 0

    def worker_gone(self, conn, quiet):
        if conn.slots is None:
            return
        jobs = self.sched.remove_worker(conn, conn.slots)
        if not quiet:
            n = len(jobs)
            log(f"worker {conn.name} left ({n} job{'' if n == 1 else 's'} running)")
        for job in jobs:
            job.worker = None
            if job.did is None:
                self.counts["lost"] += 1
                self.finished(job, None, None, errors.LOST, conn.name)
            elif job.cancelled:
                self.finished(job, None, None, errors.CANCELLED, conn.name)
            elif self.draining and quiet:
                self.close_output(job)      # stays queued in the journal
            elif job.tries <= job.retries:
                log(f"job {job.did}: worker {conn.name} lost; requeued")
                self.close_output(job)
                self.push(job)
            else:
                self.counts["lost"] += 1
                self.finished(job, None, None, errors.LOST, conn.name)

    # -- session jobs (gridmap) -------------------------------------------------

    def _new_job(self, command, argv, stdin, reqs, retries, timeout):
        job = sched.Job(self.next_hid, command, argv, stdin, reqs, retries, timeout)
        self.next_hid += 1
        job.submitted = time.time()
        return job

    def _job_options(self, msg):
        reqs = frozenset(wire.parse_tags(msg.kv, "req.").items())
        return reqs, msg.seconds("timeout")

    def refuse_new(self, conn, cid=None):
        if self.draining:
            self.send(conn, wire.error(wire.E_UNAVAILABLE, "the hub is shutting down",
                                       job=cid))
            return True
        return False

    def on_run(self, conn, msg):
        cid = msg.ref_arg(0)
        if self.refuse_new(conn, cid):
            return
        if cid in conn.jobs:
            raise wire.WireError(f"RUN: job {cid} is already running", wire.E_USAGE)
        if not msg.body:
            raise wire.WireError("RUN: needs a command as its body (bytes=N)", wire.E_USAGE)
        reqs, timeout = self._job_options(msg)
        job = self._new_job(msg.body, msg.get("argv") == "1", msg.get("stdin") == "1",
                            reqs, 0, timeout)
        job.client = conn
        job.cid = cid
        conn.jobs[cid] = job
        self.push(job)
        if len(conn.jobs) >= self.opts.max_jobs:
            self.hold_back(conn)    # read on once some of them have ended

    def cjob(self, conn, msg):
        """The client's job named in msg, or None after an ERR that names
        it (a job may finish while the client's KILL or IN is on its way:
        the client knows to ignore such errors for jobs it saw end)."""
        cid = msg.arg(0)
        job = conn.jobs.get(cid)
        if job is None:
            self.send(conn, wire.error(wire.E_DATA, f"{msg.verb}: no running job {cid}",
                                       job=cid))
        return job

    def on_in(self, conn, msg):
        job = self.cjob(conn, msg)
        if job is None:
            return
        eof = msg.get("eof") == "1"
        data = msg.body or b""
        if job.worker is not None:
            w = job.worker
            self.send(w, wire.format("IN", job.hid, eof=eof, body=data))
            if len(w.out) > HIGH:
                self.pause(conn, w)
            return
        if data:
            job.inq.append(data)
            job.held += len(data)
            conn.held += len(data)
            if conn.held > HELD_MAX:
                # Input for jobs still queued: stop reading this client
                # until some of them have a worker to take it.
                self.hold_back(conn)
        job.in_eof = job.in_eof or eof

    def unhold(self, job):
        """job's held input left the hub (sent on, or dropped)."""
        client = job.client
        held, job.held = job.held, 0
        if client is not None and held:
            client.held -= held
            self.jobs_left(client)

    def on_kill(self, conn, msg):
        job = self.cjob(conn, msg)
        if job is None:
            return
        sig = msg.int("sig", signal.SIGTERM, 1, wire.MAX_SIGNAL)
        if job.worker is not None:
            self.send(job.worker, wire.format("KILL", job.hid, sig=sig))
        else:
            # Killed before it started: it ends here, as if by the signal.
            self.end_queued(conn, job, sig)

    def stalled(self, conn, quiet):
        """conn has read nothing for quiet seconds while its jobs hold
        slots: every job of its ends now, cancelled with reason=stalled (one
        DONE each, waiting in its buffer should it read again); running ones
        are cancelled at their workers, and what they still print is
        dropped, so the slots come free."""
        running = [j for j in conn.jobs.values() if j.worker is not None]
        if not running:
            return
        log(f"client {conn.name} read nothing for {quiet:.0f}s while {len(running)} of its "
            f"jobs held slots: its {len(conn.jobs)} jobs are cancelled")
        for job in list(conn.jobs.values()):
            job.reason = "stalled"
            if job.worker is None:
                self.end_queued(conn, job)
                continue
            conn.ackq.discard(job)
            conn.jobs.pop(job.cid, None)
            job.client = None
            self.send(conn, wire.format("DONE", job.cid, outcome=errors.CANCELLED,
                                        reason="stalled"))
            self.send(job.worker, wire.format("CANCEL", job.hid))
            self.ack(job)
        self.jobs_left(conn)

    def end_queued(self, conn, job, sig=None):
        """A session job that never started ends now, cancelled."""
        self.sched.dequeue(job)
        job.inq = []
        self.unhold(job)
        conn.jobs.pop(job.cid, None)
        self.send(conn, wire.format("DONE", job.cid, sig=sig, outcome=errors.CANCELLED,
                                    reason=job.reason))
        self.jobs_left(conn)

    def jobs_left(self, conn):
        """conn has fewer session jobs: read it again if it was held back."""
        if conn.paused and self.may_resume(conn):
            self.resume(conn)

    def client_gone(self, conn):
        for job in conn.jobs.values():
            job.client = None
            if job.worker is not None:
                self.send(job.worker, wire.format("CANCEL", job.hid))
                self.ack(job)
            else:
                self.sched.dequeue(job)
                job.inq = []
        conn.jobs.clear()
