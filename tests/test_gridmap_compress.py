"""gridmap --compress, --compress-program, --decompress-program: output
kept in temporary files goes through real compressors, and what comes out
is byte for byte what a run without them prints (and what GNU parallel
20221122 prints with them)."""

import shutil

import pytest

from conftest import run_gridmap, run_parallel
from gridtools.local import compress

# Six streams over 1 MiB, kept in files (stdout and stderr of three jobs),
# and small ones, kept in memory.
BIG = ["-k", "-j3", "seq {} | head -c 3000000; seq {} >&2", ":::",
       "400000", "10", "900000", "3", "700000"]


def logging(tmp_path, name, command):
    """A compressor that notes each run in tmp_path/log, then runs command."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho {name} >> {tmp_path}/log\nexec {command}\n")
    path.chmod(0o755)
    return str(path)


def runs(tmp_path):
    log = tmp_path / "log"
    return sorted(log.read_text().split()) if log.exists() else []


@pytest.mark.parametrize("opts,args", [
    (["--compress"], BIG),
    (["--compress-program", "gzip"], BIG),
    (["--compress-program", "xz", "--decompress-program", "xz -dc"], BIG),
    (["--compress"], ["-j1", *BIG[2:]]),     # grouped, not -k: one at a time
])
def test_output_is_the_same(opts, args):
    plain = run_gridmap(args)
    assert plain.returncode == 0 and len(plain.stdout) > 6_000_000
    packed = run_gridmap([*opts, *args])
    assert (packed.returncode, packed.stderr) == (0, plain.stderr)
    assert packed.stdout == plain.stdout


def test_the_programs_run_once_per_big_stream(tmp_path):
    """Each stream beyond 1 MiB is compressed once and read back once;
    what fits in memory is not compressed."""
    pack = logging(tmp_path, "c", "gzip -c -1")
    unpack = logging(tmp_path, "d", "gzip -dc")
    p = run_gridmap(["--compress-program", pack, "--decompress-program", unpack, *BIG])
    plain = run_gridmap(BIG)
    assert (p.returncode, p.stdout, p.stderr) == (0, plain.stdout, plain.stderr)
    assert runs(tmp_path) == ["c"] * 6 + ["d"] * 6


def test_held_results_spill_compressed(tmp_path):
    """-k with job 1 held up until the last job ends: the big outputs
    after it wait (beyond 8 MiB, in the spill file, copied compressed) and
    come out decompressed, in order."""
    go = tmp_path / "go"
    job = (f"case {{}} in 1) while [ ! -e {go} ]; do sleep 0.05; done; echo one;; "
           f"last) touch {go};; *) seq 2000000 | head -c 2500000; echo {{}};; esac")
    args = ["-k", "-j2", "--tmpdir", str(tmp_path), job, ":::", "1", "2", "3", "4", "5",
            "6", "7", "last"]
    plain = run_gridmap(args)
    go.unlink()
    pack = logging(tmp_path, "c", "zstd -q -c -1")
    unpack = logging(tmp_path, "d", "zstd -q -dc")
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    p = run_gridmap(["--compress-program", pack, "--decompress-program", unpack, *args])
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout == plain.stdout and p.stdout.startswith(b"one\n")
    assert runs(tmp_path) == ["c"] * 6 + ["d"] * 6


def test_like_gnu_parallel():
    gnu = run_parallel(["--compress", *BIG])
    assert gnu.returncode == 0
    p = run_gridmap(["--compress", *BIG])
    assert (p.returncode, p.stdout, p.stderr) == (0, gnu.stdout, gnu.stderr)


@pytest.mark.parametrize("opts,line", [
    (["--compress-program", "no-such-packer"],
     b"gridmap: error: --compress-program: no-such-packer: command not found\n"),
    (["--decompress-program", "no-such-unpacker -d"],
     b"gridmap: error: --decompress-program: no-such-unpacker: command not found\n"),
])
def test_a_missing_program_is_one_line_and_69(opts, line):
    p = run_gridmap([*opts, "echo", ":::", "a"])
    assert (p.returncode, p.stdout, p.stderr) == (69, b"", line)


def test_a_failing_program_is_one_line_and_74():
    p = run_gridmap(["--compress-program", "false", "seq {}", ":::", "1000000"])
    assert (p.returncode, p.stderr) == (74, b"gridmap: error: --compress-program 'false' "
                                             b"failed (exit 1)\n")
    p = run_gridmap(["--compress-program", "cat", "--decompress-program", "false",
                     "seq {}", ":::", "1000000"])
    assert (p.returncode, p.stderr) == (74, b"gridmap: error: --decompress-program 'false' "
                                             b"failed (exit 1)\n")


def test_the_default_is_gnu_parallels_choice():
    have = {"gzip", "xz", "lz4"}
    found = compress.choose(which=lambda p: "/bin/" + p if p in have else None)
    assert (found.compress, found.decompress) == ("lz4 -c -1", "lz4 -dc")
    found = compress.choose(which=lambda p: "/bin/cat" if p == "cat" else None)
    assert (found.compress, found.decompress) == ("cat", "cat")
    found = compress.choose("gzip -9", which=lambda p: "/bin/" + p)
    assert (found.compress, found.decompress) == ("gzip -9", "gzip -9 -dc")
