"""One connection's work: the hub's verbs (RUN, IN, KILL, CANCEL, ACK, ...)
and the jobs they start, each a child process relayed by run.relay on the
worker's loop, each ending in one DONE.

Flow control: a job may have WINDOW bytes of output sent and not yet
acknowledged by the hub (ACK); past that its pipes are not read, so a slow
reader at the far end slows the job itself.
"""

import os
import signal

from gridtools.io.log import logger
from gridtools.proto import errors, wire
from gridtools.run import runner
from gridtools.run.relay import Relay
from gridtools.worker import files

WINDOW = 1 << 20            # unacknowledged output bytes per job
KILL_GRACE = 2.0            # seconds between SIGTERM and SIGKILL


log = logger("gridd worker")


class Job:
    """A running job: its relay, its output window, its timer (the timeout,
    then the grace before SIGKILL) and how it is ending."""

    __slots__ = ("wid", "relay", "unacked", "timer", "timed_out", "cancelled", "worker",
                 "stage", "spec", "early", "result", "returning")

    def __init__(self, worker, wid):
        self.worker = worker
        self.wid = wid
        self.relay = None
        self.unacked = 0
        self.timer = None
        self.timed_out = False
        self.cancelled = False
        self.stage = None           # files.Stage of a job run with RUN stage=1
        self.spec = None            # (argv, fed, timeout) until a staged job starts
        self.early = []             # stdin that came before it started
        self.result = None          # (exit, sig) while its --return files go back
        self.returning = None       # their pieces, sent as the hub acknowledges

    def output(self, fd_no, data):
        self.worker.send_out(self.wid, fd_no, data)
        self.unacked += len(data)
        if self.unacked >= WINDOW:
            self.relay.pause_reading()

    def taken(self, n):
        self.worker.chan.send(wire.format("ACK", self.wid, n=n))

    def done(self, code, sig):
        if self.timer is not None:
            self.timer.cancel()
        if self.stage is not None and self.stage.returns and not self.cancelled:
            self.result = (code, sig)
            self.returning = self.stage.pieces()
            self.worker.send_back(self)
            return
        self.worker.finished(self, code, sig)


class _NoLifeline:
    """A Worker run in process by a test: nobody watches its jobs."""

    def started(self, child):
        pass

    def ended(self, child):
        pass


