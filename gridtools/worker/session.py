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

WINDOW = 1 << 20            # unacknowledged output bytes per job
KILL_GRACE = 2.0            # seconds between SIGTERM and SIGKILL


log = logger("gridd worker")


class Job:
    """A running job: its relay, its output window, its timer (the timeout,
    then the grace before SIGKILL) and how it is ending."""

    __slots__ = ("wid", "relay", "unacked", "timer", "timed_out", "cancelled", "worker")

    def __init__(self, worker, wid):
        self.worker = worker
        self.wid = wid
        self.relay = None
        self.unacked = 0
        self.timer = None
        self.timed_out = False
        self.cancelled = False

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
        }
        self.bye = False

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
        try:
            child = runner.spawn(argv, stdin=runner.PIPE if fed else None)
            self.lifeline.started(child)
        except OSError as e:
            self.send_out(wid, 2, f"gridd worker: cannot run: {e.strerror}\n".encode())
            self.chan.send(wire.format("DONE", wid, exit=127))
            return
        job = self.jobs[wid] = Job(self, wid)
        job.relay = Relay(self.loop, child, job.output, job.done, job.taken, self.lifeline)
        if timeout is not None:
            job.timer = self.loop.call_later(timeout, self.on_timeout, job)

    def on_in(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None:
            return          # finished already
        if msg.body:
            job.relay.feed(msg.body)
        if msg.get("eof") == "1":
            job.relay.end_input()

    def on_kill(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None:
            return
        job.relay.kill(msg.int("sig", signal.SIGTERM, 1, wire.MAX_SIGNAL))

    def on_cancel(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is not None and not job.cancelled:
            job.cancelled = True
            self.terminate(job)

    def on_ack(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is None:
            return
        job.unacked = max(0, job.unacked - msg.int("n", 0))
        if job.unacked < WINDOW:
            job.relay.resume_reading()

    def on_timeout(self, job):
        job.timed_out = True
        self.terminate(job)

    def terminate(self, job):
        """SIGTERM the group now, SIGKILL after a grace period."""
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

    def kill_all(self):
        """The hub is gone: nobody will collect these jobs' results."""
        for job in self.jobs.values():
            if job.timer is not None:
                job.timer.cancel()
            job.relay.abandon()
        self.jobs.clear()
