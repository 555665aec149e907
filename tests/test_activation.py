"""Workers started the Unix ways and dialled by a hub (gridd hub --peer):
systemd socket activation, the listening socket as fd 3 (gridd worker
--listen systemd) or one process per connection on stdin/stdout (gridd
worker --stdio) under systemd-socket-activate, openbsd-inetd and tcpserver;
the contrib/ files those tests run or lint."""

import os
import pwd
import re
import shutil
import signal
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


# -- the hub on sockets systemd passed ---------------------------------------------

def key_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


def contrib_hub_command(tmp_path, state):
    """contrib/systemd/gridd-hub.service's ExecStart=, made to run here
    (this checkout's gridd, the test's state dir and keys), and the names
    its two socket units give their sockets."""
    units = os.path.join(CONTRIB, "systemd")
    with open(os.path.join(units, "gridd-hub.service")) as f:
        line, = [ln for ln in f if ln.startswith("ExecStart=")]
    argv = line.split("=", 1)[1].split()
    assert argv[:2] == ["/usr/local/bin/gridd", "hub"], argv
    keys = {"/etc/gridd/client.key": key_file(tmp_path, "client.key", "hub-client-key"),
            "/etc/gridd/worker.key": key_file(tmp_path, "worker.key", "hub-worker-key"),
            "/var/lib/gridd": state}
    argv = [*PY, f"{BIN}/gridd", *[keys.get(a, a) for a in argv[1:]]]
    names = []
    for unit in ("gridd-hub.socket", "gridd-hub-http.socket"):
        with open(os.path.join(units, unit)) as f:
            names += [ln.strip().split("=", 1)[1] for ln in f
                      if ln.startswith("FileDescriptorName=")]
    return argv, names


def test_hub_on_named_systemd_sockets_as_contrib_runs_it(grid, activate, tmp_path):
    """The shipped hub unit's command under systemd-socket-activate: two
    sockets told apart by LISTEN_FDNAMES; a worker and a client meet on the
    protocol one, and HTTP answers on the other."""
    import json
    import urllib.request
    port, web = free_port(), free_port()
    argv, names = contrib_hub_command(tmp_path, grid.state)
    assert names == ["grid", "http"], names
    hub = start(grid, [activate, "-l", f"127.0.0.1:{port}", "-l", f"127.0.0.1:{web}",
                       f"--fdname={':'.join(names)}", *argv], "hub")
    grid.hub, grid.addr = hub, f"127.0.0.1:{port}"
    grid.client_env = clean_env(GRID_KEY="hub-client-key")
    grid.ping(timeout=30)                       # the first call starts the hub
    log = open(hub.logpath).read()
    assert f"listening on 127.0.0.1:{port} (from systemd)" in log, log
    assert f"http on 127.0.0.1:{web}" in log, log
    grid.start_worker("--slots", "2", env=clean_env(GRID_KEY="hub-worker-key"))
    r = grid.run("gridmap", "-k", "echo", input=b"a\nb\nc\n",
                 env=clean_env(GRID_HUB=grid.addr, GRID_KEY="hub-client-key"))
    assert (r.stdout, r.returncode) == (b"a\nb\nc\n", 0), r.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{web}/status.json", timeout=10) as f:
        status = json.load(f)
    assert (status["addresses"], status["workers"], status["done"]) == \
        ([grid.addr], 1, 3), status
    hub.send_signal(signal.SIGTERM)             # drains; the socket is systemd's
    assert hub.wait(40) == 0, open(hub.logpath).read()


def test_hub_listen_systemd_takes_every_socket(grid, activate):
    ports = [free_port(), free_port()]
    hub = start(grid, [activate, *[f"-l127.0.0.1:{p}" for p in ports], *PY, f"{BIN}/gridd",
                       "hub", "--listen", "systemd", "--state", grid.state], "hub")
    grid.hub = hub
    for p in ports:                             # clients and workers on either
        grid.addr = f"127.0.0.1:{p}"
        grid.ping(timeout=30)
    grid.start_worker("--slots", "1")
    grid.addr = f"127.0.0.1:{ports[0]}"
    r = grid.run("gridmap", "-k", "echo", input=b"1\n2\n")
    assert (r.stdout, r.returncode) == (b"1\n2\n", 0), r.stderr


def test_hub_refuses_a_systemd_name_not_passed(grid, activate):
    port = free_port()
    hub = start(grid, [activate, "-l", f"127.0.0.1:{port}", "--fdname=grid", *PY,
                       f"{BIN}/gridd", "hub", "--listen", "systemd:nope", "--state",
                       grid.state], "hub")
    socket.create_connection(("127.0.0.1", port), timeout=10).close()   # starts it
    assert hub.wait(30) == 64
    err = open(hub.logpath).read()
    assert "systemd:nope: no socket passed by systemd is named 'nope'" in err, err
    assert "names: grid" in err, err


def test_hub_listen_systemd_without_sockets_is_a_usage_error(grid):
    r = grid.run("gridd", "hub", "--listen", "systemd", "--state", grid.state, env=clean_env())
    assert r.returncode == 64, r.stderr
    assert b"systemd: no sockets were passed by systemd (LISTEN_FDS, LISTEN_PID)" in r.stderr


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
    assert units == ["gridd-hub-http.socket", "gridd-hub.service", "gridd-hub.socket",
                     "gridd-worker.socket", "gridd-worker@.service"], units
    for name in units:
        # verify checks that ExecStart= is executable: point it at the checkout.
        with open(os.path.join(CONTRIB, "systemd", name)) as f:
            text = f.read().replace("/usr/local/bin/gridd", f"{BIN}/gridd")
        (tmp_path / name).write_text(text)
    r = subprocess.run([analyze, "verify", *units], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env=dict(clean_env(), SYSTEMD_LOG_LEVEL="notice"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r
