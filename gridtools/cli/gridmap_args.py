"""gridmap's command line, read as GNU parallel reads it: the options
(bundles such as -kv, GNU's aliases and optional values), the input
sources after ::: :::: :::+ ::::+, and the checks of what goes together.
parse_options(argv) gives the options with the sources and the command;
everything a usage error can be is raised here, before anything runs."""

import math
import os
import re

from gridtools.local import blocks, gate, inputs, pool, template, transfer
from gridtools.proto import errors
from gridtools.cli import common

SEPARATORS = (":::", ":::+", "::::", "::::+")

EPILOG = """\
replacement strings: {} {.} {/} {//} {/.} {#} {%} {N} {-N} {N.} {N/} {N//} {N/.}
exit status: 0 all jobs succeeded; 1-100 that many jobs failed; 101 more than
100 failed; with --halt, see gridmap(1); 64 usage; 65 a command line longer
than -s; 66 an input file is missing; 69 the hub is unreachable; 70 internal error;
73 the joblog or a results file cannot be created; 74 I/O error; 75 --st -N ran
out; 76 the hub broke the protocol;
77 the hub refused the key; 129/130/131/143 stopped by SIGHUP/SIGINT/SIGQUIT/
SIGTERM; 141 the reader of stdout went away.  See gridmap(1).
"""


