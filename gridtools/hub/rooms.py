"""The hub's rooms service (gridcat join): members join a room under a
name; the hub sequences everything said in the room and every change of
its member list (a *view*, numbered) into one order, the same for every
member.  A service of the hub (see gridtools.hub.server); nothing of a
room is journaled: a room lives while it has members.

Leaving a view: LEAVE, the connection's end, a member silent for three
heartbeats (it is pinged after one; the check runs every min(1 s, half a
heartbeat)), or a member that does not read: a delivery that would take
its unsent bytes past MEMBER_BUFFER removes it instead (GONE, then a view
without it).  Limits (gridcat(1), LIMITS): MAX_ROOMS rooms, MAX_MEMBERS a
room, PER_CONN rooms a connection, MAX_SAY bytes in one SAY.
"""

import collections
import json
import time

from gridtools.proto import frames
from gridtools.proto import wire

CLIENT = ("client",)
MAX_ROOMS = 1000            # rooms a hub holds
MAX_MEMBERS = 1000          # members of one room
PER_CONN = 64               # rooms one connection is in
MESSAGE = 1 << 20           # bytes in one message said in a room
MAX_SAY = MESSAGE + 16      # bytes in one SAY's body (a message list)
MEMBER_BUFFER = 4 << 20     # unsent bytes a member may have before it is removed
LISTED = 100                # member names ROOMS lists for each room
MISSED = 3                  # heartbeats a member may stay silent


def check_name(verb, what, name):
    if not wire.NAME.match(name):
        raise wire.WireError(f"{verb}: bad {what} {name[:64]!r}: {wire.NAME_RULE}",
                             wire.E_USAGE, field=what, got=name)
    return name


class Room:
    __slots__ = ("name", "members", "view", "seq")

    def __init__(self, name):
        self.name = name
        self.members = {}           # name -> Member, in the order they joined
        self.view = 0               # the number of the current view
        self.seq = 0                # the place the next thing delivered takes


class Member:
    __slots__ = ("conn", "room", "name")

    def __init__(self, conn, room, name):
        self.conn = conn
        self.room = room
        self.name = name


