"""The hub's control service (gridd ctl): STATUS, WORKERS, JOBS, CANCEL,
DRAIN, SHUTDOWN.  It reads the sessions and durable services it is given
and changes nothing but through them and the server."""

import time

from gridtools.hub import sched
from gridtools.hub.durable import info
from gridtools.hub.sessions import CLIENT
from gridtools.proto import wire
from gridtools.hub.sched import JOBS_LISTED


class Control:
    def __init__(self, server, sessions, durable, opts):
        self.server = server
        self.sessions = sessions
        self.durable = durable
        self.opts = opts
        self.started = time.time()
        self.verbs = {
            "STATUS": (self.on_status, CLIENT), "WORKERS": (self.on_workers, CLIENT),
            "JOBS": (self.on_jobs, CLIENT), "CANCEL": (self.on_cancel, CLIENT),
            "DRAIN": (self.on_drain, CLIENT), "SHUTDOWN": (self.on_shutdown, CLIENT),
        }

    def opened(self, conn):
        pass

    def closed(self, conn, quiet):
        pass

    def worker_rows(self):
        rows = []
        for c in self.sessions.workers:
            s = c.slots
            rows.append({"name": s.name, "peer": c.peer, "slots": s.slots,
                         "running": len(s.jobs), "tags": s.tags,
                         "how": self.server.direction(c),
                         "state": "draining" if s.draining else "up"})
        return rows

    def on_status(self, conn, msg):
        info(self.server, conn, "status", self.status())

    def status(self):
        """What STATUS answers (and the HTTP side's /status.json)."""
        workers = self.worker_rows()
        sessions, durable = self.sessions, self.durable
        j = durable.journal
        return {
            "addresses": [str(a) for a in self.server.addresses],
            "workers": len(workers), "slots": sum(w["slots"] for w in workers),
            "running": sum(w["running"] for w in workers),
            "queued": self.sessions.sched.waiting(), "clients": len(sessions.clients),
            "durable": len(durable.jobs),
            "done": sessions.counts["done"] + durable.counts["done"],
            "lost": sessions.counts["lost"] + durable.counts["lost"],
            "submitted": durable.counts["submitted"],
            "uptime": round(time.time() - self.started, 1),
            "state": "draining" if self.server.draining else "up",
            "journal": self.opts.state_dir,
            "journal_state": "ok" if j is None or j.writable
            else durable.problem or f"journal {j.problem}",
            "unstored": len(durable.unstored)}

    def on_workers(self, conn, msg):
        info(self.server, conn, "workers", self.worker_rows())

    def on_jobs(self, conn, msg):
        rows = []

        def row(job, where):
            cmd = job.command
            text = " ".join(wire.decode_argv(cmd)) if job.argv else cmd.decode(
                "utf-8", "replace")
            why = None
            if where is None:
                why = self.sessions.why_waiting(job.reqs) if job.reqs else None
                why = why or "waiting for a free slot"
            where = where[:200] if where else where
            rows.append({"id": job.name, "state": job.state, "worker": where,
                         "tries": job.tries, "kind": "durable" if job.did else "session",
                         "command": text[:200], "why": why})
        for c in self.sessions.workers:
            for job in c.slots.jobs.values():
                row(job, c.name)
        for q in self.sessions.sched.queues.values():
            for job in q:
                if job.state == sched.QUEUED and len(rows) < JOBS_LISTED:
                    row(job, None)
        info(self.server, conn, "jobs", rows)

    def on_cancel(self, conn, msg):
        arg = msg.arg(0)
        if not arg.startswith("s"):
            job = self.durable.jobs.get(msg.id_arg(0))
        else:
            hid = wire.uint(arg[1:], "CANCEL: session job id", 0, wire.MAX_ID, field="id")
            job = self.sessions.find(hid)
        if job is None:
            raise wire.WireError(f"CANCEL: no queued or running job {arg}", wire.E_DATA)
        self.sessions.cancel(job)
        self.server.send(conn, wire.format("OK", arg))

    def on_drain(self, conn, msg):
        name = msg.arg(0)
        if not self.sessions.drain_worker(name):
            raise wire.WireError(f"DRAIN: no worker named {name!r}", wire.E_DATA)
        self.server.send(conn, wire.format("OK", name))

    def on_shutdown(self, conn, msg):
        self.server.send(conn, wire.format("OK", "shutdown"))
        self.server.start_drain(f"shutdown asked by {conn.peer}")