def build_parser():
    p = common.ArgumentParser(
        prog="gridmap", epilog=EPILOG,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
        usage="gridmap [options] [COMMAND [ARGS...]] [::: ARGS... | :::: FILES...]",
        description="Run COMMAND once per input, in parallel, and print each "
                    "job's output as a group.")
    common.add_version(p)
    a = p.add_argument
    a("-j", "--jobs", "-P", "--max-procs", metavar="N",
      help="jobs at once: N, N%% of the cores, +N or -N cores (default 100%%)")
    a("-k", "--keep-order", action="store_true", help="print output in input order")
    a("--line-buffer", "--lb", "--linebuffer", action="store_true",
      help="print output a whole line at a time as it arrives")
    a("--group", action="store_true", help="print each job's output as a group (default)")
    a("--tag", action="store_true", help="prefix each output line with the job's input and a tab")
    a("--tagstring", metavar="STR", help="prefix each output line with STR (expanded) and a tab")
    a("--dry-run", action="store_true", help="print the commands, run nothing")
    a("-q", "--quote", action="store_true",
      help="quote the command's words, so the shell takes them as they are")
    a("--link", "--xapply", action="store_true",
      help="take one input from each source at a time, shorter sources wrapping around")
    a("--arg-sep", metavar="SEP", default=":::", help="SEP instead of ::: (and SEP+)")
    a("--arg-file-sep", metavar="SEP", default="::::",
      help="SEP instead of :::: (and SEP+)")
    a("--nice", metavar="N", type=int, help="run the commands under nice -n N")
    a("--delay", metavar="SECS", type=float, default=0.0,
      help="start jobs at least SECS seconds apart")
    a("--tmpdir", metavar="DIR",
      help="keep output that does not fit in memory in DIR (default $TMPDIR)")
    a("--compress", action="store_true",
      help="compress the output kept in --tmpdir (with the first of pzstd, lbzip2, "
           "... gzip, xz on PATH, as GNU parallel)")
    a("--compress-program", metavar="PRG",
      help="compress it with PRG (implies --compress)")
    a("--decompress-program", metavar="PRG",
      help="decompress it with PRG (default: PRG -dc; implies --compress)")
    a("--shuf", action="store_true",
      help="run the inputs in a random order (all input is read first)")
    a("--will-cite", action="store_true",
      help="accepted and ignored (gridmap prints no citation notice)")
    a("-t", "--verbose", action="store_true",
      help="print each command on stderr as it starts")
    a("-v", dest="show_command", action="store_true",
      help="print each command on stdout before its output")
    a("-I", dest="replace", metavar="STR", help="use STR instead of {} (xargs -I)")
    a("-i", "--replace", dest="replace_i", metavar="STR", nargs="?", const="",
      help="use STR (default {}) instead of {}; takes the next word unless it is "
           "an option (as in GNU parallel)")
    a("-E", dest="eof", metavar="STR", help="an input equal to STR ends its input source")
    a("-e", "--eof", dest="eof_e", metavar="STR", nargs="?", const="",
      help="as -E; takes the next word unless it is an option")
    a("-r", "--no-run-if-empty", action="store_true",
      help="skip inputs that are empty or only blanks")
    a("-L", dest="max_lines", metavar="N", type=int,
      help="N input lines per job, a line ending in a blank continued by the "
           "next (as -N N)")
    a("-l", "--max-lines", dest="max_lines_l", metavar="N", nargs="?", const="1",
      help="as -L N (default 1); takes the next word if it is a number")
    a("-s", "--max-chars", metavar="N", type=int,
      help="command lines shorter than N characters: -X/-m fill them, a longer "
           "one is an error")
    a("-x", "--exit", dest="exit_if_long", action="store_true",
      help="stop if a command line is longer than -s (always so)")
    a("--show-limits", action="store_true",
      help="print the command line limits on stdout, then run")
    a("-a", "--arg-file", metavar="FILE", action="append", default=[],
      help="read inputs from FILE (repeatable; - is stdin)")
    a("-0", "--null", action="store_true", help="inputs end with NUL, not newline")
    a("-d", "--delimiter", metavar="DELIM", help="inputs end with DELIM (\\n, \\t, \\0 allowed)")
    a("-C", "--colsep", metavar="REGEX", help="split each input into columns {1} {2} ...")
    a("--trim", choices=sorted(inputs.TRIMS), help="trim whitespace around inputs: l, r, lr, n")
    a("-n", "--max-args", metavar="N", type=int, help="up to N inputs per job")
    a("-N", "--max-replace-args", metavar="N", type=int,
      help="N inputs per job (with --pipe: N records per block)")
    a("-X", dest="xargs", action="store_true",
      help="as many inputs as fit per job, repeating the word around {}")
    a("-m", dest="many", action="store_true", help="as many inputs as fit per job")
    a("--retries", metavar="N", type=int, default=0,
      help="try a failing job up to N times in all (0 or 1: once)")
    a("--timeout", metavar="SECS", type=float,
      help="kill a job's process group after SECS seconds")
    a("--halt", "--halt-on-error", metavar="WHEN,KIND=N",
      help="stop early: now|soon,fail=N|success=N|done=N, or P%% of all jobs")
    a("--joblog", "--jl", metavar="FILE", help="log each finished job to FILE (- is stdout)")
    a("--json", action="store_true", help="print one JSON record per job instead of its output")
    a("--pipe", "--spreadstdin", action="store_true", help="split stdin into blocks, one per job's stdin")
    a("--block", "--block-size", metavar="SIZE",
      help="--pipe block size (default 1M); --pipepart: -N is N blocks per slot")
    a("--recend", metavar="STR", help="--pipe record end (default \\n)")
    a("--recstart", metavar="STR", help="--pipe record start (default empty)")
    a("--round-robin", action="store_true",
      help="--pipe: start -j jobs and deal the blocks among them")
    a("--pipepart", "--pipe-part", action="store_true",
      help="as --pipe, but cut the files given with -a or :::: by offsets")
    a("--tee", action="store_true",
      help="--pipe: give all of stdin to every job, one job per input")
    a("--header", metavar="REGEXP",
      help="the first input of each source names its columns: {name}; with "
           "--pipe, the matched header starts every block (: is one line, N "
           "is N lines)")
    a("--results", "--res", metavar="NAME",
      help="save each job's stdout, stderr and seq in files under NAME")
    a("--files", action="store_true",
      help="save each job's stdout in a file, print the file's name")
    a("--resume", action="store_true",
      help="with --joblog: skip the jobs the joblog lists")
    a("--resume-failed", action="store_true",
      help="with --joblog: skip the jobs the joblog lists as succeeded")
    a("--retry-failed", action="store_true",
      help="with --joblog: run again the commands the joblog lists as failed")
    a("--env", metavar="NAME", action="append", default=[],
      help="--hub: pass environment variable NAME (a glob) to the jobs")
    a("--termseq", "--term-seq", metavar="SEQ",
      help="how --timeout and stopping end a job: SIG,MS,SIG,MS,... (default "
           "TERM,2000,KILL,0)")
    a("--plus", action="store_true",
      help="more replacement strings: {..} {...} {/..} {/...} {+/} {+.} {+..} "
           "{+...} {##} {0#} {0%%}")
    a("--extensionreplace", "--er", metavar="STR", help="use STR instead of {.}")
    a("--basenamereplace", "--bnr", metavar="STR", help="use STR instead of {/}")
    a("--dirnamereplace", "--dnr", metavar="STR", help="use STR instead of {//}")
    a("--basenameextensionreplace", "--bner", metavar="STR", help="use STR instead of {/.}")
    a("--seqreplace", metavar="STR", help="use STR instead of {#}")
    a("--slotreplace", metavar="STR", help="use STR instead of {%%}")
    a("--rpl", metavar="'TAG PERL'", action="append", default=[],
      help="TAG stands for the value of the Perl expression PERL (as {= PERL =}; "
           "needs perl)")
    a("--parens", metavar="STR", default="{==}",
      help="the first half of STR opens a Perl expression, the rest ends it "
           "(default {==})")
    a("--cat", action="store_true",
      help="--pipe: put each block in a temporary file, {} its name (implies --pipe)")
    a("--fifo", action="store_true",
      help="--pipe: feed each block to a named pipe, {} its name (implies --pipe)")
    a("--regexp", "--regex", action="store_true",
      help="--pipe: --recend and --recstart are regular expressions")
    a("--skip-first-line", "--skipfirstline", action="store_true",
      help="do not use the first line of input (of the first input source)")
    a("-u", "--ungroup", action="store_true",
      help="print output as it arrives, even half lines")
    a("--bar", action="store_true", help="show progress on stderr when it is a terminal")
    a("--progress", action="store_true",
      help="show GNU parallel's progress report on stderr (even if not a terminal)")
    a("--eta", action="store_true",
      help="as --progress, with the time left (all input is read first)")
    a("--csv", action="store_true",
      help="read each input as a CSV record (separator: --colsep, default ,)")
    a("--memfree", metavar="SIZE",
      help="start no job while less memory than SIZE is available; under half "
           "of it, kill the youngest job")
    a("--load", metavar="MAX",
      help="start no job while MAX processes (N, N%%, +N, -N as -j) run or wait for a disk")
    a("--limit", metavar="CMD",
      help="before a job starts, run CMD: exit 0 start it, 1 start none, 2 also kill "
           "the youngest job; or 'mem SIZE', 'load N', 'io N'")
    a("--semaphore", action="store_true",
      help="run COMMAND when a slot of the semaphore is free (-j slots, default "
           "1), in the background unless --fg; no inputs (as GNU sem)")
    a("--id", "--semaphorename", "--semaphore-name", dest="sem_id", metavar="NAME",
      help="the semaphore's name (default: the terminal's); implies --semaphore")
    a("--fg", action="store_true", help="--semaphore: run COMMAND and wait for it")
    a("--bg", action="store_true", help="--semaphore: run COMMAND in the background "
                                        "(the default)")
    a("--wait", action="store_true",
      help="--semaphore: wait until no command holds a slot of the semaphore")
    a("--semaphoretimeout", "--semaphore-timeout", "--st", metavar="SECS",
      help="--semaphore: after SECS waiting run anyway; -SECS: give up (exit 75); "
           "implies --semaphore")
    a("--filter-hosts", action="store_true",
      help="-S: leave out the hosts that cannot be reached (always so)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--hub", metavar="HUB",
                       help="run the jobs on a hub's workers (default $GRID_HUB; "
                            "empty: the local pool)")
    where.add_argument("--local", action="store_true",
                       help="run on the local pool even if $GRID_HUB is set")
    a("--require", metavar="K=V", action="append", default=[],
      help="--hub: only on workers tagged K=V (repeatable)")
    a("-S", "--sshlogin", metavar="[N/]LOGIN", action="append", default=[],
      help="run the jobs on these hosts, one ssh channel each: [N/][SSH ...] [USER@]HOST, "
           "comma-separated, : is this host (repeatable)")
    a("--sshloginfile", "--slf", metavar="FILE", action="append", default=[],
      help="sshlogins from FILE, one a line (.. is ~/.config/gridtools/sshloginfile)")
    a("--ssh", metavar="CMD", help="-S: the ssh command (default $PARALLEL_SSH, or ssh -T ...)")
    a("--onall", action="store_true",
      help="-S: run every job on every host, one at a time on each; output grouped by host")
    a("--nonall", action="store_true",
      help="-S: run COMMAND once on every host, with no input (--onall with no arguments)")
    transfer.add_options(p)
    a("command", nargs="*", metavar="COMMAND", help=__import__("argparse").SUPPRESS)
    return p


