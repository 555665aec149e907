"""The docs promise only what is built: the Python version they state is the
one the code needs, every command they name is in bin/, and every protocol
verb gridtools(7) lists is handled by the code that should receive it."""

import ast
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
MAN = ROOT / "man"
PKG = ROOT / "gridtools"
README = ROOT / "README.md"
PYPROJECT = ROOT / "pyproject.toml"

PAGES = sorted(p for p in MAN.glob("*.[1-8]") if p.is_file())
DOCS = [*PAGES, README]


def sources():
    """Every module of the package (wherever the layout puts it)."""
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def parsed(path):
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def unescape(text):
    """roff source with font changes and the common escapes taken out."""
    text = re.sub(r"\\f(?:\[[^]]*\]|\(..|.)", "", text)
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\c", "")
    return text.replace("\\e", "\\")


# -- the Python version ------------------------------------------------------

# What the code uses that an older Python lacks: a dotted name as written in
# the source (module.attribute), and the first version that has it.
NEEDS_NAME = {
    "os.pidfd_open": (3, 9),
    "os.splice": (3, 10),
    "os.eventfd": (3, 10),
    "itertools.pairwise": (3, 10),
    "tomllib": (3, 11),
    "hashlib.file_digest": (3, 11),
    "contextlib.chdir": (3, 11),
    "datetime.UTC": (3, 11),
    "enum.StrEnum": (3, 11),
    "asyncio.TaskGroup": (3, 11),
    "itertools.batched": (3, 12),
}


def needed_python(tree):
    """(version, why) pairs for what tree uses that older Pythons lack."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name = f"{node.value.id}.{node.attr}"
            if name in NEEDS_NAME:
                found.append((NEEDS_NAME[name], name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                mod = node.module if isinstance(node, ast.ImportFrom) else alias.name
                for name in (mod, f"{mod}.{alias.name}"):
                    if name in NEEDS_NAME:
                        found.append((NEEDS_NAME[name], name))
        elif isinstance(node, ast.Call):
            func = node.func
            attr = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            # print_exception(exc) / format_exception(exc): one argument since 3.10
            if (attr in ("print_exception", "format_exception") and len(node.args) == 1
                    and not node.keywords):
                found.append(((3, 10), f"traceback.{attr}(exc)"))
            if attr == "zip" and any(k.arg == "strict" for k in node.keywords):
                found.append(((3, 10), "zip(strict=)"))
        elif type(node).__name__ == "Match":
            found.append(((3, 10), "a match statement"))
        elif type(node).__name__ == "TryStar":
            found.append(((3, 11), "except*"))
    return found


def stated_minimum():
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"\s*$',
                  PYPROJECT.read_text(encoding="utf-8"), re.M)
    assert m, "pyproject.toml states no requires-python = \">=X.Y\""
    return int(m.group(1)), int(m.group(2))


def test_requires_python_covers_what_the_code_uses():
    stated = stated_minimum()
    needs = [(v, f"{why} in {p.relative_to(ROOT)}")
             for p in sources() for v, why in needed_python(parsed(p))]
    assert needs, "found none of the version-bound features; is the scan broken?"
    too_new = sorted(f"{why} needs {v[0]}.{v[1]}" for v, why in needs if v > stated)
    assert not too_new, (f"pyproject.toml says >={stated[0]}.{stated[1]}, but:\n"
                         + "\n".join(too_new))
    # os.splice (gridmap's file blocks) and print_exception(exc) set the floor today.
    assert stated >= (3, 10)


def test_readme_states_the_same_python():
    stated = "%d.%d" % stated_minimum()
    said = re.findall(r"Python[^.()]*\((\d+\.\d+) or later", README.read_text(encoding="utf-8"))
    assert said == [stated], f"README says Python {said}, pyproject.toml >={stated}"


def test_the_version_scan_sees_each_kind_of_use():
    tree = ast.parse("import os, traceback\nos.splice(1, 2, 3)\n"
                     "traceback.print_exception(e)\ntraceback.print_exception(t, e, tb)\n"
                     "from itertools import batched\nos.pidfd_open(1)\n")
    assert sorted(needed_python(tree)) == [((3, 9), "os.pidfd_open"),
                                           ((3, 10), "os.splice"),
                                           ((3, 10), "traceback.print_exception(exc)"),
                                           ((3, 12), "itertools.batched")]


# -- commands ----------------------------------------------------------------

# Words that look like a command's name and are not one.
NOT_COMMANDS = {"gridtools", "grids", "gridded"}
_COMMAND = re.compile(r"(?<![\w./-])grid[a-z]+(?![\w-])")



def commands_named(text):
    return {w for w in _COMMAND.findall(unescape(text)) if w not in NOT_COMMANDS}


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_command_named_is_in_bin(doc):
    named = commands_named(doc.read_text(encoding="utf-8"))
    assert named, f"{doc.name} names no command at all; is the scan broken?"
    missing = sorted(c for c in named if not (BIN / c).is_file())
    assert not missing, f"{doc.name} names {', '.join(missing)}, which bin/ does not have"


def test_command_scan():
    text = r""".BR gridcat (1),
