"""gridmap inputs: splitting byte streams into items, combining sources,
grouping items into jobs (pure functions), and the same through real runs."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import nul_fields, run_gridmap
from gridtools.local import inputs, jobs


# -- inputs.Splitter -----------------------------------------------------

def expected_items(data, delim):
    parts = data.split(delim)
    if parts[-1] == b"":
        parts.pop()          # a trailing delimiter ends the last item
    return [os.fsdecode(p) for p in parts]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.lists(st.sampled_from([b"a", b"\n", b"\0", b":", b"ab", b"\xff"]),
                                                max_size=40).map(b"".join),
       delim=st.sampled_from([b"\n", b"\0", b":", b"ab", b"\r\n"]),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_splitter_any_chunking(data, delim, cuts):
    """However the stream is cut into reads, the items are the same."""
    bounds = sorted({c for c in cuts if c <= len(data)} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    s = inputs.Splitter(delim)
    items = []
    for c in chunks:
        items += s.feed(c)
    items += s.finish()
    assert items == expected_items(data, delim)
    assert list(inputs.split_items(chunks, delim)) == items


def test_splitter_empty_lines_are_items():
    assert list(inputs.split_items([b"a\n\n", b"\nb"])) == ["a", "", "", "b"]
    assert list(inputs.split_items([b"\n"])) == [""]
    assert list(inputs.split_items([b""])) == []


def test_items_keep_any_byte():
    [item] = inputs.split_items([b"\xff\xfe x\n"])
    assert os.fsencode(item) == b"\xff\xfe x"


@pytest.mark.parametrize("text,delim", [
    ("\\n", b"\n"), ("\\0", b"\0"), ("\\t", b"\t"), ("\\x41", b"A"), (":", b":"),
    ("ab", b"ab"), ("", None),
])
def test_parse_delimiter(text, delim):
    assert inputs.parse_delimiter(text) == delim


# -- records and combining -------------------------------------------------

def test_make_record():
    assert inputs.make_record()(" a ") == (" a ",)
    assert inputs.make_record("lr")(" a ") == ("a",)
    assert inputs.make_record("l")(" a ") == ("a ",)
    assert inputs.make_record("r")(" a ") == (" a",)
    assert inputs.make_record(None, ",")("a,b,,c") == ("a", "b", "", "c")
    assert inputs.make_record("lr", r"\s*;\s*")(" a ; b ") == ("a", "b")


def recs(*values):
    return [(v,) for v in values]


def test_combine_product():
    got = list(inputs.combine([(recs("a", "b"), False), (recs("1", "2", "3"), False)]))
    assert got == [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1"), ("b", "2"), ("b", "3")]


def test_combine_linked_stops_with_the_shortest():
    got = list(inputs.combine([(recs("a", "b", "c"), False), (recs("1", "2"), True)]))
    assert got == [("a", "1"), ("b", "2")]


def test_combine_linked_then_product():
    got = list(inputs.combine([(recs("a", "b"), False), (recs("1", "2"), True),
                               (recs("x", "y"), False)]))
    assert got == [("a", "1", "x"), ("a", "1", "y"), ("b", "2", "x"), ("b", "2", "y")]


def test_combine_columns_concatenate():
    got = list(inputs.combine([([("a", "b")], False), ([("c",)], False)]))
    assert got == [("a", "b", "c")]


def test_combine_empty_source_gives_nothing():
    assert list(inputs.combine([(recs("a"), False), ([], False)])) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.text(max_size=3), max_size=4), min_size=1, max_size=3))
def test_combine_is_a_product(lists):
    got = list(inputs.combine([(recs(*v), False) for v in lists]))
    n = 1
    for v in lists:
        n *= len(v)
    assert len(got) == n
    assert all(len(r) == len(lists) for r in got)


# -- grouping records into jobs ------------------------------------------

def job_args(source):
    out = []
    while True:
        job = source.next()
        assert job is not jobs.WAIT
        if job is None:
            return out
        out.append(job.args)


def test_n_inputs_per_job():
    src = jobs.RecordSource(jobs.IterFeed(recs(*"12345")), per_job=2)
    assert job_args(src) == [["1", "2"], ["3", "4"], ["5"]]


def test_n0_runs_without_arguments():
    src = jobs.RecordSource(jobs.IterFeed(recs("a", "b")), per_job=0)
    assert job_args(src) == [[], []]


@pytest.mark.parametrize("n,slots,shares", [
    (7, 3, [3, 3, 1]), (5, 2, [3, 2]), (4, 8, [1, 1, 1, 1]), (1, 2, [1]),
])
def test_fill_line_spreads_over_the_slots(n, slots, shares):
    src = jobs.RecordSource(jobs.IterFeed(recs(*map(str, range(n)))), 1, True, slots)
    assert [len(a) for a in job_args(src)] == shares


def test_fill_line_respects_the_line_limit():
    many = recs(*(f"{i:09d}" for i in range(60000)))
    src = jobs.RecordSource(jobs.IterFeed(many), 1, True, 2)
    got = job_args(src)
    assert [a for args in got for a in args] == [r[0] for r in many]
    assert all(inputs.line_length([tuple(a)]) <= jobs.MAX_LINE for a in got)
    assert len(got) > 2


# -- real runs -----------------------------------------------------------

def test_stdin_lines_empty_and_unterminated():
    p = run_gridmap(["-k", "echo", "[{}]"], input=b"a\n\n\nb")
    assert p.stdout == b"[a]\n[]\n[]\n[b]\n"


def test_empty_stdin_runs_nothing():
    p = run_gridmap(["echo", "x"], input=b"")
    assert (p.stdout, p.returncode) == (b"", 0)


def test_stdin_from_dev_null(tmp_path):
    with open(os.devnull, "rb") as f:
        p = run_gridmap(["echo", "x"], stdin=f)
    assert (p.stdout, p.returncode) == (b"", 0)


def test_stdin_regular_file(tmp_path):
    f = tmp_path / "in"
    f.write_bytes(b"".join(b"%d\n" % i for i in range(1000)))
    with open(f, "rb") as fh:
        p = run_gridmap(["-k", "-j2", "/bin/echo"], stdin=fh)
    assert p.stdout == f.read_bytes()


def test_many_lines_through_a_pipe():
    data = b"".join(b"%d\n" % i for i in range(2000))
    p = run_gridmap(["-k", "-j2", "-n", "7", "/bin/echo"], input=data)
    assert p.stdout.split() == data.split()


def test_arg_files_and_four_colons(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.write_bytes(b"1\n2\n")
    b.write_bytes(b"x\ny\nz\n")
    p = run_gridmap(["-k", "-a", str(a), "-a", str(b), "echo"])
    assert p.stdout == b"1 x\n1 y\n1 z\n2 x\n2 y\n2 z\n"
    p = run_gridmap(["-k", "echo", "{2}{1}", "::::", str(a), str(b)])
    assert p.stdout == b"x1\ny1\nz1\nx2\ny2\nz2\n"
    p = run_gridmap(["-k", "echo", "::::", str(a), "::::+", str(b)])
    assert p.stdout == b"1 x\n2 y\n"
    p = run_gridmap(["-k", "echo", ":::", "A", "::::", str(a), ":::+", "p", "q", "r"])
    assert p.stdout == b"A 1 p\nA 2 q\n"


def test_four_colons_dash_is_stdin():
    p = run_gridmap(["-k", "echo", "::::", "-", ":::", "x"], input=b"s1\ns2\n")
    assert p.stdout == b"s1 x\ns2 x\n"


def test_null_keeps_newlines(argv_script):
    p = run_gridmap(["-0", "-k", argv_script], input=b"a\nb\0\0c\0d")
    assert nul_fields(p.stdout) == [b"a\nb", b"", b"c", b"d"]


def test_delimiter(argv_script):
    p = run_gridmap(["-d", "\\t", "-k", argv_script], input=b"a b\t\tc\n\t")
    assert nul_fields(p.stdout) == [b"a b", b"", b"c\n"]
    p = run_gridmap(["-d", "xy", "-k", argv_script], input=b"1xy2xxy3")
    assert nul_fields(p.stdout) == [b"1", b"2x", b"3"]
    p = run_gridmap(["-0", "-a", "-", "-k", argv_script], input=b"a\0b\0")
    assert nul_fields(p.stdout) == [b"a", b"b"]


def test_colsep_fields_and_positions(argv_script):
    p = run_gridmap(["--colsep", "\t", "-k", argv_script + " {1} {-1} {3}"],
                    input=b"a\tb\tc\nd\te\n")
    # A missing column is no argument at all, as in GNU parallel.
    assert nul_fields(p.stdout) == [b"a", b"c", b"c", b"d", b"e"]
    # Without a positional token, every column is an argument.
    p = run_gridmap(["--colsep", ",", "-k", argv_script], input=b"a,b c,\n")
    assert nul_fields(p.stdout) == [b"a", b"b c", b""]


def test_trim(argv_script):
    data = b"  a b  \n\tc\t\n"
    for mode, want in [("n", [b"  a b  ", b"\tc\t"]), ("l", [b"a b  ", b"c\t"]),
                       ("r", [b"  a b", b"\tc"]), ("lr", [b"a b", b"c"])]:
        p = run_gridmap(["--trim", mode, "-k", argv_script], input=data)
        assert nul_fields(p.stdout) == want, mode


def test_n_and_N(argv_script):
    p = run_gridmap(["-k", "-n", "2", argv_script + " {} ;", "echo", ":::", "1", "2", "3"])
    assert p.stdout == b"1\x002\x00\n3\x00\n"
    p = run_gridmap(["-k", "-N", "3", "echo", "{3}{1}", ":::", *"abcdefg"])
    assert p.stdout == b"ca\nfd\ng\n"


def test_X_and_m_use_every_input_once():
    data = b"".join(b"%06d\n" % i for i in range(30000))
    for flag in ("-X", "-m"):
        p = run_gridmap(["-k", "-j2", flag, "/bin/echo", "x{}y"], input=data)
        words = p.stdout.split()
        assert p.returncode == 0
        assert [w.strip(b"xy") for w in words] == data.split()
        assert len(p.stdout.splitlines()) >= 2


def test_X_repeats_the_context():
    p = run_gridmap(["-k", "-j1", "-X", "echo", "a{}b", "{#}"], input=b"1\n2\n")
    assert p.stdout == b"a1b a2b 1\n"
    p = run_gridmap(["-k", "-j1", "-m", "echo", "a{}b", "{#}"], input=b"1\n2\n")
    assert p.stdout == b"a1 2b 1\n"


def test_missing_arg_file_exits_66(tmp_path):
    p = run_gridmap(["-a", str(tmp_path / "nope"), "echo"])
    assert p.returncode == 66
    assert b"nope" in p.stderr
    p = run_gridmap(["echo", "::::", str(tmp_path / "nope")])
    assert p.returncode == 66


def test_directory_as_input_exits_66(tmp_path):
    p = run_gridmap(["-a", str(tmp_path), "echo"])
    assert p.returncode == 66
    assert p.stderr.startswith(b"gridmap: error:")


def test_nul_in_an_input_becomes_backslash_zero_as_gnu_parallel_does():
    # Read without -0, an input holding NUL cannot be an argument: GNU
    # parallel 20221122 writes it as \0 and warns; so does gridmap.  (With
    # bash: dash's echo would print that \0 as a NUL.)
    for cmd in ("/bin/echo", "echo"):
        p = run_gridmap(["-k", cmd], input=b"a\0b\nc\n\xff\0\n",
                        env=dict(os.environ, PARALLEL_SHELL="/bin/bash"))
        assert (p.returncode, p.stdout) == (0, b"a\\0b\nc\n\xff\\0\n")
        assert b"A NUL character in the input was replaced with \\0." in p.stderr
        assert b"Traceback" not in p.stderr


def test_an_item_longer_than_an_argument_can_be_ends_the_input_not_the_jobs():
    """An input with no delimiter cannot grow gridmap's memory: an item past
    128 KiB (Linux's limit on one argument) is an error, exit 65, after the
    jobs of the items before it have run and printed."""
    data = b"first\nsecond\n" + b"a" * (300 * 1024)
    p = run_gridmap(["-k", "-j2", "echo"], input=data)
    assert p.returncode == 65
    assert p.stdout == b"first\nsecond\n"
    assert p.stderr.startswith(b"gridmap: error: an input item is longer than 131072 bytes")
    # A long item under the limit still reaches its command.
    p = run_gridmap(["printf", "%s"], input=b"b" * (100 * 1024) + b"\n")
    assert (p.returncode, p.stdout) == (0, b"b" * (100 * 1024))


def test_pipe_record_with_no_end_is_bounded(tmp_path):
    """--pipe keeps a record in memory only up to 256 MiB (or twice
    --block): past that, exit 65 naming the way out."""
    import subprocess

    from conftest import GRIDMAP
    p = subprocess.run(f"head -c 300000000 /dev/zero | {GRIDMAP} --pipe wc -c",
                       shell=True, capture_output=True, timeout=120)
    assert p.returncode == 65
    assert b"--pipe: a record is longer than 256 MiB" in p.stderr