def separators(argv):
    """The four source separators: ::: and :::: unless --arg-sep or
    --arg-file-sep, found before the first separator, say otherwise."""
    arg_sep, file_sep = ":::", "::::"
    for i, word in enumerate(argv):
        if word in (arg_sep, arg_sep + "+", file_sep, file_sep + "+"):
            break
        for name in ("--arg-sep", "--arg-file-sep"):
            value = None
            if word == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif word.startswith(name + "="):
                value = word[len(name) + 1:]
            if value:
                if name == "--arg-sep":
                    arg_sep = value
                else:
                    file_sep = value
    return (arg_sep, arg_sep + "+", file_sep, file_sep + "+")


def split_sources(argv, seps=SEPARATORS):
    """Split argv at the first ::: separator: (options+command, sources)."""
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False        # the value of --arg-sep, not a separator
            continue
        if word in ("--arg-sep", "--arg-file-sep"):
            skip = True
            continue
        if word in seps:
            return argv[:i], argv[i:]
        if word == "--":
            # After --, separators still separate (GNU parallel does too).
            continue
    return argv, []


def parse_options(argv):
    seps = separators(argv)
    head, tail = split_sources(argv, seps)
    parser = build_parser()
    # Options stop at the command: everything from the first non-option word
    # belongs to the command (`gridmap sh -c 'echo {}'`).
    opts, rest = _parse_head(parser, head)
    opts.sources = _parse_sources(parser, tail, seps)
    try:
        _check(opts)
    except errors.UsageError as e:
        # Found after argparse, reported the way argparse reports its own.
        raise common.OptionError(str(e), parser.format_usage()) from None
    return opts


