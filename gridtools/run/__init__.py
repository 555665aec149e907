"""Running one job as a child process: spawn, kill, exit status and the
lifeline that kills jobs whose runner died (runner); its stdin, stdout,
stderr and exit relayed on the loop (relay).  Shipped with the worker."""
