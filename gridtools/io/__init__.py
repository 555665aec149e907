"""The one event loop (loop) and connections (net): listening, connecting,
TLS, and the buffered channel — blocking for clients, one write a turn on a
loop for the worker.  Shipped with the worker."""