class Worker:
    """Serves one channel to a hub on a loop until the hub says BYE (run()
    returns) or the channel fails (a GridError leaves run())."""

    def __init__(self, chan, slots, name, tags, loop=None, debug=False, lifeline=None):
        if loop is None:
            from gridtools.io.loop import Loop
            loop = Loop()
        self.loop = loop
        self.debug = debug
        self.lifeline = lifeline or _NoLifeline()
        self.chan = chan
        self.slots = slots
        self.name = name
        self.tags = tags
        self.jobs = {}
        self.handlers = {
            "RUN": self.on_run, "IN": self.on_in, "KILL": self.on_kill,
            "CANCEL": self.on_cancel, "ACK": self.on_ack, "PING": self.on_ping,
            "PONG": self.on_nothing, "ERR": self.on_err, "BYE": self.on_bye,
            "STAGE": self.on_stage, "FILE": self.on_file, "BASE": self.on_base,
        }
        self.bye = False
        self.bases = files.Bases()

    def run(self):
        chan = self.chan
        if chan.loop is not self.loop:
            chan.attach(self.loop, self.on_input)
        else:
            chan.on_input = self.on_input
        chan.send(wire.format("READY", slots=self.slots, name=self.name, pid=os.getpid(),
                              **{"tag." + k: v for k, v in self.tags.items()}))
        try:
            self.on_input()             # anything that came with the WELCOME
            if not self.bye:
                self.loop.run_forever()
        finally:
            self.kill_all()
            self.bases.close()

    def on_input(self):
        chan = self.chan
        while not self.bye:
            try:
                msg = next(chan.reader)
            except StopIteration:
                return
            except wire.WireError as e:
                chan.send(wire.error(e.code, f"worker: {e}"))
                if e.fatal:
                    raise errors.UnavailableError(f"protocol error: {e}") from None
                continue
            handler = self.handlers.get(msg.verb)
            if handler is None:
                chan.send(wire.error(wire.E_PROTOCOL, f"worker: unknown verb {msg.verb}"))
                continue
            try:
                handler(msg)
            except wire.WireError as e:
                chan.send(e.reply(job=self.job_named(msg)))
                if msg.verb == "RUN":
                    self.refuse(msg)
            except Exception as e:  # noqa: BLE001 - a job's fields never kill the worker
                log(f"internal error on {msg.verb}: {type(e).__name__}: {e}")
                if self.debug:
                    import traceback
                    traceback.print_exception(e)
                chan.send(wire.error(wire.E_SOFTWARE, f"worker: internal error on "
                                     f"{msg.verb}", job=self.job_named(msg)))
                self.fail_job(msg)

    def job_named(self, msg):
        """The job id a message names, if it is one (for an ERR's job=)."""
        return msg.args[0] if msg.args and wire.is_uint(msg.args[0]) else None

    def refuse(self, msg):
        """A RUN we would not start still ends in one result at the hub."""
        wid = self.job_named(msg)
        if wid is not None and wid not in self.jobs:
            self.chan.send(wire.format("DONE", wid, exit=127, outcome=errors.FAILED))

    def fail_job(self, msg):
        """An internal error while handling msg: its job ends, once."""
        wid = self.job_named(msg)
        if wid is None:
            return
        job = self.jobs.get(wid)
        if job is None:
            if msg.verb == "RUN":
                self.refuse(msg)
            return
        job.cancelled = True
        self.terminate(job)

    def on_nothing(self, _):
        pass

    def on_ping(self, msg):
        self.chan.send(b"PONG\n")

    def on_err(self, msg):
        log(f"hub says: {' '.join(msg.args)}")

    def on_bye(self, msg):
        self.bye = True
        self.loop.stop()

    # -- jobs ---------------------------------------------------------------

    def on_run(self, msg):
        msg.id_arg(0)
        wid = msg.arg(0)
        if wid in self.jobs:
            raise wire.WireError(f"RUN: job {wid} is already running", wire.E_USAGE)
        body = msg.body or b""
        if msg.get("argv") == "1":
            argv = wire.decode_argv(body)
        else:
            argv = runner.shell_argv(body.decode("utf-8", "surrogateescape"))
        if not argv or not argv[0] or "\0" in argv[0]:
            raise wire.WireError("RUN: an empty command", wire.E_USAGE, field="argv")
        fed = msg.get("stdin") == "1"
        timeout = msg.seconds("timeout")
        if msg.get("stage") == "1":
            # Its files come first (STAGE, FILE): it starts when they are in.
            job = self.jobs[wid] = Job(self, wid)
            job.stage = files.Stage()
            job.spec = (argv, fed, timeout)
            return
        self.spawn(Job(self, wid), argv, fed, timeout)

    def spawn(self, job, argv, fed, timeout):
        wid = job.wid
        wd = job.stage.wd if job.stage is not None else None
        try:
            child = runner.spawn(argv, stdin=runner.PIPE if fed else None, cwd=wd)
            self.lifeline.started(child)
        except OSError as e:
            self.jobs.pop(wid, None)
            self.send_out(wid, 2, f"gridd worker: cannot run: {e.strerror}\n".encode())
            self.chan.send(wire.format("DONE", wid, exit=127))
            if job.stage is not None:
                job.stage.clean()
            return
        self.jobs[wid] = job
        job.relay = Relay(self.loop, child, job.output, job.done, job.taken, self.lifeline)
        if timeout is not None:
            job.timer = self.loop.call_later(timeout, self.on_timeout, job)
        for block in job.early:
            job.relay.feed(block) if block is not None else job.relay.end_input()
        job.early = []

    # -- files that travel with jobs (files.py) -------------------------------

    def staged_job(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None or job.stage is None or job.spec is None:
            raise wire.WireError(f"{msg.verb}: no job {msg.arg(0)[:40]} waiting for its files",
                                 wire.E_DATA)
        return job

    def on_stage(self, msg):
        job = self.staged_job(msg)
        self.staging(job, job.stage.staged, msg)

    def on_file(self, msg):
        job = self.staged_job(msg)
        self.staging(job, job.stage.piece, msg)

    def staging(self, job, step, msg):
        """A STAGE or FILE for job: an error in it ends the job unrun (one
        DONE, exit 1, a line on its stderr), as a RUN refused would."""
        try:
            step(msg)
        except wire.WireError as e:
            job.stage.error = job.stage.error or str(e)
            self.chan.send(e.reply(job=job.wid))
            job.stage.expect = job.stage.ended = 0
        self.maybe_start(job)

    def maybe_start(self, job):
        stage = job.stage
        if job.spec is None or not stage.ready():
            return
        if stage.error is not None or job.cancelled:
            del self.jobs[job.wid]
            if stage.error is not None:
                self.send_out(job.wid, 2, f"gridd worker: {stage.error}\n".encode())
            self.chan.send(wire.format("DONE", job.wid, exit=None if job.cancelled else 1,
                                       outcome=errors.CANCELLED if job.cancelled else None))
            stage.clean()
            return
        if self.bases.pending:
            return              # after the basefiles offered before it
        spec, job.spec = job.spec, None
        self.spawn(job, *spec)

    def on_base(self, msg):
        if msg.body is None:
            if self.bases.offer(msg):
                self.chan.send(wire.format("WANT", path=msg.get("path"),
                                           sha256=msg.get("sha256")))
            return
        trouble = self.bases.piece(msg)
        if trouble is not None:
            log(trouble)
            self.chan.send(wire.error(wire.E_DATA, trouble))
        if not self.bases.pending:
            for job in list(self.jobs.values()):
                if job.spec is not None:
                    self.maybe_start(job)

    def send_back(self, job):
        """A job's --return files, piece by piece while its output window
        allows (the hub's ACKs open it again), then its DONE."""
        for path, mode, off, data, end in job.returning:
            if mode is None:
                self.send_out(job.wid, 2, f"gridd worker: {data}\n".encode())
                continue
            self.chan.send(wire.format("FILE", job.wid, path=path, mode=f"{mode:o}", off=off,
                                       end=end, body=data))
            job.unacked += len(data)
            if job.unacked >= WINDOW:
                return
        job.returning = None
        self.finished(job, *job.result)

    def on_in(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None:
            return          # finished already
        if job.relay is None:       # staged, not started yet
            if msg.body:
                job.early.append(msg.body)
            if msg.get("eof") == "1":
                job.early.append(None)
            return
        if msg.body:
            job.relay.feed(msg.body)
        if msg.get("eof") == "1":
            job.relay.end_input()

    def on_kill(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None:
            return
        sig = msg.int("sig", signal.SIGTERM, 1, wire.MAX_SIGNAL)
        if job.relay is None:
            job.cancelled = True
            self.end_unstarted(job, sig)
            return
        job.relay.kill(sig)

    def on_cancel(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is not None and not job.cancelled:
            job.cancelled = True
            if job.relay is None:
                self.end_unstarted(job)
            else:
                self.terminate(job)

    def on_ack(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None:
            return
        job.unacked = max(0, job.unacked - msg.int("n", 0))
        if job.unacked < WINDOW:
            if job.returning is not None:
                self.send_back(job)
            elif job.relay is not None:
                job.relay.resume_reading()

    def on_timeout(self, job):
        job.timed_out = True
        self.terminate(job)

    def end_unstarted(self, job, sig=None):
        """A staged job killed or cancelled before it started (or while its
        files go back): it ends now, cancelled."""
        if job.relay is not None and job.returning is None:
            return
        del self.jobs[job.wid]
        self.chan.send(wire.format("DONE", job.wid, sig=sig, outcome=errors.CANCELLED))
        job.stage.clean()

    def terminate(self, job):
        """SIGTERM the group now, SIGKILL after a grace period."""
        if job.relay is None or job.returning is not None:
            self.end_unstarted(job)
            return
        job.relay.kill(signal.SIGTERM)
        if job.timer is not None:
            job.timer.cancel()
        job.timer = self.loop.call_later(KILL_GRACE, job.relay.kill, signal.SIGKILL)

    def send_out(self, wid, fd_no, data):
        self.chan.send(wire.format("OUT", wid, fd=fd_no, body=data))

    def finished(self, job, code, sig):
        del self.jobs[job.wid]
        outcome = errors.TIMEOUT if job.timed_out else errors.CANCELLED if job.cancelled \
            else None
        self.chan.send(wire.format("DONE", job.wid, exit=code, sig=sig, outcome=outcome))
        if job.stage is not None:
            job.stage.clean()

    def kill_all(self):
        """The hub is gone: nobody will collect these jobs' results."""
        for job in self.jobs.values():
            if job.timer is not None:
                job.timer.cancel()
            if job.relay is not None:
                job.relay.abandon()
            if job.stage is not None:
                job.stage.clean()
        self.jobs.clear()
