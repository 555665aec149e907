"""gridmap's inputs: the sources after ::: and :::: (and -a, --csv,
--header), read into items, and the job source the pool draws from
(templates applied, -n/-N/-X/-L/-s packing, --skip-first-line).  The
reading of one item (read_item) serves stdin and files alike."""

import os
import re

from gridtools.local import inputs, jobs
from gridtools.proto import errors


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
