"""The one address grammar every command uses (gridtools.proto.address)."""

import os
import socket
import subprocess
import sys

import pytest

from gridtools.proto import address

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text, want", [
    ("h:1", ("h", 1)), (":7711", ("127.0.0.1", 7711)), ("[::1]:5", ("::1", 5)),
    ("localhost:0", ("localhost", 0)), ("10.0.0.1:65535", ("10.0.0.1", 65535)),
])
def test_good_addresses(text, want):
    a = address.parse(text)
    assert (a.host, a.port) == want
    assert address.parse(str(a)) == a


@pytest.mark.parametrize("text", [
    "", "h", "h:", ":", "h:70000", "h:-1", "h:1.5", "h:²", "h: 1", "[::1]x:5", "[::1]",
    "::1:5", "[h]:1", "h o:1", "unix:",
])
def test_bad_addresses(text):
    with pytest.raises(address.AddressError):
        address.parse(text)


def test_unix_paths():
    a = address.parse("unix:/tmp/g.sock")
    assert (a.family, a.path, str(a)) == (socket.AF_UNIX, "/tmp/g.sock", "unix:/tmp/g.sock")
    assert a.is_loopback
    with pytest.raises(address.AddressError, match="longer"):
        address.parse("unix:/" + "x" * 107)
    with pytest.raises(address.AddressError, match="cannot be used here"):
        address.parse("unix:/tmp/g.sock", unix=False)


def test_the_commands_share_it():
    from gridtools.io import net
    from gridtools.mcast import wire as mcastwire
    from gridtools.proto import errors
    for parse in (net.parse_address, lambda t: mcastwire.parse_hostport(t)):
        with pytest.raises(errors.UsageError):
            parse("[::1]x:5")
        with pytest.raises(errors.UsageError):
            parse("h:70000")
    assert mcastwire.parse_hostport(":7711") == ("127.0.0.1", 7711)
    # The worker checks --connect by it too: a usage error, not a retry loop.
    p = subprocess.run([sys.executable, "-m", "gridtools.worker", "--connect", "h:70000"],
                       capture_output=True, timeout=30, cwd=ROOT)
    assert p.returncode == 64, p.stderr
    assert b"70000" in p.stderr


def test_one_size_grammar_for_every_command():
    from gridtools.local import blocks
    from gridtools.proto import units
    from gridtools.cli import gridmcast
    assert blocks.parse_size is units.parse_size is gridmcast._size
    for text, n in (("1M", 1 << 20), ("1MiB", 1 << 20), ("1MB", 1 << 20), ("64m", 64 << 20),
                    ("1.5k", 1536), ("512", 512), ("4096b", 4096)):
        assert units.parse_size(text) == n, text
    for text in ("", "0", "1Q", "1iB", "-1", "1e3", "²"):
        with pytest.raises(ValueError):
            units.parse_size(text)
    assert units.parse_rate("200M") == 200e6 and units.parse_rate("800kbit/s") == 800e3


def test_one_key_reader(tmp_path):
    """A key file that cannot be read is the same failure, with the same
    exit code (78), for every command that takes one."""
    from gridtools.proto import errors, keys
    from gridtools.cli import gridmcast
    empty = tmp_path / "empty"
    empty.write_bytes(b"  \n")
    for read in (keys.read_key, gridmcast.read_key):
        for path in (str(empty), str(tmp_path / "missing")):
            with pytest.raises(errors.GridError) as e:
                read(path)
            assert e.value.code == errors.CONFIG
