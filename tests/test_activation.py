"""Workers started the Unix ways and dialled by a hub (gridd hub --peer):
systemd socket activation, the listening socket as fd 3 (gridd worker
--listen systemd) or one process per connection on stdin/stdout (gridd
worker --stdio), both under systemd-socket-activate."""

import shutil
import socket
import subprocess

import pytest

from hubfixtures import PY, BIN, clean_env, grid, wait_until  # noqa: F401 (grid: a fixture)


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


def start(grid, argv, name):
    path = grid.log(name)
    with open(path, "wb") as log:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=log, env=clean_env(), cwd=grid.tmp)
    grid.procs.append(p)
    p.logpath = path
    assert wait_until(lambda: b"Listening on" in open(path, "rb").read()), \
        open(path, "rb").read()
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
