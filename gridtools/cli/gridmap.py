"""gridmap: map a command over input lines or blocks of stdin, in parallel.

    gridmap [options] COMMAND [ARGS...] [::: ARGS... | :::: FILES...]

With no --hub this runs on an embedded local pool, one slot per core.
"""

import math
import os
import re
import sys

from gridtools.local import blocks, inputs, jobs, output, pool, template, writer
from gridtools.local import executor as localexec
from gridtools.local import transfer
from gridtools.proto import errors
from gridtools.cli import common

SEPARATORS = (":::", ":::+", "::::", "::::+")
HUB_SLOTS_UNKNOWN = 64      # -j 100% with --hub when no worker has joined

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
        from gridtools.local import gate
        opts.memfree_bytes = gate.parse_memfree(opts.memfree)
    if opts.load is not None:
        from gridtools.local import gate
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
    n = float(num)
    if pct:
        n = cores * n / 100
    elif sign == "+":
        n = cores + n
    elif sign == "-":
        n = cores - n
    n = int(n)
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


def open_input(path):
    if path == "-":
        return 0
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise errors.NoInputError(f"cannot read {path}: {e.strerror}")


def read_all(path, delim):
    fd = open_input(path)
    try:
        return list(inputs.split_items(inputs.read_chunks(fd), delim))
    except OSError as e:
        raise errors.NoInputError(f"cannot read {path}: {e.strerror}")
    finally:
        if fd != 0:
            os.close(fd)


def read_sources(opts):
    """The input sources as lists of items, or, for one stream read as it
    comes, [("fd", fd, False)]; with --header, each source's first item
    taken off and the column names it gives put in the command."""
    sources = [("file", path, False) for path in opts.arg_file] + opts.sources
    if not sources:
        sources = [("file", "-", False)]
    files = [value for kind, value, _ in sources if kind == "file"]
    if len(sources) == 1 and sources[0][0] == "file" and not opts.shuf \
            and not opts.retry_failed:
        out = [("fd", open_input(sources[0][1]), False)]
    else:
        out = [("args", value if kind == "args" else read_all(value, opts.delim), linked)
               for kind, value, linked in sources]
    if opts.skip_first_line:
        # As GNU parallel: the first line of the first source, before --header.
        kind, value, linked = out[0]
        if kind == "fd":
            read_item(value, opts.delim)   # a line, or an item with -0 or -d
        else:
            out[0] = (kind, value[1:], linked)
    opts.headers = {}
    names = []
    if opts.header is not None and opts.header != "0":
        for i, (kind, value, linked) in enumerate(out):
            if kind == "fd":
                first = read_item(value, opts.delim)
            else:
                first, value = (value[0] if value else None), value[1:]
                out[i] = (kind, value, linked)
            if first is not None:
                first = first[:-1] if first.endswith("\r") else first
                if opts.csv_sep is not None:
                    from gridtools.local import csvin
                    names.extend(csvin.parse(first, opts.csv_sep))
                else:
                    names.extend(_perl_split(opts.colsep if opts.colsep is not None
                                             else "\t", first))
        opts.headers = dict(enumerate(names, 1))
    if opts.header is not None:
        # As GNU parallel does, the names of the files (-a, ::::) name
        # their sources too: {file} is {1} for the first file.
        opts.headers.update(enumerate(files, 1))
        _header_names(opts, names, files)
    return out


def _header_names(opts, names, files):
    """Put {name}, {name/}, {name.} ... in the command (and --tagstring,
    --results) as {N}, {N/}, {N.}, as GNU parallel does."""
    subs = list(enumerate(names, 1)) + list(enumerate(files, 1))
    for n, name in subs:
        rx = re.compile(r"\{" + re.escape(name) + r"(|/|//|\.|/\.)\}")
        rep = lambda m, n=n: "{%d%s}" % (n, m.group(1))
        opts.command = [rx.sub(rep, w) for w in opts.command]
        if opts.tagstring is not None:
            opts.tagstring = rx.sub(rep, opts.tagstring)
        if opts.results is not None:
            opts.results = rx.sub(rep, opts.results)


