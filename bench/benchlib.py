"""Helpers shared by the bench/bench_*.py scripts: timing, medians, ratios,
aligned tables, and installing the peer tools a benchmark compares against.

A bench script is a plain program run by bench/run.py (or alone):

    import benchlib
    opts = benchlib.parser("what this measures").parse_args()
    t = benchlib.median([benchlib.timed("seq 100 | xargs -n1 true")
                         for _ in range(3 if not opts.quick else 1)])

The API, all of it:

    parser(description)          argparse parser with --quick already added
    timed(cmd, **kw) -> float    wall seconds of one run (raises CommandFailed)
    run_timed(cmd, **kw)         (seconds, stdout bytes) of one run
    median(xs)                   median of a non-empty sequence
    ratio(a, b)                  a / b, or None when either is missing or b is 0
    verdict(value, target, at_least=True) -> "PASS" | "MISS" | "-"
    fmt_ratio(r), fmt_num(x, digits)   short text for tables ("-" for None)
    table(rows, headers) -> str  aligned text; numbers right, text left
    ensure_apt(pkg, binary, what=None, present=None) -> bool
    first_line(cmd) -> str       first line a version command prints, or ""
    python_version() -> str      "Python 3.11.7 (/usr/bin/python3)"
    run_main(main)               sys.exit(main()); `| head` exits 141 quietly
    Case(label, cmd, check=None, timeout=1800)   a command under test and its times
    measure(cases, runs)         run every case runs times, taking turns
    REPO, BIN, OUT               repository root, its bin/, bench/out/ (gitignored)
    CommandFailed                exception with .cmd, .returncode, .stderr
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "bin")
OUT = os.path.join(REPO, "bench", "out")


class CommandFailed(Exception):
    """A timed command exited non-zero, was killed, or timed out."""

    def __init__(self, cmd, returncode, stderr=b""):
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        what = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{_show(cmd)}: {what}"
                         + ("".join(f"\n    {t}" for t in tail)))


def _show(cmd):
    if isinstance(cmd, str):
        return cmd
    if callable(cmd):
        return getattr(cmd, "__name__", repr(cmd))
    return " ".join(cmd)


def parser(description):
    """An argument parser every bench shares: --quick means smoke-test sizes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and smaller inputs (a smoke test)")
    return p


def run_timed(cmd, *, stdin=None, env=None, cwd=None, timeout=None):
    """Run cmd once and return (wall seconds, its stdout as bytes).

    cmd is a shell command line (str, run by /bin/sh), an argv list (run
    directly), or a callable (called with no arguments; its return value
    stands in for stdout).  stdin is None (/dev/null), a path, or bytes.
    A non-zero exit, a signal or the timeout raises CommandFailed; on a
    timeout the whole process group is killed, so shell pipelines die too.
    """
    if callable(cmd):
        t0 = time.perf_counter()
        result = cmd()
        return time.perf_counter() - t0, result
    shell = isinstance(cmd, str)
    data = None
    if stdin is None:
        fin = subprocess.DEVNULL
    elif isinstance(stdin, (bytes, bytearray)):
        fin, data = subprocess.PIPE, stdin
    else:
        fin = open(stdin, "rb")
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, shell=shell, stdin=fin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=cwd, start_new_session=True)
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise CommandFailed(cmd, None, err) from None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        elapsed = time.perf_counter() - t0
    finally:
        if fin not in (subprocess.DEVNULL, subprocess.PIPE):
            fin.close()
    if proc.returncode != 0:
        raise CommandFailed(cmd, proc.returncode, err)
    return elapsed, out


