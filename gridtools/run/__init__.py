"""Running one job as a child process: spawn, pipes, kill, exit status, and
the lifeline that kills jobs whose runner died.  Shipped with the worker."""
