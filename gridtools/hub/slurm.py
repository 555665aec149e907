"""gridd slurm: borrow a Slurm cluster's nodes as workers for a hub, as Work
Queue's work_queue_factory -T slurm does.  It watches the hub's queue as a
client (STATUS and WORKERS, the data of gridd ctl), submits workers as a job
array (sbatch --array) sized by the queued and running jobs within --min and
--max, drains a worker idle for --idle seconds (the hub says BYE once it runs
nothing, and the worker exits 0, which ends its array task) and cancels with
scancel the tasks that are left: pending ones no longer needed, drained ones
that did not end, running ones whose worker never reached the hub.

It lives beside peers.py, the hub's other way of getting workers, but runs
as a client of the hub, not inside it: the hub knows nothing of Slurm.
`plan` is the decision, a pure function of what was seen; `Factory` does the
seeing (the hub, squeue) and the acting (sbatch, DRAIN, scancel).
"""

import math
import os
import select
import shlex
import signal
import subprocess
import sys
import time
import typing

from gridtools.io.log import logger
from gridtools.proto import errors

log = logger("gridd slurm")

SLURM_TIMEOUT = 60.0        # seconds an sbatch, squeue or scancel may take
ALIVE = ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED")


class Options(typing.NamedTuple):
    hub: str                    # where the factory asks (a client)
    connect: str                # where the workers connect
    min: int = 0
    max: int = 10
    slots: int = 1              # jobs per worker = CPUs per array task
    idle: float = 60.0
    interval: float = 5.0
    job_name: str = "gridd-worker"
    partition: typing.Optional[str] = None
    time_limit: typing.Optional[str] = None
    output: typing.Optional[str] = None
    sbatch_args: tuple = ()
    tags: tuple = ()            # "K=V" for the workers
    worker_command: tuple = ()  # argv that starts gridd on a node, ending before "worker"
    key_file: typing.Optional[str] = None   # exported as GRID_KEY_FILE
    key: typing.Optional[bytes] = None      # exported as GRID_KEY (see gridd(8))


# -- the decision ---------------------------------------------------------------

class Seen(typing.NamedTuple):
    """One look at the hub and at Slurm."""
    queued: int                 # jobs waiting in the hub
    tasks: dict                 # our array tasks: "JOB_IDX" -> Slurm state
    workers: dict               # our tasks' workers at the hub: "JOB_IDX" -> jobs running


class Plan(typing.NamedTuple):
    submit: int                 # array tasks to add
    drain: list                 # tasks whose worker the hub should drain
    cancel: list                # tasks to scancel


def plan(seen, opts, now, since, drained, cancelled):
    """What to do now.  since: task -> when it was first seen idle (a
    worker running nothing, or a running task with no worker yet), kept
    up to date here; drained: task -> when its drain was asked; cancelled:
    tasks scancel was asked to end.  Neither of the last two counts as a
    worker any more."""
    busy = sum(seen.workers.values())
    target = min(opts.max, max(opts.min, math.ceil((seen.queued + busy) / opts.slots)))
    alive = [t for t in sorted(seen.tasks, key=task_order)
             if t not in drained and t not in cancelled]
    cancel = []
    drain = []
    # Pending tasks beyond the target go, the newest first.
    pending = [t for t in alive if seen.tasks[t] == "PENDING"]
    while len(alive) > target and pending:
        t = pending.pop()
        cancel.append(t)
        alive.remove(t)
    for t in list(since):
        if t not in alive:
            del since[t]
    for t in alive:
        connected = t in seen.workers
        if connected and seen.workers[t] or not connected and seen.tasks[t] != "RUNNING":
            since.pop(t, None)          # busy, or not started yet
            continue
        if now - since.setdefault(t, now) < opts.idle:
            continue
        if not connected:
            cancel.append(t)            # running this long and never reached the hub
        elif len(alive) - len(drain) > opts.min:
            drain.append(t)             # the hub says BYE once it runs nothing: no job lost
    for t, when in drained.items():
        if t in seen.tasks and t not in cancelled and now - when > max(opts.idle, 30.0):
            cancel.append(t)            # drained, and still there
    gone = len(drain) + sum(1 for t in cancel if t in alive)
    return Plan(max(0, target - (len(alive) - gone)), drain, cancel)


