"""gridd slurm: the sizing decision on its own (plan, a pure function), and
the factory on a real one-node Slurm cluster the test starts as root
(munged on a private socket, slurmctld and slurmd in the foreground): the
workers come up as array tasks, 200 jobs run through gridmap --hub with the
output of a local run, idle workers are drained and their tasks end, and the
worker key is in no process's argv and in no job script."""

import os
import re
import signal
import subprocess
import time

import pytest

import slurmcluster
from hubfixtures import clean_env, grid, tool, wait_until  # noqa: F401 (grid: a fixture)
from gridtools.hub import slurm


def opts(**kw):
    base = dict(hub="127.0.0.1:7711", connect="127.0.0.1:7711", worker_command=("gridd",),
                min=0, max=4, slots=2, idle=10.0)
    base.update(kw)
    return slurm.Options(**base)


def seen(queued=0, tasks=(), workers=None):
    return slurm.Seen(queued, dict(tasks), dict(workers or {}))


# -- plan: what to do, from what was seen ----------------------------------------

def test_queued_jobs_ask_for_workers_up_to_max():
    assert slurm.plan(seen(queued=5), opts(), 0.0, {}, {}, set()).submit == 3
    assert slurm.plan(seen(queued=50), opts(), 0.0, {}, {}, set()).submit == 4
    assert slurm.plan(seen(queued=0), opts(min=1), 0.0, {}, {}, set()).submit == 1
    # tasks already there, pending or running, count
    s = seen(queued=8, tasks={"7_0": "RUNNING", "7_1": "PENDING"}, workers={"7_0": 2})
    assert slurm.plan(s, opts(max=10), 0.0, {}, {}, set()).submit == 3


def test_pending_tasks_not_needed_are_cancelled_newest_first():
    s = seen(queued=1, tasks={"7_0": "PENDING", "7_1": "PENDING", "7_10": "PENDING"})
    p = slurm.plan(s, opts(), 0.0, {}, {}, set())
    assert (p.submit, p.cancel, p.drain) == (0, ["7_10", "7_1"], [])


def test_an_idle_worker_is_drained_after_idle_seconds_but_min_stay():
    s = seen(tasks={"7_0": "RUNNING", "7_1": "RUNNING"}, workers={"7_0": 0, "7_1": 0})
    since = {}
    assert slurm.plan(s, opts(min=1), 100.0, since, {}, set()).drain == []
    assert since == {"7_0": 100.0, "7_1": 100.0}
    p = slurm.plan(s, opts(min=1), 110.5, since, {}, set())
    assert (p.drain, p.cancel, p.submit) == (["7_0"], [], 0)
    busy = seen(queued=3, tasks={"7_0": "RUNNING"}, workers={"7_0": 2})
    slurm.plan(busy, opts(), 111.0, since, {}, set())
    assert since == {}                              # busy again: the clock starts over


def test_a_task_whose_worker_never_reaches_the_hub_is_cancelled():
    s = seen(tasks={"7_0": "RUNNING"})
    since = {}
    assert slurm.plan(s, opts(), 0.0, since, {}, set()).cancel == []
    assert slurm.plan(s, opts(), 11.0, since, {}, set()).cancel == ["7_0"]


def test_a_drained_task_that_stays_is_cancelled_once():
    s = seen(tasks={"7_0": "RUNNING"}, workers={"7_0": 1})
    assert slurm.plan(s, opts(), 20.0, {}, {"7_0": 0.0}, set()).cancel == []
    assert slurm.plan(s, opts(), 31.0, {}, {"7_0": 0.0}, set()).cancel == ["7_0"]
    assert slurm.plan(s, opts(), 31.0, {}, {"7_0": 0.0}, {"7_0"}).cancel == []


def test_squeue_lines():
    text = "12_0 RUNNING\n12_1 PENDING\n13 RUNNING\n14_[3-9] PENDING\n\n"
    assert slurm.parse_squeue(text) == {"12_0": "RUNNING", "12_1": "PENDING"}


def test_the_key_is_in_neither_script_nor_argv():
    o = opts(key=b"s3cret", tags=("site=hpc",))
    text = slurm.job_script(o) + " ".join(slurm.sbatch_argv(o, 3))
    assert "s3cret" not in text and "--export=PATH,GRID_KEY" in text
    env = slurm.sbatch_env(o, {"PATH": "/bin", "GRID_KEY": "client-key", "GRID_HUB": "x"})
    assert env == {"PATH": "/bin", "GRID_KEY": "s3cret"}    # the factory's own key stays
    o = opts(key_file="/shared/worker.key")
    assert slurm.sbatch_env(o, {"GRID_KEY_FILE": "c"}) == {"GRID_KEY_FILE": "/shared/worker.key"}
    assert "--export=PATH,GRID_KEY_FILE" in slurm.sbatch_argv(o, 1)


# -- a real cluster ---------------------------------------------------------------

def skip(reason):
    print(f"skipping: {reason}")
    pytest.skip(reason)


@pytest.fixture
def cluster():
    """A one-node cluster (slurmcluster.py), or a skip that says why not."""
    try:
        with slurmcluster.started() as c:
            yield c
    except slurmcluster.Unavailable as e:
        skip(str(e))


