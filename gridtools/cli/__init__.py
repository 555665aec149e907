"""Command-line front ends: one module per command, each a thin main(argv) -> int."""