def task_order(task):
    job, _, idx = task.partition("_")
    return (int(job) if job.isascii() and job.isdigit() else 0,
            int(idx) if idx.isascii() and idx.isdigit() else 0)


# -- Slurm ------------------------------------------------------------------------

def worker_name(task):
    return f"slurm-{task}"


def job_script(opts):
    """The array task's script: no key in it, only where to find one."""
    argv = [*opts.worker_command, "worker", "--connect", opts.connect,
            "--slots", str(opts.slots)]
    for tag in opts.tags:
        argv += ["--tag", tag]
    return ("#!/bin/sh\n"
            "# gridd slurm: one gridd worker per array task.  It connects to the hub\n"
            "# and exits 0 when the hub drains it.  Its key is not here: the worker\n"
            "# reads GRID_KEY_FILE (or GRID_KEY) from the environment sbatch exported.\n"
            f"exec {shlex.join(argv)} --name \"slurm-${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"\n")


def sbatch_argv(opts, count):
    export = ["PATH"]
    if opts.key_file:
        export.append("GRID_KEY_FILE")
    elif opts.key is not None:
        export.append("GRID_KEY")
    argv = ["sbatch", "--parsable", f"--array=0-{count - 1}", f"--job-name={opts.job_name}",
            f"--cpus-per-task={opts.slots}", "--ntasks=1", f"--export={','.join(export)}"]
    if opts.partition:
        argv.append(f"--partition={opts.partition}")
    if opts.time_limit:
        argv.append(f"--time={opts.time_limit}")
    if opts.output:
        argv.append(f"--output={opts.output}")
    return argv + list(opts.sbatch_args)


def sbatch_env(opts, env):
    """sbatch's environment: the caller's without any GRID_ variable (the
    factory's own client key must not reach the workers), plus the worker
    key's file or, when asked, the key itself."""
    out = {k: v for k, v in env.items() if not k.startswith("GRID_")}
    if opts.key_file:
        out["GRID_KEY_FILE"] = opts.key_file
    elif opts.key is not None:
        out["GRID_KEY"] = opts.key.decode("utf-8", "surrogateescape")
    return out


def slurm(argv, env, stdin=None):
    """Run a Slurm command; its stdout, or a GridError that quotes it."""
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                           timeout=SLURM_TIMEOUT)
    except FileNotFoundError:
        raise errors.UnavailableError(f"{argv[0]}: not found (is Slurm installed?)") from None
    except subprocess.TimeoutExpired:
        raise errors.UnavailableError(f"{argv[0]}: no answer in {SLURM_TIMEOUT:.0f}s") from None
    if r.returncode != 0:
        why = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1]
        raise errors.UnavailableError(f"{argv[0]}: {why}")
    return r.stdout


def parse_squeue(text):
    """squeue -h -r -o '%i %T' -> {"JOB_IDX": state} for array tasks."""
    tasks = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and "_" in parts[0] and "[" not in parts[0]:
            tasks[parts[0]] = parts[1]
    return tasks


# -- the factory ------------------------------------------------------------------

