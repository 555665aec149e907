"""gridd: the grid daemon.

    gridd hub [--listen ADDR]... [--state DIR] [--client-key FILE] [--worker-key FILE]
              [--ssh [N/]HOST]... [--peer ADDR]... [--peer-file FILE] ...
    gridd worker (--connect HUB | --stdio | --listen ADDR) [--slots N] [--tag K=V]... [--name NAME]
    gridd ctl [--hub HUB] [--json] status|workers|jobs|results|top|cancel ID|drain WORKER|shutdown
    gridd slurm [--hub HUB] [--connect ADDR] [--min N] [--max N] [--slots N] [--idle SECS] ...
"""

import argparse
import os
import signal
import sys

from gridtools.proto import errors
from gridtools.cli import common

EPILOG = """\
exit status: 0 ok (a hub drained after SIGTERM); 64 usage; 65 ctl: no such job or
worker; 69 hub unreachable or cannot listen; 73 state dir or --workdir unusable;
75 state dir in use; 76 protocol error (or TLS on one side only); 77 authentication
or certificate refused; 78 bad key, certificate or peer file.  See gridd(8).
"""


def build_parser():
    p = common.ArgumentParser(prog="gridd", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="The grid daemon: a hub, a worker, or control of a hub.")
    common.add_version(p)
    sub = p.add_subparsers(dest="mode", metavar="hub|worker|ctl|slurm")
    sub.required = True

    h = sub.add_parser("hub", help="coordinate: accept clients and workers",
                       description="Run a hub in the foreground; logs go to stderr.")
    h.add_argument("--listen", metavar="ADDR", action="append", default=[],
                   help=f"host:port, :port or unix:/path, or systemd[:NAME] for the sockets "
                        f"systemd passed (repeatable; default {common.DEFAULT_HUB})")
    h.add_argument("--state", metavar="DIR",
                   help="journal directory (default $XDG_STATE_HOME/gridd)")
    h.add_argument("--client-key", metavar="FILE",
                   help="shared key clients must prove (else $GRID_CLIENT_KEY[_FILE])")
    h.add_argument("--worker-key", metavar="FILE",
                   help="shared key workers must prove (else $GRID_WORKER_KEY[_FILE])")
    h.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM)")
    h.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    h.add_argument("--tls-ca", metavar="FILE",
                   help="require client certificates signed by this CA")
    h.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without keys or TLS")
    h.add_argument("--http", metavar="ADDR",
                   help="serve a status page, /events, /metrics (Prometheus) and JSON on ADDR "
                        "or on systemd:NAME (loopback unless --http-token or --insecure)")
    h.add_argument("--http-token", metavar="FILE",
                   help="every HTTP request must carry the token in FILE (?token= or "
                        "Authorization: Bearer)")
    h.add_argument("--heartbeat", metavar="SECS", type=float, default=10.0,
                   help="ping a busy worker silent this long; dead after 3x (default 10)")
    h.add_argument("--keep", metavar="SECS", type=float, default=7 * 86400.0,
                   help="forget uncollected durable results after SECS (default 7 days)")
    h.add_argument("--max-jobs", metavar="N", type=int, default=10000,
                   help="session jobs one client may have queued or running; past it the "
                        "client is read no further until some end (default 10000)")
    h.add_argument("--stall-timeout", metavar="SECS", type=float, default=60.0,
                   help="a client that reads nothing this long while its jobs hold slots "
                        "has its jobs cancelled (default 60)")
    h.add_argument("--ssh", metavar="[N/]HOST", action="append", default=[],
                   help="keep a worker running on HOST over ssh, shipping it (N slots; "
                        "repeatable)")
    h.add_argument("--ssh-command", metavar="CMD", default=None,
                   help="the ssh command for --ssh (GNU parallel's --ssh; default "
                        "'ssh -T -o BatchMode=yes -o ServerAlive...')")
    h.add_argument("--ssh-python", metavar="CMD", default=None,
                   help="python on the --ssh hosts (default python3)")
    h.add_argument("--peer", metavar="ADDR", action="append", default=[],
                   help="dial a worker listening at ADDR (gridd worker --listen), and again "
                        "when it drops (repeatable)")
    h.add_argument("--peer-file", metavar="FILE",
                   help="dial the workers listed in FILE too (one address a line, # "
                        "comments), read again on SIGHUP")
    h.add_argument("--peer-tls-ca", metavar="FILE",
                   help="dial workers with TLS, trusting this CA for their certificates")
    h.add_argument("--peer-tls-cert", metavar="FILE",
                   help="the client certificate (PEM) to show dialled workers")
    h.add_argument("--peer-tls-key", metavar="FILE", help="... and its key (PEM)")
    h.add_argument("--upstream", metavar="HUB",
                   help="be a worker of the hub at HUB, offering this hub's workers' slots")
    h.add_argument("--upstream-key", metavar="FILE",
                   help="the worker key of the hub above (else $GRID_KEY or $GRID_KEY_FILE)")
    h.add_argument("--upstream-tls-ca", metavar="FILE",
                   help="connect to the hub above with TLS, trusting this CA")
    h.add_argument("--upstream-tls-cert", metavar="FILE",
                   help="the client certificate (PEM) to show the hub above")
    h.add_argument("--upstream-tls-key", metavar="FILE", help="... and its key (PEM)")

    w = sub.add_parser("worker", help="run jobs for a hub",
                       description="Run jobs a hub sends; logs go to stderr.")
    from gridtools.worker import serve as worker
    worker.add_options(w)

    c = sub.add_parser("ctl", help="inspect and steer a hub",
                       description="Ask a hub about its state, or tell it what to do.")
    c.add_argument("--hub", metavar="HUB", help=f"hub address (default $GRID_HUB or {common.DEFAULT_HUB})")
    c.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    c.add_argument("command", choices=["status", "workers", "jobs", "results", "top", "cancel",
                                       "drain", "shutdown"])
    c.add_argument("arg", nargs="?", metavar="ID|WORKER")
    add_slurm_options(sub)
    return p


