"""gridmcast end to end: real senders and receivers on 127.0.0.1."""

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from gridtools.proto import errors
from gridtools.proto import wire as proto
from gridtools.mcast import wire
from gridtools.cli import gridmcast
from mcast_helpers import finish, start_receiver, start_sender

CTL = ["--control", "127.0.0.1:0"]


def data(n, seed=b"x"):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + str(i).encode()).digest() * 64
        i += 1
    return bytes(out[:n])


def run_group(tmp_path, payload, n, send_args=(), recv_args=(), stdin_bytes=None):
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    if stdin_bytes is None:
        sender, addr = start_sender([*CTL, "--min-receivers", str(n), *send_args, str(src)])
    else:
        sender, addr = start_sender([*CTL, "--min-receivers", str(n), *send_args, "-"],
                                    stdin=subprocess.PIPE)
    outs = [tmp_path / f"out{i}.bin" for i in range(n)]
    recvs = [start_receiver(addr, ["-o", str(o), *recv_args]) for o in outs]
    if stdin_bytes is not None:
        sender.stdin.write(stdin_bytes)
        sender.stdin.close()
    results = [finish(r) for r in recvs]
    s = finish(sender)
    return s, results, outs


def test_multicast_three_receivers(tmp_path):
    payload = data(3_000_001)
    (rc, out, err), results, outs = run_group(tmp_path, payload, 3)
    assert rc == 0, err
    for r, o in zip(results, outs):
        assert r[0] == 0, r[2]
        assert o.read_bytes() == payload
    lines = out.decode().splitlines()
    assert len(lines) == 3
    assert all(" verified " in ln and "multicast" in ln for ln in lines)


@pytest.mark.parametrize("fec", ["0", "8"])
def test_multicast_with_loss(tmp_path, fec):
    payload = data(4_000_000)
    (rc, out, err), results, outs = run_group(
        tmp_path, payload, 3, ["--fec", fec, "--json"], ["--simulate-loss", "0.05"])
    assert rc == 0, err
    for r, o in zip(results, outs):
        assert r[0] == 0, r[2]
        assert o.read_bytes() == payload
    import json
    report = json.loads(out)
    assert report["repairs"] > 0 or report["parity"] > 0
    assert [r["status"] for r in report["receivers"]] == ["verified"] * 3


def test_tcp_chain_from_stdin(tmp_path):
    payload = data(5_000_000)
    (rc, out, err), results, outs = run_group(tmp_path, b"", 3, ["--tcp"], [], stdin_bytes=payload)
    assert rc == 0, err
    for r, o in zip(results, outs):
        assert r[0] == 0, r[2]
        assert o.read_bytes() == payload
    assert all("chain" in ln for ln in out.decode().splitlines())


@pytest.mark.parametrize("mode", [[], ["--tcp"]])
def test_zero_length(tmp_path, mode):
    (rc, out, err), results, outs = run_group(tmp_path, b"", 2, mode)
    assert rc == 0, err
    for r, o in zip(results, outs):
        assert r[0] == 0, r[2]
        assert o.read_bytes() == b""
    (rc, out, err), results, outs = run_group(tmp_path, b"", 2, mode, stdin_bytes=b"")
    assert rc == 0, err
    assert all(o.read_bytes() == b"" for o in outs)


def test_receiver_to_stdout(tmp_path):
    payload = data(100_000)
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    # Nothing but the control address: 127.0.0.1 means multicast on lo.
    sender, addr = start_sender([*CTL, str(src)])
    assert sender.group and sender.group[0].startswith("239.")
    rc, out, err = finish(start_receiver(addr))
    assert rc == 0, err
    assert out == payload
    rc, report, err = finish(sender)
    assert rc == 0, err
    assert " verified " in report.decode() and "multicast" in report.decode()


