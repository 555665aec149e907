"""gridmap: map a command over input lines or blocks of stdin, in parallel.

    gridmap [options] COMMAND [ARGS...] [::: ARGS... | :::: FILES...]

With no --hub this runs on an embedded local pool, one slot per core.
"""

import os
import re
import sys

from gridtools.cli import common
from gridtools.cli import gridmap_args as gmopts
from gridtools.local import executor as localexec
from gridtools.local import jobs, output, pool, template, transfer, writer
from gridtools.local import sources as gminputs
from gridtools.cli.gridmap_args import parse_halt, parse_jobs, parse_options  # noqa: F401 (parse_halt: tests)
from gridtools.proto import errors

HUB_SLOTS_UNKNOWN = 64      # -j 100% with --hub when no worker has joined


def dry_run(source, opts, slots, out_fd=1):
    n = 0
    while True:
        job = source.next()
        if job is jobs.WAIT:
            source.on_readable()
            continue
        if job is None:
            return 0
        job.slot = n % slots + 1
        n += 1
        pool.prepare(job, opts)
        # --tag and --tagstring prefix the line, as GNU parallel does.
        writer.write_all(out_fd, job.tag + os.fsencode(job.command) + b"\n")


def show_limits(opts):
    """--show-limits: GNU parallel's report, with gridmap's own limits."""
    usable = min(opts.max_chars or jobs.MAX_LINE, jobs.MAX_LINE)
    sys.stdout.write(
        f"Maximal size of command: {jobs.MAX_LINE}\n"
        f"Maximal usable size of command: {usable}\n\n"
        "Execution will continue now, and it will try to read its input\n"
        "and run commands; if this is not what you wanted to happen, please\n"
        "press CTRL-D or CTRL-C\n")
    sys.stdout.flush()


def hub_address(opts, env):
    """The hub to run on, or None for the local pool: --local, or an empty
    --hub, is how a shell that exports GRID_HUB still gets the local pool."""
    if opts.local:
        return None
    hub = opts.hub if opts.hub is not None else env.get("GRID_HUB")
    return hub or None


