"""The pool: keeps every slot busy, relays output, enforces timeouts,
retries and --halt, and hands each finished job to the sink exactly once,
all on one event loop (gridtools.io.loop).

Who runs a job is the executor's business.  executor.LocalExecutor spawns
children with runner; hub.client.HubExecutor runs the same jobs on a grid.
An executor has this interface, all on the pool's loop (pool.loop):

    capacity                     -> how many jobs may run at once
    start(job)                   begin job (job.command, job.argv, job.slot
                                 are set; job.block is None or its stdin);
                                 raises OSError if it cannot start
    feed(job, block)             --round-robin: queue another stdin block
    end_input(job)               no more stdin for job after what is queued
    pending_input(job) -> int    bytes queued for job's stdin, not yet sent
    kill(job, sig)               signal the job's process group
    close()

and it reports back with pool.job_output(job, fd, data) (fd 1 or 2),
pool.input_taken(job) when pending_input(job) fell to 0, and
pool.job_done(job, exitcode, signal, outcome=None); an executor passes an
outcome only when it knows one the exit status cannot say (a hub: "lost",
the worker running the job vanished).
"""

import heapq
import math
import os
import select
import signal
import sys
import time

from gridtools.io.loop import Loop
from gridtools.local import output
from gridtools.proto import errors
from gridtools.run import runner
from gridtools.local.jobs import WAIT
from gridtools.local.executor import LocalExecutor, Shell
KILL_GRACE = 2.0       # seconds between SIGTERM and SIGKILL
NUL_WARNING = ("A NUL character in the input was replaced with \\0.",     # GNU's words
               "NUL cannot be passed through in the argument list.",
               "Did you mean to use the --null option?")
# Signals that stop the run: every job's process group is killed first (the
# jobs have groups of their own, so the terminal's signal never reaches them).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# While this many writes wait for our reader (a full pipe), no job starts:
# finished jobs' output waits in their captures (memory up to Capture.LIMIT
# each, then a temporary file), and a slow reader slows the run.
MAX_WAITING = 16


class Halt:
    """--halt when,kind=N[%]: when to stop early, as GNU parallel does: N
    jobs, or P% of all the jobs (total: their number, known before the
    first one ends, because the source read all its input ahead)."""

    def __init__(self, when="never", kind=None, count=0, percent=False):
        self.when = when          # "never", "soon" or "now"
        self.kind = kind          # "fail", "success" or "done"
        self.count = count
        self.percent = percent
        self.total = 0

    def threshold(self):
        # The same float arithmetic as GNU parallel's Perl, so the same
        # totals halt after the same job.
        return self.total * (self.count / 100) if self.percent else self.count

    def triggered(self, failed, succeeded, done):
        if self.when == "never" or (self.percent and not self.total):
            return False
        n = {"fail": failed, "success": succeeded, "done": done}[self.kind]
        return n >= self.threshold()

    def status(self, r, failed):
        """The exit status once triggered by result r, failed jobs so far."""
        if self.kind == "success":
            return 0
        if self.threshold() == 1:
            # As a shell would say it: 128+N for a signal.
            if r.signal is not None:
                return 128 + r.signal
            return r.exitcode if r.exitcode is not None else 1
        if self.percent:
            return math.ceil(failed / self.total * 100)
        return min(failed, 101)

    def final_status(self, failed, started):
        """The exit status when the run ended without halting."""
        if self.when != "never" and self.percent:
            return math.ceil(failed / (started or 1) * 100)
        return min(failed, 101)


