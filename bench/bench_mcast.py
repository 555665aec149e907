#!/usr/bin/env python3
"""gridmcast against parallel TCP, a socat/tee chain, uftp and udpcast.

Topology (network namespaces, root only): a bridge in its own namespace,
a sender (10.77.0.1) and four receivers (10.77.0.11-14) each in their own
namespace on a veth port.  A 512 MiB file (64 MiB with --quick) is
delivered to all four; the time is from the start of the sending side
until the last receiver has its copy (gridmcast: verified; the peers do
not verify, so they are timed to their last byte, and the copies are
compared afterwards, outside the clock).

Scenarios:
  plain   all ports at full speed
  slow    receiver 4's port limited to 200 Mbit/s with tbf; reports the
          fast three's time and the time to all four
  loss    gridmcast with --simulate-loss 0.05 on every receiver

Targets: multicast >= 1.5x faster than uftp to all four; TCP chain within
1.1x of 4 parallel TCP streams; with the slow receiver the fast three
within 1.2x of their unthrottled time; with 5 % loss within 1.3x of the
loss-free time.  Exits 0 whatever the ratios, and when it must skip
(not root, no `ip netns`): it says why.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time

import benchlib
from benchlib import fmt_num, fmt_ratio, median, ratio, table, verdict

BRIDGE = "gmbench-br"
SENDER = ("gmbench-s", "10.77.0.1")
RECEIVERS = [(f"gmbench-r{i}", f"10.77.0.{10 + i}") for i in range(1, 5)]
GRIDMCAST = os.path.join(benchlib.BIN, "gridmcast")
PY = sys.executable
PORT = 7400


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def teardown():
    for ns in [BRIDGE, SENDER[0]] + [r[0] for r in RECEIVERS]:
        sh(f"ip netns del {ns}", check=False)


def setup():
    teardown()
    sh(f"ip netns add {BRIDGE}")
    sh(f"ip -n {BRIDGE} link add br0 type bridge mcast_snooping 0")
    sh(f"ip -n {BRIDGE} link set br0 up")
    for i, (ns, ip) in enumerate([SENDER] + RECEIVERS):
        sh(f"ip netns add {ns}")
        sh(f"ip link add gmp{i} netns {BRIDGE} type veth peer name eth0 netns {ns}")
        sh(f"ip -n {BRIDGE} link set gmp{i} master br0 up")
        sh(f"ip -n {ns} addr add {ip}/24 brd + dev eth0")
        sh(f"ip -n {ns} link set eth0 up")
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip -n {ns} route add 224.0.0.0/4 dev eth0")


def ensure(throttled):
    """Rebuild the topology if a namespace went missing (they are global:
    anything on the machine may delete them between runs)."""
    have = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [BRIDGE, SENDER[0]] + [r[0] for r in RECEIVERS]
    if not all(n in have for n in names):
        print("  (rebuilding the namespace topology)", flush=True)
        setup()
    throttle(throttled)


def throttle(on):
    dev = "gmp4"    # the bridge port facing receiver 4
    sh(f"tc -n {BRIDGE} qdisc del dev {dev} root", check=False)
    if on:
        sh(f"tc -n {BRIDGE} qdisc add dev {dev} root tbf rate 200mbit burst 256kb latency 50ms")


def in_ns(ns, cmd):
    return ["ip", "netns", "exec", ns, "sh", "-c", cmd]


class Run:
    """Start processes, note when each ends, kill leftovers."""

    def __init__(self):
        self.procs = []

    def start(self, ns, cmd, role, quiet=False):
        # Chatty peers write to /dev/null: a full pipe nobody reads would stall them.
        out = subprocess.DEVNULL if quiet else subprocess.PIPE
        p = subprocess.Popen(in_ns(ns, cmd), stdout=out, stderr=out,
                             start_new_session=True)
        p.role = role
        p.ended = None
        self.procs.append(p)
        return p

    def wait(self, which, timeout):
        deadline = time.monotonic() + timeout
        pending = list(which)
        while pending:
            for p in list(pending):
                if p.poll() is not None:
                    p.ended = time.monotonic()
                    pending.remove(p)
            if time.monotonic() > deadline:
                raise benchlib.CommandFailed(" ".join(pending[0].args), None,
                                             pending[0].stderr.read() if pending[0].stderr else b"")
            time.sleep(0.005)

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except OSError:
                    pass
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()


def outputs(tmp):
    return [os.path.join(tmp, f"out{i}") for i in range(1, 5)]


def clear(tmp):
    for o in outputs(tmp):
        if os.path.exists(o):
            os.unlink(o)


def check_copies(tmp, want):
    bad = []
    for o in outputs(tmp):
        if not os.path.exists(o) or _sha(o) != want:
            bad.append(os.path.basename(o))
    return bad


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return h.hexdigest()
            h.update(b)


# --- the tools -----------------------------------------------------------------

def run_gridmcast(src, tmp, extra_send="", extra_recv="", timeout=300):
    r = Run()
    try:
        # Receivers first, waiting for their sender, as the peers' are.
        recvs = [r.start(ns, f"{PY} {GRIDMCAST} recv {SENDER[1]}:{PORT} --wait 60 -o {o} "
                             f"{extra_recv}", "recv")
                 for (ns, _), o in zip(RECEIVERS, outputs(tmp))]
        time.sleep(0.5)
        t0 = time.monotonic()
        s = r.start(SENDER[0], f"{PY} {GRIDMCAST} send --control {SENDER[1]}:{PORT} "
                               f"--min-receivers 4 --json {extra_send} {src}", "sender")
        r.wait(recvs + [s], timeout)
        for p in recvs + [s]:
            if p.returncode != 0:
                raise benchlib.CommandFailed(" ".join(p.args), p.returncode, p.stderr.read())
        import json
        report = json.loads(s.stdout.read())
        ends = [p.ended - t0 for p in recvs]
        return max(ends), ends, report
    finally:
        r.cleanup()


def run_parallel_tcp(src, tmp, timeout=300):
    r = Run()
    try:
        for i in range(4):          # the Run keeps them, and ends them
            r.start(SENDER[0], f"socat -u OPEN:{src} TCP-LISTEN:{PORT + i},reuseaddr", "s")
        time.sleep(0.3)
        t0 = time.monotonic()
        recvs = [r.start(ns, f"socat -u TCP:{SENDER[1]}:{PORT + i} CREATE:{o}", "r")
                 for i, ((ns, _), o) in enumerate(zip(RECEIVERS, outputs(tmp)))]
        r.wait(recvs, timeout)
        ends = [p.ended - t0 for p in recvs]
        return max(ends), ends
    finally:
        r.cleanup()


def run_socat_chain(src, tmp, timeout=300):
    r = Run()
    try:
        outs = outputs(tmp)
        recvs = []
        for i in range(3, -1, -1):
            ns = RECEIVERS[i][0]
            if i == 3:
                cmd = f"socat -u TCP-LISTEN:{PORT},reuseaddr CREATE:{outs[i]}"
            else:
                nxt = RECEIVERS[i + 1][1]
                cmd = (f"socat -u TCP-LISTEN:{PORT},reuseaddr STDOUT | tee {outs[i]} "
                       f"| socat -u STDIN TCP:{nxt}:{PORT},retry=50,interval=0.05")
            recvs.insert(0, r.start(ns, cmd, "r"))
            time.sleep(0.1)
        time.sleep(0.2)
        t0 = time.monotonic()
        r.start(SENDER[0], f"socat -u OPEN:{src} TCP:{RECEIVERS[0][1]}:{PORT}", "s")
        r.wait(recvs, timeout)
        ends = [p.ended - t0 for p in recvs]
        return max(ends), ends
    finally:
        r.cleanup()


def run_udpcast(src, tmp, timeout=300):
    r = Run()
    try:
        recvs = [r.start(ns, f"udp-receiver --interface eth0 --nokbd --file {o}", "r", quiet=True)
                 for (ns, _), o in zip(RECEIVERS, outputs(tmp))]
        time.sleep(0.3)
        t0 = time.monotonic()
        s = r.start(SENDER[0], f"udp-sender --interface eth0 --nokbd --min-receivers 4 "
                               f"--file {src}", "s", quiet=True)
        r.wait(recvs, timeout)
        ends = [p.ended - t0 for p in recvs]
        r.wait([s], 30)
        return max(ends), ends
    finally:
        r.cleanup()


def run_uftp(src, tmp, timeout=300):
    r = Run()
    try:
        dirs = []
        for i, (ns, _) in enumerate(RECEIVERS):
            d = os.path.join(tmp, f"uftp{i + 1}")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            dirs.append(d)
            r.start(ns, f"uftpd -d -D {d} -I eth0", "r", quiet=True)
        time.sleep(0.5)
        t0 = time.monotonic()
        s = r.start(SENDER[0], f"uftp -I eth0 -b 8800 -R -1 -Y none -H "
                               f"{','.join(ip for _, ip in RECEIVERS)} {src}", "s", quiet=True)
        r.wait([s], timeout)
        t = time.monotonic() - t0
        if s.returncode != 0:
            raise benchlib.CommandFailed(" ".join(s.args), s.returncode, b"")
        name = os.path.basename(src)
        for d, o in zip(dirs, outputs(tmp)):
            if os.path.exists(os.path.join(d, name)):
                os.replace(os.path.join(d, name), o)
        return t, [t] * 4
    finally:
        r.cleanup()


def main():
    p = benchlib.parser("gridmcast vs parallel TCP, socat chain, uftp, udpcast in namespaces")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--only", default=None, help="plain, slow or loss")
    opts = p.parse_args()
    runs = opts.runs or (1 if opts.quick else 3)
    mib = 64 if opts.quick else 512
    print(f"bench_mcast: {mib} MiB to 4 receivers through a bridge, {runs} run(s) each, median")
    if os.geteuid() != 0 or not shutil.which("ip"):
        print("bench_mcast: skipped: needs root and `ip netns` to build the topology")
        return 0
    try:
        setup()
    except subprocess.CalledProcessError as e:
        print(f"bench_mcast: skipped: cannot build the namespace topology ({e.cmd})")
        teardown()
        return 0
    tmp = os.path.join(benchlib.OUT, "mcast")
    os.makedirs(tmp, exist_ok=True)
    src = os.path.join(tmp, f"in-{mib}M.bin")
    if not os.path.exists(src) or os.path.getsize(src) != mib << 20:
        with open(src, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    want = _sha(src)
    have = {"socat": benchlib.ensure_apt("socat", "socat"),
            "uftp": benchlib.ensure_apt("uftp", "uftp") and shutil.which("uftpd"),
            "udpcast": benchlib.ensure_apt("udpcast", "udp-sender")}
    failed = False
    results = {}

    def one(label, fn, scenario, times):
        nonlocal failed
        clear(tmp)
        ensure(scenario == "slow")
        try:
            out = fn()
        except benchlib.CommandFailed as e:
            print(f"  {label}: FAILED: {e}", flush=True)
            if label.startswith("gridmcast"):
                failed = True
            return
        bad = check_copies(tmp, want)
        if bad:
            if label.startswith("gridmcast"):
                print(f"  {label}: MISMATCH in {', '.join(bad)}", flush=True)
                failed = True
            else:
                # A peer without end-to-end checks can deliver a bad copy:
                # say so and leave the run out of its median.
                print(f"  {label}: wrong copy in {', '.join(bad)} (peer; run not counted)",
                      flush=True)
            return
        times.setdefault((scenario, label), []).append((out[0], max(out[1][:3])))
        if len(out) > 2:
            rep = out[2]
            print(f"  {label}: {out[0]:.2f} s  (repairs {rep['repairs']}, parity {rep['parity']},"
                  f" evictions {rep['evictions']}; receivers "
                  + ", ".join(f"{x['seconds']:.2f}s {x['via']}" for x in rep["receivers"]) + ")",
                  flush=True)
        else:
            print(f"  {label}: {out[0]:.2f} s", flush=True)

    def measure(scenario, cases):
        # Tools take turns run after run, so a busy moment on the machine
        # falls on all of them rather than on one.
        times = {}
        for _ in range(runs):
            for label, fn in cases:
                one(label, fn, scenario, times)
        for key, ts in times.items():
            results[key] = (median([t[0] for t in ts]), median([t[1] for t in ts]))

    scen = opts.only
    try:
        if scen in (None, "plain"):
            print("plain: all ports at full speed")
            cases = [("gridmcast multicast", lambda: run_gridmcast(src, tmp)),
                     ("gridmcast --tcp chain", lambda: run_gridmcast(src, tmp, "--tcp"))]
            if have["socat"]:
                cases += [("4 parallel TCP (socat)", lambda: run_parallel_tcp(src, tmp)),
                          ("socat/tee chain", lambda: run_socat_chain(src, tmp))]
            if have["uftp"]:
                cases.append(("uftp", lambda: run_uftp(src, tmp)))
            if have["udpcast"]:
                cases.append(("udpcast", lambda: run_udpcast(src, tmp)))
            measure("plain", cases)
        if scen in (None, "loss"):
            print("loss: --simulate-loss 0.05 on every receiver (and the loss-free run beside it)")
            measure("loss", [
                ("gridmcast multicast", lambda: run_gridmcast(src, tmp)),
                ("gridmcast multicast 5% loss",
                 lambda: run_gridmcast(src, tmp, "", "--simulate-loss 0.05")),
                ("gridmcast multicast 5% loss --fec 8",
                 lambda: run_gridmcast(src, tmp, "--fec 8", "--simulate-loss 0.05"))])
        if scen in (None, "slow"):
            print("slow: receiver 4's port limited to 200 Mbit/s")
            cases = [("gridmcast multicast", lambda: run_gridmcast(src, tmp))]
            if have["socat"]:
                cases.append(("4 parallel TCP (socat)", lambda: run_parallel_tcp(src, tmp)))
            if have["udpcast"]:
                cases.append(("udpcast", lambda: run_udpcast(src, tmp, timeout=600)))
            measure("slow", cases)
    finally:
        teardown()
        clear(tmp)

    report(results, have)
    return 1 if failed else 0


def report(results, have):
    def get(s, l, i=0):
        v = results.get((s, l))
        return v[i] if v else None

    rows = []
    for (s, l), (t, f3) in results.items():
        rows.append([s, l, fmt_num(t), fmt_num(f3)])
    print()
    print(table(rows, ["scenario", "tool", "all 4 (s)", "fast 3 (s)"]))
    print()
    mc = get("plain", "gridmcast multicast")
    chain = get("plain", "gridmcast --tcp chain")
    par = get("plain", "4 parallel TCP (socat)")
    uftp = get("plain", "uftp")
    udpc = get("plain", "udpcast")
    slow3 = get("slow", "gridmcast multicast", 1)
    fast3 = get("plain", "gridmcast multicast", 1)
    loss = get("loss", "gridmcast multicast 5% loss")
    lossf = get("loss", "gridmcast multicast 5% loss --fec 8")
    lossbase = get("loss", "gridmcast multicast") or mc
    t = []
    r = ratio(uftp, mc)
    t.append(["multicast speed-up over uftp", fmt_ratio(r), ">= 1.5x", verdict(r, 1.5)])
    r = ratio(udpc, mc)
    t.append(["multicast speed-up over udpcast", fmt_ratio(r), "-", "-"])
    r = ratio(chain, par)
    t.append(["tcp chain / 4 parallel TCP", fmt_ratio(r), "<= 1.1x", verdict(r, 1.1, at_least=False)])
    r = ratio(chain, get("plain", "socat/tee chain"))
    t.append(["tcp chain / socat chain", fmt_ratio(r), "-", "-"])
    r = ratio(slow3, fast3)
    t.append(["slow port: fast three / unthrottled", fmt_ratio(r), "<= 1.2x",
              verdict(r, 1.2, at_least=False)])
    r = ratio(loss, lossbase)
    t.append(["5% loss / loss-free", fmt_ratio(r), "<= 1.3x", verdict(r, 1.3, at_least=False)])
    r = ratio(lossf, lossbase)
    t.append(["5% loss --fec 8 / loss-free", fmt_ratio(r), "-", "-"])
    print(table(t, ["ratio", "value", "target", "verdict"]))
    for name, ok in have.items():
        if not ok:
            print(f"skipped: {name}: not installed and could not be installed")


if __name__ == "__main__":
    sys.exit(main())