def add_slurm_options(sub):
    s = sub.add_parser("slurm", help="keep workers running as Slurm array tasks, sized to a "
                                     "hub's queue",
                       description="Watch a hub's queue and submit gridd workers to Slurm as "
                                   "job arrays; drain and cancel idle ones.  Logs go to stderr.")
    s.add_argument("--hub", metavar="HUB",
                   help=f"the hub to watch (default $GRID_HUB or {common.DEFAULT_HUB})")
    s.add_argument("--connect", metavar="ADDR",
                   help="the hub's address as the nodes reach it (default: --hub)")
    s.add_argument("--min", metavar="N", type=int, default=0,
                   help="workers kept even when idle (default 0)")
    s.add_argument("--max", metavar="N", type=int, default=10,
                   help="workers at most, pending ones included (default 10)")
    s.add_argument("--slots", metavar="N", type=int, default=1,
                   help="jobs per worker, and CPUs per array task (default 1)")
    s.add_argument("--idle", metavar="SECS", type=float, default=60.0,
                   help="drain a worker idle this long (default 60)")
    s.add_argument("--interval", metavar="SECS", type=float, default=5.0,
                   help="look at the hub and at squeue this often (default 5)")
    s.add_argument("--worker-key", metavar="FILE",
                   help="the worker key's file, at the same path on the nodes (else "
                        "$GRID_WORKER_KEY_FILE, or $GRID_WORKER_KEY exported by sbatch)")
    s.add_argument("--job-name", metavar="NAME", default="gridd-worker",
                   help="Slurm job name; the tasks of this user with it are this factory's "
                        "(default gridd-worker)")
    s.add_argument("--partition", metavar="NAME", help="sbatch --partition")
    s.add_argument("--time", metavar="LIMIT", help="sbatch --time")
    s.add_argument("--output", metavar="PATTERN",
                   help="sbatch --output for the workers' logs (default: sbatch's)")
    s.add_argument("--sbatch-arg", metavar="ARG", action="append", default=[],
                   help="one more sbatch argument, e.g. --sbatch-arg=--account=lab "
                        "(repeatable)")
    s.add_argument("--tag", metavar="K=V", action="append", default=[],
                   help="a tag the workers advertise (repeatable)")
    s.add_argument("--worker-command", metavar="CMD",
                   help="how a node starts gridd, split as a shell would (default: this "
                        "python and this gridd)")


