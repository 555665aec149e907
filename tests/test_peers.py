"""The hub dials workers that listen (gridd hub --peer, gridd worker
--listen): the worker speaks first, as the side that was called; the hub
re-dials when it drops; keys are checked both ways."""

import re
import socket
import subprocess


from hubfixtures import clean_env, grid, tool, wait_until  # noqa: F401 (grid: a fixture)


def start_listener(grid, *args, env=None, addr="127.0.0.1:0", name="lw"):
    path = grid.log(name)
    with open(path, "wb") as log:
        p = subprocess.Popen([*tool("gridd"), "worker", "--listen", addr, "--slots", "2",
                              "--name", name, *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=log, env=env or clean_env(),
                             cwd=grid.tmp)
    grid.procs.append(p)
    p.logpath = path
    m = wait_until(lambda: re.search(r"listening on (\S+)", open(path).read()))
    assert m, open(path).read()
    p.addr = m.group(1)
    return p


def text(path):
    with open(path, errors="replace") as f:
        return f.read()


def test_the_hub_dials_a_listening_worker_and_dials_again(grid):
    w = start_listener(grid)
    grid.start_hub("--peer", w.addr)
    ws = grid.wait_for(lambda ws: len(ws) == 1)
    assert (ws[0]["name"], ws[0]["how"], ws[0]["slots"]) == ("lw", "dialled", 2)
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"1\n2\n3\n")
    assert (r.stdout, r.returncode) == (b"1\n2\n3\n", 0), r.stderr
    w.kill()
    w.wait()
    grid.wait_for(lambda ws: ws == [])
    w2 = start_listener(grid, addr=w.addr, name="lw2")
    grid.wait_for(lambda ws: [x["name"] for x in ws] == ["lw2"], timeout=40)
    assert re.search(rf"peer {re.escape(w.addr)}: cannot connect", text(grid.hub.logpath)) \
        or "went away" in text(grid.hub.logpath)
    assert "hub 127.0.0.1:" in text(w2.logpath)


def test_keys_are_proved_both_ways(grid, tmp_path):
    key = tmp_path / "worker.key"
    key.write_text("s3cret-worker-key\n")
    key.chmod(0o600)
    w = start_listener(grid, "--key-file", str(key))
    grid.start_hub("--peer", w.addr, "--worker-key", str(key))
    assert grid.wait_for(lambda ws: len(ws) == 1)[0]["how"] == "dialled"
    grid.close()
    grid.procs = []
    w = start_listener(grid, "--key-file", str(key), name="lw3")
    grid.start_hub("--peer", w.addr)            # no key: the hub cannot prove it
    m = wait_until(lambda: re.search(r"handshake: requires a hub key",
                                     text(grid.hub.logpath)))
    assert m, text(grid.hub.logpath)
    assert grid.ctl("workers") == []
    assert w.poll() is None                     # a failed caller does not end the worker


def test_a_listening_worker_refuses_a_second_hub_while_it_serves_one(grid):
    w = start_listener(grid)
    grid.start_hub("--peer", w.addr)
    grid.wait_for(lambda ws: len(ws) == 1)
    host, port = w.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        assert s.makefile("rb").readline().startswith(b"ERR 75 ")


def test_listen_refuses_a_public_address_without_a_key(tmp_path):
    r = subprocess.run([*tool("gridd"), "worker", "--listen", "0.0.0.0:0"], capture_output=True,
                       env=clean_env(), timeout=30)
    assert r.returncode == 64 and b"without a key" in r.stderr, r.stderr
    r = subprocess.run([*tool("gridd"), "worker", "--listen", "systemd"], capture_output=True,
                       env=clean_env(), timeout=30)
    assert r.returncode == 64 and b"LISTEN_FDS" in r.stderr, r.stderr


def test_peer_addresses_are_checked_at_start(tmp_path):
    for bad in (["--peer", "h:70000"], ["--ssh", "-oProxyCommand=x"], ["--ssh", "x/h"]):
        r = subprocess.run([*tool("gridd"), "hub", "--state", str(tmp_path), *bad],
                           capture_output=True, env=clean_env(), timeout=30)
        assert r.returncode == 64, (bad, r.stderr)


