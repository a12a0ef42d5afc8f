// Loads Precursor's dashboard in headless Chromium (playwright-core, Debian's chromium),
// waits for UPDATES server-sent updates, saves a screenshot and prints what the page
// shows as one JSON line (tests/operations.rs compares it with /metrics).
//
// usage: node read_dashboard.js PLAYWRIGHT_CORE_DIR URL SCREENSHOT UPDATES [latency]
// With `latency`, also waits until the durable-ack p99 shows a number (a producer with
// acks=durable runs).
"use strict";
const [playwrightDir, url, screenshot, updatesWanted, also] = process.argv.slice(2);
const { chromium } = require(playwrightDir);

// Flags for a closed network and a root test runner.
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];
// Liveness bound for the page's updates, in ms (not a timing claim).
const UPDATES_TIMEOUT_MS = 60000;

(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 2400 } });
    const errors = [];
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url);
    const wanted = Number(updatesWanted);
    await page.waitForFunction(([n, latency]) => {
      if (Number(document.body.dataset.updates) < n) return false;
      const cell = document.querySelector('#latency tr[data-histogram="durable ack"] [data-field="p99_us"]');
      if (latency && (cell === null || cell.textContent === "–")) return false;
      // The page as it is now is what is read: no more updates (same task, no race).
      events.close();
      return true;
    }, [wanted, also === "latency"], { timeout: UPDATES_TIMEOUT_MS });
    const shown = await page.evaluate(() => {
      const text = (root, field) => {
        const cell = root.querySelector(`[data-field="${field}"]`);
        return cell ? cell.textContent : null;
      };
      const number = (root, field) => {
        const t = text(root, field);
        return t === null || t === "–" ? null : Number(t);
      };
      return {
        updates: Number(document.body.dataset.updates),
        dataplane: document.getElementById("dataplane").textContent,
        topics: [...document.querySelectorAll("#topics tbody tr")].map(r => ({
          name: r.dataset.topic, messages: number(r, "messages"),
          messages_per_s: number(r, "messages_per_s"), partitions: number(r, "partitions"),
        })),
        partitions: [...document.querySelectorAll("#partitions tbody tr")].map(r => ({
          topic: r.dataset.topic, partition: Number(r.dataset.partition),
          end_offset: number(r, "end_offset"), durable_offset: number(r, "durable_offset"),
          start_offset: number(r, "start_offset"), bytes: number(r, "bytes"),
        })),
        groups: [...document.querySelectorAll("#groups table")].map(t => ({
          group: t.dataset.group,
          partitions: [...t.querySelectorAll("tbody tr")].map(r => ({
            topic: r.dataset.topic, partition: Number(r.dataset.partition),
            committed_offset: number(r, "committed_offset"), log_end_offset: number(r, "log_end_offset"),
            lag: number(r, "lag"),
          })),
        })),
        latency: [...document.querySelectorAll("#latency tbody tr")].map(r => ({
          histogram: r.dataset.histogram, count: number(r, "count"),
          p50_us: number(r, "p50_us"), p99_us: number(r, "p99_us"), p999_us: number(r, "p999_us"),
        })),
        busy: text(document, "lcore_busy_fraction"),
        chart_points: [...document.querySelectorAll("#chart-messages polyline")].map(p => ({
          series: p.dataset.series, points: p.getAttribute("points").split(" ").filter(x => x).length,
        })),
      };
    });
    shown.errors = errors;
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify(shown));
  } finally {
    await browser.close();
  }
})().catch(e => { console.error(e); process.exit(1); });