def parse_options(argv):
    opts = build_parser().parse_args(argv)
    if opts.mode == "ctl":
        if opts.command in ("cancel", "drain") and not opts.arg:
            raise errors.UsageError(f"ctl {opts.command} needs "
                                    f"{'a job id' if opts.command == 'cancel' else 'a worker name'}")
        if opts.command not in ("cancel", "drain") and opts.arg:
            raise errors.UsageError(f"ctl {opts.command} takes no argument, got {opts.arg!r}")
    return opts



def _main(argv):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    return {"hub": run_hub, "worker": run_worker, "ctl": run_ctl,
            "slurm": run_slurm}[opts.mode](opts, env)


# -- hub -----------------------------------------------------------------------

def run_hub(opts, env, loop=None):
    """Run a hub until it drains; loop: an event loop with asyncio's method
    names to run it on instead of gridtools.io.loop (bench/bench_loop.py)."""
    from gridtools.hub import server as hub
    from gridtools.io import net
    from gridtools.proto import keys
    # Handlers first: a SIGHUP during start-up must not kill us (the
    # wakeup fd installed by the loop does the real work).
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *a: None)
    listen, http_sock = hub_listeners(opts, env)
    client_key = keys.key_option(opts.client_key, env, "GRID_CLIENT_KEY")
    worker_key = keys.key_option(opts.worker_key, env, "GRID_WORKER_KEY")
    tls = None
    if opts.tls_cert or opts.tls_key or opts.tls_ca:
        if not (opts.tls_cert and opts.tls_key):
            raise errors.UsageError("TLS needs both --tls-cert and --tls-key")
        tls = keys.server_tls(opts.tls_cert, opts.tls_key, opts.tls_ca)
    for a in listen:
        a = net.socket_address(a) if hasattr(a, "accept") else a
        if not a.is_loopback and not opts.insecure and tls is None \
                and not (client_key and worker_key):
            raise errors.UsageError(
                f"refusing to listen on {a} without keys or TLS "
                f"(give --client-key and --worker-key, --tls-cert, or --insecure)")
    for name, value in (("--heartbeat", opts.heartbeat), ("--stall-timeout", opts.stall_timeout),
                        ("--keep", opts.keep)):
        if not 0 < value < float("inf"):
            raise errors.UsageError(f"{name}: need a positive number of seconds, got {value}")
    if opts.max_jobs < 1:
        raise errors.UsageError(f"--max-jobs: need 1 or more, got {opts.max_jobs}")
    from gridtools.hub import peers
    reach = [peers.parse_ssh(h, opts.ssh_command or peers.bootstrap.SSH,
                             opts.ssh_python or peers.bootstrap.PYTHON) for h in opts.ssh]
    reach += [peers.parse_peer(a) for a in opts.peer]
    file_peers = peers.read_peer_file(opts.peer_file) if opts.peer_file else []
    http = http_token = None
    if opts.http_token is not None:
        http_token = keys.read_key(opts.http_token)
    if opts.http is not None:
        from gridtools.hub.http import check_address
        if http_sock is not None:
            check_address(net.socket_address(http_sock), opts.insecure, http_token)
            http = http_sock
        else:
            http = check_address(net.parse_address(opts.http), opts.insecure, http_token)
    peer_tls = client_tls_option(opts, "peer")
    upstream_tls = client_tls_option(opts, "upstream")
    upstream_key = None
    if opts.upstream:
        net.parse_address(opts.upstream)            # a usage error now, not at each dial
        upstream_key = keys.key_option(opts.upstream_key, env, "GRID_KEY")
    state = opts.state or hub.default_state_dir(env)
    common.raise_fd_limit()
    h = hub.Hub(hub.Options(listen=listen, state_dir=state, client_key=client_key,
                            worker_key=worker_key, client_key_file=opts.client_key,
                            worker_key_file=opts.worker_key, tls=tls,
                            heartbeat=opts.heartbeat, keep=opts.keep,
                            debug=bool(env.get("GRID_DEBUG")), max_jobs=opts.max_jobs,
                            stall_timeout=opts.stall_timeout, peers=reach,
                            http=http, http_token=http_token, upstream=opts.upstream,
                            upstream_key=upstream_key, peer_file=opts.peer_file,
                            file_peers=file_peers, peer_tls=peer_tls,
                            upstream_tls=upstream_tls), loop=loop)
    import sqlite3
    try:
        h.open()
    except OSError as e:
        raise errors.GridError(f"state dir {state}: {e.strerror or e}", errors.CANTCREAT)
    except sqlite3.Error as e:
        raise errors.GridError(f"journal in {state}: {e}", errors.CANTCREAT)
    return h.serve()


