"""Keys and TLS: the mutual HMAC handshake per role, refused wrong keys,
swapped roles and replays, SIGHUP rereading keys, and TLS with client
certificates."""

import os
import shutil
import signal
import socket
import time
import subprocess
import threading

import pytest

from hubfixtures import Grid, clean_env, grid, raw, tool, wait_until  # noqa: F401
from gridtools.proto import wire


def write_key(path, text):
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def keyed(grid):
    ck = write_key(os.path.join(grid.tmp, "client.key"), "client-secret")
    wk = write_key(os.path.join(grid.tmp, "worker.key"), "worker-secret")
    grid.client_env = clean_env(GRID_KEY_FILE=ck)
    grid.start_hub("--client-key", ck, "--worker-key", wk)
    grid.start_worker("--key-file", wk)
    grid.ck, grid.wk = ck, wk
    return grid


def gridmap(g, key_file=None, key=None):
    return subprocess.run([*tool("gridmap"), "--hub", g.addr, "echo", "{}"], input=b"1\n",
                          capture_output=True, timeout=30,
                          env=clean_env(GRID_KEY_FILE=key_file, GRID_KEY=key))


def test_right_keys_work(keyed):
    r = gridmap(keyed, keyed.ck)
    assert (r.stdout, r.returncode) == (b"1\n", 0), r.stderr


@pytest.mark.parametrize("key, why", [
    (None, b"requires a client key"),
    ("wrong", b"authentication as client failed"),
    ("worker-secret", b"authentication as client failed"),   # a worker key cannot submit
])
def test_wrong_client_keys_are_refused(keyed, key, why):
    r = gridmap(keyed, key=key)
    assert r.returncode == 77 and why in r.stderr, r.stderr


def test_worker_with_the_client_key_is_refused(keyed):
    p = keyed.start_worker("--key-file", keyed.ck, wait=False)
    assert p.wait(15) == 77
    assert b"authentication as worker failed" in open(p.logpath, "rb").read()


def handshake(g, role, key, hello_line=None):
    """A raw handshake; returns (socket, file, the HELLO line we sent, reply)."""
    s, f, hello = raw(g.addr)
    msg, _ = wire.split(hello)
    if hello_line is None:
        nonce = wire.new_nonce()
        hello_line = wire.hello(role, nonce, mac=wire.mac(key, role, msg.get("nonce"), nonce))
    s.sendall(hello_line)
    return s, f, hello_line, f.readline()


def test_roles_cannot_do_each_others_work(keyed):
    s, f, _, reply = handshake(keyed, "worker", b"worker-secret")
    assert reply.startswith(b"WELCOME")
    s.sendall(wire.format("SUBMIT", body=b"true"))
    assert f.readline() == b"ERR 77 a worker connection cannot SUBMIT\n"
    s.sendall(wire.format("RUN", "1", body=b"true"))
    assert f.readline() == b"ERR 77 a worker connection cannot RUN\n"
    s.close()
    s, f, _, reply = handshake(keyed, "client", b"client-secret")
    assert reply.startswith(b"WELCOME")
    s.sendall(b"READY slots=4\n")
    assert f.readline() == b"ERR 77 a client connection cannot READY\n"
    s.close()


def test_replayed_handshake_is_refused(keyed):
    s, f, line, reply = handshake(keyed, "client", b"client-secret")
    assert reply.startswith(b"WELCOME")
    s.close()
    s, f, _, reply = handshake(keyed, "client", None, hello_line=line)
    assert reply == b"ERR 77 authentication as client failed\n"
    assert f.readline() == b""          # and the hub hangs up
    s.close()


