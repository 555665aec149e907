"""Workers started the Unix ways and dialled by a hub (gridd hub --peer):
systemd socket activation, the listening socket as fd 3 (gridd worker
--listen systemd) or one process per connection on stdin/stdout (gridd
worker --stdio) under systemd-socket-activate, openbsd-inetd and tcpserver;
the contrib/ files those tests run or lint."""

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys

import pytest

from hubfixtures import (PY, BIN, ROOT, clean_env, grid, pids_alive,  # noqa: F401 (grid)
                         wait_until)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def activate():
    path = shutil.which("systemd-socket-activate")
    if path is None:
        reason = "systemd-socket-activate is not installed (Debian package systemd)"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return path


def start(grid, argv, name, ready=b"Listening on"):
    """A launcher, up once its log says ready."""
    path = grid.log(name)
    with open(path, "wb") as log:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=log, env=clean_env(), cwd=grid.tmp)
    grid.procs.append(p)
    p.logpath = path
    assert wait_until(lambda: ready in open(path, "rb").read() or p.poll() is not None), \
        open(path, "rb").read()
    assert p.poll() is None, (p.returncode, open(path, "rb").read())
    return p


def test_listen_systemd_takes_the_socket_as_fd_3(grid, activate):
    port = free_port()
    start(grid, [activate, "-l", f"127.0.0.1:{port}", *PY, f"{BIN}/gridd", "worker",
                 "--listen", "systemd", "--slots", "2", "--name", "sa"], "activate")
    grid.start_hub("--peer", f"127.0.0.1:{port}")
    ws = grid.wait_for(lambda ws: len(ws) == 1, timeout=30)
    assert (ws[0]["name"], ws[0]["how"]) == ("sa", "dialled")
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"x\ny\n")
    assert (r.stdout, r.returncode) == (b"x\ny\n", 0), r.stderr


def test_stdio_worker_per_connection(grid, activate):
    port = free_port()
    act = start(grid, [activate, "-l", f"127.0.0.1:{port}", "--accept", "--inetd", *PY,
                       f"{BIN}/gridd", "worker", "--stdio", "--slots", "1", "--name", "inetd"],
                "activate")
    grid.start_hub("--peer", f"127.0.0.1:{port}")
    grid.wait_for(lambda ws: [w["name"] for w in ws] == ["inetd"], timeout=30)
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"1\n2\n")
    assert (r.stdout, r.returncode) == (b"1\n2\n", 0), r.stderr
    assert act.poll() is None                   # the launcher still listens


# -- inetd, tcpserver and the contrib/ files -----------------------------------

CONTRIB = os.path.join(ROOT, "contrib")


def need(path, package):
    """An absolute path to a peer's program, or a skip that says why."""
    found = shutil.which(path)
    if found is None:
        reason = f"{path} is not installed (Debian package {package}; make test-deps)"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return found


def worker_key(tmp_path):
    key = tmp_path / "worker.key"
    key.write_text("inetd-worker-key\n")
    key.chmod(0o600)
    return str(key)


