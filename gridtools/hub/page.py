"""The status page gridd hub --http serves at /: plain HTML, inline SVG
charts and a little vanilla JavaScript that follows /events (Server-Sent
Events: workers and clients) and reads /status.json, /workers.json,
/streams.json and /failures.json every 2 s.  No
framework, nothing fetched from elsewhere; readable at a phone's width."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gridd hub</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 0 12px 24px;
        max-width: 960px; color: #1d232a; background: #fbfbfa; }
 h1 { font-size: 20px; margin: 16px 0 4px; }
 h2 { font-size: 16px; margin: 20px 0 6px; }
 .sub { color: #5b6570; font-size: 13px; }
 .cards { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
 .card { flex: 1 1 120px; background: #fff; border: 1px solid #e1e4e8; border-radius: 8px;
         padding: 8px 10px; }
 .card b { display: block; font-size: 22px; }
 .charts { display: flex; flex-wrap: wrap; gap: 8px; }
 .chart { flex: 1 1 300px; background: #fff; border: 1px solid #e1e4e8; border-radius: 8px;
          padding: 6px 8px; }
 svg { width: 100%; height: 90px; display: block; }
 table { border-collapse: collapse; width: 100%; background: #fff; font-size: 14px; }
 th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #eef0f2; }
 th { color: #5b6570; font-weight: 600; }
 .wrap { overflow-x: auto; }
 #events { font: 12px/1.45 ui-monospace, monospace; background: #fff; border: 1px solid #e1e4e8;
           border-radius: 8px; padding: 6px 8px; max-height: 260px; overflow-y: auto;
           white-space: pre-wrap; word-break: break-all; }
 .bad { color: #b42318; }
 pre { margin: 0; font: 12px/1.35 ui-monospace, monospace; white-space: pre-wrap;
       word-break: break-all; max-height: 6em; overflow-y: auto; }
 .up { color: #067647; }
</style>
</head>
<body>
<h1>gridd hub <span id="state" class="sub"></span></h1>
<div class="sub" id="addr"></div>
<div class="cards">
 <div class="card">workers<b id="n-workers">-</b></div>
 <div class="card">slots busy<b id="n-busy">-</b></div>
 <div class="card">queued<b id="n-queued">-</b></div>
 <div class="card">done<b id="n-done">-</b></div>
 <div class="card">lost<b id="n-lost">-</b></div>
</div>
<h2>The last minutes</h2>
<div class="charts">
 <div class="chart">queued <span class="sub" id="q-now"></span>
  <svg id="chart-queued" viewBox="0 0 300 90" preserveAspectRatio="none"></svg></div>
 <div class="chart">jobs done a second <span class="sub" id="r-now"></span>
  <svg id="chart-rate" viewBox="0 0 300 90" preserveAspectRatio="none"></svg></div>
</div>
<h2>Workers</h2>
<div class="wrap"><table id="workers"><thead><tr><th>name</th><th>how</th><th>slots</th>
<th>running</th><th>tags</th><th>state</th></tr></thead><tbody></tbody></table></div>
<h2>Recent failures</h2>
<div class="wrap"><table id="failures"><thead><tr><th>when</th><th>job</th><th>worker</th>
<th>outcome</th><th>command</th><th>stderr, its end</th></tr></thead><tbody></tbody></table></div>
<h2>Topics and queues</h2>
<div class="wrap"><table id="streams"><thead><tr><th>kind</th><th>name</th><th>messages</th>
<th>bytes</th><th>readers</th></tr></thead><tbody></tbody></table></div>
<h2>Events</h2>
<div id="events"></div>
<script>
"use strict";
const SAMPLES = 150, EVERY = 2000;       // five minutes of a sample every 2 s
const queued = [], rate = [];
let lastDone = null, lastAt = 0, pending = null;

function text(id, v) { document.getElementById(id).textContent = v; }
function cell(tr, v) { const td = document.createElement("td"); td.textContent = v;
                       tr.appendChild(td); return td; }
function rows(id, list, fill) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of list) { const tr = document.createElement("tr"); fill(tr, item);
                             body.appendChild(tr); }
}
function chart(id, values) {
  const svg = document.getElementById(id);
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => (i * 300 / (SAMPLES - 1)).toFixed(1) + "," +
                                   (88 - v * 84 / max).toFixed(1)).join(" ");
  svg.innerHTML = '<polyline fill="none" stroke="#2f6fde" stroke-width="2" ' +
                  'vector-effect="non-scaling-stroke" points="' + pts + '"/>' +
                  '<text x="2" y="11" font-size="10" fill="#5b6570">' + max + '</text>';
}
// With gridd hub --http-token, the page is opened as /?token=...: every
// read below carries it on.
const TOKEN = new URLSearchParams(location.search).get("token");
function url(path) {
  return TOKEN ? path + (path.includes("?") ? "&" : "?") + "token=" +
                 encodeURIComponent(TOKEN) : path;
}
async function json(path) { const r = await fetch(url(path), {cache: "no-store"});
                            return r.json(); }
async function refresh() {
  const [s, workers, streams, failures] = await Promise.all(
    [json("/status.json"), json("/workers.json"), json("/streams.json"),
     json("/failures.json")]);
  text("state", s.state); text("addr", s.addresses.join(" ") + " \\u00b7 up " +
       Math.round(s.uptime) + " s \\u00b7 journal " + s.journal_state);
  text("n-workers", s.workers); text("n-busy", s.running + " / " + s.slots);
  text("n-queued", s.queued); text("n-done", s.done); text("n-lost", s.lost);
  document.getElementById("n-lost").className = s.lost ? "bad" : "";
  rows("workers", workers, (tr, w) => {
    for (const v of [w.name, w.how, w.slots, w.running,
                     Object.entries(w.tags).map(([k, v]) => k + "=" + v).join(" ")])
      cell(tr, v);
    cell(tr, w.state).className = w.state === "up" ? "up" : "";
  });
  rows("failures", failures, (tr, f) => {
    cell(tr, new Date(f.time * 1000).toLocaleTimeString()); cell(tr, f.job);
    cell(tr, f.worker || "-");
    cell(tr, f.outcome + (f.sig !== null ? " (signal " + f.sig + ")" :
                          f.exit !== null ? " (exit " + f.exit + ")" : "")).className = "bad";
    cell(tr, f.command);
    const pre = document.createElement("pre"); pre.textContent = f.stderr;
    cell(tr, "").appendChild(pre);
  });
  rows("streams", streams, (tr, x) => { for (const v of [x.kind, x.name, x.messages, x.bytes,
                                                          x.readers]) cell(tr, v); });
  return s;
}
async function sample() {
  try {
    const s = await refresh(), now = Date.now();
    queued.push(s.queued);
    rate.push(lastDone === null ? 0 : Math.max(0, (s.done - lastDone) * 1000 / (now - lastAt)));
    lastDone = s.done; lastAt = now;
    while (queued.length > SAMPLES) { queued.shift(); rate.shift(); }
    while (queued.length < SAMPLES) { queued.unshift(0); rate.unshift(0); }
    chart("chart-queued", queued); chart("chart-rate", rate.map(v => Math.round(v * 10) / 10));
    text("q-now", s.queued); text("r-now", rate[rate.length - 1].toFixed(1));
  } catch (e) { text("state", "unreachable"); }
}
function event(line) {
  const box = document.getElementById("events"), div = document.createElement("div");
  div.textContent = line;
  if (/ job\\.lost | outcome=(failed|signaled|timeout|lost)/.test(line)) div.className = "bad";
  box.prepend(div);
  while (box.childNodes.length > 200) box.lastChild.remove();
  if (!pending) pending = setTimeout(() => { pending = null; refresh().catch(() => {}); }, 300);
}
sample();
setInterval(sample, EVERY);
// Workers and clients as they come and go; jobs are counted by sample(),
// since following every job's events would cost the hub a few per job.
new EventSource(url("/events?kinds=worker,client")).onmessage = (e) => event(e.data);
</script>
</body>
</html>
"""
