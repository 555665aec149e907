"""The status page of gridd hub --http in a real headless Chromium, driven
through chromedriver's WebDriver protocol with the standard library: the
DOM shows a real hub's two workers and its counts, a screenshot is kept,
and the page updates by itself (from /events) when a job finishes."""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest

from hubfixtures import grid, wait_until  # noqa: F401

CHROMEDRIVER = shutil.which("chromedriver")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One WebDriver session of headless Chromium at a phone's width."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        if not wait_until(self._ready, 20):
            self.proc.kill()
            pytest.skip("chromedriver did not start")
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=420,1000"]}}}}
        try:
            self.session = self.call("POST", "/session", caps)["sessionId"]
        except Exception as e:  # noqa: BLE001 - any failure to start is a skip
            self.proc.kill()
            pytest.skip(f"headless Chromium did not start: {e}")

    def _ready(self):
        try:
            return self.call("GET", "/status")["ready"]
        except OSError:
            return False

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def open(self, url):
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script):
        return self.call("POST", f"/session/{self.session}/execute/sync",
                         {"script": script, "args": []})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot")))

    def close(self):
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def browser():
    if CHROMEDRIVER is None or not shutil.which("chromium"):
        pytest.skip("chromium and chromedriver are not installed (make test-deps installs "
                    "Debian's chromium and chromium-driver)")
    b = Browser()
    yield b
    b.close()


def test_the_page_shows_the_hub_and_updates_itself(grid, browser, tmp_path):
    grid.start_hub("--http", "127.0.0.1:0")
    assert wait_until(lambda: re.search(r"http on (\S+)", open(grid.hub.logpath).read()))
    http = re.search(r"http on (\S+)", open(grid.hub.logpath).read()).group(1)
    grid.start_worker(slots=2, name="alpha")
    grid.start_worker(slots=1, name="beta")
    r = grid.run("gridmap", "--hub", grid.addr, "true", input=b"1\n2\n3\n")
    assert r.returncode == 0, r.stderr
    r = grid.run("gridmap", "--hub", grid.addr, "echo broken {} >&2; exit 3",
                 input=b"x\n")
    assert r.returncode == 1, r.stderr
    browser.open(f"http://{http}/")

    def shown(id_):
        return browser.js(f"return document.getElementById('{id_}').textContent")
    assert wait_until(lambda: shown("n-workers") == "2", 30), shown("n-workers")
    names = browser.js("return [...document.querySelectorAll('#workers tbody tr')]"
                       ".map(tr => tr.cells[0].textContent).sort()")
    assert names == ["alpha", "beta"]
    assert shown("n-busy") == "0 / 3" and shown("n-done") == "4"
    assert wait_until(lambda: "broken x" in shown("failures"), 30)
    assert browser.js("return document.querySelectorAll('svg polyline').length") == 2
    artifacts = os.environ.get("GRID_TEST_ARTIFACTS", str(tmp_path))
    os.makedirs(artifacts, exist_ok=True)
    shot = os.path.join(artifacts, "status-page.png")
    browser.screenshot(shot)
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    print(f"status page screenshot: {shot}")
    # A job finishes and a worker joins while the page is open: it shows
    # both without a reload, the worker from the event feed.
    browser.js("window.notReloaded = true")
    r = grid.run("gridmap", "--hub", grid.addr, "true", input=b"4\n")
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: shown("n-done") == "5", 30), shown("n-done")
    grid.start_worker(slots=1, name="gamma")
    assert wait_until(lambda: "worker.joined name=gamma" in shown("events"), 30)
    assert wait_until(lambda: shown("n-workers") == "3", 30)
    assert browser.js("return window.notReloaded === true")
