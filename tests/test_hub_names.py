"""Names on a hub: ANNOUNCE and LOOKUP on a raw socket, and gridmcast's
rendezvous through them (--name), all with a real hub and real processes."""

import subprocess

from hubfixtures import clean_env, grid, raw_client, tool, wait_until  # noqa: F401


def line(f):
    return f.readline().rstrip(b"\n")


def test_announce_lookup_and_withdraw_on_close(grid):
    grid.start_hub()
    a, fa = raw_client(grid.addr)
    b, fb = raw_client(grid.addr)
    b.sendall(b"LOOKUP files\n")
    assert line(fb).startswith(b"ERR 69 ")
    b.sendall(b"LOOKUP files wait=1\n")           # parked until announced
    a.sendall(b"ANNOUNCE files 10.0.0.1:7400\n")
    assert line(fa) == b"OK files"
    assert line(fb) == b"AT files 10.0.0.1:7400"
    b.sendall(b"ANNOUNCE files 10.0.0.2:7400\n")
    assert line(fb).startswith(b"ERR 75 ANNOUNCE: files is taken")
    b.sendall(b"LOOKUP ../etc\n")
    assert line(fb).startswith(b"ERR 64 ")
    fa.close()
    a.close()

    def gone():
        b.sendall(b"LOOKUP files\n")
        return line(fb).startswith(b"ERR 69 ")
    assert wait_until(gone)
    # The name is free again for whoever comes next.
    b.sendall(b"ANNOUNCE files 10.0.0.2:7400\n")
    assert line(fb) == b"OK files"


def test_waiting_lookup_of_a_client_that_left_is_dropped(grid):
    grid.start_hub()
    b, fb = raw_client(grid.addr)
    b.sendall(b"LOOKUP later wait=1\n")
    fb.close()
    b.close()
    a, fa = raw_client(grid.addr)
    a.sendall(b"ANNOUNCE later 10.0.0.1:1\nPING\n")
    assert line(fa) == b"OK later"
    assert line(fa) == b"PONG"


def mcast(*args, env):
    return subprocess.Popen([*tool("gridmcast"), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_gridmcast_rendezvous_by_name(grid, tmp_path):
    """Receivers started first find the sender by name, wait for it, and
    get verified copies; once it has started the name is gone again."""
    grid.start_hub()
    env = clean_env(GRID_HUB=grid.addr)
    src = tmp_path / "in.bin"
    payload = bytes(range(256)) * 4000
    src.write_bytes(payload)
    outs = [tmp_path / f"out{i}" for i in range(2)]
    recvs = [mcast("recv", "--name", "payload", "--wait", "30", "-o", str(o), env=env)
             for o in outs]
    sender = mcast("send", "--name", "payload", "--control", "127.0.0.1:0",
                   "--min-receivers", "2", str(src), env=env)
    for p in recvs + [sender]:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert b"announced as payload" in err
    for o in outs:
        assert o.read_bytes() == payload
    late = subprocess.run([*tool("gridmcast"), "recv", "--name", "payload"],
                          capture_output=True, env=env, timeout=30)
    assert late.returncode == 69
    assert b"nothing is announced as payload" in late.stderr


def test_gridmcast_name_not_announced_in_time(grid):
    grid.start_hub()
    r = subprocess.run([*tool("gridmcast"), "recv", "--hub", grid.addr, "--name", "nobody",
                        "--wait", "0.5"], capture_output=True, env=clean_env(), timeout=30)
    assert r.returncode == 69
    assert r.stderr.decode().strip().endswith("nothing announced as nobody within 0.5s")
