"""gridtools: grid computing the Unix way, in pure Python."""

__version__ = "0.1.0"
