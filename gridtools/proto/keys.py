"""Keys and TLS contexts, read once for every command: shared keys come from
files or the environment, never from argv; certificates from PEM files.
A file that cannot be used is a configuration error (exit 78) everywhere.

In the worker's MANIFEST: only the standard library and errors.
"""

from gridtools.proto import errors

MAX_KEY = 4096              # bytes in a shared key


def read_key(path):
    """A shared key from a file (whitespace around it ignored)."""
    try:
        with open(path, "rb") as f:
            key = f.read(MAX_KEY + 1).strip()
    except OSError as e:
        raise errors.GridError(f"cannot read key file {path}: {e.strerror}", errors.CONFIG)
    if not key or len(key) > MAX_KEY:
        raise errors.GridError(f"key file {path}: expected 1 to {MAX_KEY} bytes of key",
                               errors.CONFIG)
    return key


def key_from_env(env, name):
    """A key from $NAME (the key itself) or $NAME_FILE (a path), or None."""
    if env.get(name):
        return env[name].encode("utf-8", "surrogateescape").strip()
    if env.get(name + "_FILE"):
        return read_key(env[name + "_FILE"])
    return None


def key_option(path, env, name):
    """The key a command was given: --key-file PATH, else $NAME / $NAME_FILE."""
    return read_key(path) if path else key_from_env(env, name)


def server_tls(cert, key, ca=None):
    import ssl
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise errors.GridError(f"TLS: cannot load {cert}/{key}: {e}", errors.CONFIG)
    if ca:
        ctx.verify_mode = ssl.CERT_REQUIRED     # client certificates
    return ctx


def client_tls(ca=None, cert=None, key=None):
    import ssl
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise errors.GridError(f"TLS: cannot load certificates: {e}", errors.CONFIG)
    return ctx


def client_tls_from_env(env):
    """GRID_TLS_CA [GRID_TLS_CERT GRID_TLS_KEY] -> a client context, or None."""
    if not env.get("GRID_TLS_CA"):
        return None
    return client_tls(env["GRID_TLS_CA"], env.get("GRID_TLS_CERT"), env.get("GRID_TLS_KEY"))
