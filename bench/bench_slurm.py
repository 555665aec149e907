#!/usr/bin/env python3
"""N `true` jobs on a one-node Slurm cluster (two CPUs) started here, two
ways, start-up included: through workers that `gridd slurm` submits as an
array (two tasks of one slot, each serving many jobs from the hub), against
`sbatch --wait --array=1-N` of one task per job.  Target: the gridd way at
least 20x faster end to end.  The cluster is the tests' (tests/slurmcluster.py);
without root or the Slurm packages the bench says why and exits 0.

    python3 bench/bench_slurm.py [--quick] [--jobs N] [--runs N]
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

sys.path.insert(0, os.path.join(benchlib.REPO, "tests"))
import slurmcluster  # noqa: E402

PY = [sys.executable, "-I", "-S"]
GRIDD = [*PY, os.path.join(benchlib.BIN, "gridd")]
GRIDMAP = [*PY, os.path.join(benchlib.BIN, "gridmap")]
WORKERS = 2                 # the node's CPUs: as many array tasks run at once either way


def start(argv, log, env, cwd):
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=f, env=env, cwd=cwd)


def stop(p):
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def through_gridd(cluster, tmp, jobs, n):
    """Seconds from starting `gridd slurm` to gridmap's last result, the
    hub already up and the jobs queued at once."""
    env = dict(cluster.env)
    key = os.path.join(tmp, "worker.key")
    with open(key, "w") as f:
        f.write(os.urandom(16).hex() + "\n")
    os.chmod(key, 0o600)
    hublog = os.path.join(tmp, f"hub-{n}.log")
    hub = start([*GRIDD, "hub", "--listen", "127.0.0.1:0", "--state",
                 os.path.join(tmp, f"state-{n}"), "--worker-key", key], hublog, env, tmp)
    factory = None
    try:
        m = slurmcluster.wait_until(lambda: re.search(r"listening on (\S+)",
                                                      open(hublog).read()), timeout=20)
        if not m:
            raise SystemExit("bench_slurm: the hub did not start: " + open(hublog).read())
        addr = m.group(1)
        name = f"gridbench{n}"
        t0 = time.perf_counter()
        factory = start([*GRIDD, "slurm", "--hub", addr, "--worker-key", key, "--max",
                         str(WORKERS), "--slots", "1", "--interval", "0.5", "--idle", "5",
                         "--job-name", name, "--output", "/dev/null"],
                        os.path.join(tmp, f"factory-{n}.log"), env, tmp)
        r = subprocess.run([*GRIDMAP, "--hub", addr, "true"],
                           input=b"".join(b"%d\n" % i for i in range(jobs)),
                           capture_output=True, timeout=900, env=env, cwd=tmp)
        took = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"bench_slurm: gridmap exited {r.returncode}: "
                             f"{r.stderr.decode(errors='replace')[-500:]}")
        return took
    finally:
        if factory is not None:
            stop(factory)                       # drains its workers, cancels the rest
            slurmcluster.wait_until(lambda: not cluster.tasks(f"gridbench{n}"), timeout=60,
                                    step=0.5)
        stop(hub)


def through_sbatch(cluster, jobs, step=0.2):
    """Seconds from submitting --array=1-jobs of one `true` task each until
    squeue shows none of them, looked at every step seconds (sbatch --wait
    polls far less often, which would count against the array)."""
    t0 = time.perf_counter()
    cluster.run("sbatch", "--quiet", f"--array=1-{jobs}", "--job-name=arraybench",
                "--output=/dev/null", "--wrap", "true")
    while cluster.tasks("arraybench"):
        time.sleep(step)
    return time.perf_counter() - t0


def main():
    p = benchlib.parser("N true jobs through gridd slurm workers against an sbatch array")
    p.add_argument("--jobs", type=int, default=None, help="jobs (default 200)")
    p.add_argument("--runs", type=int, default=None, help="alternations (default 1)")
    opts = p.parse_args()
    jobs = opts.jobs or (20 if opts.quick else 200)
    runs = opts.runs or 1
    try:
        with slurmcluster.started() as cluster:
            tmp = tempfile.mkdtemp(prefix="bench-slurm-")
            os.chmod(tmp, 0o755)
            try:
                grid, array = [], []
                for n in range(runs):
                    grid.append(through_gridd(cluster, tmp, jobs, n))
                    array.append(through_sbatch(cluster, jobs))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except slurmcluster.Unavailable as e:
        print(f"bench_slurm: skipped: {e}")
        return 0
    g, a = statistics.median(grid), statistics.median(array)
    print(f"{jobs} `true` jobs on a one-node Slurm cluster ({WORKERS} CPUs), start-up "
          f"included, median of {runs}; {benchlib.python_version()}")
    print(benchlib.table(
        [[f"gridd slurm: {WORKERS} array tasks of 1 slot, jobs from the hub", f"{g:.1f}",
          f"{jobs / g:.1f}", "-"],
         [f"sbatch --array=1-{jobs}, one task per job", f"{a:.1f}", f"{jobs / a:.2f}",
          f"{a / g:.1f}x >= 20x {benchlib.verdict(a / g, 20)}"]],
        ["way", "seconds", "jobs/s", "array / gridd"]))
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
