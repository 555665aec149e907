"""gridmap --pipe: cutting a stream into blocks on record boundaries (pure
functions, property-tested), and real runs with stdin as a regular file (cut
by offsets, spliced) and as a pipe (read without blocking)."""

import os
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import GRIDMAP, TIMEOUT, run_gridmap
from gridtools.local import blocks

# -- pure functions --------------------------------------------------------

SEPARATORS = [(b"\n", b""), (b"", b">"), (b"\n", b">"), (b"\n", b">>"), (b"ab", b""),
              (b">\n", b"a"), (b"\r\n", b"")]


def boundaries(data, recend, recstart):
    """Every position inside data where one record ends and the next starts."""
    out = set()
    for pos in range(max(1, len(recend)), len(data)):
        if data[pos - len(recend):pos] == recend and data[pos:pos + len(recstart)] == recstart:
            out.add(pos)
    return out


def stream_blocks(chunks, size, boundary, records=None):
    """Cut blocks the way a pipe is read: chunk by chunk, then EOF."""
    buf = bytearray()
    out = []
    chunks = list(chunks)
    eof = False
    while True:
        cut = boundary.cut(buf, size, records, eof)
        if cut > 0:
            out.append(bytes(buf[:cut]))
            del buf[:cut]
            continue
        assert cut < 0
        if eof:
            assert not buf
            return out
        if chunks:
            buf += chunks.pop(0)
        else:
            eof = True


def range_blocks(data, size, boundary, window):
    """Cut blocks the way a regular file is: by offsets, reading little."""
    reads = []

    def pread(n, off):
        assert n >= 0 and off >= 0
        reads.append(n)
        return data[off:off + n]
    out = [data[o:o + n] for o, n in blocks.plan_ranges(pread, 0, len(data), size,
                                                          boundary, window)]
    return out


def check_blocks(got, data, size, recend, recstart):
    assert b"".join(got) == data
    where = boundaries(data, recend, recstart)
    pos = 0
    for block in got:
        assert block
        end = pos + len(block)
        if end != len(data):
            assert end in where, "a record was split"
        inner = [q for q in where if pos < q < end]
        if len(block) > size:
            assert not inner, "an oversize block holds more than one record"
        elif end != len(data):
            assert not [q for q in where if end < q <= pos + size], "the block could be longer"
        pos = end


@st.composite
def streams(draw):
    recend, recstart = draw(st.sampled_from(SEPARATORS))
    alphabet = draw(st.sampled_from([b"ab\n", b"a>\n", b"xy>", b"a\r\n"]))
    data = bytes(draw(st.lists(st.sampled_from(alphabet), max_size=80)))
    size = draw(st.integers(min_value=1, max_value=24))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    return data, chunks, size, recend, recstart


@settings(max_examples=1500, deadline=None)
@given(streams(), st.sampled_from([1, 2, 3, 5, 8, 1 << 16]))
def test_blocks_from_a_pipe_and_from_a_file(s, window):
    """Blocks concatenate to the input, end only where a record ends, hold
    as many records as fit in the size, and exceed it only for a single
    oversize record; a pipe read in any chunks and a file cut by offsets
    give the same blocks."""
    data, chunks, size, recend, recstart = s
    b = blocks.Boundary(recend, recstart)
    piped = stream_blocks(chunks, size, b)
    check_blocks(piped, data, size, recend, recstart)
    filed = range_blocks(data, size, b, window)
    check_blocks(filed, data, size, recend, recstart)
    assert piped == filed == stream_blocks([data], size, b)


@settings(max_examples=500, deadline=None)
@given(streams(), st.integers(min_value=1, max_value=4))
def test_blocks_of_n_records(s, n):
    data, chunks, size, recend, recstart = s
    b = blocks.Boundary(recend, recstart)
    got = stream_blocks(chunks, size, b, records=n)
    assert b"".join(got) == data
    where = boundaries(data, recend, recstart)
    pos = 0
    for i, block in enumerate(got):
        end = pos + len(block)
        inner = len([q for q in where if pos < q < end])
        if i < len(got) - 1:
            assert end in where and inner == n - 1
        else:
            assert inner <= n - 1
        pos = end


def test_cut_waits_for_more_data():
    b = blocks.Boundary()
    assert b.cut(bytearray(b"abc\nde"), 10) == -1           # not full, no EOF
    assert b.cut(bytearray(b"abc\nde"), 10, eof=True) == 6
    assert b.cut(bytearray(b"abcdefgh"), 4) == -1           # one record, unfinished
    assert b.cut(bytearray(b"abcdefgh\nx"), 4) == 9         # oversize record
    assert b.cut(bytearray(b"ab\ncd\nef\n"), 7) == 6


