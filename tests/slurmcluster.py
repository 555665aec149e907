"""A one-node Slurm cluster on this host, started as root for a test or a
benchmark and stopped after it: munged on a private socket, slurmctld and
slurmd in the foreground, two CPUs, everything under a private directory
and on free ports.  No pytest here: started() raises Unavailable, saying
why, when it cannot run (the tests skip with that reason, bench_slurm
prints it)."""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Unavailable(Exception):
    """Slurm cannot be started here; the message says why."""


def wait_until(cond, timeout=10, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_squeue(text):
    """squeue -h -r -o '%i %T' -> {array task id: state} (gridd slurm's parser)."""
    import sys
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from gridtools.hub import slurm
    return slurm.parse_squeue(text)


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GRID_") and k not in ("LISTEN_PID", "LISTEN_FDS")}
        self.env = dict(env, SLURM_CONF=os.path.join(tmp, "slurm.conf"))

    def start(self, argv, name, user=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             env=self.env, start_new_session=True)
        log.close()
        p.logpath = os.path.join(self.tmp, f"{name}.log")
        p.name = name
        self.procs.append(p)
        return p

    def run(self, *argv, check=True, timeout=60):
        r = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError((argv, r.stderr))
        return r

    def tasks(self, name):
        out = self.run("squeue", "-h", "-r", f"--name={name}", "-o", "%i %T").stdout
        return parse_squeue(out)

    def logs(self):
        return "\n".join(f"--- {os.path.basename(p.logpath)}\n" + open(p.logpath).read()[-2000:]
                         for p in self.procs)

    def stop(self):
        """Cancel every job first (the cluster is ours alone): a worker left
        in a task would outlive slurmd."""
        if any(p.poll() is None for p in self.procs) and "slurmctld" in [p.name for p in self.procs]:
            self.run("scancel", "--me", check=False)
            wait_until(lambda: not self.run("squeue", "-h", check=False).stdout.strip(),
                       timeout=15, step=0.3)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@contextlib.contextmanager
def started():
    """One node, this host, two CPUs; everything under a private directory
    (munged's socket too), ports picked free.  Raises Unavailable."""
    if os.getuid() != 0:
        raise Unavailable("a Slurm cluster needs root to start (slurmd runs jobs as their "
                          "users)")
    for prog, package in (("/usr/sbin/munged", "munge"), ("/usr/sbin/slurmctld", "slurm-wlm"),
                          ("/usr/sbin/slurmd", "slurm-wlm"), ("sbatch", "slurm-client")):
        if shutil.which(prog) is None:
            raise Unavailable(f"{prog} is not installed (Debian package {package}; "
                              f"make test-deps)")
    if not os.path.exists("/etc/munge/munge.key"):
        raise Unavailable("/etc/munge/munge.key is missing (the munge package makes it)")
    host = socket.gethostname().split(".")[0]
    tmp = tempfile.mkdtemp(prefix="gridslurm-")     # munged (user munge) must reach it
    os.chmod(tmp, 0o755)
    c = Cluster(tmp)
    try:
        munge = os.path.join(tmp, "munge")
        os.mkdir(munge)
        shutil.chown(munge, "munge", "munge")
        sock = os.path.join(munge, "munge.socket")
        c.start(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F",
                 f"--socket={sock}", f"--pid-file={munge}/munged.pid",
                 f"--seed-file={munge}/munged.seed", f"--log-file={munge}/munged.log"],
                "munged")
        if not wait_until(lambda: os.path.exists(sock), timeout=10):
            raise Unavailable(f"munged did not start: {c.logs()}")
        for d in ("state", "spool"):
            os.mkdir(os.path.join(tmp, d))
        with open(c.env["SLURM_CONF"], "w") as f:
            f.write(f"""ClusterName=gridtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=p Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        conf = c.env["SLURM_CONF"]
        c.start(["/usr/sbin/slurmctld", "-D", "-i", "-f", conf], "slurmctld")
        c.start(["/usr/sbin/slurmd", "-D", "-f", conf], "slurmd")

        def idle():
            r = c.run("sinfo", "-h", "-o", "%t", check=False)
            return r.returncode == 0 and r.stdout.strip() == "idle"
        if not wait_until(idle, timeout=30, step=0.2):
            raise Unavailable(f"Slurm did not come up here: {c.logs()}")
        yield c
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)
