"""Connections: listening, connecting, TLS, and the blocking channel clients
use to talk to a hub."""
