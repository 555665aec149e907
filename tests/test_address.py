"""The one address grammar every command uses (gridtools.address)."""

import socket

import pytest

from gridtools import address


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
    from gridtools import errors, mcastwire, net, worker
    for parse in (net.parse_address, lambda t: mcastwire.parse_hostport(t)):
        with pytest.raises(errors.UsageError):
            parse("[::1]x:5")
        with pytest.raises(errors.UsageError):
            parse("h:70000")
    assert mcastwire.parse_hostport(":7711") == ("127.0.0.1", 7711)
    with pytest.raises(worker.Fatal) as e:
        worker.parse_hub("h:70000")
    assert e.value.code == 64
