"""gridmap under signals and closed pipes, and its memory with -k: SIGINT,
SIGTERM and SIGHUP kill every job's process group (grandchildren too) and
exit 128+N; `| head` exits 141 quietly; a slow first job holding back
thousands of finished ones does not grow gridmap's memory with them."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import GRIDMAP, TIMEOUT


def procs_with(marker, but=None):
    """Processes whose command line holds marker, but not pid `but`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == but:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def wait_until(predicate, limit=20.0):
    """Poll predicate for at most limit seconds (a bound, not a speed test)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def marker_for(name):
    return f"3{abs(hash(name)) % 1000}{os.getpid()}.25"


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                        (signal.SIGHUP, 129)])
def test_signal_kills_every_job_group(sig, status):
    marker = marker_for(sig.name)
    job = f"sh -c 'sleep {marker}; echo never' & sleep {marker}; echo {{}}"
    p = subprocess.Popen([GRIDMAP, "-j2", job, ":::", "1", "2", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Two jobs, each a shell with a sleep and a grandchild shell's sleep.
        assert wait_until(lambda: len(procs_with(marker, p.pid)) >= 6), procs_with(marker)
        p.send_signal(sig)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == status
    assert out == b""
    assert b"Traceback" not in err
    assert wait_until(lambda: not procs_with(marker)), procs_with(marker)


def test_ctrl_c_to_the_process_group():
    # A terminal's Ctrl-C signals gridmap's process group; the jobs have
    # groups of their own, and gridmap must kill them itself.
    marker = marker_for("ctrl-c")
    p = subprocess.Popen([GRIDMAP, "-j2", f"sleep {marker}; : {{}}", ":::", "1", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        assert wait_until(lambda: len(procs_with(marker, p.pid)) >= 2)
        os.killpg(p.pid, signal.SIGINT)
        p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    assert wait_until(lambda: not procs_with(marker)), procs_with(marker)


def test_jobs_ignoring_sigterm_get_sigkill():
    marker = marker_for("ignore")
    p = subprocess.Popen([GRIDMAP, f"trap '' TERM INT; sleep {marker}; : {{}}", ":::", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: len(procs_with(marker, p.pid)) >= 2)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143
    assert wait_until(lambda: not procs_with(marker)), procs_with(marker)


@pytest.mark.parametrize("opts", [[], ["-k"], ["--line-buffer"], ["-k", "--line-buffer"],
                                  ["--json"], ["--tag"], ["--dry-run"],
                                  ["--pipe", "--block", "1k", "cat"]])
def test_head_closes_the_pipe(opts, tmp_path):
    cmd = [] if "--pipe" in opts else ["/bin/echo"]
    # sh has no PIPESTATUS: gridmap's status comes back through a file.
    script = ('seq 100000 | { "$@" 2>"$T/err"; echo $? > "$T/rc"; } | head -1 >/dev/null; '
              'cat "$T/rc" "$T/err"')
    p = subprocess.run(["sh", "-c", script, "sh", GRIDMAP, "-j2", *opts, *cmd],
                       capture_output=True, timeout=TIMEOUT, env=dict(os.environ, T=str(tmp_path)))
    assert p.stdout == b"141\n"


def test_head_kills_running_jobs():
    marker = marker_for("head")
    script = '{ "$@" 2>/dev/null; echo $? >&2; } | head -1 >/dev/null'
    p = subprocess.run(["sh", "-c", script, "sh", GRIDMAP, "-j2", "--line-buffer",
                        f"echo {{}}; while :; do echo more; sleep 0.1; done; : {marker}",
                        ":::", "1", "2"],
                       capture_output=True, timeout=TIMEOUT)
    assert p.stderr == b"141\n"
    assert wait_until(lambda: not procs_with(marker)), procs_with(marker)


RSS_WRAPPER = """
import resource, subprocess, sys
with open(sys.argv[1], "rb") as i, open(sys.argv[2], "wb") as o:
    rc = subprocess.run(sys.argv[3:], stdin=i, stdout=o, timeout=120).returncode
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss(tmp_path, n, lines_per_job):
    """Run -k -j2 with a first job that waits for the last one, so all the
    others finish while it holds them back; return (status, peak RSS in
    kB, output, expected output)."""
    flag = tmp_path / "flag"
    jobs = [f'i=0; while [ ! -e {flag} ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 99; '
            f'sleep 0.05; done; echo first']
    jobs += [f"seq -f {k}-%05g 1 {lines_per_job}" for k in range(2, n)]
    jobs += [f"touch {flag}"]
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.write_text("\n".join(jobs) + "\n")
    p = subprocess.run([sys.executable, "-c", RSS_WRAPPER, str(inp), str(out), GRIDMAP,
                        "-k", "-j2"], capture_output=True, timeout=180)
    rc, rss = p.stdout.split()
    expect = b"first\n" + b"".join(b"%d-%05d\n" % (k, i) for k in range(2, n)
                                   for i in range(1, lines_per_job + 1))
    data = out.read_bytes()
    os.unlink(flag)
    return int(rc), int(rss), data, expect


def test_keep_order_memory_is_bounded(tmp_path):
    # 2,500 jobs of 45 kB each (110 MB) finish while the first job holds
    # them back.  Held in memory they would add over 100 MB.
    rc, small, data, expect = peak_rss(tmp_path, 50, 4000)
    assert rc == 0 and data == expect
    rc, big, data, expect = peak_rss(tmp_path, 2500, 4000)
    assert rc == 0
    assert len(data) > 100_000_000
    assert data == expect
    assert big - small < 40 * 1024, (small, big)