def client_tls_option(opts, what):
    """--WHAT-tls-ca [--WHAT-tls-cert --WHAT-tls-key]: a client TLS context
    for the connections the hub makes, or None (the CA turns TLS on)."""
    from gridtools.proto import keys
    ca, cert, key = (getattr(opts, f"{what}_tls_{k}") for k in ("ca", "cert", "key"))
    if (cert or key) and not ca:
        raise errors.UsageError(f"--{what}-tls-cert and --{what}-tls-key need --{what}-tls-ca")
    if bool(cert) != bool(key):
        raise errors.UsageError(f"--{what}-tls-cert and --{what}-tls-key go together")
    return keys.client_tls(ca, cert, key) if ca else None


def hub_listeners(opts, env):
    """--listen's addresses and sockets, and --http's socket when systemd
    passed it: the named (systemd:NAME) are taken first, then a bare
    systemd takes the rest.  Sockets passed and not taken are closed."""
    from gridtools.io import net
    wanted = [a for a in [*opts.listen, opts.http or ""] if net.is_systemd(a)]
    passed = net.listen_fds(env) if wanted else []
    if wanted and not passed:
        raise errors.UsageError(f"{wanted[0]}: no sockets were passed by systemd "
                                f"(LISTEN_FDS, LISTEN_PID)")
    taken = {}
    for a in sorted(wanted, key=lambda a: a == "systemd"):
        if a not in taken:
            taken[a] = net.take_fds(passed, a)
    http = None
    if opts.http is not None and net.is_systemd(opts.http):
        if opts.http == "systemd" or len(taken[opts.http]) != 1 or opts.http in opts.listen:
            raise errors.UsageError(f"--http {opts.http}: need systemd:NAME naming one "
                                    f"socket of its own")
        http = taken[opts.http][0]
    listen = []
    for a in dict.fromkeys(opts.listen or [common.DEFAULT_HUB]):
        listen += taken[a] if net.is_systemd(a) else [net.parse_address(a)]
    for socks in taken.values():
        for s in socks:
            if not net.is_listening(s):
                raise errors.UsageError(f"systemd passed fd {s.fileno()}: not a listening "
                                        f"stream socket (a hub needs Accept=no)")
    for name, s in passed:
        sys.stderr.write(f"gridd hub: systemd socket {name} (fd {s.fileno()}) not used\n")
        s.close()
    return listen, http


# -- worker --------------------------------------------------------------------

def run_worker(opts, env):
    from gridtools.worker import serve as worker
    return worker.run(opts, env)


# -- slurm ---------------------------------------------------------------------

def run_slurm(opts, env):
    import shlex
    from gridtools.hub import client as hubclient
    from gridtools.hub import slurm
    from gridtools.io import net
    from gridtools.proto import keys, wire
    hub = common.hub_address(opts.hub, env)
    connect = opts.connect or hub
    net.parse_address(connect)
    if not 1 <= opts.slots <= wire.MAX_SLOTS:
        raise errors.UsageError(f"--slots: need 1 to {wire.MAX_SLOTS}, got {opts.slots}")
    if not 0 <= opts.min <= opts.max or opts.max < 1:
        raise errors.UsageError(f"--min {opts.min} --max {opts.max}: need 0 <= min <= max, "
                                f"max >= 1")
    for name, value in (("--idle", opts.idle), ("--interval", opts.interval)):
        if not 0 < value < float("inf"):
            raise errors.UsageError(f"{name}: need a positive number of seconds, got {value}")
    tags = wire.parse_pairs(opts.tag, "--tag")
    key_file = opts.worker_key or env.get("GRID_WORKER_KEY_FILE")
    key = None
    if key_file:
        key_file = os.path.abspath(key_file)
        keys.read_key(key_file)                 # unreadable here: exit 78 now
    elif env.get("GRID_WORKER_KEY"):
        key = keys.key_from_env(env, "GRID_WORKER_KEY")
    command = tuple(shlex.split(opts.worker_command)) if opts.worker_command \
        else slurm.default_worker_command()
    o = slurm.Options(hub=hub, connect=connect, min=opts.min, max=opts.max, slots=opts.slots,
                      idle=opts.idle, interval=opts.interval, job_name=opts.job_name,
                      partition=opts.partition, time_limit=opts.time, output=opts.output,
                      sbatch_args=tuple(opts.sbatch_arg),
                      tags=tuple(f"{k}={v}" for k, v in tags.items()),
                      worker_command=command, key_file=key_file, key=key)
    return slurm.run(o, env, lambda: hubclient.Client(hub, env))


