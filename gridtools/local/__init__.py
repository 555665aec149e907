"""gridmap's engine: inputs, templates, blocks, the pool of local jobs, and
the output they make."""
