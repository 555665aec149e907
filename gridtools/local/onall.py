"""gridmap --onall and --nonall (GNU parallel's): every job on every
sshlogin.  Each (host, input) pair is one job of the pool, pinned to its
host (the embedded hub's requirement sshlogin=N, the host's worker
tagged so), one at a time on each host as GNU's per-host parallel -j1.
Sequence numbers run host by host, so output in their order (-k) is
grouped by host; jobs are handed out input by input, so every host has
work at once.  The exit status counts the hosts where a job failed.
"""

from gridtools.local.jobs import Job

PIN = "sshlogin"            # the requirement a pinned job carries


def name(login):
    """An sshlogin as GNU parallel names it in --tag, and sorts it:
    without ncpus, its ssh command before the host."""
    return login.host if login.ssh is None else f"{login.ssh} {login.host}"


def hosts(logins):
    """The sshlogins of the run, each once, sorted by name as GNU's."""
    found = {}
    for login in logins:
        found.setdefault(name(login), login)
    return [found[k] for k in sorted(found)]


class Source:
    """Every input job of inputs (a list of argument tuples) once per host:
    host h's i-th is sequence number h * len(inputs) + i + 1, and they
    come input by input (the first input on every host, then the second)."""

    fd = None

    def __init__(self, inputs, nhosts):
        self.inputs = inputs
        self.nhosts = nhosts
        self.total = self.seq = len(inputs) * nhosts
        self.next_at = 0

    def host_of(self, seq):
        return (seq - 1) // len(self.inputs)

    def on_readable(self):
        pass

    def next(self):
        if self.next_at >= self.total:
            return None
        i, h = divmod(self.next_at, self.nhosts)
        self.next_at += 1
        return Job(h * len(self.inputs) + i + 1, self.inputs[i])


class Sink:
    """The pool's sink, counting the hosts where a job failed."""

    def __init__(self, sink, source):
        self.sink = sink
        self.source = source
        self.failed = set()

    def __getattr__(self, attr):
        return getattr(self.sink, attr)

    def add(self, result):
        if result.failed:
            self.failed.add(self.source.host_of(result.seq))
        self.sink.add(result)

    def status(self):
        """GNU's: its outer parallel counts each host's run as a job."""
        return min(len(self.failed), 101)
