"""gridmap with a reader that takes nothing: its stdout never blocks the
loop, so --timeout and signals are acted on while output waits; nothing
waiting is lost when the reader comes back; a full pipe slows the run
instead of growing gridmap's memory."""

import os
import signal
import subprocess
import uuid

from conftest import GRIDMAP
from test_gridmap_signals import procs_with, wait_until

BIG = 1 << 20          # far more than a pipe holds


def test_timeout_fires_while_stdout_is_full():
    marker = f"sleep-{uuid.uuid4().hex[:8]}"
    p = subprocess.Popen(
        [GRIDMAP, "-j2", "--timeout", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(f"head -c {BIG} /dev/zero\nsh -c 'sleep 60; :' {marker}\n".encode())
    p.stdin.close()
    p.stdin = None
    try:
        # Nobody reads stdout: the first job's megabyte waits.  The second
        # job must still be killed by its --timeout.
        assert wait_until(lambda: procs_with(marker), 10), "the sleeping job never started"
        assert wait_until(lambda: not procs_with(marker), 20), \
            "--timeout was not acted on while stdout was full"
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert len(out) == BIG                  # the waiting output, all of it
    assert p.returncode == 1
    assert b"timed out after 1s" in err


def test_sigterm_while_stdout_is_full_ends_the_run():
    marker = f"sleep-{uuid.uuid4().hex[:8]}"
    r, w = os.pipe()
    p = subprocess.Popen(
        [GRIDMAP, "-j2"], stdin=subprocess.PIPE, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    p.stdin.write(f"head -c {BIG} /dev/zero\nsh -c 'sleep 60; :' {marker}\n".encode())
    p.stdin.close()
    p.stdin = None
    try:
        assert wait_until(lambda: procs_with(marker), 10)
        p.send_signal(signal.SIGTERM)
        # Still nobody reads: gridmap kills its jobs, waits a grace period
        # for its reader and then gives up on the output, saying so.
        p.wait(timeout=20)
        assert not procs_with(marker)
        err = p.stderr.read()
    finally:
        p.kill()
        os.close(r)
    assert p.returncode == 128 + signal.SIGTERM
    assert b"not written" in err


def test_a_full_pipe_slows_the_run_instead_of_filling_memory():
    """200 jobs of 256 KiB each while nobody reads: gridmap stops starting
    jobs once a few results wait, so most have not even started."""
    counter = f"/tmp/gridmap-started-{uuid.uuid4().hex[:8]}"
    p = subprocess.Popen(
        [GRIDMAP, "-j2", f"echo >>{counter}; head -c 262144 /dev/zero; : {{}}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"x\n" * 200)
    p.stdin.close()
    p.stdin = None
    try:
        def started():
            try:
                with open(counter) as f:
                    return len(f.read().splitlines())
            except FileNotFoundError:
                return 0
        # Wait until the run stops making progress: the count stays still.
        last = -1
        while wait_until(lambda: started() != last, 2):
            last = started()
        assert started() < 100, "jobs kept starting with nobody reading their output"
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        if os.path.exists(counter):
            os.unlink(counter)
    assert p.returncode == 0, err
    assert len(out) == 200 * 262144
