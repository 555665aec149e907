"""The hub's names: a client announces a name for an address it serves (a
gridmcast sender its control address) and others look the name up, waiting
if it is not there yet.  A name lives as long as the connection that
announced it.  A service of the hub (see gridtools.hub.server)."""


from gridtools.proto import wire

PER_CONN = 64               # names one connection may hold, and lookups park
CLIENT = ("client",)        # the roles that may use its verbs


def check_name(verb, name):
    if not wire.NAME.match(name):
        raise wire.WireError(f"{verb}: bad name {name[:64]!r}: {wire.NAME_RULE}", wire.E_USAGE)
    return name


class Names:
    """names: name -> (conn, address); lookups: name -> [conn] waiting."""

    def __init__(self, server):
        self.server = server
        self.names = {}
        self.lookups = {}
        self.verbs = {"ANNOUNCE": (self.on_announce, CLIENT),
                      "LOOKUP": (self.on_lookup, CLIENT)}

    def opened(self, conn):
        pass

    def on_announce(self, conn, msg):
        name = check_name("ANNOUNCE", msg.arg(0))
        addr = msg.arg(1)
        held = self.names.get(name)
        if held is not None and held[0] is not conn:
            raise wire.WireError(f"ANNOUNCE: {name} is taken (by {held[0].peer})",
                                 wire.E_TEMPFAIL)
        if held is None and sum(c is conn for c, _ in self.names.values()) >= PER_CONN:
            raise wire.WireError(f"ANNOUNCE: more than {PER_CONN} names", wire.E_USAGE)
        self.names[name] = (conn, addr)
        self.server.send(conn, wire.format("OK", name))
        for waiter in self.lookups.pop(name, ()):
            if not waiter.closing:
                self.server.send(waiter, wire.format("AT", name, addr))

    def on_lookup(self, conn, msg):
        name = check_name("LOOKUP", msg.arg(0))
        held = self.names.get(name)
        if held is not None:
            self.server.send(conn, wire.format("AT", name, held[1]))
        elif msg.get("wait") == "1":
            if sum(w.count(conn) for w in self.lookups.values()) >= PER_CONN:
                raise wire.WireError(f"LOOKUP: more than {PER_CONN} waiting", wire.E_USAGE)
            self.lookups.setdefault(name, []).append(conn)
        else:
            raise wire.WireError(f"LOOKUP: nothing is announced as {name}", wire.E_UNAVAILABLE)

    def closed(self, conn, quiet):
        """conn closed: its names go, and so do its waiting lookups."""
        for name in [n for n, (c, _) in self.names.items() if c is conn]:
            del self.names[name]
        for name in list(self.lookups):
            waiting = [c for c in self.lookups[name] if c is not conn]
            if waiting:
                self.lookups[name] = waiting
            else:
                del self.lookups[name]
