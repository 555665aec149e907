"""gridd ctl top: the hub's workers, slots, queue and job rate, redrawn every
second on a terminal (q quits, a resize redraws); one plain snapshot when
stdout is not a terminal."""

import json
import sys
import time

EVERY = 1.0                 # seconds between redraws


def snapshot(client):
    """(status, workers) as gridd ctl status and workers --json give them."""
    status = json.loads(client.request("STATUS").body)
    workers = json.loads(client.request("WORKERS").body)
    return status, workers


def lines(status, workers, rate, width):
    """The screen as lines of text (pure): a header, the counts, a table of
    workers with a bar of their busy slots."""
    head = (f"gridd hub {', '.join(status['addresses'])}  {status['state']}  "
            f"up {status['uptime']:.0f}s  journal {status['journal_state']}")
    rate_text = "-" if rate is None else f"{rate:.1f}/s"
    counts = (f"workers {status['workers']}  busy {status['running']}/{status['slots']}  "
              f"queued {status['queued']}  done {status['done']} ({rate_text})  "
              f"lost {status['lost']}  clients {status['clients']}")
    out = [head[:width], counts[:width], ""]
    names = max([4] + [len(w["name"]) for w in workers])
    out.append(f"{'NAME':<{names}}  {'HOW':<7}  {'BUSY':>9}  LOAD        TAGS"[:width])
    for w in sorted(workers, key=lambda w: w["name"]):
        full = round(10 * w["running"] / w["slots"]) if w["slots"] else 0
        bar = "#" * full + "." * (10 - full)
        tags = ",".join(f"{k}={v}" for k, v in sorted(w["tags"].items())) or "-"
        busy = f"{w['running']}/{w['slots']}"
        state = "" if w["state"] == "up" else f"  ({w['state']})"
        out.append(f"{w['name']:<{names}}  {w.get('how', 'in'):<7}  {busy:>9}  {bar}  "
                   f"{tags}{state}"[:width])
    if not workers:
        out.append("(no workers)")
    return out


def run(client, out=sys.stdout):
    """Draw until q on a terminal; one snapshot otherwise."""
    if not out.isatty():
        status, workers = snapshot(client)
        out.write("\n".join(lines(status, workers, None, 1 << 16)) + "\n")
        return 0
    import curses
    return curses.wrapper(_screen, client)


def _screen(win, client):
    import curses
    curses.curs_set(0)
    win.timeout(int(EVERY * 1000))
    last = None                 # (time, done) of the previous draw
    while True:
        status, workers = snapshot(client)
        now = time.monotonic()
        rate = None if last is None else (status["done"] - last[1]) / max(now - last[0], 1e-6)
        last = (now, status["done"])
        height, width = win.getmaxyx()
        win.erase()
        for y, text in enumerate(lines(status, workers, rate, width - 1)[:height - 1]):
            win.addstr(y, 0, text)
        win.addstr(height - 1, 0, "q quits"[:width - 1], curses.A_DIM)
        win.refresh()
        key = win.getch()           # waits up to EVERY; a resize comes as a key
        if key in (ord("q"), ord("Q")):
            return 0