def _check_gnu(opts):
    """The options taken from GNU parallel beyond xargs's: --pipepart,
    --tee, --header, --results, --files, --resume*, --env."""
    if opts.pipepart:
        if opts.round_robin or opts.tee:
            raise errors.UsageError("--pipepart does not go with --round-robin or --tee")
        if opts.max_replace_args is not None or opts.max_lines is not None \
                or opts.max_lines_l is not None:
            raise errors.UsageError("--pipepart cannot count records (-N, -L, -l): "
                                    "use --recend and --recstart")
        if not opts.arg_file and not any(k == "file" for k, _, _ in opts.sources):
            raise errors.UsageError("--pipepart needs a file: -a FILE or :::: FILE")
        opts.pipe = True
    if opts.tee and not opts.pipe:
        raise errors.UsageError("--tee goes with --pipe")
    if opts.tee and opts.round_robin:
        raise errors.UsageError("--tee does not go with --round-robin")
    opts.header_rx = None
    if opts.header is not None and opts.pipe:
        h = opts.header
        rx = "(.*\n)" if h == ":" else "(.*\n)" * int(h) if re.fullmatch(r"[0-9]{1,6}", h) \
            else h
        try:
            opts.header_rx = re.compile(os.fsencode(rx))
        except re.error as e:
            raise errors.UsageError(f"--header: bad regular expression {h!r}: {e}")
    if opts.results is not None:
        if not opts.results:
            raise errors.UsageError("--results: need a name")
        from gridtools.local import results
        if results.kind(opts.results) and (opts.files or opts.json):
            raise errors.UsageError(f"--results {opts.results} does not go with "
                                    f"--files or --json")
    _check_mine(opts)
    if (opts.resume or opts.resume_failed or opts.retry_failed) and \
            (not opts.joblog or opts.joblog == "-"):
        name = "--resume" if opts.resume else "--resume-failed" if opts.resume_failed \
            else "--retry-failed"
        raise errors.UsageError(f"{name} needs --joblog FILE")
    opts.termseq_list = parse_termseq(opts.termseq) if opts.termseq is not None else None
    for name in opts.env:
        if not name or "=" in name:
            raise errors.UsageError(f"--env: not a variable name: {name!r}")


