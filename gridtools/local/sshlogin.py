"""GNU parallel's sshlogins for gridmap -S/--sshlogin and --sshloginfile:
parsing only, pure functions (the files are read by the caller's reader).

    [ncpus/][sshcommand [options]] [user@]host      ":" is this host, no ssh

A -S value holds several, separated by commas or newlines (a comma inside
one is written "\\," or ",,"); a file holds one a line, with blank lines
and lines starting with "#" skipped.  Hostgroups (@group/), passwords
(user:password@host) and "-" (read sshlogins from stdin) are GNU
parallel's and refused here with a usage error.
"""

import collections
import os
import re
import shlex

from gridtools.proto import errors

LOCAL = ":"
MAX_CPUS = 100000           # as the protocol's slots per worker (wire.MAX_SLOTS)

# ncpus: how many CPUs to count the host as (None: ask the host);
# ssh: the login's own ssh command (None: --ssh's); host: user@host or ":".
Login = collections.namedtuple("Login", "ncpus ssh host")


def split_list(text):
    """One -S value into sshlogins: commas and newlines separate, "\\," and
    ",," are a comma; empty pieces are dropped."""
    out, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and text[i + 1:i + 2] == ",":
            cur.append(",")
            i += 2
            continue
        if c == "," and text[i + 1:i + 2] == ",":
            cur.append(",")
            i += 2
            continue
        if c in ",\n":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def parse(text):
    """One sshlogin as a Login (UsageError when it is not one)."""
    where = f"-S: {text!r}"
    text = text.strip()
    if text.startswith("@"):
        raise errors.UsageError(f"{where}: hostgroups (@group) are not supported")
    ncpus = None
    m = re.fullmatch(r"([0-9]*)/(.*)", text, re.S)
    if m:
        digits, text = m.groups()
        if digits:
            ncpus = int(digits[:7])
            if not 1 <= ncpus <= MAX_CPUS or len(digits) > 7:
                raise errors.UsageError(f"{where}: ncpus must be 1 to {MAX_CPUS}")
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise errors.UsageError(f"{where}: {e}") from None
    if not words:
        raise errors.UsageError(f"{where}: no host")
    host = words[-1]
    ssh = shlex.join(words[:-1]) if len(words) > 1 else None
    if host == LOCAL:
        if ssh is not None:
            raise errors.UsageError(f"{where}: ':' (this host) takes no ssh command")
        return Login(ncpus, None, LOCAL)
    if host == "-":
        raise errors.UsageError(f"{where}: sshlogins from stdin are not supported "
                                "(stdin is the input): use --sshloginfile FILE")
    if host.startswith("-") or any(c.isspace() or not c.isprintable() for c in host):
        raise errors.UsageError(f"{where}: not a host: {host!r}")
    user, at, _ = host.rpartition("@")
    if at and ":" in user:
        raise errors.UsageError(f"{where}: passwords in an sshlogin are not supported "
                                "(use a key or an agent)")
    return Login(ncpus, ssh, host)


def parse_lines(lines):
    """An sshloginfile's lines as sshlogins' texts: no blanks, no # comments."""
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def default_file(env):
    """gridmap's own sshloginfile, what ".." names (GNU parallel's is
    ~/.parallel/sshloginfile): $XDG_CONFIG_HOME/gridtools/sshloginfile,
    by default ~/.config/gridtools/sshloginfile."""
    base = env.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "gridtools", "sshloginfile")


def file_path(name, env):
    """--sshloginfile NAME: ".." is gridmap's own file (default_file),
    "." the system's (/etc/gridtools/sshloginfile), anything else a path."""
    if name == "..":
        return default_file(env)
    if name == ".":
        return "/etc/gridtools/sshloginfile"
    if name == "-":
        raise errors.UsageError("--sshloginfile: sshlogins from stdin are not supported "
                                "(stdin is the input)")
    return name


def gather(values, files, env, read):
    """Every Login of the -S values and the --sshloginfile names, in the
    order given (-S first); read(path) returns a file's lines or raises
    a GridError.  The sshlogin ".." in -S reads gridmap's own file."""
    texts = []
    for v in values:
        for t in split_list(v):
            if t == "..":
                texts += parse_lines(read(default_file(env)))
            else:
                texts.append(t)
    for name in files:
        texts += parse_lines(read(file_path(name, env)))
    return [parse(t) for t in texts]


def slots(login, jobs, parse_jobs):
    """Jobs at once on login's host, as GNU parallel counts -j per host:
    relative to ncpus when given; None to let a remote worker count its
    own CPUs (-j 100%, the default).  parse_jobs(text, cores) is -j's
    parser.  A relative -j other than 100% needs ncpus on a remote host."""
    text = jobs.strip()
    if login.ncpus is not None:
        return parse_jobs(text, cores=login.ncpus)
    if login.host == LOCAL:
        return parse_jobs(text)
    if re.fullmatch(r"[0-9]{1,9}", text):
        return min(parse_jobs(text), MAX_CPUS)      # -j 0: as many as a worker may offer
    if text == "100%":
        return None
    raise errors.UsageError(f"-j {jobs}: with -S, a -j relative to the CPUs needs "
                            f"ncpus/ before the host ({login.host}); or give -j N")
