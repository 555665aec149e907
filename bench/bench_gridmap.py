#!/usr/bin/env python3
"""gridmap on one machine against xargs -P, GNU parallel and plain wc -l.

Two measurements, each run side by side (the commands take turns, run after
run) and reported as medians with ratios against the targets:

  jobs  `seq N | bin/gridmap -j2 true` vs `xargs -P2 -n1` vs `parallel -j2`:
        per-job wall time; targets: gridmap <= 1.1x xargs, parallel >= 5x
        gridmap.
  pipe  `bin/gridmap -j2 --pipe --block 10M wc -l < FILE` on a generated
        1 GiB text file vs `parallel --pipe`, `parallel --pipepart` and
        plain `wc -l < FILE` (the ceiling); the per-block counts must add up
        to the true line count.  Targets: >= 3x parallel --pipe, >= 0.5x
        the ceiling.  Also gridmap fed through `cat FILE |` (stdin a pipe,
        the non-seekable path), reported apart.

GNU parallel is installed with apt-get when missing, or skipped with a
reason.  Exits 0 whatever the ratios (a benchmark measures, it does not
assert); 1 if a command failed or its output was wrong.
"""

import os
import random
import shlex
import string
import sys

import benchlib
from benchlib import REPO, Case, fmt_num, fmt_ratio, measure, median, ratio, table, verdict

GRIDMAP = "bin/gridmap"          # commands run with the repository as cwd;
                                 # --gridmap CMD measures another build
PARALLEL = "parallel --will-cite"
MiB = 1 << 20
GB = 1e9

JOBS_TARGET_XARGS = 1.1          # gridmap per-job time <= 1.1x xargs -P2
JOBS_TARGET_PARALLEL = 5.0       # GNU parallel per-job time >= 5x gridmap
PIPE_TARGET_PARALLEL = 3.0       # gridmap --pipe GB/s >= 3x parallel --pipe
PIPE_TARGET_CEILING = 0.5        # gridmap --pipe GB/s >= 0.5x wc -l


def report_errors(cases):
    bad = [c for c in cases if c.error]
    for c in bad:
        print(f"*** {c.label}: {c.error}")
    return len(bad)


def no_output(out):
    if out.strip():
        return f"expected no output from true, got {out[:80]!r}"
    return None


def bench_jobs(njobs, runs, have_parallel):
    print(f"\n## jobs: {njobs:,} jobs of `true`, 2 at a time,"
          f" median of {runs} run{'s' * (runs != 1)}\n", flush=True)
    timeout = max(120, njobs * 0.1)
    cases = [Case("gridmap -j2", f"seq {njobs} | {GRIDMAP} -j2 true",
                  no_output, timeout),
             Case("xargs -P2 -n1", f"seq {njobs} | xargs -P2 -n1 true",
                  no_output, timeout)]
    if have_parallel:
        cases.append(Case("parallel -j2", f"seq {njobs} | {PARALLEL} -j2 true",
                          no_output, timeout))
    measure(cases, runs)

    rows = []
    for c in cases:
        per = [t / njobs * 1e3 for t in c.times] if not c.error else []
        rows.append([c.label,
                     fmt_num(median(per), 3) if per else "-",
                     fmt_num(min(per), 3) if per else "-",
                     fmt_num(max(per), 3) if per else "-",
                     fmt_num(c.median(), 2),
                     c.cmd])
    print()
    print(table(rows, ["tool", "ms/job", "min", "max", "wall s", "command"]))

    by = {c.label: c.median() for c in cases}
    g, x, p = by.get("gridmap -j2"), by.get("xargs -P2 -n1"), \
        by.get("parallel -j2")
    r1, r2 = ratio(g, x), ratio(p, g)
    print()
    print(table([["gridmap / xargs -P2 (per-job time)", fmt_ratio(r1),
                  f"<= {JOBS_TARGET_XARGS:.2f}x",
                  verdict(r1, JOBS_TARGET_XARGS, at_least=False)],
                 ["parallel / gridmap (per-job time)", fmt_ratio(r2),
                  f">= {JOBS_TARGET_PARALLEL:.2f}x",
                  verdict(r2, JOBS_TARGET_PARALLEL)]],
                ["ratio", "value", "target", "verdict"]))
    return report_errors(cases)