def _perl_split(pattern, text):
    """Perl's split /pattern/, text: trailing empty fields are dropped."""
    fields = re.split(pattern, text)
    while fields and fields[-1] == "":
        fields.pop()
    return fields


def read_item(fd, delim):
    """The first item of fd, read a byte at a time so that nothing after it
    is consumed; None at once at end of input."""
    data = bytearray()
    while not data.endswith(delim):
        try:
            b = os.read(fd, 1)
        except OSError as e:
            raise errors.NoInputError(f"cannot read input: {e.strerror}")
        if not b:
            if not data:
                return None
            break
        data += b
    if data.endswith(delim):
        del data[-len(delim):]
    return inputs.decode(bytes(data))


def make_source(opts, slots, sources, tmpl=None):
    """The job source the options describe, over sources from
    read_sources."""
    if opts.pipepart:
        paths = [p for p in opts.arg_file] + [v for k, v, _ in opts.sources if k == "file"]
        return jobs.PartSource(paths, opts.block_size, opts.boundary, opts.header_rx,
                               slots, opts.blocks_per_slot)
    if opts.pipe and not opts.tee:
        if opts.skip_first_line:
            read_item(0, b"\n")
        return jobs.PipeSource(0, opts.block_size, opts.boundary, opts.max_replace_args,
                               header=opts.header_rx)

    delim = opts.delim
    # As in GNU parallel, --colsep implies --trim lr (--trim n undoes it):
    # columns of aligned text come without their padding.  (The tab that
    # --header implies does not.)
    trim = opts.trim or ("lr" if opts.colsep is not None else None)
    colsep = opts.colsep if opts.colsep is not None else (
        "\t" if opts.header is not None else None)
    to_record = inputs.make_record(trim, colsep)
    if opts.csv_sep is not None:
        # --csv: the columns are CSV fields (trimmed only with a --colsep
        # given or --trim, as GNU parallel does).
        from gridtools.local import csvin
        to_record = csvin.make_record(opts.csv_sep, trim)

    def item_filter():
        # One per input source: -E ends each source on its own.
        f = inputs.make_filter(opts.eof_str, opts.max_lines is not None,
                               opts.no_run_if_empty)
        if opts.csv_sep is not None:
            from gridtools.local import csvin
            f = csvin.Joiner(os.fsdecode(delim), f)
        return f

    if sources[0][0] == "fd":
        feed = jobs.StreamFeed(sources[0][1], delim, to_record, item_filter())
    else:
        lists = []
        for kind, items, linked in sources:
            f = item_filter()
            if f is not None:
                items = f.apply(items)
            lists.append(([to_record(x) for x in items], linked))
        records = inputs.combine(lists, wrap=opts.link)
        if opts.shuf:
            # As GNU parallel: the inputs are shuffled, then numbered ({#}).
            import random
            records = list(records)
            random.shuffle(records)
        feed = jobs.IterFeed(records)
    limit = opts.max_replace_args if opts.max_replace_args is not None else opts.max_args
    fits = None
    if opts.max_chars is not None and (opts.xargs or opts.many):
        def fits(records):
            args = inputs.fields(records)
            line = tmpl.shell(args, 1, 1) if tmpl is not None else " ".join(args)
            return len(line) < opts.max_chars
    source = jobs.RecordSource(feed, opts.per_job, opts.xargs or opts.many, slots,
                               limit=limit or None, fits=fits)
    if opts.tee:
        source = jobs.TeeSource(source, 0, opts.tmpdir)
    return source


def _size(text):
    try:
        return blocks.parse_size(text)
    except ValueError as e:
        raise errors.UsageError(f"--block: {e}")


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
    budget = fd_budget()
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
            sources = read_sources(opts)
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
    source = make_source(opts, slots, sources, tmpl) if not opts.nonall else None
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