def test_evicted_receiver_succeeds_in_silence(tmp_path):
    """A receiver that loses far more than the other is evicted and finished
    over TCP: a success, so it prints nothing unless -v asks for notices."""
    payload = data(6_000_000)
    for verbose in ([], ["-v"]):
        src = tmp_path / "in.bin"
        src.write_bytes(payload)
        # A fixed rate and small datagrams: the run lasts over a second, with
        # enough datagrams in each of the sender's ticks to judge the losses.
        sender, addr = start_sender([*CTL, "--min-receivers", "2", "--rate", "40M",
                                     "--datagram-size", "8000", "--json", str(src)])
        outs = [tmp_path / "fine.bin", tmp_path / "lossy.bin"]
        fine = start_receiver(addr, ["-o", str(outs[0])])
        lossy = start_receiver(addr, ["-o", str(outs[1]), "--simulate-loss", "0.6", *verbose])
        results = [finish(fine), finish(lossy)]
        rc, out, err = finish(sender)
        assert rc == 0, err
        import json
        via = {r["via"] for r in json.loads(out)["receivers"]}
        assert via == {"multicast", "evicted"}, out
        for (code, _, rerr), o in zip(results, outs):
            assert code == 0, rerr
            assert o.read_bytes() == payload
        assert results[0][2] == ""
        if verbose:
            assert results[1][2] == ("gridmcast: evicted from the multicast group; "
                                     "continuing over TCP\n")
        else:
            assert results[1][2] == ""


def test_notices_are_held_unless_verbose_or_failed(capsys):
    quiet = gridmcast.Notices(verbose=False)
    quiet("control 127.0.0.1:1", always=True)
    quiet("evicted from the multicast group")
    assert capsys.readouterr().err == "gridmcast: control 127.0.0.1:1\n"
    quiet.failed()
    assert capsys.readouterr().err == "gridmcast: evicted from the multicast group\n"
    loud = gridmcast.Notices(verbose=True)
    loud("evicted")
    assert capsys.readouterr().err == "gridmcast: evicted\n"


def test_an_event_made_stale_in_its_batch_is_skipped():
    # Each handler forgets and closes the other's socket, as an EVICT drops
    # the multicast socket while its read is pending in the same select()
    # batch: exactly one runs, whichever comes first (on the one loop the
    # sender and receiver run on).
    from gridtools.io import loop as ioloop
    loop = ioloop.Loop()
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    ran = []

    def handler(mine, other):
        def on_read():
            mine.recv(1)
            ran.append(mine)
            loop.remove_reader(other.fileno())
            other.close()
        return on_read
    loop.add_reader(a.fileno(), handler(a, b))
    loop.add_reader(b.fileno(), handler(b, a))
    a_peer.send(b"x")
    b_peer.send(b"x")
    loop.call_later(5, loop.stop)
    loop.run_once()
    assert len(ran) == 1
    loop.close()
    for s in (a, b, a_peer, b_peer):
        s.close()


def slow_feed(pipe, payload, chunk, pause, on_half=None):
    """Write payload to pipe in chunks with pauses; call on_half midway."""
    half = len(payload) // 2
    called = False
    for i in range(0, len(payload), chunk):
        if not called and i >= half and on_half:
            on_half()
            called = True
        pipe.write(payload[i:i + chunk])
        pipe.flush()
        time.sleep(pause)
    pipe.close()


@pytest.mark.parametrize("mode", [[], ["--tcp"]])
def test_receiver_killed_mid_stream(tmp_path, mode):
    """One receiver dies halfway: it is reported, the others finish."""
    payload = data(6_000_000)
    sender, addr = start_sender([*CTL, "--min-receivers", "3", *mode, "-"], stdin=subprocess.PIPE)
    outs = [tmp_path / f"out{i}.bin" for i in range(3)]
    recvs = []
    for o in outs:
        recvs.append(start_receiver(addr, ["-o", str(o)]))
        time.sleep(0.3)          # join in order: the middle one is in the middle of a chain
    victim = recvs[1]
    slow_feed(sender.stdin, payload, 256 << 10, 0.05, on_half=lambda: victim.send_signal(signal.SIGKILL))
    results = [finish(r) for r in recvs]
    rc, out, err = finish(sender)
    assert rc == errors.UNAVAILABLE, err
    assert results[1][0] == -signal.SIGKILL
    for i in (0, 2):
        assert results[i][0] == 0, results[i][2]
        assert outs[i].read_bytes() == payload
    assert not outs[1].exists()
    lines = out.decode().splitlines()
    dead = [ln for ln in lines if " dead " in ln]
    assert len(dead) == 1 and len([ln for ln in lines if " verified " in ln]) == 2