def test_plan_ranges_reads_little():
    data = b"".join(b"%07d\n" % i for i in range(200000))     # 1.6 MB
    total = []

    def pread(n, off):
        total.append(n)
        return data[off:off + n]
    ranges = list(blocks.plan_ranges(pread, 0, len(data), 100000, blocks.Boundary()))
    assert sum(n for _, n in ranges) == len(data)
    # Short records: one window read per cut, never the blocks themselves.
    assert len(total) == len(ranges) - 1
    assert max(total) <= (1 << 16) + 1


@pytest.mark.parametrize("text,n", [("1", 1), ("512", 512), ("10k", 10240), ("1M", 1 << 20),
                                    ("1.5k", 1536), ("2G", 2 << 30), ("1m", 1 << 20)])
def test_parse_size(text, n):
    assert blocks.parse_size(text) == n


@pytest.mark.parametrize("text", ["", "x", "0", "-1", "1Q"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        blocks.parse_size(text)


def test_boundary_needs_a_separator():
    with pytest.raises(ValueError):
        blocks.Boundary(b"", b"")


# -- real runs ---------------------------------------------------------------

def numbers(n):
    return b"".join(b"%d\n" % i for i in range(n))


def run_pipe(args, data, tmp_path, mode):
    """gridmap with data on stdin as a regular file or as a pipe."""
    if mode == "pipe":
        return run_gridmap(args, input=data)
    f = tmp_path / "stdin"
    f.write_bytes(data)
    with open(f, "rb") as fh:
        return run_gridmap(args, stdin=fh)


MODES = ["file", "pipe"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", ["1", "100", "1k", "64k", "1M"])
def test_blocks_are_whole_records(tmp_path, mode, block):
    data = numbers(300 if block in ("1", "100") else 30000)
    p = run_pipe(["-k", "--pipe", "--block", block, "-j2", "sed", "-n", "1p;$p"],
                 data, tmp_path, mode)
    assert p.returncode == 0, p.stderr
    # The first and last line of each block, in order: together they are
    # whole lines of the input, block after block.
    firsts_lasts = p.stdout.split(b"\n")[:-1]
    lines = data.split(b"\n")[:-1]
    assert set(firsts_lasts) <= set(lines)
    p = run_pipe(["-k", "--pipe", "--block", block, "cat"], data, tmp_path, mode)
    assert p.stdout == data


@pytest.mark.parametrize("mode", MODES)
def test_block_sizes(tmp_path, mode):
    data = numbers(50000)
    size = 10 * 1024
    p = run_pipe(["-k", "--pipe", "--block", "10k", "wc", "-c"], data, tmp_path, mode)
    sizes = [int(x) for x in p.stdout.split()]
    assert sum(sizes) == len(data)
    assert all(s <= size for s in sizes)
    assert all(s > size - 8 for s in sizes[:-1])


@pytest.mark.parametrize("mode", MODES)
def test_records_longer_than_a_read_window(tmp_path, mode):
    # Records of 150 kB, blocks of 250 kB: one record per block, never two,
    # never a block past the size.
    data = b"".join(bytes([97 + i]) * 150000 + b"\n" for i in range(6))
    p = run_pipe(["-k", "--pipe", "--block", "250k", "wc", "-c"], data, tmp_path, mode)
    assert p.stdout.split() == [b"150001"] * 6


@pytest.mark.parametrize("mode", MODES)
def test_oversize_record_is_one_block(tmp_path, mode):
    data = b"a\n" + b"x" * 50000 + b"\nb\n"
    p = run_pipe(["-k", "--pipe", "--block", "1k", "wc", "-c"], data, tmp_path, mode)
    assert p.stdout.split() == [b"2", b"50001", b"2"]


@pytest.mark.parametrize("mode", MODES)
def test_binary_data_without_final_newline(tmp_path, mode):
    data = bytes(range(256)) * 2000
    p = run_pipe(["-k", "--pipe", "--block", "3k", "cat"], data, tmp_path, mode)
    assert p.stdout == data


FASTA = b">a\nAC\nGT\n>b\nTT\n>c\nGG\n"


@pytest.mark.parametrize("mode", MODES)
def test_recstart(tmp_path, mode):
    # As GNU parallel 20221122 prints it.
    p = run_pipe(["-k", "--pipe", "--recstart", ">", "--block", "10", "echo BLOCK; cat"],
                 FASTA, tmp_path, mode)
    assert p.stdout == b"BLOCK\n>a\nAC\nGT\nBLOCK\n>b\nTT\nBLOCK\n>c\nGG\n"


@pytest.mark.parametrize("mode", MODES)
def test_recend(tmp_path, mode):
    p = run_pipe(["-k", "--pipe", "--recend", ";", "--block", "3", "echo; cat"],
                 b"a;b;c;d;e;", tmp_path, mode)
    assert p.stdout == b"\na;\nb;\nc;\nd;\ne;"
    p = run_pipe(["-k", "--pipe", "--recend", "\\0", "--block", "4", "cat; echo"],
                 b"ab\0cd\0e\0", tmp_path, mode)
    assert p.stdout == b"ab\0\ncd\0\ne\0\n"


@pytest.mark.parametrize("mode", MODES)
def test_pipe_N_records(tmp_path, mode):
    p = run_pipe(["-k", "--pipe", "-N3", "echo B; cat"], numbers(10), tmp_path, mode)
    assert p.stdout == b"B\n0\n1\n2\nB\n3\n4\n5\nB\n6\n7\n8\nB\n9\n"


@pytest.mark.parametrize("mode", MODES)
def test_round_robin_feeds_every_job(tmp_path, mode):
    data = numbers(100000)
    for j in (2, 3, 5):
        p = run_pipe(["--pipe", "--round-robin", f"-j{j}", "--block", "10k", "wc", "-l"],
                     data, tmp_path, mode)
        counts = [int(x) for x in p.stdout.split()]
        assert len(counts) == j
        assert sum(counts) == 100000
        assert all(c > 0 for c in counts), counts
        p = run_pipe(["--pipe", "--round-robin", f"-j{j}", "--block", "10k", "cat"],
                     data, tmp_path, mode)
        assert sorted(p.stdout.split(b"\n")) == sorted(data.split(b"\n"))


@pytest.mark.parametrize("mode", MODES)
def test_pipe_job_number_and_joblog(tmp_path, mode):
    log = tmp_path / "log"
    p = run_pipe(["-k", "--pipe", "--block", "6", "--joblog", str(log), "echo {#}; wc -l"],
                 b"1\n2\n3\n4\n5\n", tmp_path, mode)
    assert p.stdout == b"1\n3\n2\n2\n"
    rows = [line.split("\t") for line in log.read_text().splitlines()[1:]]
    assert [r[4] for r in rows] == ["6", "4"]


@pytest.mark.parametrize("mode", MODES)
def test_jobs_that_do_not_read(tmp_path, mode):
    p = run_pipe(["--pipe", "--block", "10k", "-j2", "true"], numbers(100000), tmp_path, mode)
    assert p.returncode == 0
    p = run_pipe(["--pipe", "--block", "10k", "head", "-1"], numbers(100000), tmp_path, mode)
    assert p.returncode == 0 and len(p.stdout.split()) > 10


@pytest.mark.parametrize("mode", MODES)
def test_empty_stdin_runs_no_job(tmp_path, mode):
    p = run_pipe(["--pipe", "echo", "ran"], b"", tmp_path, mode)
    assert (p.returncode, p.stdout) == (0, b"")


def test_file_stdin_starts_at_its_offset(tmp_path):
    f = tmp_path / "in"
    f.write_bytes(numbers(1000))
    with open(f, "rb") as fh:
        os.lseek(fh.fileno(), 4, os.SEEK_SET)
        p = run_gridmap(["-k", "--pipe", "--block", "1k", "cat"], stdin=fh)
    assert p.stdout == numbers(1000)[4:]


def test_pipe_blocks_go_out_before_eof(tmp_path):
    # The producer keeps stdin open until the first job has run: gridmap
    # must start jobs on the blocks it has, not wait for the end of input.
    flag = tmp_path / "flag"
    producer = (f"seq 1000; i=0; while [ ! -e {flag} ]; do i=$((i+1)); "
                f"[ $i -gt 400 ] && {{ echo TIMEOUT; exit; }}; sleep 0.05; done; echo FOUND")
    p = subprocess.run(["sh", "-c", f"({producer}) | {GRIDMAP} -k --pipe --block 1k "
                        f"'touch {flag}; cat'"], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith(b"FOUND\n")
    assert b"TIMEOUT" not in p.stdout


def test_file_that_shrinks_under_a_block(tmp_path):
    # The blocks of a regular file are planned at the start; if the file
    # then shrinks, the job gets what is left and its stdin still closes.
    f = tmp_path / "in"
    f.write_bytes((b"x" * 99 + b"\n") * 30000)          # 3 MB, more than a pipe holds
    started, flag = tmp_path / "started", tmp_path / "flag"
    job = (f"touch {started}; i=0; while [ ! -e {flag} ]; do i=$((i+1)); "
           f"[ $i -gt 400 ] && exit 99; sleep 0.05; done; wc -c")
    with open(f, "rb") as fh:
        p = subprocess.Popen([GRIDMAP, "--pipe", "--block", "3M", job], stdin=fh,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(400):
            if started.exists():
                break
            time.sleep(0.05)
        os.truncate(f, 0)
        flag.touch()
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert 0 < int(out) < 3_000_000