def test_client_refuses_a_hub_that_does_not_know_the_key(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def fake_hub():
        c, _ = srv.accept()
        c.sendall(wire.hello("hub", wire.new_nonce(), auth=wire.AUTH, keys="client"))
        c.recv(4096)
        c.sendall(wire.format("WELCOME", "1", role="hub", mac="00" * 32))
        c.recv(4096)
        c.close()
    t = threading.Thread(target=fake_hub, daemon=True)
    t.start()
    r = subprocess.run([*tool("gridsub"), "--hub", "127.0.0.1:%d" % srv.getsockname()[1],
                        "true"], capture_output=True, timeout=30,
                       env=clean_env(GRID_KEY="client-secret"))
    srv.close()
    assert r.returncode == 77 and b"did not prove" in r.stderr, r.stderr


def test_sighup_rereads_keys(keyed):
    write_key(keyed.ck, "rotated")
    keyed.hub.send_signal(signal.SIGHUP)
    assert wait_until(lambda: b"keys reread" in open(keyed.hub.logpath, "rb").read())
    assert gridmap(keyed, key="client-secret").returncode == 77
    assert gridmap(keyed, key="rotated").returncode == 0


def test_keys_never_from_argv():
    r = subprocess.run([*tool("gridd"), "hub", "--help"], capture_output=True, text=True)
    assert "--client-key FILE" in r.stdout and "--worker-key FILE" in r.stdout


def test_public_address_needs_keys_or_tls(tmp_path):
    r = subprocess.run([*tool("gridd"), "hub", "--listen", "0.0.0.0:0", "--state",
                        str(tmp_path)], capture_output=True, timeout=30, env=clean_env())
    assert r.returncode == 64 and b"refusing to listen on 0.0.0.0:0" in r.stderr


# -- TLS ------------------------------------------------------------------------

def make_pki(d):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "30", "-subj", "/CN=grid test CA", "-addext",
        "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.pem")
    exts = {"server": "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            "client": "extendedKeyUsage=clientAuth\n"}
    for n, ext in exts.items():
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={n}", "-keyout", f"{n}.key", "-out", f"{n}.csr")
        with open(os.path.join(d, f"{n}.ext"), "w") as f:
            f.write(ext)
        run("x509", "-req", "-in", f"{n}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "30", "-extfile", f"{n}.ext", "-out", f"{n}.pem")


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_tls_with_client_certificates(grid):
    d = grid.tmp
    make_pki(d)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    grid.client_env = clean_env(GRID_TLS_CA=p("ca.pem"), GRID_TLS_CERT=p("client.pem"),
                                GRID_TLS_KEY=p("client.key"))
    grid.start_hub("--tls-cert", p("server.pem"), "--tls-key", p("server.key"),
                   "--tls-ca", p("ca.pem"))
    grid.start_worker("--tls-ca", p("ca.pem"), "--tls-cert", p("client.pem"),
                      "--tls-key", p("client.key"))
    r = subprocess.run([*tool("gridmap"), "--hub", grid.addr, "-k", "echo", "{}"],
                       input=b"1\n2\n3\n", capture_output=True, timeout=30, env=grid.client_env)
    assert (r.stdout, r.returncode) == (b"1\n2\n3\n", 0), r.stderr
    # Without a client certificate the hub will not talk: 77, and why.
    r = subprocess.run([*tool("gridsub"), "--hub", grid.addr, "true"], capture_output=True,
                       timeout=30, env=clean_env(GRID_TLS_CA=p("ca.pem")))
    assert r.returncode == 77, r.stderr
    assert b"certificate" in r.stderr
    # A client that does not use TLS is told so at once, in plain text.
    s = socket.create_connection(("127.0.0.1", grid.port), timeout=5)
    s.sendall(b"HELLO 1 role=client nonce=" + b"ab" * 32 + b"\n")
    got = s.makefile("rb").readline()
    assert got.startswith(b"ERR 76 ") and b"TLS" in got, got
    s.close()
    t0 = time.monotonic()
    r = subprocess.run([*tool("gridsub"), "--hub", grid.addr, "true"], capture_output=True,
                       timeout=30, env=clean_env())
    assert r.returncode == 76 and b"speaks TLS" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 8      # not the 10 s handshake timeout
    # A worker refused for a missing client certificate exits 77 at once,
    # a plain worker at a TLS hub 76: neither retries forever.
    for args, code in ((["--tls-ca", p("ca.pem")], 77), ([], 76)):
        r = subprocess.run([*tool("gridd"), "worker", "--connect", grid.addr, *args],
                           capture_output=True, timeout=30, env=clean_env())
        assert r.returncode == code, (args, r.stderr)
    # And a TLS client at a plain hub is told the hub does not speak TLS.
    plain = Grid(os.path.join(d, "plain"))
    os.makedirs(plain.tmp)
    try:
        plain.start_hub()
        r = subprocess.run([*tool("gridsub"), "--hub", plain.addr, "true"],
                           capture_output=True, timeout=30,
                           env=clean_env(GRID_TLS_CA=p("ca.pem")))
        assert r.returncode == 76 and b"does not speak TLS" in r.stderr, r.stderr
    finally:
        plain.close()


def test_stdio_worker_checks_the_hub_key(tmp_path):
    """With --stdio the worker speaks first and the hub must prove the key."""
    def talk(key_for_hub):
        p = subprocess.Popen([*tool("gridd"), "worker", "--stdio"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=clean_env(GRID_KEY="worker-secret"))
        hello, _ = wire.split(p.stdout.readline())
        assert hello.get("auth") == wire.AUTH
        nonce = wire.new_nonce()
        p.stdin.write(wire.hello("hub", nonce, mac=wire.mac(key_for_hub, "hub",
                                                            hello.get("nonce"), nonce)))
        p.stdin.flush()
        reply, _ = wire.split(p.stdout.readline())
        p.stdin.close()
        return reply, p.wait(10), hello.get("nonce"), nonce
    reply, code, theirs, mine = talk(b"worker-secret")
    assert reply.verb == "WELCOME" and code == 0
    assert wire.check_mac(b"worker-secret", "worker", mine, theirs, reply.get("mac"))
    reply, code, _, _ = talk(b"guess")
    assert (reply.verb, reply.args[0], code) == ("ERR", "77", 77)