\fBgridmap\fR \-\-hub; see gridtools/proto/wire.py and man/gridd.8 and gridtools(7);
"gridmcast-v1|client" is a label; `gridsub` and bin/gridx"""
    assert commands_named(text) == {"gridcat", "gridmap", "gridsub"}


# -- protocol verbs ----------------------------------------------------------

_VERB = re.compile(r"^[A-Z]{2,16}$")


def section(text, name):
    """The lines of .SH name, up to the next .SH."""
    m = re.search(r"^\.SH \"?" + re.escape(name) + r"\"?\s*\n(.*?)(?=^\.SH |\Z)",
                  text, re.M | re.S)
    assert m, f"no .SH {name}"
    return m.group(1).splitlines()


def subsections(lines):
    """{.SS title: its lines}, leaving out .EX/.EE example blocks."""
    out, title, in_example = {}, None, False
    for line in lines:
        if line.startswith(".SS "):
            title = line[4:].strip().strip('"')
            out[title] = []
        elif line.startswith((".EX", ".nf")):
            in_example = True
        elif line.startswith((".EE", ".fi")):
            in_example = False
        elif title is not None and not in_example:
            out[title].append(line)
    return out


def macro_args(line):
    """A roff macro line as (macro, [arguments]); quotes group words."""
    m = re.match(r"^\.(\w+)\s*(.*)$", line)
    if not m:
        return None, []
    return m.group(1), [a if a else b for a, b in re.findall(r'"([^"]*)"|(\S+)', m.group(2))]


def bold_verbs(line):
    """Verbs set in bold on a line: the first word of each bold argument."""
    macro, args = macro_args(line)
    if macro == "B":
        bold = [" ".join(args)]
    elif macro in ("BI", "BR"):
        bold = args[0::2]
    elif macro in ("IB", "RB"):
        bold = args[1::2]
    else:
        return set()
    words = [unescape(b).split() for b in bold]
    return {w[0] for w in words if w and _VERB.match(w[0])}


def tag_verbs(line):
    """Every verb on a .TP tag line (a tag may name several: "PING, QUIT")."""
    _, args = macro_args(line)
    return {w for w in re.findall(r"[A-Za-z]+", unescape(" ".join(args))) if _VERB.match(w)}


def tags(lines):
    """The verbs of the .TP tags in lines, split at the first .PP."""
    before, after, seen_pp = set(), set(), False
    for i, line in enumerate(lines):
        if line.startswith(".PP"):
            seen_pp = True
        elif line.startswith(".TP") and i + 1 < len(lines):
            (after if seen_pp else before).update(tag_verbs(lines[i + 1]))
    return before, after


def protocol():
    text = (MAN / "gridtools.7").read_text(encoding="utf-8")
    subs = subsections(section(text, "PROTOCOL"))
    for name in ("Clients", "Workers"):
        assert name in subs, f"gridtools(7) PROTOCOL has no .SS {name}"
    requests, from_hub = tags(subs["Clients"])
    if "Rooms" in subs:             # requests, .PP, then what the hub sends members
        more = tags(subs["Rooms"])
        requests, from_hub = requests | more[0], from_hub | more[1]
    worker = set().union(*(bold_verbs(l) for l in subs["Workers"]))
    named = set().union(*(bold_verbs(l) for ls in subs.values() for l in ls))
    return requests, from_hub, worker, named | requests | from_hub


def hub_handlers():
    from gridtools.hub.server import Hub, Options
    hub = Hub(Options())            # builds its tables; listens on nothing
    try:
        return {role: set(table) for role, table in hub.handlers.items()}
    finally:
        hub.close_loop()


def worker_handlers():
    from gridtools.io import net
    from gridtools.io.loop import Loop
    from gridtools.worker.session import Worker
    r, w = os.pipe()
    loop = Loop()
    worker = Worker(net.Channel.over_fds(r, w), 1, "docs", {}, loop)
    try:
        return set(worker.handlers)
    finally:
        loop.close()
        os.close(r)
        os.close(w)


def _verb_constant(node):
    """The verb a constant names: "MSG", or b"MSG" (wire.format_stream)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        value = node.value.decode("ascii", "replace") if isinstance(node.value, bytes) \
            else node.value
        if _VERB.match(value):
            return value
    return None


