"""TLS on the connections a hub makes: to a worker that listens (gridd
worker --listen --tls-cert/--tls-key [--tls-ca], dialled by gridd hub
--peer-tls-ca [--peer-tls-cert/--peer-tls-key]) and to the hub above
(--upstream-tls-*).  A throw-away CA made by openssl in the test's tmp dir."""

import os
import re
import shutil

import pytest

from hubfixtures import Grid, clean_env, grid, wait_until  # noqa: F401 (grid: a fixture)
from test_auth import make_pki
from test_peers import start_listener, text


@pytest.fixture
def pki(tmp_path):
    if shutil.which("openssl") is None:
        print("skipping: openssl is not installed")
        pytest.skip("openssl is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    make_pki(str(d))
    return lambda n: str(d / n)


def test_the_hub_dials_a_tls_worker_with_its_client_certificate(grid, pki):
    w = start_listener(grid, "--tls-cert", pki("server.pem"), "--tls-key", pki("server.key"),
                       "--tls-ca", pki("ca.pem"))
    grid.start_hub("--peer", w.addr, "--peer-tls-ca", pki("ca.pem"),
                   "--peer-tls-cert", pki("client.pem"), "--peer-tls-key", pki("client.key"))
    ws = grid.wait_for(lambda ws: len(ws) == 1)
    assert (ws[0]["name"], ws[0]["how"]) == ("lw", "dialled")
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"1\n2\n3\n")
    assert (r.stdout, r.returncode) == (b"1\n2\n3\n", 0), r.stderr


def test_a_tls_worker_refuses_a_hub_without_a_certificate(grid, pki):
    w = start_listener(grid, "--tls-cert", pki("server.pem"), "--tls-key", pki("server.key"),
                       "--tls-ca", pki("ca.pem"))
    grid.start_hub("--peer", w.addr, "--peer-tls-ca", pki("ca.pem"))
    # Refused, and again at the next dial: the worker outlives its callers.
    assert wait_until(lambda: len(re.findall(r"TLS handshake failed: "
                                             r"PEER_DID_NOT_RETURN_A_CERTIFICATE",
                                             text(w.logpath))) >= 2, timeout=30), \
        text(w.logpath)
    assert grid.ctl("workers") == []
    assert w.poll() is None


def test_the_hub_checks_the_workers_certificate(grid, pki, tmp_path):
    # The worker serves a certificate no CA the hub trusts signed.
    other = tmp_path / "other"
    other.mkdir()
    make_pki(str(other))
    w = start_listener(grid, "--tls-cert", str(other / "server.pem"),
                       "--tls-key", str(other / "server.key"))
    grid.start_hub("--peer", w.addr, "--peer-tls-ca", pki("ca.pem"))
    assert wait_until(lambda: re.search(r"TLS handshake failed: CERTIFICATE_VERIFY_FAILED",
                                        text(grid.hub.logpath)), timeout=30), \
        text(grid.hub.logpath)
    assert grid.ctl("workers") == []


def test_a_middle_hub_connects_up_with_tls(tmp_path, pki):
    a = Grid(os.path.join(tmp_path, "a"))
    b = Grid(os.path.join(tmp_path, "b"))
    try:
        for g in (a, b):
            os.makedirs(g.tmp)
        a.client_env = clean_env(GRID_TLS_CA=pki("ca.pem"), GRID_TLS_CERT=pki("client.pem"),
                                 GRID_TLS_KEY=pki("client.key"))
        a.start_hub("--tls-cert", pki("server.pem"), "--tls-key", pki("server.key"),
                    "--tls-ca", pki("ca.pem"))
        b.start_hub("--upstream", a.addr, "--upstream-tls-ca", pki("ca.pem"),
                    "--upstream-tls-cert", pki("client.pem"),
                    "--upstream-tls-key", pki("client.key"))
        b.start_worker(slots=2, name="b1")
        ws = a.wait_for(lambda ws: [w["slots"] for w in ws] == [2])
        assert ws[0]["how"] == "upstream", ws
        r = a.run("gridmap", "--hub", a.addr, "-k", "echo", input=b"x\ny\nz\n",
                  env=a.client_env)
        assert (r.stdout, r.returncode) == (b"x\ny\nz\n", 0), r.stderr
    finally:
        b.close()
        a.close()


def test_a_plain_middle_hub_is_told_the_hub_above_speaks_tls(tmp_path, pki):
    a = Grid(os.path.join(tmp_path, "a"))
    b = Grid(os.path.join(tmp_path, "b"))
    try:
        for g in (a, b):
            os.makedirs(g.tmp)
        a.client_env = clean_env(GRID_TLS_CA=pki("ca.pem"))
        a.start_hub("--tls-cert", pki("server.pem"), "--tls-key", pki("server.key"))
        b.start_hub("--upstream", a.addr)
        assert wait_until(lambda: "this hub speaks TLS" in text(b.hub.logpath), timeout=30), \
            text(b.hub.logpath)
    finally:
        b.close()
        a.close()


def test_tls_options_are_checked_at_start(tmp_path, pki):
    from hubfixtures import tool
    import subprocess
    cases = [(["hub", "--peer-tls-cert", pki("client.pem"), "--peer-tls-key",
               pki("client.key")], 64, b"need --peer-tls-ca"),
             (["hub", "--upstream-tls-ca", pki("ca.pem"), "--upstream-tls-cert",
               pki("client.pem")], 64, b"go together"),
             (["hub", "--peer-tls-ca", str(tmp_path / "none")], 78, b"TLS"),
             (["worker", "--listen", "127.0.0.1:0", "--tls-ca", pki("ca.pem")], 64,
              b"needs --tls-cert and --tls-key"),
             # TLS without the hub's certificate required proves nobody.
             (["worker", "--listen", "0.0.0.0:0", "--tls-cert", pki("server.pem"),
               "--tls-key", pki("server.key")], 64, b"without a key")]
    for args, code, want in cases:
        if args[0] == "hub":
            args = [*args, "--state", str(tmp_path / "st")]
        r = subprocess.run([*tool("gridd"), *args], capture_output=True, env=clean_env(),
                           timeout=30)
        assert (r.returncode, want in r.stderr) == (code, True), (args, r.stderr)


def test_a_certificate_required_guards_a_public_listen_as_a_key_does(grid, pki):
    w = start_listener(grid, "--tls-cert", pki("server.pem"), "--tls-key", pki("server.key"),
                       "--tls-ca", pki("ca.pem"), addr="0.0.0.0:0")
    assert w.addr.startswith("0.0.0.0:") and w.poll() is None, text(w.logpath)
