"""gridmcast across a real topology: a bridge in one network namespace, the
sender and three receivers each in their own, multicast over veth.  Needs
root and `ip netns`; skipped with the reason otherwise."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mcast_helpers import GRIDMCAST, finish

TAG = f"gmt{os.getpid() % 100000}"
BRIDGE = f"{TAG}-br"
HOSTS = [(f"{TAG}-s", "10.78.0.1")] + [(f"{TAG}-r{i}", f"10.78.0.{10 + i}") for i in (1, 2, 3)]


def _sh(cmd):
    subprocess.run(cmd, shell=True, check=True, capture_output=True)


def _teardown():
    for ns in [BRIDGE] + [h[0] for h in HOSTS]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def topology():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if not shutil.which("ip"):
        pytest.skip("no `ip` command (iproute2) to create network namespaces")
    try:
        _sh(f"ip netns add {BRIDGE}")
    except subprocess.CalledProcessError as e:
        pytest.skip(f"`ip netns add` failed: {e.stderr.decode().strip()}")
    try:
        _sh(f"ip -n {BRIDGE} link add br0 type bridge mcast_snooping 0")
        _sh(f"ip -n {BRIDGE} link set br0 up")
        for i, (ns, ip) in enumerate(HOSTS):
            _sh(f"ip netns add {ns}")
            _sh(f"ip link add {TAG}p{i} netns {BRIDGE} type veth peer name eth0 netns {ns}")
            _sh(f"ip -n {BRIDGE} link set {TAG}p{i} master br0 up")
            _sh(f"ip -n {ns} addr add {ip}/24 brd + dev eth0")
            _sh(f"ip -n {ns} link set eth0 up")
            _sh(f"ip -n {ns} link set lo up")
    except subprocess.CalledProcessError as e:
        _teardown()
        pytest.skip(f"cannot build the topology: {e.cmd}: {e.stderr.decode().strip()}")
    yield HOSTS
    _teardown()


def _in(ns, argv, **kw):
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_multicast_across_veth(topology, tmp_path):
    payload = os.urandom(3_000_000)
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    (sns, sip), receivers = topology[0], topology[1:]
    sender = _in(sns, [sys.executable, GRIDMCAST, "send", "--control", f"{sip}:7470",
                       "--min-receivers", "3", "--json", "--wait", "20", str(src)])
    line = sender.stderr.readline().decode()
    assert "control" in line, line
    outs = [tmp_path / f"out{i}" for i in range(3)]
    recvs = [_in(ns, [sys.executable, GRIDMCAST, "recv", f"{sip}:7470", "-o", str(o)])
             for (ns, _), o in zip(receivers, outs)]
    results = [finish(r) for r in recvs]
    rc, out, err = finish(sender)
    assert rc == 0, err
    for (code, _, rerr), o in zip(results, outs):
        assert code == 0, rerr
        assert o.read_bytes() == payload
    report = json.loads(out)
    assert [r["via"] for r in report["receivers"]] == ["multicast"] * 3
    assert sorted(r["receiver"].split(":")[0] for r in report["receivers"]) == \
        [ip for _, ip in receivers]