def read_verbs(tree):
    """Verbs a module reacts to: keys of a handlers table, and constants
    compared with a message's verb (msg.verb == "JOB", verb in ("A", "B"))."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                getattr(t, "attr", getattr(t, "id", "")) in ("handlers", "CONTROL")
                for t in node.targets):
            found |= {v for v in map(_verb_constant, node.value.keys) if v}
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(getattr(s, "attr", getattr(s, "id", None)) == "verb" for s in sides):
                for s in sides:
                    items = s.elts if isinstance(s, (ast.Tuple, ast.List, ast.Set)) else [s]
                    found |= {v for v in map(_verb_constant, items) if v}
    return found


_SENT_BYTES = re.compile(rb"^([A-Z]{2,16})[ \n]")

# The handshake and error helpers of gridtools.proto.wire, and the verb of
# the line each one makes.
WIRE_HELPERS = {"hello": "HELLO", "connect_as": "HELLO", "error": "ERR"}


def wire_aliases(tree):
    """The names gridtools.proto.wire is imported under in a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "gridtools.proto":
            names |= {a.asname or a.name for a in node.names if a.name == "wire"}
    return names


def sent_verbs(tree):
    """Verbs a module writes: format("VERB", ...), request("VERB"),
    format_line("VERB"), format_stream(b"VERB", ...), proto.wire's
    hello(), connect_as() and error(),
    and bytes that start a message (b"BYE\\n")."""
    found = set()
    wire_names = wire_aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("format", "format_line", "format_stream", "request"):
                verb = _verb_constant(node.args[0])
                if verb:
                    found.add(verb)
            elif (name in WIRE_HELPERS and isinstance(func, ast.Attribute)
                  and getattr(func.value, "id", None) in wire_names):
                found.add(WIRE_HELPERS[name])
        elif isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            m = _SENT_BYTES.match(node.value)
            if m:
                found.add(m.group(1).decode())
    return found


# The client's side of the hub protocol: the library and the commands.
CLIENT_SIDE = ("hub/client.py", "io/net.py", "cli/gridd.py", "cli/gridsub.py",
               "cli/gridmap.py", "cli/gridmcast.py")


def rel(p):
    """A source file's path inside the package, e.g. hub/client.py."""
    return p.relative_to(PKG).as_posix()


def not_mcast(p):
    return rel(p).split("/")[0] != "mcast"


def test_client_requests_are_handled_by_the_hub():
    requests, _, _, _ = protocol()
    assert {"RUN", "SUBMIT", "RESULT", "LOOKUP"} <= requests, requests
    handled = hub_handlers()["client"]
    missing = sorted(requests - handled)
    assert not missing, (f"gridtools(7) lists client requests {missing} that the hub's "
                         f"client table does not handle")


def test_what_the_hub_sends_clients_is_read_by_them():
    _, from_hub, _, _ = protocol()
    assert {"OUT", "DONE"} <= from_hub, from_hub
    client = [p for p in sources() if rel(p) in CLIENT_SIDE]
    assert len(client) >= 3, client
    read = set().union(*(read_verbs(parsed(p)) for p in client))
    sent = set().union(*(sent_verbs(parsed(p)) for p in sources() if not_mcast(p)))
    unread = sorted(from_hub - read)
    assert not unread, f"gridtools(7) says the hub sends clients {unread}; no client reads them"
    unsent = sorted(from_hub - sent)
    assert not unsent, f"gridtools(7) says the hub sends clients {unsent}; nothing sends them"


def test_worker_verbs_are_handled_and_sent():
    _, _, worker, _ = protocol()
    assert {"READY", "RUN", "DONE", "ACK"} <= worker, worker
    at_hub = hub_handlers()["worker"]
    at_worker = worker_handlers()
    sent = set().union(*(sent_verbs(parsed(p)) for p in sources() if not_mcast(p)))
    unhandled = sorted(v for v in worker if v not in at_hub and v not in at_worker)
    assert not unhandled, (f"gridtools(7) Workers names {unhandled}, which neither the "
                           f"hub's worker table nor the worker handles")
    unsent = sorted(worker - sent)
    assert not unsent, f"gridtools(7) Workers names {unsent}, which nothing sends"


