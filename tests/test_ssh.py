"""Workers started over ssh (gridd hub --ssh): the bootstrap ships the
worker's MANIFEST as source and runs it from memory.  The real tests use a
real sshd on a loopback port, started here with a private config, a
throw-away host key and key-only login; a fake ssh on PATH serves only the
fast tests of failures that sshd cannot easily stage."""

import os
import re
import signal
import subprocess

import pytest

from hubfixtures import ROOT, clean_env, grid, tool, wait_until  # noqa: F401 (grid: a fixture)
from sshfixtures import sshd  # noqa: F401 (a fixture)
from gridtools.worker import bootstrap, serve


def ssh_hub(grid, sshd, *hosts, python=None, extra=()):
    args = ["--ssh-command", f"ssh -T -F {sshd.config}"]
    for h in hosts:
        args += ["--ssh", h]
    if python:
        args += ["--ssh-python", python]
    return grid.start_hub(*args, *extra)


def hub_log(grid):
    with open(grid.hub.logpath, errors="replace") as f:
        return f.read()


def wait_log(grid, pattern, timeout=20):
    found = wait_until(lambda: re.search(pattern, hub_log(grid)), timeout=timeout)
    assert found, f"no {pattern!r} in the hub's log:\n{hub_log(grid)[-3000:]}"
    return found


# -- the real sshd ------------------------------------------------------------------

def test_the_remote_side_runs_from_the_shipped_source(grid, sshd):
    """Remote python -I -v, its cwd and PYTHONPATH the checkout: every
    gridtools module comes from the shipped loader, no file of the checkout."""
    python = f"env -C {ROOT} PYTHONPATH={ROOT} python3 -v"
    ssh_hub(grid, sshd, "gridtest", python=python)
    ws = grid.wait_for(lambda ws: len(ws) == 1, timeout=30)
    assert ws[0]["how"] == "ssh" and ws[0]["peer"] == "ssh:gridtest"
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"a\nb\n")
    assert (r.stdout, r.returncode) == (b"a\nb\n", 0), r.stderr
    log = hub_log(grid)
    shipped = set(re.findall(r"import '(gridtools[\w.]*)' # <.*Shipped object", log))
    assert shipped == set(serve.MANIFEST) - {serve.ENTRY}, log[-3000:]
    assert os.path.join(ROOT, "gridtools") not in log
    assert re.search(rf"ssh gridtest: starting a worker .*shipping {len(serve.MANIFEST)} modules",
                     log)


def test_gridmap_through_ssh_workers_prints_what_a_local_run_prints(grid, sshd):
    ssh_hub(grid, sshd, "2/gridtest", "gridtest")
    grid.wait_for(lambda ws: sorted(w["slots"] for w in ws)[:1] == [2] and len(ws) == 2,
                  timeout=30)
    args = ["-k", "echo {} $(({} * {})); echo err {} >&2"]
    data = "".join(f"{i}\n" for i in range(40)).encode()
    remote = grid.run("gridmap", "--hub", grid.addr, *args, input=data)
    local = subprocess.run([*tool("gridmap"), *args], input=data, capture_output=True,
                           env=clean_env(), timeout=60)
    assert remote.returncode == local.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert sorted(remote.stderr.splitlines()) == sorted(local.stderr.splitlines())


def test_a_killed_ssh_worker_is_started_again(grid, sshd):
    ssh_hub(grid, sshd, "gridtest")
    first = grid.wait_for(lambda ws: len(ws) == 1, timeout=30)[0]["name"]
    pid = int(first.rsplit("-", 1)[1])          # the default name is HOST-PID, there
    os.kill(pid, signal.SIGKILL)
    again = grid.wait_for(lambda ws: len(ws) == 1 and ws[0]["name"] != first, timeout=30)
    assert again[0]["how"] == "ssh"
    log = hub_log(grid)
    assert log.count("ssh gridtest: starting a worker") == 2, log
    assert re.search(r"ssh gridtest: the worker on gridtest exited \(status \d+\)|"
                     r"killed by signal", log), log
    r = grid.run("gridmap", "--hub", grid.addr, "echo", input=b"x\n")
    assert (r.stdout, r.returncode) == (b"x\n", 0), r.stderr