class Factory:
    def __init__(self, opts, env, client_factory):
        self.opts = opts
        self.env = env
        self.client_factory = client_factory     # () -> a hub client
        self.client = None
        self.since = {}
        self.drained = {}
        self.cancelled = set()
        self.submitted = 0

    # what is seen

    def ask(self, verb, *args):
        import json
        if self.client is None:
            self.client = self.client_factory()
        try:
            reply = self.client.request(verb, *args)
        except errors.GridError as e:
            if e.code != errors.DATAERR:        # an answer (no such worker) keeps the line
                self.close()
            raise
        return json.loads(reply.body.decode()) if reply.verb == "INFO" else None

    def look(self):
        status = self.ask("STATUS")
        rows = self.ask("WORKERS")
        tasks = parse_squeue(slurm(["squeue", "--me", "-h", "-r", f"--name={self.opts.job_name}",
                                    "-o", "%i %T"], self.env))
        tasks = {t: s for t, s in tasks.items() if s in ALIVE}
        names = {worker_name(t): t for t in tasks}
        workers = {names[w["name"]]: w["running"] for w in rows
                   if w["name"] in names and w["state"] == "up"}
        return Seen(status["queued"], tasks, workers)

    # what is done

    def submit(self, count):
        opts = self.opts
        out = slurm(sbatch_argv(opts, count), sbatch_env(opts, self.env), job_script(opts))
        job = out.strip().split(";")[0]
        self.submitted += count
        log(f"submitted {count} worker{'' if count == 1 else 's'} as array job {job}")

    def drain(self, task, now):
        try:
            self.ask("DRAIN", worker_name(task))
        except errors.GridError as e:
            if e.code != errors.DATAERR:
                raise                           # gone already: nothing to drain
        self.drained[task] = now
        log(f"worker {worker_name(task)} idle: draining it")

    def cancel(self, tasks):
        """scancel; a task that ended meanwhile makes it complain, which is
        only said: the next look shows what is left."""
        if not tasks:
            return
        self.cancelled.update(tasks)
        log(f"cancelling {' '.join(tasks)}")
        try:
            slurm(["scancel", *tasks], self.env)
        except errors.UnavailableError as e:
            log(str(e))

    def step(self, now):
        seen = self.look()
        for t in [t for t in self.drained if t not in seen.tasks]:
            del self.drained[t]
        self.cancelled &= set(seen.tasks)
        p = plan(seen, self.opts, now, self.since, self.drained, self.cancelled)
        for t in p.drain:
            self.drain(t, now)
        self.cancel(p.cancel)
        if p.submit:
            self.submit(p.submit)
        return seen, p

    def stop(self):
        """On SIGTERM: drain our workers (their running jobs finish) and
        cancel the tasks that have none."""
        try:
            seen = self.look()
        except errors.GridError as e:
            log(f"stopping: {e}")
            return
        for t in seen.workers:
            if t not in self.drained:
                try:
                    self.drain(t, 0.0)
                except errors.GridError as e:
                    log(f"stopping: {e}")
        self.cancel(sorted((t for t in seen.tasks if t not in seen.workers), key=task_order))

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None


def run(opts, env, client_factory):
    """Watch and act every --interval seconds until SIGTERM or SIGINT;
    then drain and cancel what is ours and return 0."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    stopping = []
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda n, f: stopping.append(n))
    old = signal.set_wakeup_fd(w)
    factory = Factory(opts, env, client_factory)
    log(f"watching {opts.hub}: workers of {opts.slots} slot{'' if opts.slots == 1 else 's'}, "
        f"{opts.min} to {opts.max}, drained after {opts.idle:g}s idle")
    trouble = None
    try:
        while not stopping:
            try:
                factory.step(time.monotonic())
                trouble = None
            except errors.GridError as e:
                if e.code in (errors.NOPERM, errors.PROTOCOL, errors.CONFIG):
                    raise
                if str(e) != trouble:
                    log(f"{e}; trying again every {opts.interval:g}s")
                trouble = str(e)
            select.select([r], [], [], opts.interval)
        factory.stop()
        return 0
    finally:
        factory.close()
        signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)


def default_worker_command():
    """This gridd, as the nodes would start it: the same interpreter, and
    bin/gridd of this checkout or the installed script (the nodes must see
    both at the same paths: shared storage, or the same install)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    checkout = os.path.join(here, "bin", "gridd")
    if os.path.isfile(checkout):
        return (sys.executable, "-I", "-S", checkout)
    import shutil
    found = shutil.which("gridd")
    if found is None:
        raise errors.UsageError("cannot tell how the nodes start gridd: give --worker-command")
    return (found,)
