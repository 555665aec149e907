"""gridmap -S: a hub inside gridmap, on the pool's own loop, whose peers
service keeps one ssh channel (one shipped worker) per sshlogin; the
pool's jobs reach it through a HubExecutor, so every job runs over the
channel already open to its host and nothing is started per job.

The executor and the hub meet on a socketpair: each end is the same code
a network connection runs (the hub's Conn, the client's net.Channel), no
listener, no path in the filesystem and no handshake — nobody outside this
process can reach either end, so the hub takes the other end as its client
at once (server.adopt, then joined), and there is no key to check.  (A
unix socket in a private directory would add a listener, a path to
remove, and a handshake that cannot finish before the loop runs.)

A host whose worker does not start (ssh fails, no python3) is given up
for the run: its jobs go to the other hosts.  One whose worker was up and
went away is started again as the hub's --ssh workers are; its running
jobs end as lost (tried again elsewhere with --retries).  With no host
left the run ends with UnavailableError (exit 69).

With --sshloginfile (follow) the files are looked at again when a job
ends, at most once every RELOOK seconds (a stat() each, nothing more
when none changed), as GNU parallel does: a login added is a new target
of the peers service, and joins the run once its worker is up; a login
removed takes no new job, its running jobs end, then its channel is
closed.  The pool's slots follow the workers' (Pool.set_slots).

With --onall (pin) each job runs on one host only: the i-th host's worker
is tagged onall.PIN=i and the job requires it, so the hub's scheduler
keeps one queue per host; a host given up fails its jobs.
"""

import math
import os
import shlex
import socket
import sys

from gridtools.hub import client as hubclient
from gridtools.hub import peers, server
from gridtools.io import net
from gridtools.io.loop import Loop
from gridtools.local import onall, sshlogin
from gridtools.proto import errors, wire
from gridtools.worker import bootstrap

NAME = "gridmap -S"         # how the hub is named in messages
# ":" beside remote hosts: a worker here, started as ssh would start it
# (the remote command through sh -c), with this very python.
HERE_SSH = "sh -c 'exec sh -c \"$1\"'"
SLF = "--sshloginfile"      # where a removed host was removed from, as the hub says it
# The hub's lines a run does not show (a host removed from --sshloginfile
# is drained, leaves with no job running, and is not started again).
QUIET = (": starting a worker", " joined from ", ": draining", " left (0 jobs running)",
         f"removed from {SLF}")
STOP_WAIT = 2.0             # seconds for each ssh to end once told, at the end of a run
RELOOK = 1.0                # seconds: --sshloginfile is looked at no more often