def read_joblog(path, failed_too, commands):
    """--resume, --resume-failed, --retry-failed: what a joblog says.

    Returns (the seqs not to run again, the commands to run again by seq
    for --retry-failed, whether to append to it).  Jobs it lists count as
    done, or with failed_too only those that exited 0 with no signal, as
    GNU parallel reads it.  A joblog that is not there is an empty one.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return set(), [], False
    except OSError as e:
        raise errors.NoInputError(f"cannot read joblog {path}: {e.strerror}")
    done, cmds = set(), {}
    for n, line in enumerate(lines[1:], 2):
        if not line:
            continue
        f = line.split("\t", 8)
        if len(f) < 9 or not re.fullmatch(r"[0-9]{1,18}", f[0]) or \
                not all(re.fullmatch(r"-?[0-9.]+", x.strip()) for x in f[2:8]):
            raise errors.DataError(f"joblog {path} line {n} is not a joblog line: {line!r}")
        seq = int(f[0])
        ok = f[6].strip() == "0" and f[7].strip() == "0"
        if ok or not failed_too:
            done.add(seq)
        cmds[seq] = "true" if ok else f[8]
    todo = []
    if commands and cmds:
        for seq in range(1, max(cmds) + 1):
            if seq not in cmds:
                done.add(seq)           # no command to run again
            todo.append(cmds.get(seq, "true"))
    return done, todo, True


def env_prefix(names, env):
    """--env NAME... through a hub: the argv prefix (env NAME=value ...)
    that gives the jobs these variables wherever they run.  A name may be
    a glob, as in GNU parallel."""
    import fnmatch
    pairs = []
    for pattern in names:
        for key in sorted(env):
            if fnmatch.fnmatchcase(key, pattern) or \
                    fnmatch.fnmatchcase(key, f"BASH_FUNC_{pattern}%%"):
                pairs.append(f"{key}={env[key]}")
    return ["env", *pairs] if pairs else None


def ssh_executor(opts, env):
    """-S and --sshloginfile: (slots, executor) for the sshlogins given,
    or None without any.  Every login ":" is the local pool (executor
    None); otherwise the embedded hub, one ssh channel per login."""
    from gridtools.local import sshlogin
    if not opts.sshlogin and not opts.sshloginfile:
        return None
    if opts.hub is not None or opts.local:
        raise errors.UsageError("-S/--sshloginfile do not go with --hub or --local")
    paths = [sshlogin.file_path(name, env) for name in opts.sshloginfile]
    stamp = None
    if paths:
        from gridtools.hub import embedded
        stamp = embedded.stamps(paths)      # before reading: a change meanwhile is seen
    logins = sshlogin.gather(opts.sshlogin, opts.sshloginfile, env, _read_lines)
    if not logins:
        raise errors.UsageError("-S/--sshloginfile: no sshlogin given")
    pinned = opts.onall or opts.nonall
    if pinned and (opts.pipe or opts.round_robin):
        raise errors.UsageError("--onall/--nonall: not with --pipe or --round-robin")
    if pinned:
        # GNU's: each host once, in its order; one job at a time on each.
        from gridtools.local import onall
        logins, paths = onall.hosts(logins), []
        per = [1] * len(logins)
    else:
        per = [sshlogin.slots(login, opts.jobs, parse_jobs) for login in logins]
    if opts.dry_run or all(login.host == sshlogin.LOCAL for login in logins) and not pinned:
        transfer.plan_for(opts, env, False, None)
        return sum(n or parse_jobs(opts.jobs) for n in per), None
    plan = transfer.plan_for(opts, env, True, None)
    if plan is not None and any(login.host == sshlogin.LOCAL for login in logins):
        raise errors.UsageError(f"{transfer.given(opts)[0]}: the sshlogin ':' beside remote "
                                f"hosts is not supported with files that travel")
    from gridtools.hub import embedded
    from gridtools.worker import bootstrap
    ssh = opts.ssh or env.get("PARALLEL_SSH") or bootstrap.SSH
    executor = embedded.start(embedded.specs(logins, ssh, per, pinned),
                              lambda text: sys.stderr.write(f"gridmap: {text}\n"))
    if plan is not None:
        executor.carry(plan)
    if paths:
        def relist():
            found = sshlogin.gather(opts.sshlogin, opts.sshloginfile, env, _read_lines)
            return [(x, sshlogin.slots(x, opts.jobs, parse_jobs)) for x in found]
        executor.follow(logins, paths, stamp, relist, ssh)
    if pinned:
        executor.pinned = logins
    return executor.capacity, executor


def onall_source(opts, source, executor):
    """--onall/--nonall: every input (--nonall: one with no arguments) on
    every host of executor.pinned, each job pinned to its host."""
    from gridtools.hub import server
    from gridtools.local import onall
    inputs = [()] if opts.nonall else [job.args for job in jobs.ListSource(source).jobs]
    pinned = onall.Source(inputs, len(executor.pinned))
    executor.pin(pinned.host_of, [onall.name(x) for x in executor.pinned], opts.tag)
    # All sent at once (within the hub's bound): each host takes its own in turn.
    executor.capacity = max(1, min(pinned.total, server.MAX_JOBS // 2))
    return pinned


def _read_lines(path):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().split("\n")
    except OSError as e:
        raise errors.NoInputError(f"cannot read sshloginfile {path}: {e.strerror}")


def _main(argv):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    if opts.semaphore:
        return run_semaphore(opts, os.environ)
    slots = parse_jobs(opts.jobs)
    budget = gmopts.fd_budget()
    if slots > budget:
        if slots != 1 << 20:        # -j 0 asks for as many as can run
            # GNU parallel's warning, which scripts look for.
            sys.stderr.write(
                f"gridmap: warning: Only enough file handles to run {budget} jobs in "
                f"parallel.\ngridmap: warning: Try increasing 'ulimit -n' "
                f"(try: ulimit -n `ulimit -Hn`)\n")
        slots = budget
    executor = None
    remote = ssh_executor(opts, os.environ)
    hub = hub_address(opts, os.environ) if remote is None else None
    if remote is not None:
        slots, executor = remote
    if remote is None:
        transfer.plan_for(opts, os.environ, False, hub)
    if hub and not opts.dry_run:
        from gridtools.hub import client as hubclient
        executor = hubclient.HubExecutor(hub, os.environ, opts.tags)
        # -j counts the hub's slots; a hub with no worker yet still gets
        # enough jobs in flight for the workers that will join it.
        slots = executor.capacity = parse_jobs(
            opts.jobs, cores=executor.hub_slots or HUB_SLOTS_UNKNOWN)

    done_seqs, log_append = set(), False
    joblog_path = opts.joblog[1:] if opts.joblog and opts.joblog.startswith("+") \
        else opts.joblog
    if opts.joblog and opts.joblog.startswith("+"):
        log_append = True       # GNU parallel: --joblog +FILE appends
    if opts.resume or opts.resume_failed or opts.retry_failed:
        done_seqs, commands, log_append = read_joblog(
            joblog_path, failed_too=not opts.resume, commands=opts.retry_failed)
        if opts.retry_failed:
            # GNU parallel runs the joblog's failed commands, numbered as
            # they were, whatever command and inputs are given.
            opts.command, opts.sources, opts.arg_file = [], [], []
            opts.retry_commands = commands
    sources = None
    if (not opts.pipe or opts.tee) and not opts.nonall:
        if opts.retry_failed:
            sources = [("args", opts.retry_commands, False)]
        else:
            sources = gminputs.read_sources(opts)
    tmpl = None
    if opts.command:
        # -N, like -X, repeats the word around {} for each input, as GNU
        # parallel 20221122 does (its manual says -n too, and not with -m;
        # it does neither).
        context = opts.xargs or (opts.max_replace_args is not None and not opts.pipe)
        words = opts.command
        if opts.quote:
            import shlex
            words = [shlex.quote(w) for w in words]
        tmpl = template.Template(" ".join(words), context=context, tags=opts.tags_rpl,
                                 tmpfile="cat" if opts.cat else "fifo" if opts.fifo else None)
        tmpl.slots = slots
        if tmpl.perl:
            # One perl for the run, only when a Perl expression is there.
            from gridtools.local import perl
            tmpl.evaluator = perl.Coprocess(
                tmpl.perl, "{= =}" if opts.tags_rpl.left in tmpl.text else "--rpl")
            import atexit
            atexit.register(tmpl.evaluator.close)
    source = gminputs.make_source(opts, slots, sources, tmpl) if not opts.nonall else None
    pinned = getattr(executor, "pinned", None)      # --onall, --nonall
    if pinned is not None:
        source = onall_source(opts, source, executor)
        slots = executor.capacity
    elif opts.nonall:
        from gridtools.local import onall
        source = onall.Source([()], 1)      # no -S: this host, as GNU's
    if done_seqs:
        source = jobs.SkipSource(source, done_seqs)
    if (opts.halt_rule.percent or tmpl is not None and tmpl.needs_total or opts.eta) \
            and not opts.round_robin:
        # Both count all the jobs: the input is read ahead.
        source = jobs.ListSource(source)
        opts.halt_rule.total = source.total
        if tmpl is not None:
            tmpl.total = source.total
    shell = localexec.Shell(os.environ)
    if os.environ.get("PARALLEL_SHELL"):
        shell.path          # a shell that is not there is a usage error now
    popts = pool.Options(template=tmpl, shell=shell, retries=opts.retries, timeout=opts.timeout,
                         halt=opts.halt_rule, line_buffer=opts.line_buffer and not opts.json,
                         tag=opts.tag, tagstring=opts.tagstring,
                         round_robin=opts.round_robin, bar=opts.bar, slots=slots,
                         verbose=opts.verbose, max_chars=opts.max_chars,
                         nice=opts.nice, delay=opts.delay, tmpdir=opts.tmpdir,
                         ungroup=opts.ungroup and not opts.json,
                         env_prefix=env_prefix(opts.env, os.environ)
                         if hub or executor is not None else None,
                         termseq=opts.termseq_list)
    popts.progress, popts.gate = watchers(opts, source, slots, hub or executor is not None)
    if opts.limit is not None:
        from gridtools.local import limit
        popts.limit = limit.parse(opts.limit)
        if opts.round_robin:
            raise errors.UsageError("--limit: not with --round-robin")
    if opts.compress or opts.compress_program or opts.decompress_program:
        from gridtools.local import compress
        popts.compress = compress.choose(opts.compress_program, opts.decompress_program)
        popts.compress.tmpdir = opts.tmpdir
    if opts.show_limits:
        show_limits(opts)
    if opts.dry_run:
        return dry_run(source, popts, slots)

    if opts.tmpdir is not None and not (os.path.isdir(opts.tmpdir)
                                        and os.access(opts.tmpdir, os.W_OK | os.X_OK)):
        raise errors.GridError(f"--tmpdir: cannot write in {opts.tmpdir}", errors.CANTCREAT)
    joblog = None
    if opts.joblog == "-":
        joblog = sys.stdout
    elif opts.joblog:
        try:
            joblog = open(joblog_path, "a" if log_append else "w", encoding="utf-8",
                          errors="surrogateescape")
        except OSError as e:
            raise errors.GridError(f"cannot write joblog {joblog_path}: {e.strerror}",
                                   errors.CANTCREAT)
    results = None
    if opts.results is not None or opts.files:
        from gridtools.local import results as tables
        if tables.kind(opts.results):
            results = tables.Table(opts.results, opts.headers)
        else:
            results = output.Results(opts.results, opts.headers, opts.files,
                                     opts.tmpdir or os.environ.get("TMPDIR") or "/tmp")
    sink = output.Sink(keep_order=opts.keep_order or opts.onall or opts.nonall, as_json=opts.json, joblog=joblog,
                       show_command=opts.show_command, tmpdir=opts.tmpdir,
                       joblog_header=not (log_append and joblog.tell()),
                       results=results, skip=done_seqs, packer=popts.compress)
    try:
        p = pool.Pool(source, sink, popts, loop=getattr(executor, "loop", None),
                      executor=executor)
        if executor is not None:
            executor.attach(p)
        else:
            p.executor.workdir = transfer.local_workdir(opts, os.environ)
        if pinned is None:
            return p.run()
        from gridtools.local import onall
        sink = onall.Sink(p.sink, source)
        p.sink = sink
        status = p.run()
        return sink.status() if p.halt_status is None and p.stop_signal is None else status
    finally:
        if joblog is not None and joblog is not sys.stdout:
            joblog.close()


def watchers(opts, source, slots, remote):
    """--progress/--eta and --memfree/--load: (progress.Report or None,
    gate.Gate or None), both None when not asked for."""
    report = gate = None
    if opts.progress:
        from gridtools.local import progress
        report = progress.Report("grid" if remote else "local", eta=opts.eta)
        report.total = getattr(source, "total", 0)
        report.head = progress.header(report.label, os.cpu_count() or 1, slots)
    if opts.memfree_bytes is not None or opts.load is not None:
        from gridtools.local import gate as gates
        load = gates.parse_load(opts.load, os.cpu_count() or 1) \
            if opts.load is not None else None
        gate = gates.Gate(opts.memfree_bytes, load)
    return report, gate


def run_semaphore(opts, env):
    """gridmap --semaphore: GNU parallel's sem."""
    from gridtools.local import semaphore
    slots = parse_jobs(opts.jobs) if opts.jobs_given else 1
    return semaphore.run(" ".join(opts.command), opts.sem_id or semaphore.default_name(),
                         slots, env, fg=opts.fg, wait=opts.wait, timeout=opts.sem_timeout,
                         warn=lambda text: sys.stderr.write(f"gridmap: warning: {text}\n"),
                         shell=localexec.Shell(env))


def main(argv=None):
    return common.run("gridmap", _main, argv)
