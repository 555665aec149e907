"""A private sshd for the tests that need a real one: on a loopback port,
with a throw-away host key and key-only login, and an ssh_config that names
it gridtest (and unreachable: a port nobody listens on).  The fixture
installs Debian's openssh-server when missing, or skips with the reason."""

import os
import shutil
import socket
import subprocess
import time

try:
    import pytest
except ImportError:         # bench/bench_ssh.py starts an Sshd without pytest
    pytest = None

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A private sshd on 127.0.0.1 and an ssh_config naming two hosts:
    gridtest (it) and unreachable (a port nobody listens on)."""

    def __init__(self, d):
        self.dir = d
        self.config = os.path.join(d, "ssh_config")
        self.proc = None

    def start(self):
        d = self.dir
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(d, name)], check=True, timeout=30)
        shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
        os.chmod(os.path.join(d, "authorized_keys"), 0o600)
        os.makedirs("/run/sshd", exist_ok=True)
        self.port = free_port()
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\n"
                    f"HostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
                    "MaxStartups 100:30:200\n"
                    # Debian's bash reads ~/.bashrc for a command from sshd
                    # unless SHLVL says it is nested: this machine's rc files
                    # (a pyenv init waiting on a stale lock) are not under test.
                    "SetEnv SHLVL=2\n")
        with open(os.path.join(d, "host_key.pub")) as f:
            host_key = " ".join(f.read().split()[:2])
        with open(os.path.join(d, "known_hosts"), "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {host_key}\n")
        user = os.environ.get("USER") or "root"
        common = (f"  HostName 127.0.0.1\n  User {user}\n  IdentityFile {d}/client_key\n"
                  f"  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n"
                  f"  BatchMode yes\n  ConnectTimeout 5\n")
        with open(self.config, "w") as f:
            f.write(f"Host gridtest\n  Port {self.port}\n{common}"
                    f"Host unreachable\n  Port {free_port()}\n{common}")
        check = subprocess.run(["/usr/sbin/sshd", "-t", "-f", os.path.join(d, "sshd_config")],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            return f"sshd -t refused the config: {check.stderr.strip()}"
        self.log = open(os.path.join(d, "sshd.log"), "wb")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f",
                                      os.path.join(d, "sshd_config")],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = subprocess.run(["ssh", "-F", self.config, "gridtest", "true"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return None
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        with open(os.path.join(d, "sshd.log")) as f:
            return f"sshd did not let us in: {r.stderr.strip()} {f.read()[-500:]}"

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _sshd(tmp_path_factory):
    if not os.path.exists("/usr/sbin/sshd"):
        subprocess.run([os.path.join(HERE, "install-peers"), "openssh-server:/usr/sbin/sshd"],
                       timeout=600)
    for need in ("/usr/sbin/sshd", "ssh", "ssh-keygen"):
        if shutil.which(need) is None:
            reason = f"{need} is not installed (Debian openssh-server, openssh-client)"
            print(f"skipping the real-sshd tests: {reason}")
            pytest.skip(reason)
    s = Sshd(str(tmp_path_factory.mktemp("sshd")))
    try:
        why = s.start()
        if why:
            print(f"skipping the real-sshd tests: {why}")
            pytest.skip(why)
        yield s
    finally:
        s.stop()


if pytest is not None:
    sshd = pytest.fixture(scope="module", name="sshd")(_sshd)
