"""The worker (gridd worker): takes jobs from a hub and runs them.  It needs
only the modules in serve.MANIFEST, so a copy of those runs it anywhere."""