def make_text(path, size):
    """Write `size` bytes of text lines of varied length (seeded, so every
    machine gets the same file): mostly numbered lines of random words,
    some empty lines, a few lines of several KiB."""
    rng = random.Random(20261122)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 12)))
             for _ in range(3000)]
    pool = []
    for _ in range(10000):
        u = rng.random()
        if u < 0.03:
            pool.append("")
        elif u < 0.035:
            pool.append(" ".join(rng.choices(words, k=rng.randint(150, 3000))))
        else:
            pool.append(" ".join(rng.choices(words, k=rng.randint(1, 16))))
    tmp = f"{path}.tmp{os.getpid()}"
    written, n = 0, 1
    with open(tmp, "wb") as f:
        while written < size:
            picks = rng.choices(pool, k=40000)
            chunk = "".join(f"{i}\t{s}\n" for i, s in
                            zip(range(n, n + len(picks)), picks)).encode()
            n += len(picks)
            if written + len(chunk) >= size:
                chunk = chunk[:size - written - 1] + b"\n"
            f.write(chunk)
            written += len(chunk)
    os.replace(tmp, path)


def count_lines(path):
    lines = 0
    with open(path, "rb") as f:
        while block := f.read(16 * MiB):
            lines += block.count(b"\n")
    return lines


def text_file(size):
    """The cached input under bench/out/, made if missing or the wrong size."""
    os.makedirs(benchlib.OUT, exist_ok=True)
    name = f"pipe-{size // MiB}M.txt"
    path = os.path.join(benchlib.OUT, name)
    if os.path.exists(path) and os.path.getsize(path) == size:
        print(f"input: reusing {os.path.relpath(path, REPO)}", flush=True)
    else:
        print(f"input: generating {os.path.relpath(path, REPO)}"
              f" ({size / MiB:,.0f} MiB) ...", flush=True)
        t = benchlib.timed(lambda: make_text(path, size))
        print(f"input: generated in {t:.1f} s", flush=True)
    return path


def sums_to(expected):
    def check(out):
        try:
            total = sum(int(tok) for tok in out.split())
        except ValueError:
            return f"output is not a list of counts: {out[:120]!r}"
        if total != expected:
            return (f"counts add up to {total:,}, the file has {expected:,}"
                    f" lines ({len(out.split())} blocks reported)")
        return None
    return check


