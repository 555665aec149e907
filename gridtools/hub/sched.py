"""The hub's scheduler state: jobs, FIFO queues per requirement set, and the
workers' free slots (credits).  No I/O: the hub's services call in and send
what the returned assignments say.  One Scheduler is shared by the sessions
and durable services (it also numbers the jobs, so ids are the hub's).

Dispatch is O(1) for jobs without requirements (the first free worker takes
them) and O(free workers) otherwise; a worker with a fresh credit looks at
the head of each queue whose requirements it meets and takes the oldest.
"""

import collections
import itertools
import time

QUEUED, RUNNING, DONE, GONE = "queued", "running", "done", "gone"

# The hub's limits on what it holds per connection.
HIGH = 4 << 20              # a write buffer past this pauses whoever fills it
LOW = 1 << 20               # ... and below this it resumes them
ACK_EVERY = 1 << 18         # acknowledge relayed output in steps of this
HELD_MAX = 64 << 20         # input held for a client's queued jobs
JOBS_LISTED = 10000         # at most this many rows in a JOBS answer
COMPACT_AFTER = 4096        # cancelled jobs left in the queues before they are swept out


class Job:
    """A job at the hub: a session job (client, cid) or a durable one (did)."""

    __slots__ = ("hid", "did", "client", "cid", "command", "argv", "stdin", "reqs",
                 "retries", "timeout", "tries", "worker", "state", "inq", "in_eof",
                 "held", "seq", "acks", "outfds", "waiters", "cancelled", "submitted",
                 "started", "attempt", "committed", "note", "result", "reason", "queued_at",
                 "owner", "errtail", "stage", "staged")

    def __init__(self, hid, command, argv=False, stdin=False, reqs=frozenset(),
                 retries=0, timeout=None):
        self.hid = hid
        self.did = None
        self.client = None
        self.cid = None
        self.command = command
        self.argv = argv
        self.stdin = stdin
        self.reqs = reqs
        self.retries = retries
        self.timeout = timeout
        self.tries = 0
        self.worker = None
        self.state = QUEUED
        self.inq = []               # stdin held until the job has a worker
        self.in_eof = False
        self.held = 0
        self.seq = 0
        self.acks = 0               # output bytes relayed, not yet acknowledged
        self.outfds = None          # durable: open output files
        self.waiters = []           # durable: connections following its output
        self.attempt = 0            # durable: bumped when a try starts afresh
        self.committed = False      # durable: its result is in the journal
        self.note = None            # durable: why its result is not what it said
        self.result = None          # durable: (tries, exit, sig, outcome, worker, note)
        self.reason = None          # why the hub cancelled it (stalled), for its DONE
        self.queued_at = 0.0        # monotonic time it last joined a queue
        self.cancelled = False
        self.submitted = 0.0
        self.started = 0.0
        # Durable jobs: the service told of their output and their end
        # (output(), started(), finished(), lost()); None for session jobs.
        self.owner = None
        self.errtail = b""          # the last bytes of its stderr (recent failures)
        self.stage = False          # its files travel with it (RUN stage=1) ...
        self.staged = []            # ... and these STAGE and FILE wait for its worker

    @property
    def name(self):
        return str(self.did) if self.did is not None else f"s{self.hid}"


class Slots:
    """What a worker offers: its credits, tags, and the jobs it runs."""

    __slots__ = ("name", "slots", "credits", "tags", "tagset", "jobs", "draining", "token")

    def __init__(self, name, slots, tags):
        self.name = name
        self.slots = slots
        self.credits = slots
        self.tags = tags
        self.tagset = frozenset(tags.items())
        self.jobs = {}              # hid -> Job
        self.draining = False
        self.token = None           # name escaped for the wire (the sessions service's)


class Scheduler:
    def __init__(self):
        self.queues = {}            # reqs -> deque of Job
        self.free = {}              # worker key -> Slots, insertion ordered
        self.seq = itertools.count(1)
        self.hids = itertools.count(1)
        self.gone = 0               # cancelled jobs still sitting in the queues

    def new_job(self, command, argv=False, stdin=False, reqs=frozenset(), retries=0,
                timeout=None):
        """A job with the hub's next id (not yet queued: see submit)."""
        job = Job(next(self.hids), command, argv, stdin, reqs, retries, timeout)
        job.submitted = time.time()
        return job

    def submit(self, job):
        """A new or requeued job: returns the worker key it goes to, or None."""
        job.state = QUEUED
        job.worker = None
        job.seq = next(self.seq)
        for key, w in self.free.items():
            if job.reqs <= w.tagset:
                self._take(key, w, job)
                return key
        job.queued_at = time.monotonic()
        q = self.queues.get(job.reqs)
        if q is None:
            q = self.queues[job.reqs] = collections.deque()
        q.append(job)
        return None

    def _take(self, key, w, job):
        w.credits -= 1
        w.jobs[job.hid] = job
        job.worker = key
        job.state = RUNNING
        job.tries += 1
        self.free.pop(key, None)
        if w.credits > 0 and not w.draining:
            self.free[key] = w      # to the back: spread the work around

    def credit(self, key, w):
        """Worker w has credits: the jobs it takes now, in order."""
        taken = []
        queues = self.queues
        while queues and w.credits > 0 and not w.draining:
            best = None
            for reqs, q in queues.items():
                while q and q[0].state != QUEUED:
                    q.popleft()     # cancelled while queued
                    self.gone = max(0, self.gone - 1)
                if q and reqs <= w.tagset and (best is None or q[0].seq < best[0].seq):
                    best = q
            if best is None:
                break
            job = best.popleft()
            self._take(key, w, job)
            taken.append(job)
        if queues and not all(queues.values()):
            for reqs in [r for r, q in queues.items() if not q]:
                del queues[reqs]
        if w.credits > 0 and not w.draining:
            self.free.setdefault(key, w)
        else:
            self.free.pop(key, None)
        return taken

    def release(self, key, w, job):
        """job left worker w (done, lost): its credit comes back."""
        w.jobs.pop(job.hid, None)
        w.credits += 1
        job.worker = None

    def remove_worker(self, key, w):
        """Worker gone: returns the jobs it was running."""
        self.free.pop(key, None)
        jobs = list(w.jobs.values())
        w.jobs.clear()
        for job in jobs:
            job.worker = None
        return jobs

    def drain(self, key, w):
        w.draining = True
        self.free.pop(key, None)

    def dequeue(self, job):
        """Cancel a queued job: removed lazily from its queue, or all at
        once when cancelled jobs are many (a client that left 100,000 of
        them must not leave their memory behind)."""
        if job.state == QUEUED:
            job.state = GONE
            self.gone += 1
            if self.gone > COMPACT_AFTER:
                self.compact()

    def compact(self):
        """Drop every cancelled job from the queues."""
        for reqs in list(self.queues):
            q = collections.deque(j for j in self.queues[reqs] if j.state == QUEUED)
            if q:
                self.queues[reqs] = q
            else:
                del self.queues[reqs]
        self.gone = 0

    def waiting(self):
        return sum(1 for q in self.queues.values() for j in q if j.state == QUEUED)