def timed(cmd, **kw):
    """Wall seconds of one run of cmd; see run_timed for cmd and keywords."""
    return run_timed(cmd, **kw)[0]


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def median(xs):
    xs = sorted(xs)
    if not xs:
        raise ValueError("median of nothing")
    n = len(xs)
    mid = n // 2
    return xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(value, target, at_least=True):
    """PASS if value meets target (>= when at_least, else <=); "-" if unknown."""
    if value is None or target is None:
        return "-"
    ok = value >= target if at_least else value <= target
    return "PASS" if ok else "MISS"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fmt_num(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def _is_number(s):
    s = s.rstrip("x%")
    try:
        float(s)
        return True
    except ValueError:
        return False


def table(rows, headers):
    """Rows of cells as aligned text: numeric columns right, others left."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    ncol = max(len(r) for r in cells)
    for r in cells:
        r.extend([""] * (ncol - len(r)))
    widths = [max(len(r[i]) for r in cells) for i in range(ncol)]
    right = [all(_is_number(r[i]) or r[i] in ("", "-") for r in cells[1:])
             and any(_is_number(r[i]) for r in cells[1:])
             for i in range(ncol)]
    lines = []
    for n, r in enumerate(cells):
        parts = [c.rjust(w) if rt else c.ljust(w)
                 for c, w, rt in zip(r, widths, right)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


_apt_updated = False


def ensure_apt(pkg, binary, what=None, present=None):
    """Make `binary` available, installing Debian package `pkg` if needed.
    present() -> bool, when given, says whether pkg is there instead of a
    lookup of binary on PATH (for a package of Python modules, say).

    Runs `apt-get update` once per process before the first install.
    Returns False after printing "skipped: WHAT: reason" when it cannot.
    """
    global _apt_updated
    what = what or pkg
    present = present or (lambda: shutil.which(binary) is not None)
    if present():
        return True

    def skipped(reason):
        print(f"skipped: {what}: {reason}", flush=True)
        return False

    if not shutil.which("apt-get"):
        return skipped(f"{binary} not found and no apt-get to install {pkg}")
    if os.geteuid() != 0:
        return skipped(f"{binary} not found; installing {pkg} needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing {pkg} with apt-get ...", flush=True)
    steps = [] if _apt_updated else [["apt-get", "update", "-q"]]
    steps.append(["apt-get", "install", "-y", "-q", pkg])
    for argv in steps:
        try:
            p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            return skipped(f"{' '.join(argv)}: {e}")
        if argv[1] == "update":
            _apt_updated = True
        if p.returncode != 0:
            last = (p.stderr or p.stdout).decode(errors="replace").strip()
            last = last.splitlines()[-1] if last else f"exit {p.returncode}"
            return skipped(f"{' '.join(argv)}: {last}")
    if not present():
        return skipped(f"package {pkg} installed but {binary} is still missing")
    return True


def first_line(cmd):
    """The first line a version command (argv list or shell line) prints,
    or "" if it cannot run or exits non-zero."""
    try:
        p = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if p.returncode != 0:
        return ""
    text = (p.stdout or p.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else ""


def run_main(main):
    """sys.exit(main()), but a reader that went away (`| head`) exits 141
    quietly instead of printing a traceback."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)


def python_version():
    return f"Python {sys.version.split()[0]} ({sys.executable})"


class Case:
    """One command under test: its label, shell command line and timings."""

    def __init__(self, label, cmd, check=None, timeout=1800):
        self.label = label
        self.cmd = cmd
        self.check = check        # check(stdout bytes) -> error text or None
        self.timeout = timeout
        self.times = []
        self.error = None

    def median(self):
        return median(self.times) if self.times and not self.error else None


def measure(cases, runs):
    """Run every case `runs` times, taking turns, from the repository root;
    a case that fails, or whose output its check refuses, drops out with
    its error (FAILED or MISMATCH) printed."""
    for n in range(1, runs + 1):
        for c in cases:
            if c.error:
                continue
            try:
                secs, out = run_timed(c.cmd, cwd=REPO, timeout=c.timeout)
            except CommandFailed as e:
                c.error = f"FAILED: {e}"
            except OSError as e:
                c.error = f"FAILED: {c.cmd}: {e}"
            else:
                problem = c.check(out) if c.check else None
                if problem:
                    c.error = f"MISMATCH: {problem}"
                else:
                    c.times.append(secs)
                    print(f"  run {n}/{runs}  {secs:8.3f} s  {c.label}", flush=True)
            if c.error:
                print(f"  run {n}/{runs}  *** {c.label}: {c.error}", flush=True)