def _check_mine(opts):
    """--csv, --eta/--progress, --memfree, --load and --semaphore."""
    opts.csv_sep = None
    if opts.csv:
        sep = inputs.parse_delimiter(opts.colsep) if opts.colsep is not None else b","
        if not sep or opts.pipe:
            raise errors.UsageError("--csv: need a --colsep, and no --pipe")
        opts.csv_sep = os.fsdecode(sep)
    if opts.eta:
        opts.progress = True
    opts.memfree_bytes = None
    if opts.memfree is not None:
        opts.memfree_bytes = gate.parse_memfree(opts.memfree)
    if opts.load is not None:
        gate.parse_load(opts.load, 1)
    if opts.sem_id is not None or opts.semaphoretimeout is not None:
        opts.semaphore = True
    if (opts.fg or opts.bg or opts.wait) and not opts.semaphore:
        raise errors.UsageError("--fg, --bg and --wait go with --semaphore")
    if opts.semaphore:
        if opts.sources or opts.arg_file or opts.pipe:
            raise errors.UsageError("--semaphore takes no inputs (:::, ::::, -a, --pipe)")
        if not opts.command and not opts.wait:
            raise errors.UsageError("--semaphore needs a command (or --wait)")
        if opts.fg and opts.bg:
            raise errors.UsageError("--fg and --bg: choose one")
        from gridtools.local import semaphore
        opts.sem_timeout = 0.0 if opts.semaphoretimeout is None else \
            semaphore.parse_timeout(opts.semaphoretimeout)
        if opts.sem_id is not None:
            semaphore.check_name(opts.sem_id)


def parse_termseq(text):
    """--termseq SIG,MS,SIG,MS...: [(signal, seconds)], as GNU parallel
    reads it (a last signal may come without its wait)."""
    import signal
    words = text.split(",")
    out = []
    for i in range(0, len(words), 2):
        name = words[i].strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None) if re.fullmatch(r"SIG[A-Z0-9]+", name) \
            else None
        if re.fullmatch(r"[0-9]{1,3}", words[i].strip()):
            sig = int(words[i])
        wait = words[i + 1].strip() if i + 1 < len(words) else "0"
        if not sig or not re.fullmatch(r"[0-9]{1,9}", wait):
            raise errors.UsageError(
                f"--termseq: expected SIGNAL,MILLISECONDS,..., got {text!r}")
        out.append((int(sig), int(wait) / 1000))
    return out


