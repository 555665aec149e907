"""The wire protocol and what every part agrees on: messages, addresses, exit
codes and outcomes, keys, sizes.  Pure (keys reads key files); shipped
with the worker."""