class EmbeddedExecutor(hubclient.HubExecutor):
    """HubExecutor on the embedded hub: a job's host in the joblog is its
    sshlogin, as in GNU parallel; close() stops the hub and its workers."""

    def __init__(self, hub, conn, chan, slots):
        super().__init__(NAME, {}, client=hubclient.Client.over(chan, NAME, {"slots": slots}))
        self.hub = hub
        self.conn = conn
        self.logins = {}                # worker name on the wire -> sshlogin
        self.plan = None                # transfer.Plan: files that travel with jobs
        self.returns = None
        self.relist = None              # follow(): the sshloginfiles read again
        self.host_of = None             # pin(): a job's host (its target's index) by seq

    def carry(self, plan):
        """Jobs take files with them (--transferfile, --return, --basefile,
        --workdir): every job is staged (RUN stage=1, then STAGE, FILE)."""
        from gridtools.local import transfer
        self.plan = plan
        self.returns = transfer.Returns()
        self.handlers["FILE"] = self._on_file

    def follow(self, logins, paths, stamp, relist, ssh):
        """--sshloginfile: logins are the run's (in the order of the hub's
        targets), paths the files, stamp their stamps() when read;
        relist() reads every login again as [(Login, slots)] (GridError
        when it cannot), ssh is --ssh's command."""
        self.hosts = {}                 # Login -> its targets
        for login, t in zip(logins, self.hub.peers.targets):
            self.hosts.setdefault(login, []).append(t)
        self.paths, self.stamp, self.relist, self.ssh = paths, stamp, relist, ssh
        self.relook_at = self.loop.time() + RELOOK

    def pin(self, host_of, names, tag):
        """--onall: job seq runs on target host_of(seq) only (its worker is
        tagged onall.PIN=index, see specs); with tag (--tag) its lines
        are tagged with names[index], the sshlogin, as GNU parallel does."""
        self.host_of, self.names, self.tag_hosts = host_of, names, tag

    def host_gone(self, target):
        """--onall: a host given up: its jobs sent end (KILL: cancelled),
        those to come fail at once (start)."""
        if self.host_of is None or self.pool is None:
            return
        for job in list(self.jobs.values()):
            if self.hub.peers.targets[self.host_of(job.seq)] is target:
                self.kill(job, 15)

    def attach(self, pool):
        super().attach(pool)
        if self.relist is not None:
            self.hub.sessions.watchers.append(
                lambda: self.pool.set_slots(self.hub.sessions.total_slots()))
        if self.plan is not None:
            for data in self.plan.base_messages():     # before any job
                self.chan.send(data)

    def start(self, job):
        if self.host_of is not None:
            h = self.host_of(job.seq)
            target = self.hub.peers.targets[h]
            if self.tag_hosts:
                job.tag = self.names[h].encode("utf-8", "surrogateescape") + b"\t"
            if target.gone:
                # As ssh to a host that cannot be reached: 255.
                job.host = target.spec.where
                self.pool.job_output(job, 2, f"gridmap: {target.label}: no worker, given up\n"
                                     .encode("utf-8", "surrogateescape"))
                self.pool.job_done(job, 255, None)
                return
            self.require = {onall.PIN: str(h)}
        if self.plan is None:
            super().start(job)
            return
        try:
            msgs, returns = self.plan.stage(job, self.pool.warn)
        except errors.DataError as e:
            # A path that leaves the workdir: this job fails, unrun; the run goes on.
            self.pool.job_output(job, 2, f"gridmap: {e}\n".encode("utf-8", "surrogateescape"))
            self.pool.job_done(job, 1, None)
            return
        fed = job.block is not None or self.pool.opts.round_robin
        cid = str(job.seq)
        argv = job.argv if job.argv is not None else self.pool.opts.shell.remote_argv(job.command)
        body, kv = hubclient.job_request(job.command, argv, self.require, stdin=fed or None,
                                         stage=1)
        self.jobs[cid] = job
        self.returns.expect(cid, returns)
        self.chan.send(wire.format("RUN", cid, body=body, **kv))
        for data in msgs:
            self.chan.send(data)
        if job.block is not None:
            self._send_in(cid, job.block)
            if not self.pool.opts.round_robin:
                self.chan.send(wire.format("IN", cid, eof=1, body=b""))

    def _on_file(self, msg):
        cid = msg.arg(0)
        if cid in self.jobs:
            self.returns.piece(cid, msg)

    def _on_done(self, msg):
        if self.relist is not None and self.loop.time() >= self.relook_at:
            self.relook_at = self.loop.time() + RELOOK
            self._relook()
        name = msg.get("worker")
        if name is not None:
            msg.kv["worker"] = self._login(name)
        if self.returns is not None:
            self.returns.done(msg.arg(0))
        super()._on_done(msg)

    def _relook(self):
        """A job ended and a second has passed: if an sshloginfile
        changed, hosts added join the run and hosts removed leave it."""
        stamp = stamps(self.paths)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            wanted = {}
            for login, n in self.relist():
                wanted.setdefault(login, n)
            if not wanted:
                raise errors.UsageError("no sshlogin given")
            if self.plan is not None and any(x.host == sshlogin.LOCAL for x in wanted):
                raise errors.UsageError("the sshlogin ':' with files that travel")
            added = [login for login in wanted if login not in self.hosts]
            new = specs(added, self.ssh, [wanted[login] for login in added])
        except errors.GridError as e:
            self.pool.warn(f"{SLF}: {e}: the hosts stay as they were")
            return
        for login in [login for login in self.hosts if login not in wanted]:
            for t in self.hosts.pop(login):
                self.hub.peers.remove(t, SLF)
        for login, spec in zip(added, new):
            self.hosts[login] = [self.hub.peers.add(spec)]

    def _login(self, name):
        if name not in self.logins:
            for conn, t in self.hub.peers.by_conn.items():
                slots = getattr(conn, "slots", None)
                if slots is not None:
                    self.logins[slots.token] = self.logins[conn.name] = t.spec.where
        return self.logins.get(name, name)

    def close(self):
        try:
            super().close()
        finally:
            stop(self.hub)