def _check(opts):
    """Judge the option values argparse cannot, before any work starts, and
    keep what they parse to: halt_rule, tags, block_size, boundary, delim,
    per_job."""
    opts.jobs_given = opts.jobs is not None       # --semaphore's default is 1
    opts.jobs = "100%" if opts.jobs is None else opts.jobs
    parse_jobs(opts.jobs)        # parsed again once a hub's slots are known
    _check_gnu(opts)
    if opts.pipe and not opts.command:
        raise errors.UsageError("--pipe needs a command to feed")
    if opts.round_robin and not opts.pipe:
        raise errors.UsageError("--round-robin goes with --pipe")
    if opts.retries < 0:
        raise errors.UsageError("--retries: need 0 or more")
    # Written so that nan, which every comparison refuses, is refused too.
    if opts.timeout is not None and not 0 < opts.timeout < math.inf:
        raise errors.UsageError("--timeout: need a positive number of seconds")
    if not 0 <= opts.delay < math.inf:
        raise errors.UsageError("--delay: need 0 or more seconds")
    if opts.shuf and opts.pipe:
        raise errors.UsageError("--shuf does not go with --pipe")
    opts.halt_rule = parse_halt(opts.halt)
    opts.tags = {}
    if opts.require:                    # the wire module is not loaded for a local run
        from gridtools.proto import wire
        opts.tags = wire.parse_pairs(opts.require, "--require")
    opts.blocks_per_slot = None
    if opts.block is not None and opts.block.strip().startswith("-"):
        # GNU parallel: with --pipepart, --block -N is N blocks per slot.
        m = re.fullmatch(r"-([1-9][0-9]{0,6})", opts.block.strip())
        if not opts.pipepart or not m:
            raise errors.UsageError(
                f"--block: a negative value -N (N blocks per job slot) goes with "
                f"--pipepart only, got {opts.block!r}")
        opts.blocks_per_slot = int(m.group(1))
        opts.block_size = 0
    elif opts.block is None and opts.pipepart:
        opts.blocks_per_slot = 10   # GNU parallel's default for --pipepart
        opts.block_size = 0
    else:
        opts.block_size = _size(opts.block or "1M")
    recend = _unescape(opts.recend) if opts.recend is not None else (
        b"" if opts.recstart is not None else b"\n")
    recstart = _unescape(opts.recstart) if opts.recstart is not None else b""
    try:
        opts.boundary = blocks.Boundary(recend, recstart)
    except ValueError as e:
        raise errors.UsageError(str(e))
    _check_replace_pipe(opts)
    opts.delim = b"\0" if opts.null else b"\n"
    if opts.delimiter is not None:
        opts.delim = inputs.parse_delimiter(opts.delimiter)
        if not opts.delim:
            raise errors.UsageError("-d: the delimiter cannot be empty")
    if opts.colsep is not None:
        try:
            re.compile(opts.colsep)
        except re.error as e:
            raise errors.UsageError(f"--colsep: bad regular expression {opts.colsep!r}: {e}")
    # xargs's options, as GNU parallel takes them.
    opts.replace_str = opts.replace if opts.replace is not None else opts.replace_i or "{}"
    if not opts.replace_str:
        raise errors.UsageError("-I: the replacement string cannot be empty")
    opts.eof_str = opts.eof if opts.eof is not None else opts.eof_e or None
    if opts.max_lines is None and opts.max_lines_l is not None:
        m = re.fullmatch(r"([0-9]{1,9})(?:\.[0-9]*)?", opts.max_lines_l)
        if not m:
            raise errors.UsageError(f"-l: not a number of lines: {opts.max_lines_l!r}")
        opts.max_lines = int(m.group(1)) or 1
    if opts.max_lines is not None:
        if opts.max_lines < 1:
            raise errors.UsageError("-L: need a positive number of lines")
        if opts.max_args is None and opts.max_replace_args is None:
            opts.max_replace_args = opts.max_lines
    if opts.max_chars is not None and opts.max_chars < 1:
        raise errors.UsageError("-s: need a positive number of characters")
    opts.per_job = 1
    if opts.max_replace_args is not None:
        opts.per_job = opts.max_replace_args
    elif opts.max_args is not None:
        opts.per_job = opts.max_args
    if opts.per_job < 0 or (opts.per_job == 0 and opts.max_replace_args is None):
        raise errors.UsageError("-n/-N: need a positive number of inputs per job")


