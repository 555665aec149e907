"""The hub's sessions service: workers (READY, OUT, DONE, ACK) and clients'
session jobs (RUN, IN, KILL) relayed between them, with heartbeats, stalls
and exactly one result per job.  Durable jobs run on workers through here
too; their output and their end go to the job's owner (the durable service).
"""

import collections
import signal
import time

from gridtools.hub import sched
from gridtools.proto import errors, wire
from gridtools.hub.sched import ACK_EVERY, HELD_MAX, HIGH

NOTE_AFTER = 5.0            # seconds a job waits for tags no worker has before we say so
ERR_TAIL = 512              # bytes of a job's stderr kept for the recent failures
FAILURES = 20               # recent failures kept
CLIENT, WORKER = ("client",), ("worker",)


class Session:
    """A client's session jobs and what they hold at the hub (conn.session)."""

    __slots__ = ("jobs", "ackq", "held", "noted", "holding", "sent_seen", "sent_since",
                 "relay", "bases", "based")

    def __init__(self, now, relay=False):
        self.jobs = {}              # cid -> sched.Job
        self.ackq = set()           # jobs whose relayed output awaits an ACK to the worker
        self.held = 0               # input bytes held for queued jobs
        self.noted = set()          # requirement sets it was told no worker has
        self.holding = False        # we hold its reading back (server.hold)
        self.sent_seen = 0          # conn.sent as of the last tick ...
        self.sent_since = now       # ... and since when it has not moved
        # The hub above (upstream.py): its ACKs pass down to our workers,
        # so output is acknowledged end to end, not when it leaves here.
        self.relay = relay
        self.bases = {}             # --basefile: path -> Base, as the client sent it
        self.based = set()          # worker conns offered them


def shutting_down(server, conn, cid=None):
    """Refuse new work while the hub drains: True when refused."""
    if server.draining:
        server.send(conn, wire.error(wire.E_UNAVAILABLE, "the hub is shutting down", job=cid))
        return True
    return False


