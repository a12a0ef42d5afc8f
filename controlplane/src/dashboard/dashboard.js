// Precursor's dashboard: one server-sent "snapshot" event per second from /events
// (controlplane/src/dashboard.rs), rendered into tables and small SVG line charts.
// Read-only; no libraries, no build step.
"use strict";

// Points kept per chart series (one per update: two minutes at one update a second).
const CHART_POINTS = 120;
const COLORS = ["#2f6fdb", "#d9822b", "#2e8b57", "#a23bb8", "#c0392b", "#1b9aaa", "#7a6c5d"];

const history = { messages: {}, bytes: {}, latency: {}, fdatasync: {} };
let updates = 0;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit + 1 < units.length) { value /= 1024; unit++; }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
}

function mb(perSecond) {
  return perSecond === null || perSecond === undefined ? "–" : (perSecond / 1e6).toFixed(3);
}

// Replaces the rows of table `id` with `rows`: each an array of cells, a cell either a
// value or {text, field, cls}; `attrs(i)` gives the row's attributes.
function fillTable(id, rows, attrs) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  rows.forEach((cells, i) => {
    const row = el("tr", attrs ? attrs(i) : {});
    for (const cell of cells) {
      if (cell !== null && typeof cell === "object") {
        const td = el("td", cell.field ? { "data-field": cell.field } : {}, cell.text);
        if (cell.cls) td.className = cell.cls;
        row.appendChild(td);
      } else {
        row.appendChild(el("td", {}, cell));
      }
    }
    body.appendChild(row);
  });
}

function push(series, name, value) {
  const points = series[name] || (series[name] = []);
  points.push(value === undefined ? null : value);
  while (points.length > CHART_POINTS) points.shift();
}

// A line chart of `series` ({name: [value or null]}) into the SVG `id`.
function drawChart(id, series, unit) {
  const svg = $(id);
  const width = 600, height = 180, left = 52, right = 110, top = 8, bottom = 16;
  const names = Object.keys(series);
  let max = 0;
  for (const name of names) for (const v of series[name]) if (v !== null && v > max) max = v;
  if (max <= 0) max = 1;
  const ns = "http://www.w3.org/2000/svg";
  const make = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  svg.replaceChildren();
  const plotWidth = width - left - right, plotHeight = height - top - bottom;
  svg.appendChild(make("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotHeight }));
  svg.appendChild(make("line", { class: "axis", x1: left, y1: top + plotHeight, x2: left + plotWidth, y2: top + plotHeight }));
  svg.appendChild(make("text", { x: 2, y: top + 8 }, max.toPrecision(3) + " " + unit));
  svg.appendChild(make("text", { x: 2, y: top + plotHeight }, "0"));
  svg.appendChild(make("text", { x: left, y: height - 3 }, CHART_POINTS + " s ago"));
  svg.appendChild(make("text", { x: left + plotWidth - 20, y: height - 3 }, "now"));
  names.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    const values = series[name];
    const offset = CHART_POINTS - values.length;
    let points = "";
    values.forEach((v, j) => {
      if (v === null) return;
      const x = left + ((offset + j) / (CHART_POINTS - 1)) * plotWidth;
      const y = top + plotHeight - (v / max) * plotHeight;
      points += x.toFixed(1) + "," + y.toFixed(1) + " ";
    });
    svg.appendChild(make("polyline", { points: points.trim(), stroke: color, "data-series": name }));
    svg.appendChild(make("text", { x: left + plotWidth + 6, y: top + 10 + i * 13, fill: color }, name));
  });
}