def test_forged_datagrams_rejected_with_key(tmp_path):
    payload = data(3_000_000)
    key = tmp_path / "key"
    key.write_bytes(b"s3cret group key\n")
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    sender, addr = start_sender([*CTL, "--key-file", str(key), "--min-receivers", "2",
                                 "--rate", "100M", str(src)])
    group = sender.group
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    spy.bind(group)
    mreq = struct.pack("4s4s", socket.inet_aton(group[0]), socket.inet_aton("127.0.0.1"))
    spy.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    spy.settimeout(10)
    stop = threading.Event()
    forged = [0]

    def forge():
        # A stranger on the group: it reads the session from a probe and
        # sends blocks with valid SHA-256 tags, but it has no key.
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tag = wire.make_tagger(None)
        d, _ = spy.recvfrom(65536)
        session = wire.HEADER.unpack_from(d)[3]
        seq = 0
        while not stop.is_set():
            tx.sendto(wire.pack_datagram(tag, wire.DATA, session, seq % 400, b"EVIL" * 2048), group)
            forged[0] += 1
            seq += 1
            if seq % 50 == 0:
                time.sleep(0.002)

    t = threading.Thread(target=forge, daemon=True)
    t.start()
    outs = [tmp_path / f"out{i}.bin" for i in range(2)]
    # Both receivers reject the forgeries; only the one asked to (-v) says so:
    # the other succeeds in silence, as cron wants.
    recvs = [start_receiver(addr, ["-o", str(o), "--key-file", str(key), *v])
             for o, v in zip(outs, (["-v"], []))]
    results = [finish(r) for r in recvs]
    stop.set()
    rc, out, err = finish(sender)
    assert rc == 0, err
    assert forged[0] > 0
    for r, o in zip(results, outs):
        assert r[0] == 0, r[2]
        assert o.read_bytes() == payload
    assert re.search(r"rejected \d+ blocks? that failed the integrity check", results[0][2])
    assert results[1][2] == ""


def test_wrong_or_missing_key(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"k1")
    other = tmp_path / "other"
    other.write_bytes(b"k2")
    src = tmp_path / "in.bin"
    src.write_bytes(b"hello")
    sender, addr = start_sender([*CTL, "--key-file", str(key), "--wait", "3", str(src)])
    rc, out, err = finish(start_receiver(addr))
    assert rc == errors.NOPERM and "requires a receiver key (--key-file)" in err, err
    assert "GRID_KEY" not in err, err           # the group key comes from --key-file only
    rc, out, err = finish(start_receiver(addr, ["--key-file", str(other)]))
    assert rc == errors.NOPERM and "refused: authentication as receiver failed" in err, err
    rc, out, err = finish(start_receiver(addr, ["--key-file", str(key)]))
    assert rc == 0 and out == b"hello", err
    assert finish(sender)[0] == 0
    # And a key on the receiver's side only: the sender could never prove it.
    sender, addr = start_sender([*CTL, "--wait", "3", str(src)])
    rc, out, err = finish(start_receiver(addr, ["--key-file", str(key)]))
    assert rc == errors.NOPERM and "has no receiver key" in err, err
    rc, out, err = finish(start_receiver(addr))
    assert rc == 0 and out == b"hello", err
    assert finish(sender)[0] == 0


def test_the_sender_answers_a_bad_hello_with_err(tmp_path):
    """The control channel is the hub protocol: a keyed sender greets with
    HELLO role=sender, and answers a HELLO without the key's MAC (or from
    the wrong role) with the hub's ERR line, code and all, then hangs up."""
    key = tmp_path / "key"
    key.write_bytes(b"k1")
    src = tmp_path / "in.bin"
    src.write_bytes(b"hello")
    sender, addr = start_sender([*CTL, "--key-file", str(key), "--wait", "3", str(src)])
    host, port = wire.parse_hostport(addr)

    def exchange(hello):
        with socket.create_connection((host, port), timeout=10) as s:
            f = s.makefile("rb")
            greeting, _ = proto.split(f.readline())
            assert proto.check_hello(greeting, roles=("sender",))[0] == "sender"
            assert greeting.get("auth") == proto.AUTH
            s.sendall(hello(greeting.get("nonce")))
            return f.readline(), f.readline()

    nonce = proto.new_nonce()
    no_mac = exchange(lambda theirs: proto.hello("receiver", nonce, relay="127.0.0.1:1"))
    assert no_mac == (b"ERR 77 authentication as receiver failed\n", b""), no_mac
    wrong = exchange(lambda theirs: proto.hello(
        "receiver", nonce, relay="127.0.0.1:1", mac=proto.mac(b"k2", "receiver", theirs, nonce)))
    assert wrong == (b"ERR 77 authentication as receiver failed\n", b""), wrong
    role = exchange(lambda theirs: proto.hello("client", nonce))
    assert role[0].startswith(b"ERR 76 HELLO: role must be one of receiver") and role[1] == b""
    rc, out, err = finish(start_receiver(addr, ["--key-file", str(key)]))
    assert rc == 0 and out == b"hello", err
    assert finish(sender)[0] == 0