class Options:
    """What the pool needs to know from the command line."""

    def __init__(self, template=None, retries=0, timeout=None, halt=None,
                 line_buffer=False, tag=False, tagstring=None, round_robin=False,
                 bar=False, slots=1, shell=None, verbose=False, max_chars=None,
                 nice=None, delay=0.0, tmpdir=None, ungroup=False, env_prefix=None,
                 termseq=None):
        self.template = template
        self.retries = retries
        self.timeout = timeout
        self.halt = halt or Halt()
        self.line_buffer = line_buffer
        self.tag = tag
        self.tagstring = tagstring
        self.round_robin = round_robin
        self.bar = bar
        self.slots = slots
        self.shell = shell or Shell(os.environ)
        self.verbose = verbose          # -t: each command on stderr
        self.max_chars = max_chars      # -s: command lines shorter than this
        self.nice = nice                # --nice N: argv prefix nice -n N
        self.delay = delay              # --delay: seconds between job starts
        self.tmpdir = tmpdir            # --tmpdir: where big outputs wait
        self.ungroup = ungroup          # -u: output passed on as it comes
        self.env_prefix = env_prefix    # --env through a hub: [env, K=V...]
        # How a job is ended: (signal, seconds to wait before the next).
        self.termseq = termseq or [(signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 0.0)]
        self.progress = None            # --progress/--eta: a progress.Report
        self.gate = None                # --memfree/--load: a gate.Gate
        self.limit = None               # --limit: limit.parse's (kind, value)
        self.compress = None            # --compress: a compress.Packer


def prepare(job, opts):
    """Expand the template for job (its slot is known now): its command,
    its argv when it needs no shell, and its --tag prefix."""
    t = opts.template
    if t is None:
        job.command = " ".join(job.args)
        job.argv = runner.split_plain(job.command)
    else:
        job.command = t.shell(job.args, job.seq, job.slot)
        job.argv = t.argv(job.args, job.seq, job.slot)
    if job.argv is not None and opts.shell.wants(job.argv[0]):
        job.argv = None
    if opts.nice is not None:
        job.argv = ["nice", "-n", str(opts.nice)] + (
            job.argv or opts.shell.argv(job.command))
    if opts.env_prefix is not None:
        # The worker's environment is its own: the variables travel in
        # the argv, as env(1) takes them.
        job.argv = opts.env_prefix + (job.argv or opts.shell.remote_argv(job.command))
    if opts.max_chars is not None and len(job.command) >= opts.max_chars:
        shown = " ".join(job.args)
        raise errors.DataError(
            f"command line too long ({len(job.command)} >= {opts.max_chars}) "
            f"at input {job.seq}: {shown[:50] + '...' if len(shown) > 50 else shown}")
    if opts.tagstring is not None:
        from gridtools.local import template
        job.tag = os.fsencode(template.expand_plain(
            opts.tagstring, job.args, job.seq, job.slot)) + b"\t"
    elif opts.tag:
        job.tag = os.fsencode(" ".join(job.args)) + b"\t"


