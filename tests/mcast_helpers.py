"""Run real gridmcast senders and receivers as processes on loopback."""

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRIDMCAST = os.path.join(ROOT, "bin", "gridmcast")


def start_sender(args, stdin=None, cwd=None, prefix=()):
    """Start `gridmcast send`; return (process, control address)."""
    p = subprocess.Popen([*prefix, sys.executable, GRIDMCAST, "send", *args],
                         stdin=stdin if stdin is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    line = p.stderr.readline().decode()
    m = re.search(r"control (\S+)", line)
    if not m:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"sender did not announce its address: {line!r} {err!r}")
    g = re.search(r"group (\S+):(\d+)", line)
    p.group = (g.group(1), int(g.group(2))) if g else None
    return p, m.group(1)


def start_receiver(addr, args=(), stdout=subprocess.PIPE, prefix=()):
    return subprocess.Popen([*prefix, sys.executable, GRIDMCAST, "recv", addr, *args],
                            stdout=stdout, stderr=subprocess.PIPE)


def finish(p, timeout=60):
    """Wait for a process; return (rc, stdout bytes, stderr text)."""
    if p.stdin and p.stdin.closed:
        p.stdin = None
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out or b"", (err or b"").decode(errors="replace")


def wait_for(pred, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False
