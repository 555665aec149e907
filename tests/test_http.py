"""gridd hub --http: /metrics in the Prometheus text format (parsed by
prometheus_client's own parser) with values from a run of known jobs,
/status.json as gridd ctl status --json has it, and a hub that one bad
HTTP peer cannot hurt."""

import json
import re
import socket
import urllib.error
import urllib.request

import pytest

from hubfixtures import grid, wait_until  # noqa: F401

parser = pytest.importorskip("prometheus_client.parser",
                             reason="prometheus_client is installed by make test-deps")


def http_address(grid):
    assert wait_until(lambda: re.search(r"http on (\S+)", open(grid.hub.logpath).read()))
    return re.search(r"http on (\S+)", open(grid.hub.logpath).read()).group(1)


def get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition text."""
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_metrics_count_the_jobs_of_a_run(grid):
    grid.start_hub("--http", "127.0.0.1:0")
    addr = http_address(grid)
    grid.start_worker("--tag", "site=lab", slots=2, name="m1")
    r = grid.run("gridmap", "--hub", grid.addr, "sh -c 'echo oops {} >&2; exit {}'",
                 input=b"0\n0\n0\n1\n2\n0\n")
    assert r.returncode == 2, r.stderr
    failures = json.loads(get(addr, "/failures.json")[2])
    assert sorted((f["exit"], f["outcome"], f["stderr"]) for f in failures) == \
        [(1, "failed", "oops 1\n"), (2, "failed", "oops 2\n")]
    status, ctype, body = get(addr, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    m = samples(body.decode())
    assert m[("gridd_jobs_total", frozenset({("outcome", "ok")}))] == 4
    assert m[("gridd_jobs_total", frozenset({("outcome", "failed")}))] == 2
    assert m[("gridd_workers", frozenset({("how", "in")}))] == 1
    assert m[("gridd_workers_tagged", frozenset({("tag", "site=lab")}))] == 1
    assert m[("gridd_connections", frozenset({("role", "worker")}))] == 1
    assert m[("gridd_sent_bytes_total", frozenset())] > 0
    assert m[("gridd_journal_bytes", frozenset())] > 0
    assert m[("gridd_received_bytes_total", frozenset())] > 0
    assert m[("gridd_slots", frozenset())] == 2
    assert m[("gridd_slots_busy", frozenset())] == 0
    assert m[("process_resident_memory_bytes", frozenset())] > 1 << 20
    assert m[("process_cpu_seconds_total", frozenset())] > 0


def test_status_json_is_what_ctl_status_says(grid):
    grid.start_hub("--http", "127.0.0.1:0")
    addr = http_address(grid)
    grid.start_worker(slots=3)
    _, ctype, body = get(addr, "/status.json")
    assert ctype == "application/json"
    web = json.loads(body)
    ctl = json.loads(grid.run("gridd", "ctl", "status", "--json").stdout)
    for key in ("workers", "slots", "running", "queued", "done", "state", "journal_state"):
        assert web[key] == ctl[key], key
    assert web["slots"] == 3


def test_bad_requests_get_an_answer_and_cost_the_hub_nothing(grid):
    grid.start_hub("--http", "127.0.0.1:0")
    addr = http_address(grid)
    host, port = addr.rsplit(":", 1)
    with pytest.raises(urllib.error.HTTPError) as e:
        get(addr, "/nothing")
    assert e.value.code == 404
    answers = []
    for request in (b"BREW /metrics HTTP/1.1\r\n\r\n", b"GET metrics\r\n\r\n",
                    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"\xff\x00\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(request)
            answers.append(s.recv(100).split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 405 Method Not Allowed", b"HTTP/1.1 400 Bad Request",
                       b"HTTP/1.1 431 Request Header Fields Too Large",
                       b"HTTP/1.1 400 Bad Request"]
    # One that sends half a request and goes: the hub still serves.
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET /metr")
    s.close()
    assert get(addr, "/metrics")[0] == 200
    assert grid.run("gridd", "ctl", "status").returncode == 0


def test_a_public_http_address_needs_a_token_or_insecure(grid):
    r = grid.run("gridd", "hub", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0",
                 "--state", str(grid.tmp) + "/s")
    assert r.returncode == 64
    assert b"--http-token" in r.stderr and b"--insecure" in r.stderr


def test_a_token_guards_every_path(grid, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret+token/=\n")
    grid.start_hub("--http", "127.0.0.1:0", "--http-token", str(token))
    addr = http_address(grid)
    for path in ("/metrics", "/", "/events", "/status.json"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(addr, path)
        assert e.value.code == 401, path
    with pytest.raises(urllib.error.HTTPError) as e:
        get(addr, "/metrics?token=wrong")
    assert e.value.code == 401
    assert get(addr, "/metrics?token=s3cret%2Btoken%2F%3D")[0] == 200
    req = urllib.request.Request(f"http://{addr}/status.json",
                                 headers={"Authorization": "Bearer s3cret+token/="})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["state"] == "up"


def test_events_are_served_as_server_sent_events(grid):
    grid.start_hub("--http", "127.0.0.1:0")
    addr = http_address(grid)
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=20)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    assert got.startswith(b"HTTP/1.1 200 OK") and b"text/event-stream" in got
    grid.start_worker(slots=1, name="sse1")
    r = grid.run("gridmap", "--hub", grid.addr, "true", input=b"1\n")
    assert r.returncode == 0, r.stderr
    while b"job.done" not in got:
        data = s.recv(4096)
        assert data, got
        got += data
    s.close()
    events = [line[6:].split(b" ")[1] for line in got.split(b"\n")
              if line.startswith(b"data: ")]
    assert b"worker.joined" in events and b"client.connected" in events
    assert events.index(b"job.queued") < events.index(b"job.started") < events.index(b"job.done")
    # kinds=: only those kinds; a bad query is refused.
    s = socket.create_connection((host, int(port)), timeout=20)
    s.sendall(b"GET /events?kinds=worker,client HTTP/1.1\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    r = grid.run("gridmap", "--hub", grid.addr, "true", input=b"2\n")
    grid.start_worker(slots=1, name="sse2")
    while b"name=sse2" not in got:
        data = s.recv(4096)
        assert data, got
        got += data
    s.close()
    kinds = {line[6:].split(b" ")[1] for line in got.split(b"\n") if line.startswith(b"data: ")}
    assert kinds <= {b"worker.joined", b"worker.left", b"client.connected", b"client.left"}
    with pytest.raises(urllib.error.HTTPError) as e:
        get(addr, "/events?kinds=Job;drop")
    assert e.value.code == 400
    rows = json.loads(get(addr, "/workers.json")[2])
    assert [(w["name"], w["slots"]) for w in rows] == [("sse1", 1), ("sse2", 1)]
    assert {x["name"] for x in json.loads(get(addr, "/streams.json")[2])} == {"_events"}