def stamps(paths):
    """What says a file changed: (mtime, size, inode) of each, None when
    it cannot be stat'ed."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return out


def specs(logins, ssh, slots, pinned=False):
    """peers.Spec for each Login: ssh the default command (--ssh); slots
    each one's slots (None: the worker counts its CPUs); pinned (--onall):
    the i-th worker is tagged onall.PIN=i."""
    out = []
    for i, (login, n) in enumerate(zip(logins, slots)):
        if login.host == sshlogin.LOCAL:
            cmd, python = HERE_SSH, shlex.quote(sys.executable)
        else:
            cmd, python = login.ssh or ssh, bootstrap.PYTHON
        bootstrap.ssh_argv(login.host, cmd, python)     # a usage error now, not later
        out.append(peers.Spec("ssh", login.host, cmd, python, n, tries=1,
                              tags={onall.PIN: str(i)} if pinned else None))
    return out


def start(specs, log):
    """Start the hub on a new loop with the peers of specs, wait until
    each has a worker up or was given up, and return its EmbeddedExecutor:
    its loop is the one for the pool, its capacity the slots of the
    workers up.  log(text) hears the hub's lines about the hosts.
    UnavailableError when no host came up."""
    loop = Loop()
    # The run is the hub's only client: a reader of gridmap's output that
    # pauses (| less) holds no one else's slots, so it is never "stalled".
    hub = server.Hub(server.Options(peers=specs, stall_timeout=math.inf), loop)
    hub.log = lambda text: any(q in text for q in QUIET) or log(text)
    state = {"error": None}

    def gone(target):
        if all(t.gone for t in hub.peers.targets) and state["error"] is None:
            hosts = ", ".join(t.spec.where for t in hub.peers.targets)
            state["error"] = errors.UnavailableError(
                f"-S: no host left to run jobs on (no worker could be started on {hosts})")
            loop.call_soon(_raise, state)
        if state.get("ex") is not None:
            state["ex"].host_gone(target)

    hub.peers.on_gone = gone
    ours = theirs = None
    try:
        hub.open()
        ours, theirs = socket.socketpair()
        conn = hub.adopt(theirs, NAME, _Pair(), "embedded")
        hub.joined(conn, "client")
        while not all(t.stage == "up" or t.gone for t in hub.peers.targets):
            loop.run_once()
            if state["error"] is not None:
                raise state["error"]
        chan = net.Channel(ours, NAME)
        slots = hub.sessions.total_slots()
        ex = EmbeddedExecutor(hub, conn, chan, slots)
        ex.capacity = max(1, slots)
        ex.loop = loop
        state["ex"] = ex
        return ex
    except BaseException:
        if ours is not None:
            ours.close()
        stop(hub)
        loop.close()
        raise


def _raise(state):
    raise state["error"]


class _Pair:
    """The service adopt() wants for the socketpair's hub end: the client
    never says HELLO there, and its end is the sessions service's."""

    def greet(self, conn, msg):
        pass

    def closed(self, conn, quiet):
        pass


def stop(hub):
    """The end of the run: no more starts, ssh told to end (each worker
    sees its channel close and kills what it still runs), every
    connection closed; the loop is the pool's and stays open."""
    hub.peers.close()
    for conn in list(hub.conns.values()):
        hub.close(conn, quiet=True)
    hub.durable.close()
    for t in hub.peers.targets:
        if t.proc is not None:
            try:
                t.proc.wait(STOP_WAIT)
            except Exception:  # noqa: BLE001 - it was told; it ends with us at worst
                pass