# -- ctl -----------------------------------------------------------------------

def run_ctl(opts, env):
    import json
    from gridtools.hub import client as hubclient
    hub = common.hub_address(opts.hub, env)
    client = hubclient.Client(hub, env)
    if opts.command == "top":
        from gridtools.cli import top
        try:
            if opts.json:
                status, workers = top.snapshot(client)
                print(json.dumps({"status": status, "workers": workers}, sort_keys=True))
                return 0
            return top.run(client)
        finally:
            client.close()
    try:
        verb = opts.command.upper()
        reply = client.request(verb, *([opts.arg] if opts.arg else []))
    finally:
        client.close()
    if reply.verb == "INFO":
        data = json.loads(reply.body.decode())
        if opts.json:
            print(json.dumps(data, indent=None, sort_keys=True))
        else:
            print(format_info(opts.command, data))
    elif opts.json:
        print(json.dumps({"ok": True, "command": opts.command, "arg": opts.arg}))
    return 0


def format_info(what, data):
    if what == "status":
        width = max(len(k) for k in data)
        lines = []
        for k in sorted(data):
            v = data[k]
            v = ", ".join(v) if isinstance(v, list) else ("-" if v is None else v)
            lines.append(f"{k + ':':<{width + 1}} {v}")
        return "\n".join(lines)
    if what == "workers":
        rows = [[w["name"], w["slots"], w["running"], w["state"],
                 ",".join(f"{k}={v}" for k, v in sorted(w["tags"].items())) or "-",
                 w.get("how", "in"), w["peer"]]
                for w in data]
        return table(rows, ["NAME", "SLOTS", "RUNNING", "STATE", "TAGS", "HOW", "PEER"])
    if what == "results":
        return format_results(data)
    rows = [[j["id"], j["kind"], j["state"], j["worker"] or "-", j["tries"],
             j.get("why") or "-", j["command"]]
            for j in data]
    return table(rows, ["ID", "KIND", "STATE", "WORKER", "TRIES", "WHY", "COMMAND"])


def format_results(rows):
    """Durable jobs not collected (RESULTS), one per line: also what
    gridsub --list prints."""
    def result(r):
        if r["state"] != "done":
            return "-"
        if r["outcome"] in (errors.TIMEOUT, errors.CANCELLED, errors.LOST):
            return r["outcome"]
        if r["sig"] is not None:
            return f"signal {r['sig']}"
        return f"exit {r['exit']}" if r["exit"] is not None else r["outcome"] or "-"

    def age(secs):
        for unit, size in (("s", 1), ("m", 60), ("h", 3600), ("d", 86400)):
            if secs < 120 * size or unit == "d":
                return f"{max(secs, 0) / size:.0f}{unit}"

    def shown(text):
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    return table([[r["id"], r["state"], age(r["age"]), r["tries"], result(r), shown(r["command"])]
                  for r in rows], ["ID", "STATE", "AGE", "TRIES", "RESULT", "COMMAND"])


def table(rows, headers):
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    nums = [all(r[i].isascii() and r[i].isdigit() for r in cells[1:]) and rows
            for i in range(len(headers))]
    out = []
    for r in cells:
        out.append("  ".join(c.rjust(w) if n else c.ljust(w)
                             for c, w, n in zip(r, widths, nums)).rstrip())
    return "\n".join(out)


def main(argv=None):
    return common.run("gridd", _main, argv)