def gridd_script(tmp_path):
    """gridd as an installed script is: an absolute interpreter, no PATH
    needed (inetd clears it, and bin/gridd finds python3 through env)."""
    path = tmp_path / "gridd"
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S {BIN}/gridd \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def contrib_inetd_line(port, user, server, key):
    """contrib/inetd.conf's service line, made to run here: a loopback
    port, this user, the script above and the test's key; the other fields
    as shipped."""
    with open(os.path.join(CONTRIB, "inetd.conf")) as f:
        lines = [ln for ln in f if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1, lines
    fields = lines[0].split()
    assert fields[1:4] == ["stream", "tcp", "nowait.1000"], fields
    args = fields[6:]
    assert args[:3] == ["gridd", "worker", "--stdio"], args
    args[args.index("--key-file") + 1] = key
    return " ".join([f"127.0.0.1:{port}", *fields[1:4], user, server, *args]) + "\n"


def same_as_local(grid, env_hub):
    args = ["-k", "echo {} $(({} * {}))"]
    lines = b"".join(b"%d\n" % i for i in range(1, 41))
    local = grid.run("gridmap", *args, input=lines, env=clean_env())
    assert local.returncode == 0, local.stderr
    r = grid.run("gridmap", "--hub", env_hub, *args, input=lines)
    assert (r.stdout, r.returncode) == (local.stdout, 0), r.stderr


def worker_pid(row):
    """The worker's pid, from its default name HOST-PID."""
    return int(row["name"].rsplit("-", 1)[1])


def test_inetd_starts_a_worker_per_hub_call(grid, tmp_path):
    inetd = need("/usr/sbin/inetd", "openbsd-inetd")
    port = free_port()
    key = worker_key(tmp_path)
    conf = tmp_path / "inetd.conf"
    conf.write_text(contrib_inetd_line(port, pwd.getpwuid(os.getuid()).pw_name,
                                       gridd_script(tmp_path), key))
    # -d: foreground, debug lines on stderr; -R: starts allowed a minute.
    start(grid, [inetd, "-i", "-d", "-R", "100000", str(conf)], "inetd", ready=b"ADD:")
    grid.start_hub("--peer", f"127.0.0.1:{port}", "--worker-key", key)
    ws = grid.wait_for(lambda ws: len(ws) == 1, timeout=30)
    assert ws[0]["how"] == "dialled", ws
    same_as_local(grid, grid.addr)
    pid = worker_pid(ws[0])
    assert pids_alive([pid]) == [pid]
    grid.kill_hub()                             # the hub hangs up: the worker ends
    assert wait_until(lambda: not pids_alive([pid]), timeout=15), f"worker {pid} still runs"


def test_inetd_worker_refuses_a_hub_without_the_key(grid, tmp_path):
    inetd = need("/usr/sbin/inetd", "openbsd-inetd")
    port = free_port()
    conf = tmp_path / "inetd.conf"
    conf.write_text(contrib_inetd_line(port, pwd.getpwuid(os.getuid()).pw_name,
                                       gridd_script(tmp_path), worker_key(tmp_path)))
    start(grid, [inetd, "-i", "-d", "-R", "100000", str(conf)], "inetd", ready=b"ADD:")
    grid.start_hub("--peer", f"127.0.0.1:{port}")
    assert wait_until(lambda: b"requires a hub key" in open(grid.hub.logpath, "rb").read(),
                      timeout=30), open(grid.hub.logpath, "rb").read()
    assert grid.ctl("workers") == []


def test_tcpserver_starts_a_worker_per_hub_call(grid, tmp_path):
    tcpserver = need("tcpserver", "ucspi-tcp")
    port = free_port()
    # -RHl0: no ident, no DNS; -v: says "status: 0/40" when it listens.
    # fd 2 stays tcpserver's own stderr, so the worker's log lands there.
    start(grid, [tcpserver, "-v", "-RHl0", "127.0.0.1", str(port), *PY, f"{BIN}/gridd",
                 "worker", "--stdio", "--slots", "2", "--name", "ucspi"],
          "tcpserver", ready=b"status: 0/")
    grid.start_hub("--peer", f"127.0.0.1:{port}")
    ws = grid.wait_for(lambda ws: [w["name"] for w in ws] == ["ucspi"], timeout=30)
    assert (ws[0]["how"], ws[0]["slots"]) == ("dialled", 2)
    same_as_local(grid, grid.addr)
    grid.kill_hub()
    log = grid.procs[0].logpath
    assert wait_until(lambda: re.search(rb"end \d+ status 0", open(log, "rb").read()),
                      timeout=15), open(log, "rb").read()


def test_contrib_systemd_units_verify(tmp_path):
    analyze = need("systemd-analyze", "systemd")
    units = sorted(os.listdir(os.path.join(CONTRIB, "systemd")))
    assert units == ["gridd-worker.socket", "gridd-worker@.service"], units
    for name in units:
        # verify checks that ExecStart= is executable: point it at the checkout.
        with open(os.path.join(CONTRIB, "systemd", name)) as f:
            text = f.read().replace("/usr/local/bin/gridd", f"{BIN}/gridd")
        (tmp_path / name).write_text(text)
    r = subprocess.run([analyze, "verify", *units], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env=dict(clean_env(), SYSTEMD_LOG_LEVEL="notice"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
