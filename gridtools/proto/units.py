"""Sizes and rates as people write them on command lines, parsed once for
every command: `--block 1M`, `--buffer 64MiB`, `--rate 200M`.  Pure."""

import re

# Sizes in powers of 1024, as GNU parallel's --block and dd read them;
# a trailing i and B are allowed (1MiB, 1MB and 1M are all 1048576 bytes).
_SIZE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([kmgt]?)(i?b?)\s*\Z", re.I | re.A)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

# Rates in bits per second with powers of ten, as network rates are written.
_RATE = re.compile(r"\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)([kmg]?)(?:bit|bps|b)?(?:/s)?\s*\Z",
                   re.I | re.A)
_RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_size(text):
    """A size like 1M, 10k, 1.5k, 64MiB or 512 -> bytes (at least 1).
    ValueError names what was wrong."""
    m = _SIZE.match(text)
    if not m or (m.group(3) and not m.group(2) and m.group(3).lower() != "b"):
        raise ValueError(f"not a size: {text!r} (expected e.g. 1M, 512k, 64MiB, 4096)")
    n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if n < 1:
        raise ValueError(f"size must be at least 1 byte: {text!r}")
    return n


def parse_rate(text):
    """A rate like 200M, 1.5G or 800kbit/s -> bits per second (a float)."""
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"not a rate: {text!r} (expected e.g. 200M, 1G, 800kbit/s)")
    return float(m.group(1)) * _RATE_UNITS[m.group(2).lower()]