def bench_pipe(size, runs, have_parallel):
    print(f"\n## pipe: `wc -l` over {size / MiB:,.0f} MiB in 10M blocks,"
          f" median of {runs} run{'s' * (runs != 1)}\n", flush=True)
    path = text_file(size)
    lines = count_lines(path)    # also pulls the file into the page cache
    print(f"input: {size:,} bytes, {lines:,} lines\n", flush=True)
    f = shlex.quote(os.path.relpath(path, REPO))
    check = sums_to(lines)
    timeout = max(300, size / 5e6)   # 5 MB/s is broken, not slow
    cases = [Case("gridmap --pipe", f"{GRIDMAP} -j2 --pipe --block 10M wc -l < {f}",
                  check, timeout),
             Case("gridmap --pipe (stdin a pipe)",
                  f"cat {f} | {GRIDMAP} -j2 --pipe --block 10M wc -l",
                  check, timeout)]
    if have_parallel:
        cases += [Case("parallel --pipe",
                       f"{PARALLEL} -j2 --pipe --block 10M wc -l < {f}",
                       check, timeout),
                  Case("parallel --pipepart",
                       f"{PARALLEL} -j2 --pipepart --block 10M -a {f} wc -l",
                       check, timeout)]
    cases += [Case("wc -l (ceiling)", f"wc -l < {f}", check, timeout),
              Case("cat | wc -l", f"cat {f} | wc -l", check, timeout)]
    measure(cases, runs)

    def gbps(c):
        m = c.median()
        return size / m / GB if m else None

    rows = [[c.label, fmt_num(gbps(c), 3), fmt_num(c.median(), 3),
             fmt_num(min(c.times), 3) if c.times and not c.error else "-",
             c.cmd] for c in cases]
    print()
    print(table(rows, ["tool", "GB/s", "median s", "min s", "command"]))

    by = {c.label: gbps(c) for c in cases}
    g, gp = by.get("gridmap --pipe"), by.get("gridmap --pipe (stdin a pipe)")
    pp, pt = by.get("parallel --pipe"), by.get("parallel --pipepart")
    wc, cwc = by.get("wc -l (ceiling)"), by.get("cat | wc -l")
    rows = []
    for label, r, target in [
            ("gridmap --pipe / parallel --pipe", ratio(g, pp),
             PIPE_TARGET_PARALLEL),
            ("gridmap --pipe / wc -l ceiling", ratio(g, wc),
             PIPE_TARGET_CEILING),
            ("gridmap --pipe / parallel --pipepart", ratio(g, pt), None),
            ("cat | gridmap --pipe / parallel --pipe", ratio(gp, pp), None),
            ("cat | gridmap --pipe / wc -l ceiling", ratio(gp, wc), None),
            ("cat | gridmap --pipe / cat | wc -l", ratio(gp, cwc), None)]:
        rows.append([label, fmt_ratio(r),
                     f">= {target:.2f}x" if target else "(info)",
                     verdict(r, target)])
    print()
    print(table(rows, ["ratio (throughput)", "value", "target", "verdict"]))
    return report_errors(cases)


def versions(have_parallel):
    gm = benchlib.first_line(f"cd {shlex.quote(REPO)} && {GRIDMAP} --version")
    head = benchlib.first_line(["git", "-C", REPO, "log", "-1",
                                "--format=%h %cd", "--date=iso"])
    print("versions:")
    for what, text in [
            ("gridmap", f"{gm or '(no --version output)'}; checkout {head}"),
            ("python", benchlib.python_version()),
            ("parallel", benchlib.first_line(["parallel", "--version"])
             if have_parallel else "(skipped)"),
            ("xargs", benchlib.first_line(["xargs", "--version"])),
            ("wc", benchlib.first_line(["wc", "--version"])),
            ("machine", f"{os.cpu_count()} cores, "
                        f"{benchlib.first_line(['uname', '-sr'])}, load average"
                        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}")]:
        print(f"  {what:9s} {text}")
    sys.stdout.flush()


def main(argv=None):
    global GRIDMAP
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, metavar="N",
                   help="repetitions of each command"
                        " (default: 5 for jobs, 3 for pipe; 1 with --quick)")
    p.add_argument("--only", choices=["jobs", "pipe"],
                   help="run one of the two measurements")
    p.add_argument("--gridmap", metavar="CMD", default=GRIDMAP,
                   help=f"the gridmap to measure (default: {GRIDMAP})")
    opts = p.parse_args(argv)
    GRIDMAP = opts.gridmap
    njobs = 500 if opts.quick else 5000
    size = 64 * MiB if opts.quick else 1024 * MiB
    jobs_runs = opts.runs or (1 if opts.quick else 5)
    pipe_runs = opts.runs or (1 if opts.quick else 3)

    print(f"# gridmap local benchmark{' (--quick)' if opts.quick else ''}")
    have_parallel = benchlib.ensure_apt("parallel", "parallel",
                                        what="GNU parallel")
    versions(have_parallel)
    failed = 0
    if opts.only in (None, "jobs"):
        failed += bench_jobs(njobs, jobs_runs, have_parallel)
    if opts.only in (None, "pipe"):
        failed += bench_pipe(size, pipe_runs, have_parallel)
    print(f"\ngridmap bench: {'ok' if not failed else f'{failed} FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    benchlib.run_main(main)
