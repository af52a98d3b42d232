// The taskq status page: polls the admin API of the server that served it
// and draws what it answers. Everything shown comes from the API; text is
// set with textContent only, so a task's error or data cannot inject markup.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "taskq.token";
const FAILED_SHOWN = 20;
const BATCHES_SHOWN = 20;
const REASONS_SHOWN = 3;
const MIN_WINDOW_S = 60;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let timer = null;
let lastServerTime = null;

// The auth_token, if one was entered in this tab.
function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class Unauthorized extends Error {}

// An error answer of the API, with its HTTP status.
class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// One API call; the token (if any) goes as a bearer header, never in the URL.
async function api(path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const init = { headers, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) throw new Unauthorized();
  const json = await r.json();
  if (!r.ok) throw new ApiError(json.error || path + " answered " + r.status, r.status);
  return json;
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("live").textContent = "locked";
  $("live").className = "badge down";
  $("token").focus();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  refresh();
});

function text(id, value) {
  $(id).textContent = value;
}

function number(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString("en-GB");
}

function duration(secs) {
  secs = Math.max(0, Math.floor(secs));
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m " + (secs % 60) + "s";
  return Math.floor(secs / 3600) + "h " + Math.floor((secs % 3600) / 60) + "m";
}

function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = value;
  if (cls) td.className = cls;
  return td;
}

// Per-second rates of a counter column, one per pair of neighbours.
function rates(h, key) {
  const out = [];
  for (let i = 1; i < h.time.length; i++) {
    const dt = h.time[i] - h.time[i - 1];
    const dv = h[key][i] - h[key][i - 1];
    out.push(dt > 0 ? Math.max(0, dv) / dt : 0);
  }
  return out;
}