class Rooms:
    def __init__(self, server, opts):
        self.server = server
        self.opts = opts
        self.rooms = {}
        self.joined = {}            # conn -> {room name: Member}
        self.pinged = {}            # conn -> when it was last pinged
        self.silent = set()         # conns being closed for silence
        self.timer = None
        self.verbs = {
            "JOIN": (self.on_join, CLIENT), "SAY": (self.on_say, CLIENT),
            "LEAVE": (self.on_leave, CLIENT), "ROOMS": (self.on_rooms, CLIENT),
        }

    def opened(self, conn):
        pass

    def closed(self, conn, quiet):
        why = "silent" if conn in self.silent else "gone"
        self.silent.discard(conn)
        self.pinged.pop(conn, None)
        for m in list(self.joined.get(conn, {}).values()):
            self.leave(m, why)

    # -- membership ---------------------------------------------------------------

    def member(self, verb, conn, msg):
        name = check_name(verb, "room", msg.arg(0))
        m = self.joined.get(conn, {}).get(name)
        if m is None:
            raise wire.WireError(f"{verb}: this connection is not in room {name}",
                                 wire.E_DATA)
        return m

    def on_join(self, conn, msg):
        rname = check_name("JOIN", "room", msg.arg(0))
        name = msg.get("name")
        if name is None:
            raise wire.WireError("JOIN: needs name=", wire.E_USAGE, field="name")
        check_name("JOIN", "name", name)
        mine = self.joined.get(conn, {})
        if rname in mine:
            raise wire.WireError(f"JOIN: this connection is in {rname} already (as "
                                 f"{mine[rname].name})", wire.E_USAGE)
        if len(mine) >= PER_CONN:
            raise wire.WireError(f"JOIN: a connection is in at most {PER_CONN} rooms",
                                 wire.E_USAGE)
        room = self.rooms.get(rname)
        if room is None:
            if len(self.rooms) >= MAX_ROOMS:
                raise wire.WireError(f"JOIN: the hub holds {MAX_ROOMS} rooms already",
                                     wire.E_TEMPFAIL)
            room = Room(rname)
        elif name in room.members:
            raise wire.WireError(f"JOIN: {name} is in {rname} already (from "
                                 f"{room.members[name].conn.peer})", wire.E_TEMPFAIL,
                                 field="name", got=name)
        elif len(room.members) >= MAX_MEMBERS:
            raise wire.WireError(f"JOIN: {rname} has {MAX_MEMBERS} members already",
                                 wire.E_TEMPFAIL)
        self.rooms[rname] = room
        m = room.members[name] = Member(conn, room, name)
        self.joined.setdefault(conn, {})[rname] = m
        room.view += 1
        self.server.send(conn, wire.format("OK", rname, name=name, view=room.view))
        self.server.event("room.joined", room=rname, name=name, view=room.view)
        self.deliver(room, self.view_msg(room, joined=name))
        if self.timer is None:
            self.timer = self.server.call_later(self.tick_every(), self.tick)

    def on_leave(self, conn, msg):
        m = self.member("LEAVE", conn, msg)
        self.leave(m, "left")

    def leave(self, m, why):
        """m leaves its room's view: the others get the view without it."""
        room = m.room
        self.drop(m)
        if why == "left":
            self.server.send(m.conn, wire.format("OK", room.name, view=room.view))
        self.server.event("room.left", room=room.name, name=m.name, view=room.view, why=why)
        if room.members:
            self.deliver(room, self.view_msg(room, left=m.name, why=why))

    def drop(self, m):
        room = m.room
        del room.members[m.name]
        mine = self.joined[m.conn]
        del mine[room.name]
        if not mine:
            del self.joined[m.conn]
            self.pinged.pop(m.conn, None)
        room.view += 1
        if not room.members:
            del self.rooms[room.name]

    def view_msg(self, room, **change):
        body = " ".join(room.members).encode("ascii")
        data = wire.format("VIEW", room.name, seq=room.seq, view=room.view,
                           n=len(room.members), body=body, **change)
        room.seq += 1
        return data

    # -- what members say ---------------------------------------------------------

    def on_say(self, conn, msg):
        m = self.member("SAY", conn, msg)
        body = msg.body
        if body is None:
            raise wire.WireError("SAY: needs the message as its body (bytes=N)", wire.E_USAGE)
        if len(body) > MAX_SAY:
            raise wire.WireError(f"SAY: a body of at most {MAX_SAY} bytes", wire.E_USAGE,
                                 field="bytes", got=len(body))
        n = msg.int("n", None, 1, frames.MAX_BATCH)
        if n is None:
            n, body = 1, frames.pack([body])
        else:
            frames.unpack(body, n, "SAY")       # checked before anyone has it
        room = m.room
        data = wire.format("SAID", room.name, seq=room.seq, view=room.view, n=n, body=body,
                           **{"from": m.name})
        room.seq += n
        self.deliver(room, data)

    def deliver(self, room, data):
        """data to every member of room, in the room's one order.  A member
        it would take past MEMBER_BUFFER unsent bytes does not get it: it
        leaves the view (GONE), and the others get the view without it."""
        late = collections.deque()
        self.send_all(room, data, late)
        while late and room.members:
            m = late.popleft()
            if room.members.get(m.name) is not m:
                continue
            self.drop(m)
            self.server.send(m.conn, wire.format("GONE", room.name, view=room.view,
                                                 why="behind"))
            self.server.event("room.left", room=room.name, name=m.name, view=room.view,
                              why="behind")
            if room.members:
                self.send_all(room, self.view_msg(room, left=m.name, why="behind"), late)

    def send_all(self, room, data, late):
        send = self.server.send
        size = len(data)
        for m in room.members.values():
            if len(m.conn.out) + size > MEMBER_BUFFER:
                late.append(m)
            else:
                send(m.conn, data)

    # -- keep-alives --------------------------------------------------------------

    def tick_every(self):
        return min(1.0, self.opts.heartbeat / 2)

    def tick(self):
        """A member silent for a heartbeat is pinged; one silent for MISSED
        heartbeats is closed (and so leaves its rooms' views)."""
        self.timer = None
        now = time.monotonic()
        hb = self.opts.heartbeat
        for conn in list(self.joined):
            quiet = now - conn.last_rx
            if quiet > MISSED * hb:
                self.server.log(f"{conn.name}: room member silent for {quiet:.0f}s: "
                                f"closed")
                self.silent.add(conn)
                self.server.close(conn)
            elif quiet > hb and self.pinged.get(conn, -1.0) < conn.last_rx:
                self.pinged[conn] = now
                self.server.send(conn, b"PING\n")
        if self.joined:
            self.timer = self.server.call_later(self.tick_every(), self.tick)

    # -- listing ------------------------------------------------------------------

    def on_rooms(self, conn, msg):
        rows = [{"name": r.name, "view": r.view, "seq": r.seq, "count": len(r.members),
                 "members": list(r.members)[:LISTED]}
                for r in sorted(self.rooms.values(), key=lambda r: r.name)]
        self.server.send(conn, wire.format("INFO", "rooms",
                                           body=json.dumps(rows, sort_keys=True).encode()))