function renderHeader(s) {
  const badge = $("dataplane");
  const d = s.dataplane;
  badge.className = "badge " + (d.up ? "up" : "down");
  badge.textContent = d.up
    ? "data plane up (pid " + d.pid + ", " + d.restarts + " restarts)"
    : "data plane down: " + d.problem;
  $("updated").textContent = "updated " + new Date(s.time_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function renderThroughput(s) {
  for (const t of s.topics) {
    push(history.messages, t.name, t.messages_per_s);
    push(history.bytes, t.name, t.bytes_per_s === null ? null : t.bytes_per_s / 1e6);
  }
  drawChart("chart-messages", history.messages, "msg/s");
  drawChart("chart-bytes", history.bytes, "MB/s");
  fillTable("topics", s.topics.map(t => [
    { text: t.name, field: "name" },
    { text: t.partitions, field: "partitions" },
    { text: t.messages, field: "messages" },
    { text: fixed(t.messages_per_s, 1), field: "messages_per_s" },
    { text: mb(t.bytes_per_s), field: "mb_per_s" },
    { text: bytes(t.bytes), field: "bytes" },
  ]), i => ({ "data-topic": s.topics[i].name }));
  fillTable("transports", s.transports.map(t => [
    t.name,
    t.requests_per_s === null ? "–" : fixed(t.requests_per_s, 1) + " " + t.unit + "/s",
    mb(t.in_bytes_per_s),
    mb(t.out_bytes_per_s),
  ]), i => ({ "data-transport": s.transports[i].name }));
}

function renderLatency(s) {
  for (const [key, p] of [["latency", s.durable_ack_latency], ["fdatasync", s.fdatasync_latency]]) {
    push(history[key], "p50", p.p50_us);
    push(history[key], "p99", p.p99_us);
    push(history[key], "p99.9", p.p999_us);
  }
  drawChart("chart-latency", history.latency, "µs");
  drawChart("chart-fdatasync", history.fdatasync, "µs");
  const rows = [["durable ack", s.durable_ack_latency], ["fdatasync", s.fdatasync_latency]];
  fillTable("latency", rows.map(([name, p]) => [
    name,
    { text: p.count, field: "count" },
    { text: fixed(p.p50_us, 1), field: "p50_us" },
    { text: fixed(p.p99_us, 1), field: "p99_us" },
    { text: fixed(p.p999_us, 1), field: "p999_us" },
  ]), i => ({ "data-histogram": rows[i][0] }));
}

function ids(list) { return list && list.length ? list.join(",") : "–"; }

function renderPartitions(s) {
  fillTable("partitions", s.partitions.map(p => [
    p.topic,
    p.partition,
    { text: p.start_offset, field: "start_offset" },
    { text: p.end_offset, field: "end_offset" },
    { text: p.durable_offset, field: "durable_offset" },
    { text: p.replicas.length > 1 ? p.high_watermark : "–", field: "high_watermark" },
    { text: p.bytes, field: "bytes" },
    { text: p.segments, field: "segments" },
    p.leader ? p.leader : "–",
    ids(p.replicas),
    ids(p.isr),
  ]), i => ({ "data-topic": s.partitions[i].topic, "data-partition": s.partitions[i].partition }));
}

function renderGroups(s) {
  const box = $("groups");
  box.replaceChildren();
  if (!s.groups.length) { box.appendChild(el("p", { class: "muted" }, "no groups")); return; }
  for (const g of s.groups) {
    const total = g.partitions.reduce((sum, p) => sum + (p.lag || 0), 0);
    const head = el("h3", { "data-group": g.group });
    head.textContent = g.group + " — " + g.state + ", " + g.members.length + " member(s), lag ";
    head.appendChild(el("span", { "data-field": "group_lag", class: "lag" }, total));
    box.appendChild(head);
    const table = el("table", { "data-group": g.group });
    table.appendChild(el("thead")).appendChild(el("tr")).append(
      ...["topic", "partition", "committed", "log end", "lag", "consumer", "host", "client id"].map(h => el("th", {}, h)));
    const body = table.appendChild(el("tbody"));
    for (const p of g.partitions) {
      const row = el("tr", { "data-topic": p.topic, "data-partition": p.partition });
      const dash = v => (v === null || v === undefined ? "–" : v);
      row.append(
        el("td", {}, p.topic), el("td", {}, p.partition),
        el("td", { "data-field": "committed_offset" }, dash(p.committed_offset)),
        el("td", { "data-field": "log_end_offset" }, dash(p.log_end_offset)),
        el("td", { "data-field": "lag", class: "lag" }, dash(p.lag)),
        el("td", {}, dash(p.member_id)), el("td", {}, dash(p.client_host)), el("td", {}, dash(p.client_id)));
      body.appendChild(row);
    }
    box.appendChild(table);
  }
}

function renderHealth(s) {
  const h = s.health;
  const pairs = [
    ["lcore busy fraction", h.lcore_busy_fraction === null ? "–" : (100 * h.lcore_busy_fraction).toFixed(1) + " %", "lcore_busy_fraction"],
    ["loop iterations/s", fixed(h.loop_iterations_per_s, 0), "loop_iterations_per_s"],
    ["pending durable acks", h.pending_durable_acks, "pending_durable_acks"],
    ["command ring depth", h.command_ring_depth, "command_ring_depth"],
    ["error replies (total)", h.error_replies, "error_replies"],
    ["log bytes", bytes(h.log_bytes), "log_bytes"],
    ["hugepages free / total", h.hugepages.free + " / " + h.hugepages.total, "hugepages"],
  ];
  fillTable("health", pairs.map(([name, value, field]) => [name, { text: value, field }]));
  fillTable("drops", h.drops.filter(d => d.total > 0).map(d => [d.kind, d.reason, d.total, fixed(d.per_s, 1)]));
  fillTable("storage", h.filesystems.map(f => [
    f.dir + " filesystem", f.path, bytes(f.size_bytes - f.free_bytes), bytes(f.size_bytes), bytes(f.free_bytes),
  ]));
}

function renderCluster(s) {
  const c = s.cluster, box = $("cluster");
  box.replaceChildren();
  if (!c.broker_id) { box.appendChild(el("p", { class: "muted" }, "not in a cluster")); return; }
  box.appendChild(el("p", {}, "this is broker " + c.broker_id + "; under-replicated partitions: " + c.under_replicated));
  const table = el("table", { id: "brokers" });
  table.appendChild(el("thead")).appendChild(el("tr")).append(
    ...["broker", "data plane", "Kafka", "leads (partitions)"].map(h => el("th", {}, h)));
  const body = table.appendChild(el("tbody"));
  for (const b of c.brokers) {
    const row = el("tr", { "data-broker": b.id });
    row.append(el("td", {}, b.id), el("td", {}, b.address), el("td", {}, b.kafka || "–"), el("td", {}, b.leads));
    body.appendChild(row);
  }
  box.appendChild(table);
}

function render(s) {
  renderHeader(s);
  renderThroughput(s);
  renderLatency(s);
  renderPartitions(s);
  renderGroups(s);
  renderHealth(s);
  renderCluster(s);
  updates++;
  document.body.dataset.updates = String(updates);
  document.body.dataset.snapshotTimeMs = String(s.time_ms);
}

const events = new EventSource("/events");
events.addEventListener("snapshot", e => render(JSON.parse(e.data)));
events.onerror = () => {
  const badge = $("dataplane");
  badge.className = "badge down";
  badge.textContent = "control plane unreachable (retrying)";
};