class Pool:
    """Runs every job from a source through an executor into a sink."""

    def __init__(self, source, sink, opts, loop=None, executor=None):
        self.source = source
        self.sink = sink
        self.opts = opts
        self.loop = loop or Loop()
        self.executor = executor or LocalExecutor(opts.slots, self.loop, self)
        self.capacity = self.executor.capacity     # set_slots changes it
        self.free = list(range(1, self.capacity + 1))
        self.running = {}          # seq -> job
        self.retry = []            # (job, status of its last try) waiting for another
        self.stepping = False      # a _step is queued on the loop
        self.delay_timer = None    # --delay: the timer that starts the next job
        self.drain_timer = None    # stopped by a signal: how long output may wait
        self.dropped = False       # ... and it waited too long
        self.bad_input = None      # the DataError that ended the input
        self.exhausted = False
        self.watching_input = None     # the input fd we watch
        self.halting = None        # None, "soon" or "now"
        self.halt_status = None
        self.stop_signal = None
        self.failed = self.succeeded = self.done = 0
        self.started = 0
        self.next_start = 0.0      # --delay: no job starts before this time
        self.bar = Progress() if opts.bar and sys.stderr.isatty() else None
        self.report = opts.progress     # --progress: GNU parallel's report
        self.gate = opts.gate           # --memfree, --load
        self.tick_timer = None          # ... their one-second timer
        self.limit = None               # --limit: a limit.Limit
        if opts.limit is not None:
            from gridtools.local import limit
            kind, value = opts.limit
            self.limit = limit.Limit(kind, value, self.loop, wanted=self._limit_wanted,
                                     verdict=self._limit_verdict,
                                     argv=opts.shell.argv(value) if kind == "command" else None)
        self.rr_jobs = []          # --round-robin: the long-running jobs
        self.rr_next = 0           # ... and which one to feed next
        self.rr_headed = set()     # ... and those given the --header

    # -- the loop --------------------------------------------------------

    def run(self):
        """Run everything; return gridmap's exit status.  The loop is the
        pool's for the run: it is closed at the end."""
        try:
            for s in STOP_SIGNALS:
                self.loop.add_signal_handler(s, self._on_signal, s)
        except ValueError:
            pass                    # not the main thread: no signals to catch
        try:
            self.sink.attach(self.loop, self._poke)
            if self.report:
                self.sink.write(2, self.report.head.encode())
            if self.opts.round_robin:
                self._start_round_robin()
            self._poke()
            self.loop.run_forever()
        except BaseException:
            # Our reader went away (`| head`) or something broke: no job
            # may outlive us unseen.
            for job in self.running.values():
                self.executor.kill(job, signal.SIGKILL)
            raise
        finally:
            if self.bar:
                self.bar.clear()
            if self.report:
                self._show(b"\n")
            if self.limit is not None:
                self.limit.close()
            self.executor.close()
            self.sink.close(drop=self.dropped)
            self.loop.close()
            if self.dropped:
                _last_words("gridmap: output of finished jobs not written: "
                            f"nothing read it for {KILL_GRACE:g}s after the signal\n")
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        if self.bad_input is not None:
            raise self.bad_input        # after the jobs it let start have ended
        if self.halt_status is not None:
            return self.halt_status
        return self.opts.halt.final_status(self.failed, self.started)

    def _poke(self):
        """Something changed (a slot came free, input arrived, a signal):
        look again at the end of this loop turn, once however many pokes."""
        if not self.stepping:
            self.stepping = True
            self.loop.call_soon(self._step)

    def set_slots(self, n):
        """Jobs at once from now on (gridmap -S --sshloginfile: hosts came
        or went).  More start at once; fewer as running jobs end: none is
        stopped, and a slot past n is not given again."""
        n = max(1, n)
        old, self.capacity = self.capacity, n
        if n > old:
            busy = {job.slot for job in self.running.values()}
            for s in range(old + 1, n + 1):
                if s not in busy:
                    heapq.heappush(self.free, s)
        else:
            self.free = [s for s in self.free if s <= n]
            heapq.heapify(self.free)
        self._poke()

    def _step(self):
        self.stepping = False
        try:
            self._fill()
        except errors.DataError as e:
            self._input_failed(e)
        if not self.running and (self.exhausted or self.halting or self.stop_signal):
            if not self.sink.pending() or self.dropped:
                self.loop.stop()
            elif self.stop_signal and self.drain_timer is None:
                self.drain_timer = self.loop.call_later(KILL_GRACE, self._give_up_output)
            return
        self._watch_input()
        if self.bar:
            self.bar.show(self.done, self.started, self.exhausted)
        if self.report or self.gate:
            self._show()
            if self.tick_timer is None and (self.running or self.gate):
                self.tick_timer = self.loop.call_later(1.0, self._tick)

    def _show(self, end=b""):
        if self.report:
            line = self.report.line(len(self.running), self.done, self.started)
            self.sink.write(2, b"\r" + line.encode() + end)

    def _tick(self):
        """Once a second while jobs run, with --progress, --memfree or
        --load: the report redrawn, and under half of --memfree the
        youngest job killed (it fails this try; --retries may run it
        again), as GNU parallel does."""
        self.tick_timer = None
        gate = self.gate
        if gate is not None and self.running and gate.starving(self.loop.time()):
            self._kill_youngest(f"{gate.free >> 20} MiB available, under half of --memfree")
        self._poke()

    def _kill_youngest(self, why):
        """--memfree, --limit: the youngest job not already being ended is
        (its termination sequence), with a warning."""
        young = [j for j in self.running.values() if not j.kill_step]
        if young:
            job = max(young, key=lambda j: j.seq)
            self._say(f"warning: job {job.seq} killed: {why}: {job.command}")
            self._terminate(job)

    def _limit_wanted(self):
        """--limit: whether its command is worth asking again."""
        return bool(self.running) or bool(self.free) and not self.halting \
            and not self.stop_signal and (bool(self.retry) or not self.exhausted)

    def _limit_verdict(self, code):
        """--limit answered: 2 kills the youngest job, as in GNU parallel;
        0 may start one (the pool looks again)."""
        if code == 2 and self.running:
            self._kill_youngest("--limit is way over (2)")
        self._poke()

    def _fill(self):
        if self.opts.round_robin:
            self._feed_round_robin()
            return
        if self.retry and (self.halting or self.stop_signal):
            self._end_retries()
        while self.free and not self.halting and not self.stop_signal:
            if self.sink.pending() > MAX_WAITING:
                return                  # the drain pokes us
            if self.opts.delay and self.loop.time() < self.next_start:
                if self.delay_timer is None:
                    self.delay_timer = self.loop.call_at(self.next_start, self._delayed)
                return
            if self.gate is not None and not self.gate.open(self.loop.time()):
                return                  # _tick looks again
            if self.limit is not None and (self.retry or not self.exhausted) \
                    and not self.limit.take():
                return                  # its answer pokes us
            if self.retry:
                job, _ = self.retry.pop(0)
            elif self.exhausted:
                return
            else:
                job = self.source.next()
                if job is WAIT:
                    return
                if job is None:
                    self.exhausted = True
                    return
            self._start(job)
            if self.gate is not None:
                self.gate.started_one()
            if self.opts.delay:
                self.next_start = self.loop.time() + self.opts.delay

    def _give_up_output(self):
        """Stopped by a signal, and our reader takes nothing: what waits is
        lost, and we say so (the alternative is never exiting)."""
        self.dropped = True
        self._poke()

    def _delayed(self):
        self.delay_timer = None
        self._poke()

    def _start(self, job):
        job.slot = heapq.heappop(self.free)
        try:
            prepare(job, self.opts)
        except errors.DataError:
            heapq.heappush(self.free, job.slot)
            raise
        if self.opts.verbose:
            self.sink.write(2, os.fsencode(job.command) + b"\n")
        job.tries += 1
        job.start = time.time()
        job.t0 = self.loop.time()
        job.stdout = output.Capture(self.opts.tmpdir, self.opts.compress)
        job.stderr = output.Capture(self.opts.tmpdir, self.opts.compress)
        job.partial = [b"", b""]
        job.timed_out = False
        job.kill_step = 0
        self.running[job.seq] = job
        if job.tries == 1:
            self.started += 1
        try:
            try:
                self.executor.start(job)
            except ValueError:
                if not self._replace_nul(job):
                    raise
                self.executor.start(job)
        except (OSError, ValueError) as e:
            # ValueError: an argument the system cannot take.  Only this
            # job fails; the run goes on.
            why = e.strerror if isinstance(e, OSError) else f"{e} in an argument"
            self.job_output(job, 2, f"gridmap: cannot run {job.command!r}: {why}\n".encode(
                "utf-8", "surrogateescape"))
            self.job_done(job, 127, None)
            return
        if self.opts.timeout:
            job.timer = self.loop.call_later(self.opts.timeout, self._expired, job)

    def _replace_nul(self, job):
        """An input holding a NUL byte (read without -0) cannot be an
        argument: as GNU parallel does, it becomes \\0, with GNU's
        warnings for each such job.  Only after a start failed: no cost to
        the others."""
        if not any("\0" in a for a in job.args):
            return False
        for line in NUL_WARNING:
            self._say("warning: " + line)
        job.args = [a.replace("\0", "\\0") for a in job.args]
        prepare(job, self.opts)
        return True

    def _watch_input(self):
        fd = self.source.fd if not self.exhausted else None
        want = fd is not None and (bool(self.free) or self.opts.round_robin) \
            and not self.halting and not self.stop_signal
        if want and self.watching_input is None:
            self.loop.add_reader(fd, self._on_input)
            self.watching_input = fd
        elif not want and self.watching_input is not None:
            self.loop.remove_reader(self.watching_input)
            self.watching_input = None

    def _on_input(self):
        try:
            self.source.on_readable()
        except errors.DataError as e:
            self._input_failed(e)
        self._poke()

    def _input_failed(self, e):
        """Input gridmap cannot use (an item too long, a command line too
        long): no more jobs start, the running ones end as they would, and
        then gridmap reports it (exit 65).  No job is lost to it."""
        self.bad_input = e
        self.exhausted = True

    # -- round robin -----------------------------------------------------

    def _start_round_robin(self):
        from gridtools.local.jobs import Job
        for i in range(self.executor.capacity):
            job = Job(i + 1, ())
            self.rr_jobs.append(job)
            self._start(job)
        self.source.seq = self.executor.capacity

    def _feed_round_robin(self):
        if self.exhausted or self.halting or self.stop_signal:
            return
        n = len(self.rr_jobs)
        # Deal in turn, starting after the job fed last.  The order is fixed
        # before dealing: rr_next moves as we feed, and following it inside
        # the loop would skip a job every round (with -j3, one job got none).
        first = self.rr_next
        for i in range(n):
            job = self.rr_jobs[(first + i) % n]
            if job.seq not in self.running or self.executor.pending_input(job):
                continue
            self.source.prepend = False
            block = self.source.next_block()
            if block is WAIT:
                return
            if block is None:
                self.exhausted = True
                for j in self.rr_jobs:
                    if j.seq in self.running:
                        self.executor.end_input(j)
                return
            if self.source.header and job.seq not in self.rr_headed:
                # --header: each job's input starts with it, once.
                self.rr_headed.add(job.seq)
                block = self.source.header + bytes(block)
            self.executor.feed(job, block)
            self.rr_next = (first + i + 1) % n

    # -- reports from the executor ---------------------------------------

    def _live(self, job):
        """--line-buffer prints a job's lines as they come; with -k, only
        the lines of the job whose turn it is."""
        return self.opts.ungroup or self.opts.line_buffer and (
            not self.sink.keep_order or job.seq == self.sink.next_seq)

    def _go_live(self, job):
        for fd_no, capture in ((1, job.stdout), (2, job.stderr)):
            data = capture.take()
            if data:
                self._lines(job, fd_no, data)

    def input_taken(self, job):
        """--round-robin: job took all it was dealt; deal it more."""
        if self.opts.round_robin:
            self._poke()

    def job_output(self, job, fd_no, data):
        if self._live(job):
            self._lines(job, fd_no, data)
        elif fd_no == 1:
            job.stdout.append(data)
        else:
            job.stderr.append(data)

    def _lines(self, job, fd_no, data):
        if self.opts.ungroup:
            self._write_now(fd_no, data)   # -u: half lines too, as they come
            return
        i = fd_no - 1
        data = job.partial[i] + data
        cut = data.rfind(b"\n") + 1
        job.partial[i] = data[cut:]
        if cut:
            self._write_now(fd_no, output.tag_lines(job.tag, data[:cut]))

    def _write_now(self, fd_no, data):
        self.sink.write(fd_no, data)

    def job_done(self, job, exitcode, sig, outcome=None):
        runtime = self.loop.time() - job.t0
        self.running.pop(job.seq, None)
        if job.slot <= self.capacity:       # else set_slots took it away
            heapq.heappush(self.free, job.slot)
        self._poke()
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if job.timed_out:
            outcome = output.TIMEOUT
        elif job.cancelled:
            outcome = output.CANCELLED
        elif outcome is not None:
            pass
        elif sig is not None:
            outcome = output.SIGNALED
        elif exitcode != 0:
            outcome = output.FAILED
        else:
            outcome = output.OK
        if outcome in (output.TIMEOUT, output.LOST):
            self._warn(job, outcome)
        # A --round-robin job is not tried again: the blocks it was dealt
        # are gone, and nothing would start it again.
        # --retries N: N tries in all, as in GNU parallel (0 or 1: one).
        if outcome != output.OK and job.tries < self.opts.retries \
                and not self.halting and not self.stop_signal and not job.cancelled \
                and not self.opts.round_robin:
            self.retry.append((job, (exitcode, sig, outcome, runtime)))
            return
        self._finish(job, exitcode, sig, outcome, runtime)

    def _warn(self, job, outcome):
        """One line for each try that timed out or was lost, retried or not,
        as GNU parallel warns of every job its timeout killed: the exit
        status only counts failures, and these are the ones to act on."""
        if outcome == output.TIMEOUT:
            what = f"timed out after {self.opts.timeout:g}s and was killed"
        else:
            what = f"lost (worker {job.host} vanished)"
        self._say(f"warning: job {job.seq} {what}: {job.command}")

    def warn(self, text):
        """A warning from the grid (a hub's NOTE) on stderr."""
        self._say(f"warning: {text}")

    def _say(self, text):
        """A line of gridmap's own on stderr, on one line whatever the
        command holds, with the --bar line out of its way."""
        if self.bar:
            self.bar.clear()
        self.sink.write(2, f"gridmap: {text.replace(chr(10), ' ')}\n".encode(
            "utf-8", "surrogateescape"))

    def _end_retries(self):
        """Halting or stopping means no more tries: a job still waiting for
        one ends with the try it had, so it gets its one result (with -k,
        the results after it would otherwise never print)."""
        retry, self.retry = self.retry, []
        for job, status in retry:
            self._finish(job, *status)

    def _finish(self, job, exitcode, sig, outcome, runtime):
        """job's last try is over: hand its result to the sink."""
        if self._live(job):
            for fd_no in (1, 2):
                if job.partial[fd_no - 1]:
                    self._write_now(fd_no, output.tag_lines(job.tag, job.partial[fd_no - 1]))
            stdout = stderr = b""
        else:
            stdout, stderr = job.stdout, job.stderr
        job.stdout = job.stderr = None
        result = output.Result(job.seq, job.args, job.command, exitcode, sig,
                               outcome, job.start, runtime, stdout,
                               stderr, job.tries, job.slot, host=job.host,
                               sent=job.sent, tag=job.tag, width=job.width)
        self.sink.add(result)
        if self.opts.line_buffer and self.sink.keep_order:
            head = self.running.get(self.sink.next_seq)
            if head is not None:
                self._go_live(head)
        self.done += 1
        if outcome == output.OK:
            self.succeeded += 1
        else:
            self.failed += 1
        self._check_halt(result)

    def _check_halt(self, r):
        h = self.opts.halt
        if self.halting or self.stop_signal or not h.triggered(self.failed, self.succeeded, self.done):
            return
        self.halting = h.when
        word = "failed" if r.failed else "succeeded"
        self._say(f"halting ({h.when}): job {r.seq} {word}: {r.command}")
        self.halt_status = h.status(r, self.failed)
        if h.when == "now":
            self._kill_running(cancel=True)

    # -- timeouts and signals --------------------------------------------

    def _expired(self, job):
        """--timeout: the termination sequence begins."""
        job.timer = None
        if self.running.get(job.seq) is not job:
            return
        job.timed_out = True
        self._terminate(job)

    def _terminate(self, job):
        """The next step of the termination sequence (by default TERM, then
        KILL_GRACE later KILL; --termseq SIG,MS,...): a signal, then time
        for the job to end before the next one."""
        job.timer = None
        if self.running.get(job.seq) is not job or job.kill_step >= len(self.opts.termseq):
            return
        sig, wait = self.opts.termseq[job.kill_step]
        job.kill_step += 1
        self.executor.kill(job, sig)
        if job.kill_step < len(self.opts.termseq):
            job.timer = self.loop.call_later(wait, self._terminate, job)

    def _kill_running(self, cancel):
        for job in list(self.running.values()):
            job.cancelled = cancel or job.cancelled
            if job.kill_step:
                continue            # its sequence is under way
            if job.timer is not None:
                job.timer.cancel()
            self._terminate(job)

    def _on_signal(self, signum):
        if self.stop_signal is None:
            self.stop_signal = signum
            self._kill_running(cancel=True)
            self._poke()


def _last_words(text):
    """A line on stderr if it can take it now (it may be the full pipe)."""
    _, ready, _ = select.select([], [2], [], 0)
    if ready:
        try:
            os.write(2, text.encode())
        except OSError:
            pass


class Progress:
    """--bar: one redrawn line on a terminal's stderr."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.last = 0.0

    def show(self, done, started, total_known):
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        rate = done / (now - self.t0) if now > self.t0 else 0
        if total_known and started:
            pct = 100 * done // started
            eta = (started - done) / rate if rate else 0
            text = f"{pct}% {done}/{started} ETA {eta:.0f}s"
        else:
            text = f"{done} done, {started} started, {rate:.1f}/s"
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