// Draws `series` ([[times, values, class], ...]) over the history's window
// into the SVG `id`; answers the largest value drawn.
function chart(id, windowSecs, end, series) {
  const svg = $(id);
  const W = 600, H = 160, PAD = 6;
  svg.replaceChildren();
  let max = 0;
  for (const [, values] of series) for (const v of values) max = Math.max(max, v);
  const top = max > 0 ? max * 1.1 : 1;
  for (const f of [0.25, 0.5, 0.75]) {
    const y = PAD + (H - 2 * PAD) * f;
    const grid = document.createElementNS(SVG, "line");
    grid.setAttribute("x1", 0);
    grid.setAttribute("x2", W);
    grid.setAttribute("y1", y);
    grid.setAttribute("y2", y);
    grid.setAttribute("class", "grid");
    svg.appendChild(grid);
  }
  for (const [times, values, cls] of series) {
    if (values.length === 0) continue;
    const points = values.map((v, i) => {
      const x = W - ((end - times[i]) / windowSecs) * W;
      const y = H - PAD - (v / top) * (H - 2 * PAD);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", "line " + cls);
    svg.appendChild(line);
  }
  return max;
}

function drawHistory(h) {
  // The span the history covers, at least a minute, so a young server's
  // lines are not squeezed against the right edge of a ten-minute chart.
  const end = h.time.length ? h.time[h.time.length - 1] : 0;
  const covered = h.time.length ? end - h.time[0] : 0;
  const windowSecs = Math.min(h.capacity * h.interval, Math.max(MIN_WINDOW_S, Math.ceil(covered)));
  const span = "last " + duration(windowSecs) + (h.time.length ? ", to " + clock(end) : "");
  const times = h.time.slice(1);
  const finished = rates(h, "finished");
  const most = chart("chart-throughput", windowSecs, end, [
    [times, rates(h, "failed"), "k3"],
    [times, rates(h, "submitted"), "k2"],
    [times, finished, "k1"],
  ]);
  text("throughput-span", span);
  text("throughput-max", "max " + most.toFixed(1) + "/s");
  const deepest = chart("chart-depth", windowSecs, end, [
    [h.time, h.delayed, "k3"],
    [h.time, h.running, "k2"],
    [h.time, h.waiting, "k1"],
  ]);
  text("depth-span", span);
  text("depth-max", "max " + number(deepest));
  text("n-rate", finished.length ? finished[finished.length - 1].toFixed(1) : "–");
}

function drawStats(s) {
  lastServerTime = s.time;
  for (const key of ["waiting", "delayed", "running", "submitted", "finished", "retried", "failed"]) {
    text("n-" + key, number(s.tasks[key]));
  }
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  for (const w of s.workers) {
    const row = body.insertRow();
    row.dataset.worker = w.id;
    cell(row, w.id);
    cell(row, w.kind);
    cell(row, w.pid === null ? "–" : w.pid, "pid");
    cell(row, w.state, "state " + w.state);
    cell(row, bytes(w.memory_rss), "num");
    cell(row, number(w.handled), "num");
    cell(row, w.task ? "#" + w.task.id + " for " + duration(s.time - w.task.started_at) : "–");
    cell(row, w.started_at ? clock(w.started_at) : "–");
  }
}

function preview(f) {
  try {
    const raw = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
    const s = new TextDecoder("utf-8").decode(raw);
    return s.length > 80 ? s.slice(0, 80) + "…" : s;
  } catch (e) {
    return "(" + f.data.length + " bytes of base64)";
  }
}

async function retry(ids, button) {
  button.disabled = true;
  try {
    const r = await api("/api/failed/retry", ids === "all" ? { all: true } : { ids });
    button.textContent = "Queued (" + r.retried + ")";
    await refresh();
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    button.textContent = "Retry failed";
    button.title = e.message;
    button.disabled = false;
  }
}

$("retry-all").addEventListener("click", (e) => retry("all", e.target));

function drawFailed(list) {
  const body = $("failed").tBodies[0];
  body.replaceChildren();
  text("failed-note", list.length ? "" : "No failed tasks kept.");
  $("retry-all").hidden = list.length === 0;
  $("retry-all").disabled = false;
  $("retry-all").textContent = "Retry all";
  for (const f of list) {
    const row = body.insertRow();
    row.dataset.failed = f.id;
    cell(row, f.id);
    cell(row, clock(f.failed_at));
    cell(row, f.attempts, "num");
    cell(row, f.error, "error-text");
    cell(row, preview(f), "data");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.textContent = "Retry";
    button.addEventListener("click", () => retry([f.id], button));
    row.insertCell().appendChild(button);
  }
}

// The batch's progress bar: done in green, failed in red, the rest (still
// pending) the track. Widths are set through CSSOM, which the page's
// Content-Security-Policy allows (a style attribute it would not).
function progressBar(b) {
  const track = document.createElement("div");
  track.className = "bar-track";
  track.setAttribute("role", "progressbar");
  track.setAttribute("aria-valuemin", "0");
  track.setAttribute("aria-valuemax", String(b.total));
  track.setAttribute("aria-valuenow", String(b.done + b.failed));
  track.title = b.done + " done, " + b.failed + " failed, " + b.pending + " pending";
  for (const part of ["done", "failed"]) {
    const span = document.createElement("span");
    span.className = part;
    span.style.width = (b.total ? (b[part] / b.total) * 100 : 0) + "%";
    track.appendChild(span);
  }
  return track;
}

// The first few failure reasons of a batch with their counts.
function reasons(b) {
  const list = document.createElement("ul");
  for (const f of b.failures.slice(0, REASONS_SHOWN)) {
    const li = document.createElement("li");
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = f.count + "× ";
    li.append(count, f.error);
    li.title = f.error;
    list.appendChild(li);
  }
  const rest = b.failures.length - REASONS_SHOWN;
  if (rest > 0) {
    const li = document.createElement("li");
    li.className = "count";
    li.textContent = "+ " + rest + " more reason" + (rest > 1 ? "s" : "");
    list.appendChild(li);
  }
  return list;
}

function batchTime(b) {
  if (b.finished_at !== null) {
    return "finished " + clock(b.finished_at) + " (took " + duration(b.finished_at - b.started_at) + ")";
  }
  return "started " + clock(b.started_at) + " · " + duration((lastServerTime || b.started_at) - b.started_at) + " so far";
}

function drawBatches(r) {
  const body = $("batches").tBodies[0];
  body.replaceChildren();
  $("batches").hidden = r.batches.length === 0;
  const more = r.total - r.batches.length;
  text("batches-note", r.batches.length === 0 ? "No batches." : more > 0 ? more + " more not shown." : "");
  for (const b of r.batches) {
    const row = body.insertRow();
    row.dataset.batch = b.batch;
    row.className = b.finished_at === null ? "running" : "finished";
    cell(row, b.batch, "name");
    row.insertCell().appendChild(progressBar(b));
    row.cells[1].className = "bar";
    cell(row, b.done + "/" + b.total, "num done");
    cell(row, b.failed, "num failed");
    cell(row, batchTime(b), "time");
    const why = row.insertCell();
    why.className = "reasons";
    if (b.failures.length) why.appendChild(reasons(b));
  }
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [ping, stats, history] = await Promise.all([
      api("/api/ping"),
      api("/api/stats"),
      api("/api/history"),
    ]);
    $("login").hidden = true;
    $("main").hidden = false;
    text("server", "v" + ping.version + " · master pid " + ping.pid + " · up " + duration(ping.uptime));
    drawStats(stats);
    drawHistory(history);
    try {
      drawFailed(await api("/api/failed?limit=" + FAILED_SHOWN));
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      $("failed").tBodies[0].replaceChildren();
      $("retry-all").hidden = true;
      text("failed-note", e.message);
    }
    try {
      drawBatches(await api("/api/batches?recent=" + BATCHES_SHOWN));
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      $("batches").hidden = true;
      text(
        "batches-note",
        e.status === 501 ? "Batches are not tracked with task_backend (Redis): each server sees only the tasks it ran." : e.message
      );
    }
    $("live").textContent = ping.stopping ? "stopping" : "live";
    $("live").className = "badge " + (ping.stopping ? "down" : "up");
    $("live").title = "updated " + clock(lastServerTime);
  } catch (e) {
    if (e instanceof Unauthorized) {
      return showLogin(token() ? "The token was refused." : "");
    }
    $("live").textContent = "unreachable";
    $("live").className = "badge down";
    $("live").title = e.message;
  }
  timer = setTimeout(refresh, POLL_MS);
}

refresh();
