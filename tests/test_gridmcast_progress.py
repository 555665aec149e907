"""gridmcast send shows its progress on a terminal's stderr (bytes read,
the slowest receiver, the rate, receivers verified), and nothing of it
when stderr is not a terminal."""

import os
import pty
import re
import subprocess
import sys
import time

from mcast_helpers import GRIDMCAST, finish, start_receiver, start_sender

PART = os.urandom(1 << 20)


def trickle(p):
    """Three MiB on the sender's stdin, a part every 0.7 s: the run lasts
    long enough for progress lines (one every 0.5 s)."""
    for _ in range(3):
        p.stdin.write(PART)
        p.stdin.flush()
        time.sleep(0.7)
    p.stdin.close()
    p.stdin = None


def test_progress_on_a_terminal_only(tmp_path):
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, GRIDMCAST, "send", "--min-receivers", "1", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while b"control " not in seen:
        seen += os.read(master, 4096)
    addr = re.search(rb"control (\S+)", seen).group(1).decode()
    r = start_receiver(addr, ["-o", str(tmp_path / "got")])
    trickle(p)
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:             # the sender closed the terminal: it is done
            break
        if not chunk:
            break
        seen += chunk
    assert p.wait(60) == 0
    assert finish(r)[0] == 0
    os.close(master)
    text = seen.decode(errors="replace")
    lines = re.findall(r"\r([\d.]+) MiB read, slowest receiver at [\d.]+ MiB, [\d.]+ MiB/s, "
                       r"[01]/1 verified", text)
    assert len(lines) >= 2, text
    assert float(lines[-1]) > float(lines[0])           # it moved
    assert (tmp_path / "got").read_bytes() == PART * 3
    # Not a terminal: no progress at all.
    p, addr = start_sender(["--min-receivers", "1", "-"], stdin=subprocess.PIPE)
    r = start_receiver(addr, ["-o", str(tmp_path / "got2")])
    trickle(p)
    rc, _, err = finish(p)
    assert rc == 0 and finish(r)[0] == 0
    assert "MiB read" not in err and "\r" not in err