def argv_of_all():
    """Every process's argv, as ps would show it."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isascii() and pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return b"\n".join(out)


def start_factory(grid, cluster, *args, env):
    path = grid.log("factory")
    with open(path, "wb") as log:
        p = subprocess.Popen([*tool("gridd"), "slurm", "--hub", grid.addr, *args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             env=dict(env, SLURM_CONF=cluster.env["SLURM_CONF"]), cwd=grid.tmp)
    p.logpath = path
    grid.procs.append(p)
    return p


def text(path):
    with open(path, errors="replace") as f:
        return f.read()


@pytest.mark.slow
def test_slurm_workers_come_run_200_jobs_and_go(grid, cluster, tmp_path):
    wkey = "worker-key-" + os.urandom(8).hex()
    ckey = "client-key-" + os.urandom(8).hex()
    (tmp_path / "worker.key").write_text(wkey + "\n")
    (tmp_path / "client.key").write_text(ckey + "\n")
    for k in ("worker.key", "client.key"):
        (tmp_path / k).chmod(0o600)
    grid.client_env = clean_env(GRID_KEY=ckey)
    grid.start_hub("--worker-key", str(tmp_path / "worker.key"),
                   "--client-key", str(tmp_path / "client.key"))
    factory = start_factory(grid, cluster, "--worker-key", str(tmp_path / "worker.key"),
                            "--max", "2", "--slots", "1", "--idle", "4", "--interval", "0.5",
                            "--job-name", "gridtest", "--output", f"{cluster.tmp}/w-%A_%a.log",
                            env=clean_env(GRID_KEY=ckey))
    lines = b"".join(b"%d\n" % i for i in range(200))
    args = ["-k", "echo {} $(({} * 3))"]
    local = grid.run("gridmap", *args, input=lines, env=clean_env())
    start = time.monotonic()
    r = grid.run("gridmap", "--hub", grid.addr, *args, input=lines, timeout=120,
                 env=clean_env(GRID_KEY=ckey))
    took = time.monotonic() - start
    assert (r.returncode, r.stdout) == (0, local.stdout), (r.stderr, text(factory.logpath),
                                                           cluster.logs())
    print(f"200 jobs through gridd slurm workers: {took:.1f}s, start-up included")
    log = text(factory.logpath)
    m = re.search(r"submitted (\d) workers? as array job (\d+)", log)
    assert m, log
    job = m.group(2)
    argv = argv_of_all()
    assert b"--connect" in argv and f"slurm-{job}_".encode() in argv
    assert wkey.encode() not in argv and ckey.encode() not in argv
    script = cluster.run("scontrol", "write", "batch_script", job, "-").stdout
    assert "gridd" in script and wkey not in script and "worker.key" not in script, script
    # Idle: drained by the hub, their tasks end; the hub is left with none.
    assert wait_until(lambda: not cluster.tasks("gridtest"), timeout=60, step=0.5), \
        (cluster.tasks("gridtest"), text(factory.logpath))
    assert grid.ctl("workers") == []
    assert "idle: draining it" in text(factory.logpath)
    factory.send_signal(signal.SIGTERM)
    assert factory.wait(30) == 0, text(factory.logpath)


@pytest.mark.slow
def test_slurm_key_from_the_environment_and_sigterm(grid, cluster, tmp_path):
    """$GRID_WORKER_KEY travels in sbatch's exported environment; SIGTERM
    drains the workers and cancels tasks not yet started."""
    wkey = "env-worker-key-" + os.urandom(8).hex()
    (tmp_path / "worker.key").write_text(wkey + "\n")
    grid.start_hub("--worker-key", str(tmp_path / "worker.key"))
    factory = start_factory(grid, cluster, "--min", "1", "--max", "3", "--slots", "1",
                            "--interval", "0.5", "--job-name", "gridtest-env",
                            "--output", "/dev/null", env=clean_env(GRID_WORKER_KEY=wkey))
    ws = grid.wait_for(lambda ws: len(ws) == 1, timeout=60)
    assert ws[0]["name"].startswith("slurm-"), ws
    assert wkey.encode() not in argv_of_all()
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "sleep 1; echo {}",
                 input=b"".join(b"%d\n" % i for i in range(6)))
    assert (r.returncode, r.stdout) == (0, b"0\n1\n2\n3\n4\n5\n"), r.stderr
    factory.send_signal(signal.SIGTERM)
    assert factory.wait(30) == 0, text(factory.logpath)
    assert wait_until(lambda: not cluster.tasks("gridtest-env"), timeout=60, step=0.5), \
        (cluster.tasks("gridtest-env"), text(factory.logpath))
    assert grid.wait_for(lambda ws: ws == [], timeout=30) == []


# -- refusals, without Slurm -------------------------------------------------------

def test_a_refused_client_key_ends_it_with_77(grid, tmp_path):
    key = tmp_path / "client.key"
    key.write_text("right-key\n")
    grid.client_env = clean_env(GRID_KEY="right-key")
    grid.start_hub("--client-key", str(key))
    r = subprocess.run([*tool("gridd"), "slurm", "--hub", grid.addr, "--interval", "0.2"],
                       capture_output=True, text=True, timeout=60,
                       env=clean_env(GRID_KEY="wrong-key"))
    assert r.returncode == 77 and "authentication" in r.stderr, r.stderr


def test_an_unreadable_worker_key_ends_it_with_78(tmp_path):
    r = subprocess.run([*tool("gridd"), "slurm", "--worker-key", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert r.returncode == 78 and "nope" in r.stderr, r.stderr