class Sessions:
    """Workers' slots (conn.slots, a sched.Slots) and clients' sessions
    (conn.session); the scheduler is shared with the durable service."""

    def __init__(self, server, scheduler, opts):
        self.server = server
        self.sched = scheduler
        self.opts = opts
        self.workers = {}           # conns that said READY, in that order
        self.clients = {}           # client conns, in the order they said HELLO
        self.busy = set()           # worker conns running jobs (heartbeats watch them)
        self.pinged = {}            # worker conn -> when we pinged it
        self.reqs_waiting = set()   # requirement sets of jobs queued with no free match
        self.watchers = []          # fn() when the workers' slots or tags change (upstream)
        self.counts = {"done": 0, "lost": 0}
        self.outcomes = collections.Counter()   # session jobs ended, by outcome
        self.failures = collections.deque(maxlen=FAILURES)  # the last jobs that failed
        self.tick_timer = None
        self.note_timer = None
        self.ticked = 0.0
        self._send_acks = self.send_acks    # bound once: the relay path allocates nothing
        self.verbs = {
            "RUN": (self.on_run, CLIENT), "IN": (self.on_in, CLIENT),
            "KILL": (self.on_kill, CLIENT),
            "READY": (self.on_ready, WORKER), "OUT": (self.on_out, WORKER),
            "DONE": (self.on_done, WORKER), "ACK": (self.on_ack, WORKER),
            "STAGE": (self.on_stage, CLIENT), "FILE": (self.on_file, CLIENT + WORKER),
            "BASE": (self.on_base, CLIENT), "WANT": (self.on_want, WORKER),
        }

    def opened(self, conn):
        if conn.role in ("client", "upstream"):
            conn.session = Session(time.monotonic(), conn.role == "upstream")
            self.clients[conn] = None

    def closed(self, conn, quiet):
        if conn.slots is not None:
            self.worker_gone(conn, quiet)
        elif conn.session is not None:
            del self.clients[conn]
            self.client_gone(conn)

    # -- workers ----------------------------------------------------------------

    def on_ready(self, conn, msg):
        slots = msg.int("slots", 1, 0, wire.MAX_SLOTS)
        if conn.slots is not None:
            self.reoffer(conn, slots, wire.parse_tags(msg.kv, "tag."))
            return
        name = msg.get("name") or conn.peer
        conn.name = name
        conn.slots = sched.Slots(name, slots, wire.parse_tags(msg.kv, "tag."))
        conn.slots.token = wire.escape(name)    # as DONE names it, escaped once
        self.workers[conn] = None
        self.server.log(f"worker {name} joined from {conn.peer} with {slots} "
                        f"slot{'' if slots == 1 else 's'}")
        self.server.event("worker.joined", name=name, peer=conn.peer, slots=slots,
                          tags=",".join(f"{k}={v}" for k, v in conn.slots.tags.items()) or None)
        if self.server.draining:
            conn.slots.draining = True
        self.changed()
        if conn.slots.draining:
            return
        for job in self.sched.credit(conn, conn.slots):
            self.start(conn, job)

    def reoffer(self, conn, slots, tags):
        """READY again (a hub below whose workers came or went): its slots
        and tags are replaced; jobs it runs go on, and past the new count
        no more are sent until enough of them end."""
        w = conn.slots
        w.slots = slots
        w.credits = slots - len(w.jobs)
        w.tags = tags
        w.tagset = frozenset(tags.items())
        self.changed()
        if not w.draining:
            for job in self.sched.credit(conn, w):
                self.start(conn, job)

    def changed(self):
        for fn in self.watchers:
            fn()

    def start(self, wconn, job):
        """Job was given to worker wconn: send it, and its held stdin."""
        send = self.server.send
        self.busy.add(wconn)
        if self.tick_timer is None:
            self.tick_timer = self.server.call_later(self.tick_every(), self.tick)
        job.started = time.time()
        flags = b""
        if job.argv or job.stdin or job.timeout is not None:
            flags = wire.run_flags(job.argv, job.stdin, job.timeout)
        if job.stage:
            self.send_staged(wconn, job, flags)
        else:
            send(wconn, wire.format_run(job.hid, flags, job.command))
        if job.inq:
            for chunk in job.inq:
                send(wconn, wire.format("IN", job.hid, body=chunk))
            job.inq = []
            self.unhold(job)
        if job.in_eof:
            send(wconn, wire.format("IN", job.hid, eof=1, body=b""))
        if job.owner is not None:
            job.owner.started(job)
        if self.server.events_on:
            self.server.event("job.started", job=job.hid, worker=wconn.name)

    def push(self, job):
        """Queue a job, or send it to a free worker at once."""
        wconn = self.sched.submit(job)
        if self.server.events_on:
            self.server.event("job.queued", job=job.hid, did=job.did)
        if wconn is not None:
            self.start(wconn, job)
        elif job.reqs and job.reqs not in self.reqs_waiting:
            self.reqs_waiting.add(job.reqs)
            if self.note_timer is None:
                self.note_timer = self.server.call_later(NOTE_AFTER, self.note_unmatched)

    def total_slots(self):
        return sum(c.slots.slots for c in self.workers if not c.slots.draining)

    def why_waiting(self, reqs):
        """Why jobs needing reqs wait: None when some worker could take them."""
        for c in self.workers:
            if not c.slots.draining and reqs <= c.slots.tagset:
                return None
        tags = " ".join(f"{k}={v}" for k, v in sorted(reqs))
        return f"no connected worker is tagged {tags}"

    def note_unmatched(self):
        """Tell each client, once per requirement set, that some of its jobs
        wait for tags no connected worker has (and followers of durable
        jobs the same): a NOTE line, not an error; the jobs stay queued."""
        self.note_timer = None
        now = time.monotonic()
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
                    if conn.closing or reqs in conn.session.noted:
                        continue
                    first, n = counts.get(conn, (job, 0))
                    counts[conn] = (first, n + 1)
            for conn, (first, n) in counts.items():
                conn.session.noted.add(reqs)
                self.server.send(conn, wire.format(
                    "NOTE", job=first.cid or first.name, jobs=n,
                    text=f"{n} job{' waits' if n == 1 else 's wait'}: {why}"))
        if self.reqs_waiting:
            self.note_timer = self.server.call_later(NOTE_AFTER, self.note_unmatched)

    def wjob(self, conn, msg):
        if conn.slots is None:
            raise wire.WireError(f"{msg.verb}: say READY first", wire.E_PROTOCOL)
        job = conn.slots.jobs.get(msg.id_arg(0))
        if job is None:
            arg = msg.arg(0)
            self.server.send(conn, wire.error(wire.E_DATA, f"{msg.verb}: no job {arg} on "
                                              f"this worker", job=arg))
        return job

    def on_out(self, conn, msg):
        job = self.wjob(conn, msg)
        if job is None:
            return          # finished or cancelled meanwhile
        data = msg.body or b""
        fd_no = msg.int("fd", 1, 1, 2)
        if fd_no == 2:
            job.errtail = (job.errtail + data[-ERR_TAIL:])[-ERR_TAIL:]
        client = job.client
        if client is not None and not client.closing:
            self.server.send(client, wire.format("OUT", job.cid, fd=fd_no, body=data))
            job.acks += len(data)
            if job.acks >= ACK_EVERY and not client.session.relay:
                # Acknowledged once the bytes have left for the client.
                client.session.ackq.add(job)
                self.server.when_low(client, self._send_acks)
            return
        if job.owner is not None:
            job.owner.output(job, fd_no, data)
        job.acks += len(data)
        if job.acks >= ACK_EVERY:
            self.ack(job)

    def send_acks(self, client):
        """client's write buffer drained: its jobs' workers may send more."""
        ackq = client.session.ackq
        for job in ackq:
            self.ack(job)
        ackq.clear()

    def ack(self, job):
        if job.acks and job.worker is not None and not job.worker.closing:
            self.server.send(job.worker, wire.format("ACK", job.hid, n=job.acks))
        job.acks = 0

    def on_ack(self, conn, msg):
        """The worker fed n bytes of a job's stdin to it: tell the client."""
        job = self.wjob(conn, msg)
        if job is not None and job.client is not None:
            self.server.send(job.client, wire.format("ACK", job.cid, n=msg.int("n", 0)))

    def on_done(self, conn, msg):
        job = self.wjob(conn, msg)
        if job is None:
            return
        exitcode = msg.int("exit", None, 0, 255)
        kv = msg.kv
        sig = msg.int("sig", None, 1, wire.MAX_SIGNAL) if "sig" in kv else None
        outcome = kv.get("outcome")
        if outcome is not None and outcome not in errors.OUTCOMES:
            raise wire.WireError(f"DONE: outcome= must be one of {', '.join(errors.OUTCOMES)}, "
                                 f"got {outcome[:40]!r}", wire.E_USAGE, field="outcome",
                                 got=outcome)
        slots = conn.slots
        self.sched.release(conn, slots, job)
        if not slots.jobs:
            self.busy.discard(conn)
        self.finished(job, exitcode, sig, outcome, conn.name, slots.token)
        if slots.draining and not slots.jobs:
            self.server.send(conn, b"BYE\n")
        for nxt in self.sched.credit(conn, slots):
            self.start(conn, nxt)

    def finished(self, job, exitcode, sig, outcome, worker, token=None):
        """One try of a job ended: a session job's one result goes to its
        client; a durable job's end is its owner's to judge.  token is
        worker as a token, when the caller has it escaped already."""
        client = job.client
        if client is not None:
            session = client.session
            session.ackq.discard(job)
        job.acks = 0
        if job.owner is not None:
            job.owner.finished(job, exitcode, sig, outcome, worker)
            return
        if client is not None and not client.closing:
            session.jobs.pop(job.cid, None)
            if token is None and worker is not None:
                token = wire.escape(worker)
            self.server.send(client, wire.format_done(
                job.cid.encode("ascii"), exitcode, sig, outcome, token, job.reason))
            if session.holding:
                self.jobs_left(client)
        job.state = sched.DONE
        self.counts["done"] += 1
        outcome = outcome or (errors.OUTCOME_OK if exitcode == 0 else errors.SIGNALED
                              if sig is not None else errors.FAILED)
        self.outcomes[outcome] += 1
        if outcome != errors.OUTCOME_OK:
            self.failed(job, outcome, exitcode, sig, worker)
        if self.server.events_on:
            self.server.event("job.done", job=job.hid, worker=worker, outcome=outcome,
                              exit=exitcode, sig=sig)

    def failed(self, job, outcome, exitcode, sig, worker):
        """Keep the last FAILURES failed jobs, with their stderr's tail (the
        HTTP side's status page and /failures.json)."""
        cmd = job.command
        text = " ".join(wire.decode_argv(cmd)) if job.argv else cmd.decode("utf-8", "replace")
        self.failures.append({"time": time.time(), "job": job.name, "worker": worker,
                              "outcome": outcome, "exit": exitcode, "sig": sig,
                              "command": text[:200],
                              "stderr": job.errtail.decode("utf-8", "replace")})

    def worker_gone(self, conn, quiet):
        del self.workers[conn]
        for client in self.clients:
            client.session.based.discard(conn)
        self.busy.discard(conn)
        self.pinged.pop(conn, None)
        jobs = self.sched.remove_worker(conn, conn.slots)
        if not quiet:
            n = len(jobs)
            self.server.log(f"worker {conn.name} left ({n} job{'' if n == 1 else 's'} running)")
        self.server.event("worker.left", name=conn.name, jobs=len(jobs))
        self.changed()
        for job in jobs:
            job.worker = None
            if self.server.events_on:
                self.server.event("job.lost", job=job.hid, did=job.did, worker=conn.name)
            if job.owner is not None:
                job.owner.lost(job, conn.name, quiet)
            else:
                self.counts["lost"] += 1
                self.finished(job, None, None, errors.LOST, conn.name)

    def drain_worker(self, name):
        """Give worker name no more jobs; BYE once it runs none.  How many."""
        found = [c for c in self.workers if c.slots.name == name]
        for c in found:
            self.drain(c)
        return len(found)

    def drain(self, conn):
        """Give the worker on conn no more jobs; BYE once it runs none."""
        self.sched.drain(conn, conn.slots)
        if not conn.slots.jobs:
            self.server.send(conn, b"BYE\n")
        self.server.log(f"worker {conn.name}: draining")
        self.changed()

    def find(self, hid):
        """The session or durable job numbered hid, queued or running, or None."""
        job = None
        for c in self.workers:
            if hid in c.slots.jobs:
                job = c.slots.jobs[hid]
        for q in self.sched.queues.values():
            for j in q:
                if j.hid == hid and j.state == sched.QUEUED:
                    job = j
        return job

    def cancel(self, job):
        """Cancel job wherever it is: at its worker, or ended here if queued."""
        job.cancelled = True
        if job.worker is not None:
            self.server.send(job.worker, wire.format("CANCEL", job.hid))
        elif job.state == sched.QUEUED:
            self.sched.dequeue(job)
            self.finished(job, None, None, errors.CANCELLED, None)

    def idle(self):
        """Nothing running and no session job waiting: a drain may end."""
        if any(c.slots.jobs for c in self.workers):
            return False
        return not any(j.owner is None and j.state == sched.QUEUED
                       for q in self.sched.queues.values() for j in q)

    # -- heartbeats and stalls, while workers are busy -----------------------------

    def tick_every(self):
        return min(1.0, self.opts.heartbeat / 2)

    def tick(self):
        self.tick_timer = None
        now = time.monotonic()
        hb = self.opts.heartbeat
        for conn in list(self.busy):
            quiet = now - conn.last_rx
            if quiet > 3 * hb:
                self.server.log(f"worker {conn.name} silent for {quiet:.0f}s: declared dead")
                self.server.close(conn)
            elif quiet > hb and self.pinged.get(conn, -1.0) < conn.last_rx:
                self.pinged[conn] = now
                self.server.send(conn, b"PING\n")
        # A client stalls while it has bytes waiting and none leave: the
        # count of bytes sent is compared tick by tick (cheaper than a
        # clock read per send).
        stall = self.opts.stall_timeout
        resumed = now - self.ticked > 2.0    # the ticks paused while nothing ran
        self.ticked = now
        for conn in self.clients:
            s = conn.session
            if not conn.out or conn.sent != s.sent_seen or resumed:
                s.sent_seen = conn.sent
                s.sent_since = now
            elif now - s.sent_since > stall and s.jobs:
                self.stalled(conn, now - s.sent_since)
        if self.busy:
            self.tick_timer = self.server.call_later(self.tick_every(), self.tick)

    # -- session jobs (gridmap) -------------------------------------------------

    def on_run(self, conn, msg):
        cid = msg.ref_arg(0)
        if self.server.draining and shutting_down(self.server, conn, cid):
            return
        session = conn.session
        if cid in session.jobs:
            raise wire.WireError(f"RUN: job {cid} is already running", wire.E_USAGE)
        if not msg.body:
            raise wire.WireError("RUN: needs a command as its body (bytes=N)", wire.E_USAGE)
        kv = msg.kv
        if kv:
            reqs, timeout = job_options(msg)
            job = self.sched.new_job(msg.body, kv.get("argv") == "1", kv.get("stdin") == "1",
                                     reqs, 0, timeout)
        else:                       # gridmap's usual RUN: a command and nothing else
            job = self.sched.new_job(msg.body)
        job.client = conn
        job.cid = cid
        job.stage = kv.get("stage") == "1"
        session.jobs[cid] = job
        self.push(job)
        if len(session.jobs) >= self.opts.max_jobs:
            self.hold(conn)         # read on once some of them have ended

    def cjob(self, conn, msg):
        """The client's job named in msg, or None after an ERR that names
        it (a job may finish while the client's KILL or IN is on its way:
        the client knows to ignore such errors for jobs it saw end)."""
        cid = msg.arg(0)
        job = conn.session.jobs.get(cid)
        if job is None:
            self.server.send(conn, wire.error(wire.E_DATA, f"{msg.verb}: no running job "
                                              f"{cid}", job=cid))
        return job

    def on_in(self, conn, msg):
        job = self.cjob(conn, msg)
        if job is None:
            return
        eof = msg.get("eof") == "1"
        data = msg.body or b""
        if job.worker is not None:
            self.relay(conn, job, wire.format("IN", job.hid, eof=eof, body=data), None)
            return
        if data:
            self.relay(conn, job, data, job.inq)
        job.in_eof = job.in_eof or eof

    def relay(self, conn, job, data, queue):
        """data to job's worker (pausing conn while the worker's buffer is
        full), or, while the job has none, held in queue and counted: past
        HELD_MAX a client is read no further until some of its jobs have a
        worker to take it."""
        w = job.worker
        if w is not None:
            self.server.send(w, data)
            if len(w.out) > HIGH:
                self.server.pause(conn, w)
            return
        queue.append(data)
        job.held += len(data)
        conn.session.held += len(data)
        if conn.session.held > HELD_MAX:
            self.hold(conn)

    def hold(self, conn):
        if not conn.session.holding:
            conn.session.holding = True
            self.server.hold(conn)

    def unhold(self, job):
        """job's held input left the hub (sent on, or dropped)."""
        client = job.client
        held, job.held = job.held, 0
        if client is not None and held:
            client.session.held -= held
            self.jobs_left(client)

    def jobs_left(self, conn):
        """conn holds less at the hub: read it again once it is well under
        its limits (hysteresis: half the held input, three quarters of the
        jobs)."""
        s = conn.session
        if s.holding and s.held <= HELD_MAX // 2 and len(s.jobs) <= self.opts.max_jobs * 3 // 4:
            s.holding = False
            self.server.release(conn)

    def on_kill(self, conn, msg):
        job = self.cjob(conn, msg)
        if job is None:
            return
        sig = msg.int("sig", signal.SIGTERM, 1, wire.MAX_SIGNAL)
        if job.worker is not None:
            self.server.send(job.worker, wire.format("KILL", job.hid, sig=sig))
        else:
            # Killed before it started: it ends here, as if by the signal.
            self.end_queued(conn, job, sig)

    def stalled(self, conn, quiet):
        """conn has read nothing for quiet seconds while its jobs hold
        slots: every job of its ends now, cancelled with reason=stalled (one
        DONE each, waiting in its buffer should it read again); running ones
        are cancelled at their workers, and what they still print is
        dropped, so the slots come free."""
        session = conn.session
        running = [j for j in session.jobs.values() if j.worker is not None]
        if not running:
            return
        self.server.log(f"client {conn.name} read nothing for {quiet:.0f}s while "
                        f"{len(running)} of its jobs held slots: its {len(session.jobs)} "
                        f"jobs are cancelled")
        for job in list(session.jobs.values()):
            job.reason = "stalled"
            if job.worker is None:
                self.end_queued(conn, job)
                continue
            session.ackq.discard(job)
            session.jobs.pop(job.cid, None)
            job.client = None
            self.server.send(conn, wire.format("DONE", job.cid, outcome=errors.CANCELLED,
                                               reason="stalled"))
            self.server.send(job.worker, wire.format("CANCEL", job.hid))
            self.ack(job)
        self.jobs_left(conn)

    def end_queued(self, conn, job, sig=None):
        """A session job that never started ends now, cancelled."""
        self.sched.dequeue(job)
        job.inq = []
        self.unhold(job)
        conn.session.jobs.pop(job.cid, None)
        self.server.send(conn, wire.format("DONE", job.cid, sig=sig, outcome=errors.CANCELLED,
                                           reason=job.reason))
        self.jobs_left(conn)

    def client_gone(self, conn):
        jobs = conn.session.jobs
        for job in jobs.values():
            job.client = None
            if job.worker is not None:
                self.server.send(job.worker, wire.format("CANCEL", job.hid))
                self.ack(job)
            else:
                self.sched.dequeue(job)
                job.inq = []
        jobs.clear()

    # -- files that travel with session jobs (gridmap -S --transferfile ...) --------
    #
    # A job's STAGE and FILE come after its RUN stage=1 and go on to its
    # worker as its IN do (held with them while it is queued); FILE from
    # the worker (--return) goes back as OUT does, under the same ACKs.  A
    # client's basefiles are held here (at most wire.MAX_BASE_BYTES) and
    # offered to each worker before the first of its jobs there.

    def send_staged(self, wconn, job, flags):
        send = self.server.send
        session = job.client.session if job.client is not None else None
        if session is not None and session.bases and wconn not in session.based:
            session.based.add(wconn)
            for path, b in session.bases.items():
                send(wconn, wire.format("BASE", path=path, sha256=b.sha256, size=b.size,
                                        mode=b.mode, cleanup=b.cleanup or None))
        send(wconn, wire.format_run(job.hid, flags + b" stage=1", job.command))
        for data in job.staged:
            send(wconn, data)
        job.staged = []
        self.unhold(job)

    def on_stage(self, conn, msg):
        wd = msg.get("wd")
        if wd is not None:
            wire.file_path(wd, "STAGE: wd=")
        msg.int("files", 0, 0, wire.MAX_FILES)
        wire.decode_paths(msg.body, "STAGE")
        self.to_worker(conn, msg)

    def on_file(self, conn, msg):
        wire.file_piece(msg)
        if conn.role == "client":
            self.to_worker(conn, msg)
            return
        job = self.wjob(conn, msg)
        if job is None:
            return
        data = msg.body or b""
        client = job.client
        if client is not None and not client.closing:
            self.server.send(client, wire.format("FILE", job.cid, body=data, **msg.kv))
            job.acks += len(data)
            if job.acks >= ACK_EVERY and not client.session.relay:
                client.session.ackq.add(job)
                self.server.when_low(client, self._send_acks)
            return
        job.acks += len(data)
        if job.acks >= ACK_EVERY:
            self.ack(job)

    def to_worker(self, conn, msg):
        """A client's STAGE or FILE for one of its staged jobs: on to its
        worker, or held until it has one (counted as held input is)."""
        job = self.cjob(conn, msg)
        if job is None:
            return
        if not job.stage:
            raise wire.WireError(f"{msg.verb}: job {job.cid} was not run with stage=1",
                                 wire.E_USAGE)
        self.relay(conn, job, wire.format(msg.verb, job.hid, body=msg.body, **msg.kv),
                   job.staged)

    def on_base(self, conn, msg):
        """BASE path= sha256= size= [mode=] [cleanup=1] off= [end=1]: a piece
        of a basefile, in order, before the jobs that use it."""
        path, mode, off, end = wire.file_piece(msg)
        bases = conn.session.bases
        b = bases.get(path)
        if b is None:
            if off != 0 or len(bases) >= wire.MAX_BASES:
                raise wire.WireError(f"BASE: {path[:200]!r}: off={off} for a new basefile, or "
                                     f"more than {wire.MAX_BASES}", wire.E_USAGE, field="off")
            size = msg.int("size", None, 0, wire.MAX_BASE_BYTES)
            if size is None or size + sum(x.size for x in bases.values()) > \
                    wire.MAX_BASE_BYTES:
                raise wire.WireError(f"BASE: needs size=, all basefiles at most "
                                     f"{wire.MAX_BASE_BYTES} bytes", wire.E_USAGE, field="size")
            b = bases[path] = Base(wire.sha256_field(msg), size, f"{mode:o}",
                                   msg.get("cleanup") == "1")
        data = msg.body or b""
        if b.done or off != b.got or b.got + len(data) > b.size:
            raise wire.WireError(f"BASE: {path[:200]!r}: off={off}, expected {b.got} of "
                                 f"{b.size}", wire.E_USAGE, field="off")
        b.pieces.append(data)
        b.got += len(data)
        b.done = end
        if end and b.got != b.size:
            del bases[path]
            raise wire.WireError(f"BASE: {path[:200]!r} ended at {b.got} of {b.size} bytes",
                                 wire.E_USAGE, field="size")

    def on_want(self, conn, msg):
        """A worker has not the basefile it was offered: its pieces."""
        path = wire.file_path(msg.get("path"), "WANT: path=")
        sha = wire.sha256_field(msg)
        for client in self.clients:
            session = client.session
            b = session.bases.get(path)
            if b is not None and b.sha256 == sha and conn in session.based:
                off = 0
                last = len(b.pieces) - 1
                for i, data in enumerate(b.pieces):
                    self.server.send(conn, wire.format(
                        "BASE", path=path, sha256=sha, size=b.size, mode=b.mode,
                        off=off, end=i == last, body=data))
                    off += len(data)
                return
        raise wire.WireError(f"WANT: no basefile {path[:200]!r} was offered to this worker",
                             wire.E_DATA, field="path")


class Base:
    """A basefile a client sent: its pieces as they came."""

    __slots__ = ("sha256", "size", "mode", "cleanup", "pieces", "got", "done")

    def __init__(self, sha256, size, mode, cleanup):
        self.sha256 = sha256
        self.size = size
        self.mode = mode
        self.cleanup = cleanup
        self.pieces = []
        self.got = 0
        self.done = False


def job_options(msg):
    """A RUN's or SUBMIT's requirements and timeout."""
    return frozenset(wire.parse_tags(msg.kv, "req.").items()), msg.seconds("timeout")
