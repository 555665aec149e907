"""Shared fixtures: where bin/gridmap is, and a way to run it for real.

Every subprocess gets a timeout, so a bug that hangs gridmap fails its test
instead of the whole suite.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

GRIDMAP = os.path.join(ROOT, "bin", "gridmap")
TIMEOUT = 60


def pytest_configure(config):
    # make test runs -m 'not slow', make test-slow runs -m slow; plain
    # pytest runs everything.
    config.addinivalue_line("markers", "slow: minutes of real daemons (Slurm); make test-slow")


def run_gridmap(args, input=b"", timeout=TIMEOUT, stdin=None, **kw):
    """Run bin/gridmap with args; return the CompletedProcess (bytes).

    input: bytes fed through a pipe; stdin: a file object or descriptor to
    use instead (a regular file, /dev/null).
    """
    if stdin is not None:
        return subprocess.run([GRIDMAP, *args], stdin=stdin, capture_output=True,
                              timeout=timeout, **kw)
    return subprocess.run([GRIDMAP, *args], input=input, capture_output=True,
                          timeout=timeout, **kw)


def run_parallel(args, input=b"", timeout=TIMEOUT, **kw):
    """GNU parallel with the same arguments (skips when it is missing)."""
    if shutil.which("parallel") is None:
        pytest.skip("GNU parallel is not installed")
    env = dict(os.environ, **kw.pop("env", {}))
    return subprocess.run(["parallel", *args], input=input, capture_output=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture
def gridmap_path():
    return GRIDMAP


@pytest.fixture
def gridmap():
    """Call gridmap(args, input=b"...") to run the real command."""
    return run_gridmap


@pytest.fixture
def argv_script(tmp_path):
    """A program that prints each of its arguments followed by NUL, so a
    test sees exactly which arguments a job received."""
    path = tmp_path / "showargs"
    path.write_text('#!/bin/sh\nfor a; do printf "%s\\0" "$a"; done\n')
    path.chmod(0o755)
    return str(path)


def nul_fields(data):
    """The NUL-terminated fields showargs printed."""
    assert data.endswith(b"\0") or not data, data
    return data.split(b"\0")[:-1]
