"""gridd ctl top: one plain snapshot when stdout is not a terminal, and a
live view on a real terminal (tmux): the workers' names shown, redrawn as
jobs run, a clean exit on q."""

import json
import os
import shutil
import subprocess
import uuid

import pytest

from hubfixtures import grid, tool, wait_until  # noqa: F401


def test_snapshot_when_not_a_terminal(grid):
    grid.start_hub()
    grid.start_worker("--tag", "site=lab", slots=2, name="snap1")
    r = grid.run("gridd", "ctl", "top")
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert "workers 1  busy 0/2" in text
    assert [ln.split()[:4] for ln in text.splitlines() if ln.startswith("snap1")] == \
        [["snap1", "in", "0/2", ".........."]]
    data = json.loads(grid.run("gridd", "ctl", "--json", "top").stdout)
    assert data["status"]["slots"] == 2 and data["workers"][0]["tags"] == {"site": "lab"}


def test_live_on_a_terminal_and_q_quits(grid, tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (make test-deps installs it)")
    grid.start_hub()
    grid.start_worker(slots=1, name="live1")
    grid.start_worker(slots=1, name="live2")
    session = f"gt{uuid.uuid4().hex[:8]}"
    rc = tmp_path / "rc"
    cmd = " ".join([*tool("gridd"), "ctl", "--hub", grid.addr, "top"])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "24",
                    f"{cmd}; echo $? > {rc}; sleep 30"], check=True,
                   env={**os.environ, "TERM": "xterm"})
    try:
        def pane():
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True).stdout
        assert wait_until(lambda: "live1" in pane() and "live2" in pane(), 20), pane()
        assert "q quits" in pane()
        r = grid.run("gridmap", "--hub", grid.addr, "true", input=b"1\n2\n3\n")
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: "done 3 " in pane(), 20), pane()     # redrawn, not restarted
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        assert wait_until(rc.exists, 20)
        assert rc.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