def test_late_joiner_refused(tmp_path):
    sender, addr = start_sender([*CTL, "-"], stdin=subprocess.PIPE)
    first = start_receiver(addr)
    sender.stdin.write(b"a" * 1000)
    sender.stdin.flush()
    time.sleep(1.5)
    rc, out, err = finish(start_receiver(addr))
    assert rc == errors.TEMPFAIL and "refused: the session has already started" in err, err
    sender.stdin.close()
    assert finish(first)[:2] == (0, b"a" * 1000)
    assert finish(sender)[0] == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_receiver_started_before_its_sender(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    rc, _, err = finish(start_receiver(addr))
    assert rc == errors.UNAVAILABLE and "cannot connect" in err, err
    payload = data(300_000)
    (tmp_path / "in.bin").write_bytes(payload)
    out = tmp_path / "out.bin"
    r = start_receiver(addr, ["--wait", "30", "-o", str(out)])
    time.sleep(0.5)                     # it is retrying by now
    assert r.poll() is None
    sender, _ = start_sender(["--control", addr, str(tmp_path / "in.bin")])
    assert finish(r)[0] == 0
    assert finish(sender)[0] == 0
    assert out.read_bytes() == payload


def test_sender_killed_leaves_no_file(tmp_path):
    sender, addr = start_sender([*CTL, "-"], stdin=subprocess.PIPE)
    out = tmp_path / "out.bin"
    r = start_receiver(addr, ["-o", str(out)])
    sender.stdin.write(b"x" * 100000)
    sender.stdin.flush()
    time.sleep(1.0)
    sender.kill()
    rc, _, err = finish(r)
    assert rc == errors.UNAVAILABLE, err
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_parse_options():
    o = gridmcast.parse_options(["send", "--control", "127.0.0.1:9", "--rate", "800M",
                                 "--fec", "8", "f"])
    assert o.control == ("127.0.0.1", 9) and o.rate == 800e6 and o.fec == 8 and o.file == "f"
    o = gridmcast.parse_options(["recv", "10.0.0.1:7", "-o", "x", "--simulate-loss", "0.05"])
    assert o.control == ("10.0.0.1", 7) and o.simulate_loss == 0.05
    for bad in (["send", "--group", "10.0.0.1:5"], ["send", "--fec", "99"],
                ["recv", "nope"], ["recv", "h:1", "--simulate-loss", "1.5"], []):
        with pytest.raises(SystemExit) as e:
            gridmcast.parse_options(bad)
        assert e.value.code == errors.USAGE


def test_usage_exit_code():
    with pytest.raises(SystemExit) as e:
        gridmcast.main(["send", "--ttl", "999"])
    assert e.value.code == errors.USAGE
    rc = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "bin", "gridmcast"),
                         "send", "/nonexistent/file"], capture_output=True)
    assert rc.returncode == errors.NOINPUT


def voluntary_switches(pid):
    """How often the process has gone to sleep in the kernel (all threads)."""
    n = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    n += int(line.split()[1])
    return n


def wakeups(pid, seconds=1.0):
    before = voluntary_switches(pid)
    time.sleep(seconds)
    return voluntary_switches(pid) - before


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_idle_sender_and_receiver_sleep():
    """Nothing polls: a sender waiting for receivers, a receiver waiting for
    the start, and both waiting on a stream with nothing to say wake only
    for events and real deadlines (a PING every 5 s), not every few ms."""
    sender, addr = start_sender([*CTL, "--min-receivers", "2", "-"], stdin=subprocess.PIPE)
    first = start_receiver(addr)
    try:
        time.sleep(1.5)                 # joined, heard the probes, waiting for a second
        assert wakeups(sender.pid) < 20
        assert wakeups(first.pid) < 20
    finally:
        for p in (sender, first):
            p.kill()
            p.communicate()
    sender, addr = start_sender([*CTL, "-"], stdin=subprocess.PIPE)
    r = start_receiver(addr)
    sender.stdin.write(b"a" * 1000)
    sender.stdin.flush()
    time.sleep(1.5)                     # started, the block delivered, stdin idle
    assert wakeups(sender.pid) < 20
    assert wakeups(r.pid) < 20
    sender.stdin.close()
    assert finish(r)[:2] == (0, b"a" * 1000)
    assert finish(sender)[0] == 0