def test_every_verb_in_the_protocol_section_exists_in_the_code():
    _, _, _, named = protocol()
    hub = hub_handlers()
    handled = set().union(*hub.values(), worker_handlers(),
                          *(read_verbs(parsed(p)) for p in sources() if not_mcast(p)))
    sent = set().union(*(sent_verbs(parsed(p)) for p in sources() if not_mcast(p)))
    unknown = sorted(v for v in named if v not in handled and v not in sent)
    assert not unknown, f"gridtools(7) PROTOCOL names {unknown}, which no code sends or handles"
    unsent = sorted(v for v in named - sent if v not in hub["client"])
    assert not unsent, f"gridtools(7) PROTOCOL names replies {unsent} that nothing sends"


# Lines a receiver hands to proto.wire.connect_as in its handshake (the
# sender's HELLO, its WELCOME) rather than dispatching them from a table.
EXPECTED_FIRST = ("HELLO", "WELCOME")


def mcast_control_lines():
    """[(side, words)] of each line gridtools(7) Control lines lists, in order."""
    text = (MAN / "gridtools.7").read_text(encoding="utf-8")
    lines = subsections(section(text, "MULTICAST WIRE FORMAT"))["Control lines"]
    out = []
    for i, line in enumerate(lines):
        if line.startswith(".TP") and i + 1 < len(lines):
            tag = unescape(lines[i + 1])
            for side, rest in re.findall(r"(sender|receiver): (.*?)(?=(?:sender|receiver):|$)",
                                         tag):
                for alt in rest.split(" or "):
                    words = re.sub(r"^\.\w+\s*", "", alt.strip()).split()
                    if words and _VERB.match(words[0]):
                        out.append((side, words))
    return out


def test_mcast_greeting_is_the_hub_protocols_hello():
    """The first control line gridtools(7) lists is the sender's greeting,
    the hub protocol's HELLO, with the keys the sender's greeting has."""
    from gridtools.proto import wire
    from gridtools.mcast import send
    side, words = mcast_control_lines()[0]
    assert (side, words[:2]) == ("sender", ["HELLO", wire.VERSION]), words
    doc = dict(w.split("=", 1) for w in words[2:])
    for key in (b"k", None):
        msg, _ = wire.split(send.greeting(wire.new_nonce(), key))
        assert wire.check_hello(msg, roles=("sender",))[0] == "sender"
        assert doc.keys() == msg.kv.keys(), (doc, msg.kv)
        assert doc["role"] == msg.get("role")
        assert msg.get("auth") in doc["auth"].split("|")


def test_mcast_control_lines_are_sent_and_handled():
    said = {}                   # verb -> "sender" or "receiver"
    for side, words in mcast_control_lines():
        said[words[0]] = side
    assert {"HELLO", "WELCOME", "ERR", "NACK", "END", "DONE", "FAILED"} <= set(said), said
    mcast = [p for p in sources() if not not_mcast(p)]
    sent = set().union(*(sent_verbs(parsed(p)) for p in mcast))
    read = set().union(*(read_verbs(parsed(p)) for p in mcast))
    missing = sorted(f"{side}: {v}" for v, side in said.items() if v not in sent)
    assert not missing, f"gridtools(7) lists control lines nothing sends: {missing}"
    unread = sorted(f"{side}: {v}" for v, side in said.items()
                    if v not in read and v not in EXPECTED_FIRST)
    assert not unread, f"gridtools(7) lists control lines nothing handles: {unread}"


def test_roff_scans():
    assert bold_verbs('.BI "RUN " id " [argv=1] bytes=" N') == {"RUN"}
    assert bold_verbs(".RB ( OUT") == {"OUT"}
    assert bold_verbs('.BR "ERR 76 this hub speaks TLS" ,') == {"ERR"}
    assert bold_verbs(".B gridd worker \\-\\-stdio") == set()
    assert tag_verbs('.BI "DRAIN " worker "\\fR, \\fPSHUTDOWN"') == {"DRAIN", "SHUTDOWN"}
    assert tag_verbs('.BR PING ", " QUIT') == {"PING", "QUIT"}
    assert tag_verbs('.BI "SUBMIT [argv=1] [req." K = V "]... bytes=" N') == {"SUBMIT"}
    before, after = tags([".TP", ".B STATUS", "text", ".PP", "From the hub:", ".TP",
                          '.BI "OUT " id'])
    assert (before, after) == ({"STATUS"}, {"OUT"})