def _check_replace_pipe(opts):
    """--cat, --fifo, --regexp, --skip-first-line; the replacement strings
    in force (opts.tags_rpl) as -I, --er ... and --rpl make them."""
    if opts.cat and opts.fifo:
        raise errors.UsageError("--cat does not go with --fifo")
    if (opts.cat or opts.fifo) and not opts.pipepart:
        opts.pipe = True            # as GNU parallel: --cat and --fifo imply --pipe
    if (opts.cat or opts.fifo) and (opts.round_robin or opts.tee):
        raise errors.UsageError("--cat and --fifo do not go with --round-robin or --tee")
    if opts.regexp and opts.pipe:
        # Not unescaped: the regular expression reads \n itself.
        recend = os.fsencode(opts.recend) if opts.recend is not None else (
            b"" if opts.recstart is not None else b"\n")
        recstart = os.fsencode(opts.recstart or "")
        try:
            opts.boundary = blocks.RegexBoundary(recend, recstart)
        except re.error as e:
            raise errors.UsageError(f"--regexp: bad --recend or --recstart: {e}")
    if opts.skip_first_line and (opts.pipepart or opts.tee):
        raise errors.UsageError("--skip-first-line does not go with --pipepart or --tee")
    renames = [(old, new) for old, new in (
        ("{}", opts.replace if opts.replace is not None else opts.replace_i or "{}"),
        ("{.}", opts.extensionreplace), ("{/}", opts.basenamereplace),
        ("{//}", opts.dirnamereplace), ("{#}", opts.seqreplace), ("{%}", opts.slotreplace),
        ("{/.}", opts.basenameextensionreplace)) if new is not None]
    for old, new in renames:
        if not new and old != "{}":         # -I '' is judged below
            raise errors.UsageError(f"the replacement string for {old} cannot be empty")
    try:
        opts.tags_rpl = template.Tags(opts.plus, renames, opts.rpl, opts.parens)
    except ValueError as e:
        raise errors.UsageError(str(e))


def _parse_head(parser, head):
    i = 0
    opt_words = []
    takes_value = _value_options(parser)
    while i < len(head):
        w = head[i]
        if w == "--":
            i += 1
            break
        if not w.startswith("-") or w == "-":
            break
        bundle = _split_bundle(w, parser, takes_value)
        if bundle is not None:
            words, wants = bundle
            opt_words.extend(words)
            i += 1
            if wants is not None:
                if i < len(head) and _takes_next(wants, head[i]):
                    opt_words.append(_glue(wants, head[i]))
                    i += 1
                else:
                    opt_words.append(wants)     # argparse says it needs one
            continue
        if w in OPTIONAL_VALUE:
            # -i, -e, -l: the value is optional, and taken from the next
            # word as Getopt::Long takes it.
            if i + 1 < len(head) and _takes_next(w, head[i + 1]):
                opt_words.append(_glue(takes_value[w], head[i + 1]))
                i += 2
            else:
                opt_words.append(w)
                i += 1
            continue
        if w in takes_value and i + 1 < len(head):
            # Glue the value on, so that `-j -1` is a value, not an option.
            opt_words.append(_glue(takes_value[w], head[i + 1]))
            i += 2
            continue
        opt_words.append(w)
        i += 1
    opts = parser.parse_args(opt_words)
    opts.command = head[i:]
    return opts, None


# Options whose value is optional: which next word they take, as GNU
# parallel's Getopt::Long takes it (a string not starting with -, a number).
OPTIONAL_VALUE = {
    "-i": lambda w: not w.startswith("-"), "--replace": lambda w: not w.startswith("-"),
    "-e": lambda w: not w.startswith("-"), "--eof": lambda w: not w.startswith("-"),
    "-l": lambda w: re.fullmatch(r"[0-9]+(?:\.[0-9]*)?", w) is not None,
    "--max-lines": lambda w: re.fullmatch(r"[0-9]+(?:\.[0-9]*)?", w) is not None,
}


def _takes_next(opt, word):
    """Whether option opt, ending its word, takes word as its value."""
    test = OPTIONAL_VALUE.get(opt)
    return test is None or test(word)


