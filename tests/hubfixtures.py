"""Real gridd hubs and workers on 127.0.0.1 for the hub, gridsub and auth
tests: start them, wait for them with a real round trip, always clean up."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from gridtools.hub import client as hubclient  # noqa: E402
from gridtools.proto import wire

BIN = os.path.join(ROOT, "bin")
PY = [sys.executable, "-I", "-S"]


def tool(name):
    return [*PY, os.path.join(BIN, name)]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GRID_") and k not in ("LISTEN_PID", "LISTEN_FDS")}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


class Grid:
    """A hub and its workers, all real processes, killed at the end."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.procs = []
        self.hub = None
        self.addr = None
        self.port = 0
        self.state = os.path.join(self.tmp, "state")
        self.hub_env = clean_env()
        self.client_env = clean_env()
        self.n = 0

    def log(self, name):
        self.n += 1
        return os.path.join(self.tmp, f"{name}-{self.n}.log")

    def start_hub(self, *args, env=None, port=None, wait=True):
        env = env or self.hub_env
        port = self.port if port is None else port
        path = self.log("hub")
        with open(path, "wb") as log:
            p = subprocess.Popen([*tool("gridd"), "hub", "--listen", f"127.0.0.1:{port}",
                                  "--state", self.state, *args],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=log, env=env)
        p.logpath = path
        self.procs.append(p)
        self.hub = p
        if not wait:
            return p
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = open(path).read()
            m = re.search(r"listening on (\S+)", text)
            if m:
                self.addr = m.group(1)
                self.port = int(self.addr.rsplit(":", 1)[1])
                break
            if p.poll() is not None:
                raise AssertionError(f"hub exited {p.returncode}: {text}")
            time.sleep(0.02)
        else:
            raise AssertionError("hub did not say where it listens: " + open(path).read())
        self.ping()
        return p

    def ping(self, timeout=10):
        """A real round trip: HELLO, PING, PONG."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = hubclient.Client(self.addr, self.client_env)
                try:
                    reply = c.request("PING")
                finally:
                    c.close()
                assert reply.verb == "PONG"
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def start_worker(self, *args, slots=1, name=None, env=None, wait=True):
        self.n += 1
        name = name or f"w{self.n}"
        path = self.log(name)
        with open(path, "wb") as log:
            p = subprocess.Popen([*tool("gridd"), "worker", "--connect", self.addr,
                                  "--slots", str(slots), "--name", name, *args],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=log, env=env or clean_env(), cwd=self.tmp)
        p.logpath = path
        p.name = name
        self.procs.append(p)
        if wait:
            self.wait_for(lambda s: name in [w["name"] for w in s])
        return p

    def ctl(self, what):
        import json
        c = hubclient.Client(self.addr, self.client_env)
        try:
            reply = c.request(what.upper())
        finally:
            c.close()
        return json.loads(reply.body)

    def wait_for(self, cond, what="workers", timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            data = self.ctl(what)
            if cond(data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {what}: {data}")
            time.sleep(0.05)

    def run(self, name, *args, input=None, env=None, timeout=60):
        return subprocess.run([*tool(name), *args], input=input, capture_output=True,
                              env=env or clean_env(GRID_HUB=self.addr), timeout=timeout,
                              cwd=self.tmp)

    def kill_hub(self, sig=signal.SIGKILL):
        self.hub.send_signal(sig)
        return self.hub.wait(15)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def grid(tmp_path):
    g = Grid(tmp_path)
    try:
        yield g
    finally:
        g.close()


def raw(addr, timeout=5):
    """A plain socket to the hub, with its HELLO already read."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    f = s.makefile("rb")
    hello = f.readline()
    return s, f, hello


def raw_client(addr):
    """A raw socket that has said HELLO as a client (hub without keys)."""
    s, f, hello = raw(addr)
    s.sendall(wire.hello("client", wire.new_nonce()))
    welcome = f.readline()
    assert welcome.startswith(b"WELCOME"), welcome
    return s, f


def pids_alive(pids):
    """The pids still running: a zombie has died (its reaper, init for an
    orphan, may take its time), so it is not counted."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def wait_until(cond, timeout=10, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()
