"""Addresses, written once for every command: parse and format
`host:port`, `:port` (loopback), `[v6addr]:port` and `unix:/path`.

Pure functions and one small class, no I/O; in the worker's MANIFEST, so it
imports only the standard library.
"""

import os
import socket

MAX_UNIX_PATH = 107         # bytes in sun_path, less its terminating NUL


class AddressError(ValueError):
    """Text that is not an address; the message quotes it."""


class Address:
    __slots__ = ("family", "host", "port", "path")

    def __init__(self, family, host=None, port=None, path=None):
        self.family = family
        self.host = host
        self.port = port
        self.path = path

    def __str__(self):
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        return join(self.host, self.port)

    def __eq__(self, other):
        return isinstance(other, Address) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))

    @property
    def is_loopback(self):
        if self.family == socket.AF_UNIX:
            return True
        if self.host == "localhost":
            return True
        import ipaddress
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse(text, default_host="127.0.0.1", unix=True):
    """host:port, :port, [v6]:port, or (when unix) unix:/path -> Address.

    The port is 0 to 65535 in ASCII digits; a v6 address is bracketed and
    nothing may follow the `]` but `:port`.  Raises AddressError.
    """
    if not isinstance(text, str) or not text:
        raise AddressError(f"address {text!r}: expected host:port, :port, [v6addr]:port"
                           + (" or unix:/path" if unix else ""))
    if text.startswith("unix:"):
        path = text[5:]
        if not unix:
            raise AddressError(f"address {text!r}: a unix: address cannot be used here")
        if not path:
            raise AddressError(f"address {text!r}: unix: needs a path")
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise AddressError(f"address {text!r}: socket path longer than "
                               f"{MAX_UNIX_PATH} bytes")
        return Address(socket.AF_UNIX, path=path)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host or "]" in host or "[" in host:
            raise AddressError(f"address {text!r}: expected [v6addr]:port")
        if ":" not in host:
            raise AddressError(f"address {text!r}: brackets are for IPv6 addresses")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise AddressError(f"address {text!r}: expected host:port, :port"
                               + (", [v6addr]:port or unix:/path" if unix else
                                  " or [v6addr]:port"))
        if ":" in host or "[" in host or "]" in host:
            raise AddressError(f"address {text!r}: write an IPv6 address as [v6addr]:port")
    if not (port.isascii() and port.isdigit() and len(port) <= 5) or int(port) > 65535:
        raise AddressError(f"address {text!r}: the port must be a number from 0 to 65535, "
                           f"got {port!r}")
    if any(c.isspace() for c in host):
        raise AddressError(f"address {text!r}: a host name has no blanks")
    host = host or default_host
    return Address(socket.AF_INET6 if ":" in host else socket.AF_INET, host, int(port))


def join(host, port):
    """host and port as text: [v6]:port for an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