def test_an_unreachable_host_is_said_to_be_sshs_failure(grid, sshd):
    ssh_hub(grid, sshd, "unreachable", "gridtest")
    grid.wait_for(lambda ws: len(ws) == 1, timeout=30)
    wait_log(grid, r"ssh unreachable: ssh to unreachable failed \(exit 255: unreachable")
    r = grid.run("gridmap", "--hub", grid.addr, "echo", input=b"still served\n")
    assert r.stdout == b"still served\n", r.stderr


def test_no_python3_on_the_remote_path(grid, sshd):
    ssh_hub(grid, sshd, "gridtest", python="env PATH=/nonexistent python3")
    wait_log(grid, r"ssh gridtest: no python3 on gridtest \(exit 127: command not found\)")
    assert grid.ctl("workers") == []


# -- a fake ssh: failures sshd cannot easily stage, and the pieces -------------------

FAKE_SSH = """#!/bin/sh
# fake ssh: [options] HOST COMMAND -> run COMMAND here with sh (and print rc noise)
while [ $# -gt 0 ]; do case $1 in -o|-p|-i|-F) shift 2;; -*) shift;; *) break;; esac; done
host=$1; shift
echo "Welcome to $host: some rc file talks on stdout"
exec sh -c "$*"
"""


@pytest.fixture
def fake(tmp_path):
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    return tmp_path


def fake_hub(grid, fake, python, host="h1"):
    return grid.start_hub("--ssh-command", str(fake / "fake-ssh"), "--ssh", host,
                          "--ssh-python", python)


def script(fake, name, text):
    p = fake / name
    p.write_text("#!/bin/sh\n" + text)
    p.chmod(0o755)
    return str(p)


def test_rc_noise_before_the_banner_is_skipped(grid, fake):
    fake_hub(grid, fake, "python3")
    ws = grid.wait_for(lambda ws: len(ws) == 1, timeout=20)
    assert ws[0]["how"] == "ssh"
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"1\n2\n")
    assert r.stdout == b"1\n2\n", r.stderr


def test_a_python_too_old_is_said(grid, fake):
    fake_hub(grid, fake, script(fake, "old-python", f"exit {bootstrap.TOO_OLD}\n"))
    wait_log(grid, r"ssh h1: python3 on h1 is too old \(3\.10 or later is needed\)")


def test_a_bootstrap_that_falls_through_is_said(grid, fake):
    py = script(fake, "broken-python", "printf '\\000gridtools-boot 1\\n'; exit 3\n")
    fake_hub(grid, fake, py)
    wait_log(grid, r"ssh h1: the bootstrap on h1 failed \(exit 3\)")


def test_a_worker_that_breaks_the_protocol_is_said(grid, fake):
    py = script(fake, "chatty-python", "printf '\\000gridtools-boot 1\\nOOPS 1 2\\n'; "
                "sleep 5\n")
    fake_hub(grid, fake, py)
    wait_log(grid, r"ssh h1: handshake: expected HELLO, got OOPS")


def test_the_stub_is_one_short_line():
    assert "\n" not in bootstrap.STUB and len(bootstrap.STUB) < 400
    cmd = bootstrap.ssh_argv("user@h", "ssh -T", "python3")
    assert cmd[:3] == ["ssh", "-T", "user@h"] and cmd[3].startswith("python3 -I -S -c '")
    for bad in ("-oProxyCommand=x", "", "a b"):
        with pytest.raises(Exception):
            bootstrap.ssh_argv(bad)


def test_the_banner_skips_noise_and_bounds_it():
    b = bootstrap.Banner()
    assert b.feed(b"motd\n\0gridtools-bo") is None
    assert b.feed(b"ot 1\nHELLO") == b"HELLO"
    b = bootstrap.Banner()
    with pytest.raises(bootstrap.BootError):
        for _ in range(bootstrap.NOISE // 1000 + 2):
            b.feed(b"x" * 1000)


def test_explain_says_where_it_failed():
    codes = {(255, "ssh"): "ssh to h failed", (127, "ssh"): "no python3 on h",
             (bootstrap.TOO_OLD, "ssh"): "too old", (1, "boot"): "bootstrap on h failed",
             (-9, "worker"): "killed by signal 9", (3, "worker"): "worker on h exited"}
    for (status, stage), words in codes.items():
        assert words in bootstrap.explain(status, stage, "h")[1]