# -- --peer-file, read again on SIGHUP ---------------------------------------------

def names(ws):
    return sorted(w["name"] for w in ws)


def test_peer_file_is_read_again_on_sighup(grid, tmp_path):
    import signal
    a = start_listener(grid, name="pa")
    b = start_listener(grid, "--tag", "which=b", name="pb")
    c = start_listener(grid, name="pc")
    peers = tmp_path / "peers"
    peers.write_text(f"# the rack\n{a.addr}   # first\n\n  {b.addr}\n{a.addr}\n")
    grid.start_hub("--peer-file", str(peers))
    ws = grid.wait_for(lambda ws: names(ws) == ["pa", "pb"])
    assert {w["how"] for w in ws} == {"dialled"}
    # A job on b that runs until the test lets it end.
    gm = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--require", "which=b",
                           "while [ ! -e go ]; do sleep 0.05; done; echo {}"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=clean_env(), cwd=grid.tmp)
    grid.procs.append(gm)
    gm.stdin.write(b"held\n")
    gm.stdin.close()
    gm.stdin = None                             # communicate() reads only
    grid.wait_for(lambda ws: [w["running"] for w in ws if w["name"] == "pb"] == [1])
    # b leaves the file, c joins it: c is dialled, b drains and keeps its job.
    peers.write_text(f"{a.addr}\n{c.addr}\n")
    grid.hub.send_signal(signal.SIGHUP)
    ws = grid.wait_for(lambda ws: names(ws) == ["pa", "pb", "pc"])
    assert [(w["state"], w["running"]) for w in ws if w["name"] == "pb"] == [("draining", 1)], ws
    assert "1 added, 1 removed" in text(grid.hub.logpath)
    (tmp_path / "go").write_text("")
    out, err = gm.communicate(timeout=60)
    assert (out, gm.returncode) == (b"held\n", 0), err
    grid.wait_for(lambda ws: names(ws) == ["pa", "pc"])
    assert b.wait(30) == 0                      # BYE: a drained --listen worker exits 0
    assert wait_until(lambda: re.search(rf"peer {re.escape(b.addr)}: removed from .*; not "
                                        rf"dialled again", text(grid.hub.logpath))), \
        text(grid.hub.logpath)
    # A file that does not parse changes nothing.
    peers.write_text(f"{a.addr}\nnot an address\n")
    grid.hub.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "SIGHUP: keeping the old peers: peer file" in
                      text(grid.hub.logpath)), text(grid.hub.logpath)
    assert "line 2: one address a line" in text(grid.hub.logpath)
    assert names(grid.ctl("workers")) == ["pa", "pc"]
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "echo", input=b"1\n2\n3\n4\n")
    assert (r.stdout, r.returncode) == (b"1\n2\n3\n4\n", 0), r.stderr


def test_a_peer_removed_before_it_answers_is_no_longer_dialled(grid, tmp_path):
    import signal
    with socket.socket() as s:                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{s.getsockname()[1]}"
    peers = tmp_path / "peers"
    peers.write_text(gone + "\n")
    grid.start_hub("--peer-file", str(peers))
    assert wait_until(lambda: f"peer {gone}: cannot connect" in text(grid.hub.logpath))
    peers.write_text("# nobody\n")
    grid.hub.send_signal(signal.SIGHUP)
    assert wait_until(lambda: f"peer {gone}: removed from {peers}" in text(grid.hub.logpath)), \
        text(grid.hub.logpath)
    assert "0 peers, 0 added, 1 removed" in text(grid.hub.logpath)


def test_a_bad_peer_file_stops_the_hub_at_start(tmp_path):
    bad = tmp_path / "peers"
    bad.write_text("127.0.0.1:7712\n127.0.0.1:99999\n")
    for path, want in ((bad, b"line 2: "), (tmp_path / "none", b"cannot read peer file")):
        r = subprocess.run([*tool("gridd"), "hub", "--state", str(tmp_path), "--peer-file",
                            str(path)], capture_output=True, env=clean_env(), timeout=30)
        assert r.returncode == 78 and want in r.stderr, r.stderr