def _split_bundle(word, parser, takes_value):
    """Short options bundled as getopt takes them: -kX is -k -X, and an
    option that takes a value takes the rest of the word (-kj2 is -k -j 2,
    -j2k is -j 2k) or, at the end, the next word (-kj 2).

    Returns (words, long option wanting the next word or None), or None
    when word does not start with a known short option (argparse judges
    it).  An unknown letter inside a bundle becomes a word of its own, for
    argparse to refuse by name.
    """
    if word.startswith("--") or len(word) < 3:
        return None
    shorts = parser._option_string_actions
    if "-" + word[1] not in shorts:
        return None
    out = []
    for k in range(1, len(word)):
        opt = "-" + word[k]
        if opt not in shorts or opt not in takes_value:
            out.append(opt)
            continue
        rest = word[k + 1:]
        if rest:
            out.append(_glue(takes_value[opt], rest))
            return out, None
        return out, takes_value[opt]
    return out, None


def _value_options(parser):
    """Options that take a value, each mapped to its long spelling."""
    out = {}
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:
            long = [o for o in action.option_strings if o.startswith("--")]
            out.update(dict.fromkeys(action.option_strings, (long or action.option_strings)[0]))
    return out


def _glue(option, value):
    """One word giving option its value, so that a value starting with -
    is not taken for an option."""
    return f"{option}={value}" if option.startswith("--") else option + value


def _parse_sources(parser, tail, seps=SEPARATORS):
    sources = []
    i = 0
    while i < len(tail):
        sep = tail[i]
        j = i + 1
        while j < len(tail) and tail[j] not in seps:
            j += 1
        words = tail[i + 1:j]
        if sep in seps[2:]:
            if not words:
                parser.error(f"{sep} needs at least one file")
            for k, path in enumerate(words):
                sources.append(("file", path, sep.endswith("+") and k == 0))
        else:
            sources.append(("args", words, sep.endswith("+")))
        i = j
    return sources


def parse_jobs(text, cores=None):
    cores = cores or os.cpu_count() or 1
    m = re.fullmatch(r"([+-]?)([0-9]+(?:\.[0-9]+)?)(%?)", text.strip())
    if not m:
        raise errors.UsageError(f"-j: not a number of jobs: {text!r}")
    sign, num, pct = m.groups()
    n = int(gate.per_cores(sign, num, pct, cores))
    if n == 0 and not pct and not sign and float(num) == 0:
        n = 1 << 20              # -j 0: as many as the system allows
    return max(1, n)


def fd_budget():
    """How many jobs we can run at once: each needs about four descriptors."""
    return max(1, (common.raise_fd_limit() - 32) // 5)


def parse_halt(text):
    if text is None:
        return pool.Halt()
    t = text.strip()
    short = {"0": "never", "1": "soon,fail=1", "2": "now,fail=1",
             "-1": "soon,success=1", "-2": "now,success=1"}
    t = short.get(t, t)
    if re.fullmatch(r"[0-9]+%", t):
        t = "soon,fail=" + t        # GNU parallel: --halt 5% is soon,fail=5%
    if t == "never":
        return pool.Halt()
    when, _, cond = t.partition(",")
    if not cond and "=" in when:
        when, cond = "now", when
    m = re.fullmatch(r"(fail|success|done)=([0-9]+)(%?)", cond)
    if when not in ("now", "soon") or not m:
        raise errors.UsageError(
            f"--halt: expected now|soon,fail=N|fail=P%|success=N|done=N, got {text!r}")
    n = int(m.group(2))
    if n < 1 or (m.group(3) and n > 100):
        raise errors.UsageError(f"--halt: count must be 1 or more (percent 1-100): {text!r}")
    return pool.Halt(when, m.group(1), n, bool(m.group(3)))


def _unescape(text):
    return inputs.parse_delimiter(text) if text else b""


def _size(text):
    try:
        return blocks.parse_size(text)
    except ValueError as e:
        raise errors.UsageError(f"--block: {e}")
