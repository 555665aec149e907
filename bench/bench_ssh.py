#!/usr/bin/env python3
"""gridmap -S against ssh and GNU parallel -S, on a private sshd on
loopback (started as tests/sshfixtures.py starts it: a throw-away host key,
key-only login).  The commands of each measurement take turns, run after
run, and are reported as medians with ratios against the targets of
issue 11:

  bootstrap  `gridmap -S host true` (one job: start, ship the worker, run,
             end) vs `ssh host python3 -c pass`; target <= 1.2x.
  jobs       N `true` jobs: gridmap -S vs parallel -S, and vs parallel -S
             through an ssh ControlMaster; targets >= 100x and >= 50x
             parallel's jobs/s.
  transfer   M jobs each sending a small file (--transferfile) and reading
             it there: gridmap -S vs parallel -S --transferfile (rsync per
             job) and vs a shell loop of rsync + ssh per file; target >= 10x
             parallel's.

Sizes: N=500, M=200, 3 runs (--runs N); --quick: N=40, M=20, 1 run (a smoke
test).  With 500 jobs, parallel -S alone takes about two minutes a run.
GNU parallel, rsync and sshd are installed with apt-get when missing, or
their rows are skipped with a reason.  Exits 0 whatever the ratios; 1 if a
command failed or its output was wrong.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import benchlib
from benchlib import REPO, Case, fmt_num, fmt_ratio, measure, ratio, table, verdict

sys.path.insert(0, os.path.join(REPO, "tests"))
from sshfixtures import Sshd  # noqa: E402

GRIDMAP = f"{shlex.quote(sys.executable)} bin/gridmap"
PARALLEL = "parallel --will-cite"
BOOT_TARGET = 1.2           # gridmap's bootstrap <= 1.2x ssh host python3 -c pass
JOBS_TARGET = 100.0         # gridmap -S jobs/s >= 100x parallel -S
JOBS_TARGET_CM = 50.0       # ... and >= 50x parallel -S with a ControlMaster
TRANSFER_TARGET = 10.0      # --transferfile jobs/s >= 10x parallel's (rsync per job)


def lines_check(want):
    def check(out):
        got = len(out.splitlines())
        return None if got == want else f"{got} lines, expected {want}"
    return check


def rows_per_job(cases, n):
    rows = []
    for c in cases:
        t = c.median()
        rows.append([c.label, fmt_num(t, 3), fmt_num(n / t if t else None, 1),
                     c.error or c.cmd[:90]])
    return rows


def main():
    p = benchlib.parser(__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=None, help="runs of each command (default 3)")
    opts = p.parse_args()
    runs = opts.runs or (1 if opts.quick else 3)
    njobs = 40 if opts.quick else 500
    nfiles = 20 if opts.quick else 200
    print(benchlib.python_version())
    if not benchlib.ensure_apt("openssh-server", "/usr/sbin/sshd", "sshd",
                               present=lambda: os.path.exists("/usr/sbin/sshd")):
        return 0
    have_parallel = benchlib.ensure_apt("parallel", "parallel", "GNU parallel")
    have_rsync = benchlib.ensure_apt("rsync", "rsync")
    tmp = tempfile.mkdtemp(prefix="bench-ssh-")
    sshd = Sshd(tmp)
    failed = False
    try:
        why = sshd.start()
        if why:
            print(f"skipped: sshd: {why}")
            return 0
        ssh = f"ssh -F {shlex.quote(sshd.config)}"
        ctl = os.path.join(tmp, "cm-%C")
        ssh_cm = f"{ssh} -o ControlMaster=auto -o ControlPath={ctl} -o ControlPersist=60"
        q = shlex.quote

        print("\n== bootstrap: one gridmap -S job vs ssh host python3 -c pass")
        boot = [Case("ssh host python3 -c pass", f"{ssh} gridtest python3 -c pass"),
                Case("gridmap -S host (1 job)",
                     f"{GRIDMAP} --ssh {q(ssh)} -S gridtest true ::: 1")]
        measure(boot, runs + 2)
        r = ratio(boot[1].median(), boot[0].median())
        print(table([[c.label, fmt_num(c.median(), 3), c.error or ""] for c in boot],
                    ["command", "s", ""]))
        print(table([["gridmap bootstrap / ssh python3 -c pass", fmt_ratio(r),
                      f"<= {BOOT_TARGET}x", verdict(r, BOOT_TARGET, at_least=False)]],
                    ["ratio", "value", "target", "verdict"]))

        print(f"\n== jobs: {njobs} x true on one host, -j2")
        seq = f"seq {njobs} |"
        jobs = [Case("gridmap -S", f"{seq} {GRIDMAP} --ssh {q(ssh)} -S gridtest -j2 true",
                     lines_check(0))]
        if have_parallel:
            subprocess.run(f"{ssh_cm} -fN gridtest", shell=True, timeout=60)
            jobs += [Case("parallel -S", f"{seq} {PARALLEL} --ssh {q(ssh)} -S gridtest -j2 true",
                          lines_check(0)),
                     Case("parallel -S, ControlMaster",
                          f"{seq} {PARALLEL} --ssh {q(ssh_cm)} -S gridtest -j2 true",
                          lines_check(0))]
        measure(jobs, runs)
        print(table(rows_per_job(jobs, njobs), ["tool", "wall s", "jobs/s", "command"]))
        g = jobs[0].median()
        ratios = []
        if have_parallel:
            for c, target in zip(jobs[1:], (JOBS_TARGET, JOBS_TARGET_CM)):
                r = ratio(c.median(), g)
                ratios.append([f"gridmap -S jobs/s / {c.label}", fmt_ratio(r),
                               f">= {target:g}x", verdict(r, target)])
            print(table(ratios, ["ratio", "value", "target", "verdict"]))

        print(f"\n== transfer: {nfiles} jobs, each sends a small file and reads it there")
        src = os.path.join(tmp, "files")
        there = os.path.join(tmp, "there")
        os.makedirs(src)
        os.makedirs(there)
        for i in range(nfiles):
            with open(os.path.join(src, f"f{i}.txt"), "wb") as f:
                f.write(os.urandom(1500).hex().encode() + b"\n")
        names = " ".join(f"f{i}.txt" for i in range(nfiles))
        cd = f"cd {q(src)} &&"
        tr = [Case("gridmap -S --tf",
                   f"{cd} {q(sys.executable)} {q(os.path.join(REPO, 'bin/gridmap'))} --ssh {q(ssh)} "
                   f"-S gridtest -j2 --wd {q(there)} --tf {{}} 'wc -l < {{}}' ::: {names}",
                   lines_check(nfiles))]
        if have_parallel and have_rsync:
            tr.append(Case("parallel -S --tf (rsync per job)",
                           f"{cd} {PARALLEL} --ssh {q(ssh)} -S gridtest -j2 --wd {q(there)} "
                           f"--tf {{}} 'wc -l < {{}}' ::: {names}", lines_check(nfiles)))
            tr.append(Case("rsync + ssh per file, a loop",
                           f"{cd} for f in {names}; do rsync -a -e {q(ssh)} $f "
                           f"gridtest:{q(there)}/ && {ssh} gridtest \"wc -l < {there}/$f\"; done",
                           lines_check(nfiles)))
        measure(tr, runs)
        print(table(rows_per_job(tr, nfiles), ["tool", "wall s", "jobs/s", "command"]))
        g = tr[0].median()
        rows = []
        for c in tr[1:]:
            r = ratio(c.median(), g)
            target = TRANSFER_TARGET if c.label.startswith("parallel") else None
            rows.append([f"gridmap --tf jobs/s / {c.label}", fmt_ratio(r),
                         f">= {target:g}x" if target else "-", verdict(r, target)])
        if rows:
            print(table(rows, ["ratio", "value", "target", "verdict"]))
        failed = any(c.error for c in boot + jobs + tr)
    finally:
        subprocess.run(f"ssh -F {shlex.quote(sshd.config)} -o ControlPath="
                       f"{os.path.join(tmp, 'cm-%C')} -O exit gridtest", shell=True,
                       capture_output=True, timeout=30)
        sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    benchlib.run_main(main)
