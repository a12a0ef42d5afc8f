//! Turns a directory of results (JSON lines in the [`RunResult`] schema, several runs per
//! configuration) into the generated section of docs/benchmarks.md, SVG plots, and the
//! one-line summary of bench/compare.sh.
//!
//! Runs of one configuration (system, workload, durability, rate, producers, size) are
//! reduced to medians, field by field (the p99 shown is the median of the runs' p99s); the
//! plotted curve is the run whose p99 is closest to that median.

use crate::limits::median;
use crate::result::RunResult;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The generated section sits between these two lines of docs/benchmarks.md.
pub const BEGIN_MARKER: &str =
    "<!-- precursor-bench: generated section begins (bench/compare.sh rewrites it) -->";
pub const END_MARKER: &str = "<!-- precursor-bench: generated section ends -->";

pub const PRECURSOR: &str = "precursor";
/// Precursor over its IPC transport (clients on the same host, like the peers' here).
pub const PRECURSOR_IPC: &str = "precursor-ipc";
/// Precursor through its Kafka gateway (librdkafka clients, unchanged Kafka applications).
pub const PRECURSOR_KAFKA: &str = crate::kafka::SYSTEM;
/// Precursor's systems in table order: IPC first (the co-located path), then UDP, then the
/// Kafka gateway.
pub const PRECURSORS: [&str; 3] = [PRECURSOR_IPC, PRECURSOR, PRECURSOR_KAFKA];
pub const PEERS: [&str; 2] = [crate::peers::nats::SYSTEM, crate::peers::redis::SYSTEM];
/// Every system in the order of the latency tables and plots.
pub const SYSTEMS: [&str; 5] = [
    PRECURSOR_IPC,
    PRECURSOR,
    PRECURSOR_KAFKA,
    PEERS[0],
    PEERS[1],
];

pub fn display_name(system: &str) -> &str {
    match system {
        "precursor" => "Precursor",
        "precursor-ipc" => "Precursor IPC",
        "precursor-kafka" => "Precursor via Kafka gateway",
        "nats-jetstream" => "NATS JetStream",
        "redis-streams" => "Redis Streams",
        "machine" => "machine",
        other => other,
    }
}

/// What identifies a configuration; runs with the same key are repetitions.
/// (The tables pick the first configuration of a system and workload: bench/compare.sh
/// runs one producer and one consumer.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub workload: String,
    pub durability: String,
    /// The fixed rate in messages/s, 0 for as-fast-as-possible.
    pub rate: u64,
    pub system: String,
    pub producers: u32,
    pub consumers: u32,
    pub size: u64,
}

impl Key {
    fn of(r: &RunResult) -> Key {
        Key {
            workload: r.workload.clone(),
            durability: r.durability.clone().unwrap_or_default(),
            rate: r.rate.map_or(0, |r| r.round() as u64),
            system: r.system.clone(),
            producers: r.producers,
            consumers: r.consumers,
            size: r.size,
        }
    }
}

/// The runs of one configuration reduced to medians.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: Key,
    pub runs: usize,
    /// Field-by-field medians; `curve`, `durability_detail`, `transport`, `window` from
    /// the representative run.
    pub median: RunResult,
    /// Errors summed over every run (0 in a valid run).
    pub errors: u64,
}

/// Reads every `*.json` file of `dir`: one result per non-empty line.
pub fn load_dir(dir: &Path) -> Result<Vec<RunResult>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the results directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut results = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let result: RunResult = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a result line", path.display(), n + 1))?;
            results.push(result);
        }
    }
    if results.is_empty() {
        bail!("no results (*.json) in {}", dir.display());
    }
    Ok(results)
}

/// Groups runs by configuration and takes medians.
pub fn reduce(results: &[RunResult]) -> Vec<Row> {
    let mut groups: BTreeMap<Key, Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups.entry(Key::of(r)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(key, runs)| {
            let med = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<f64> {
                let mut v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
                (!v.is_empty()).then(|| median(&mut v))
            };
            let p99 = med(&|r| r.p99_us);
            let representative = runs
                .iter()
                .min_by(|a, b| {
                    let d = |r: &RunResult| (r.p99_us.unwrap_or(0.0) - p99.unwrap_or(0.0)).abs();
                    d(a).total_cmp(&d(b))
                })
                .expect("a group has a run");
            let mut m = (*representative).clone();
            m.messages = med(&|r| Some(r.messages as f64)).unwrap_or(0.0).round() as u64;
            m.seconds = med(&|r| Some(r.seconds)).unwrap_or(0.0);
            m.msgs_per_sec = med(&|r| Some(r.msgs_per_sec)).unwrap_or(0.0);
            m.mb_per_sec = med(&|r| Some(r.mb_per_sec)).unwrap_or(0.0);
            m.p50_us = med(&|r| r.p50_us);
            m.p90_us = med(&|r| r.p90_us);
            m.p99_us = p99;
            m.p999_us = med(&|r| r.p999_us);
            m.p9999_us = med(&|r| r.p9999_us);
            m.max_us = med(&|r| r.max_us);
            m.gb_per_sec = med(&|r| r.gb_per_sec);
            let errors = runs.iter().map(|r| r.errors).sum();
            m.errors = errors;
            Row {
                key,
                runs: runs.len(),
                median: m,
                errors,
            }
        })
        .collect()
}

/// Numbers as people read them: thousands separated, 3 significant digits below 1,000.
pub fn number(v: Option<f64>) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if !v.is_finite() => "-".to_string(),
        Some(v) if v.abs() >= 1_000.0 => {
            let digits = format!("{:.0}", v.abs());
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            if v < 0.0 {
                format!("-{out}")
            } else {
                out
            }
        }
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// `a / b` as "12.3x" (two significant decimals under 10).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => {
            let r = a / b;
            if r >= 1_000.0 {
                format!("{}x", number(Some(r)))
            } else if r >= 10.0 {
                format!("{r:.0}x")
            } else {
                format!("{r:.2}x")
            }
        }
        _ => "-".to_string(),
    }
}

/// The reduced rows and lookups over them.
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(results: &[RunResult]) -> Report {
        Report {
            rows: reduce(results),
        }
    }

    pub fn find(
        &self,
        system: &str,
        workload: &str,
        durability: &str,
        rate: u64,
    ) -> Option<&RunResult> {
        self.rows
            .iter()
            .find(|r| {
                r.key.system == system
                    && r.key.workload == workload
                    && r.key.durability == durability
                    && r.key.rate == rate
            })
            .map(|r| &r.median)
    }

    fn limit(&self, workload: &str) -> Option<&RunResult> {
        self.rows
            .iter()
            .find(|r| r.key.system == "machine" && r.key.workload == workload)
            .map(|r| &r.median)
    }

    /// The fixed rates of the latency runs, highest first.
    pub fn rates(&self) -> Vec<u64> {
        let mut rates: Vec<u64> = self
            .rows
            .iter()
            .map(|r| r.key.rate)
            .filter(|&r| r > 0)
            .collect();
        rates.sort_unstable_by(|a, b| b.cmp(a));
        rates.dedup();
        rates
    }

    /// Durability levels measured at `rate`, leader first.
    pub fn durabilities(&self, workload: &str, rate: u64) -> Vec<String> {
        let mut levels: Vec<String> = self
            .rows
            .iter()
            .filter(|r| {
                r.key.workload == workload && r.key.rate == rate && !r.key.durability.is_empty()
            })
            .map(|r| r.key.durability.clone())
            .collect();
        levels.sort_by_key(|d| (d != "leader", d.clone()));
        levels.dedup();
        levels
    }

    /// The markdown of the generated section (without the markers). `machine` describes
    /// the host; `plots` is the plots' directory relative to the document.
    pub fn render(&self, machine: &str, plots: &str) -> String {
        let mut md = String::new();
        let runs = self.rows.iter().map(|r| r.runs).max().unwrap_or(0);
        let _ = writeln!(
            md,
            "Generated by `bench/compare.sh` (`precursor-bench report`); {machine}."
        );
        let _ = writeln!(
            md,
            "Medians of {runs} runs per row; errors are summed over all runs (lost, failed, corrupt or out-of-order messages)."
        );
        md.push('\n');

        let memcpy = self.limit("memcpy");
        let pingpong = self.limit("pingpong");
        let _ = writeln!(md, "#### The machine's limit\n");
        let _ = writeln!(md, "| measurement | value |");
        let _ = writeln!(md, "|---|---:|");
        let _ = writeln!(
            md,
            "| memcpy bandwidth, GB/s (buffers of {} MiB) | {} |",
            memcpy.map_or("-".into(), |m| (m.size >> 20).to_string()),
            number(memcpy.and_then(|m| m.gb_per_sec))
        );
        let _ = writeln!(md, "| shared-memory ping-pong, core 0 <-> core 1, round trip p50 / p99 / p99.9 us | {} / {} / {} |",
            number(pingpong.and_then(|p| p.p50_us)), number(pingpong.and_then(|p| p.p99_us)), number(pingpong.and_then(|p| p.p999_us)));
        let _ = writeln!(
            md,
            "| shared-memory ping-pong, round trips/s | {} |",
            number(pingpong.map(|p| p.msgs_per_sec))
        );
        md.push('\n');

        let _ = writeln!(md, "#### Throughput (as fast as possible)\n");
        let _ = writeln!(md, "| run | Precursor msgs/s | NATS JetStream msgs/s | Redis Streams msgs/s | Precursor / NATS | Precursor / Redis | Precursor MB/s / memcpy MB/s | errors (P / N / R) |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|");
        for (workload, durability, label) in [
            (
                "produce",
                "leader",
                "produce, acks=leader (peers: ack before fsync)",
            ),
            (
                "produce",
                "durable",
                "produce, acks=durable (peers: fsync before ack)",
            ),
            (
                "consume",
                "",
                "consume from the start, every payload verified",
            ),
        ] {
            let get = |s: &str| self.find(s, workload, durability, 0);
            for precursor in PRECURSORS {
                let (p, n, r) = (get(precursor), get(PEERS[0]), get(PEERS[1]));
                if p.is_none() && (n.is_none() && r.is_none() || precursor != PRECURSOR) {
                    continue;
                }
                let label = format!("{label}, {}", display_name(precursor));
                let rate = |x: Option<&RunResult>| x.map(|x| x.msgs_per_sec);
                let errors =
                    |x: Option<&RunResult>| x.map_or("-".to_string(), |x| x.errors.to_string());
                let fraction = match (p, memcpy) {
                    (Some(p), Some(m)) if m.mb_per_sec > 0.0 => {
                        format!("{:.5}", p.mb_per_sec / m.mb_per_sec)
                    }
                    _ => "-".into(),
                };
                let _ = writeln!(
                    md,
                    "| {label} | {} | {} | {} | {} | {} | {fraction} | {} / {} / {} |",
                    number(rate(p)),
                    number(rate(n)),
                    number(rate(r)),
                    ratio(rate(p), rate(n)),
                    ratio(rate(p), rate(r)),
                    errors(p),
                    errors(n),
                    errors(r)
                );
            }
        }
        md.push('\n');

        for rate in self.rates() {
            for durability in self.durabilities("produce", rate) {
                let _ = writeln!(md, "#### Latency at a fixed {} msgs/s, acks={durability} (produce -> ack, from the intended send time)\n", number(Some(rate as f64)));
                let _ = writeln!(md, "| system | achieved msgs/s | p50 us | p90 us | p99 us | p99.9 us | p99.99 us | max us | p99 / Precursor p99 | p50 / ping-pong p50 | errors |");
                let _ = writeln!(
                    md,
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                );
                let precursor = self.find(PRECURSOR, "produce", &durability, rate);
                for system in SYSTEMS {
                    let Some(r) = self.find(system, "produce", &durability, rate) else {
                        continue;
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        display_name(system),
                        number(Some(r.msgs_per_sec)),
                        number(r.p50_us),
                        number(r.p90_us),
                        number(r.p99_us),
                        number(r.p999_us),
                        number(r.p9999_us),
                        number(r.max_us),
                        ratio(r.p99_us, precursor.and_then(|p| p.p99_us)),
                        ratio(r.p50_us, pingpong.and_then(|p| p.p50_us)),
                        r.errors
                    );
                }
                let _ = writeln!(
                    md,
                    "\n![latency by percentile, acks={durability}, {rate} msgs/s]({plots}/{})\n",
                    plot_file_name(&durability, rate)
                );
            }
        }

        let _ = writeln!(md, "#### Every run (medians)\n");
        let _ = writeln!(md, "| system | workload | durability (exact setting) | rate | window | runs | msgs/s | MB/s | p50 us | p99 us | p99.9 us | max us | errors |");
        let _ = writeln!(
            md,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.rows {
            let m = &row.median;
            let durability = match (&m.durability, &m.durability_detail) {
                (Some(d), Some(detail)) => format!("{d} ({detail})"),
                (Some(d), None) => d.clone(),
                _ => "-".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                display_name(&row.key.system),
                row.key.workload,
                durability,
                if row.key.rate > 0 {
                    number(Some(row.key.rate as f64))
                } else {
                    "max".into()
                },
                m.window.map_or("-".into(), |w| w.to_string()),
                row.runs,
                number(Some(m.msgs_per_sec)),
                number(Some(m.mb_per_sec)),
                number(m.p50_us),
                number(m.p99_us),
                number(m.p999_us),
                number(m.max_us),
                row.errors
            );
        }
        md
    }

    /// The one line bench/compare.sh prints: Precursor / peer for throughput (higher is
    /// better for Precursor) and for p99 latency at each fixed rate (lower is better).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for durability in ["leader", "durable"] {
            for (precursor, peer) in PRECURSORS.into_iter().flat_map(|p| PEERS.map(|q| (p, q))) {
                if self.find(precursor, "produce", durability, 0).is_none()
                    && precursor != PRECURSOR
                {
                    continue;
                }
                let p = self
                    .find(precursor, "produce", durability, 0)
                    .map(|r| r.msgs_per_sec);
                let q = self
                    .find(peer, "produce", durability, 0)
                    .map(|r| r.msgs_per_sec);
                if p.is_some() || q.is_some() {
                    parts.push(format!(
                        "throughput {durability} {}/{} {}",
                        short(precursor),
                        short(peer),
                        ratio(p, q)
                    ));
                }
            }
        }
        // The gateway's cost: the Kafka path over the native path on the same data plane.
        for durability in ["leader", "durable"] {
            let kafka = self.find(PRECURSOR_KAFKA, "produce", durability, 0);
            let ipc = self.find(PRECURSOR_IPC, "produce", durability, 0);
            if let (Some(kafka), Some(ipc)) = (kafka, ipc) {
                parts.push(format!(
                    "throughput {durability} {}/{} {}",
                    short(PRECURSOR_KAFKA),
                    short(PRECURSOR_IPC),
                    ratio(Some(kafka.msgs_per_sec), Some(ipc.msgs_per_sec))
                ));
            }
        }
        for rate in self.rates() {
            for durability in self.durabilities("produce", rate) {
                for (precursor, peer) in PRECURSORS.into_iter().flat_map(|p| PEERS.map(|q| (p, q)))
                {
                    if self.find(precursor, "produce", &durability, rate).is_none()
                        && precursor != PRECURSOR
                    {
                        continue;
                    }
                    let p = self
                        .find(precursor, "produce", &durability, rate)
                        .and_then(|r| r.p99_us);
                    let q = self
                        .find(peer, "produce", &durability, rate)
                        .and_then(|r| r.p99_us);
                    if p.is_some() || q.is_some() {
                        parts.push(format!(
                            "p99@{rate}/s {durability} {}/{} {}",
                            short(precursor),
                            short(peer),
                            ratio(p, q)
                        ));
                    }
                }
            }
        }
        let errors: u64 = self.rows.iter().map(|r| r.errors).sum();
        format!("compare: {}; errors {errors}", parts.join(", "))
    }
}

fn short(system: &str) -> &str {
    match system {
        "nats-jetstream" => "NATS",
        "redis-streams" => "Redis",
        "precursor" => "Precursor",
        "precursor-ipc" => "Precursor-IPC",
        "precursor-kafka" => "Precursor-Kafka",
        other => other,
    }
}

pub fn plot_file_name(durability: &str, rate: u64) -> String {
    format!("latency-{durability}-{rate}.svg")
}

/// Replaces what lies between the markers of `document` with `section`; the text around
/// them (the hand-written method) is kept byte for byte.
pub fn splice(document: &str, section: &str) -> Result<String> {
    let begin = document
        .find(BEGIN_MARKER)
        .with_context(|| format!("the document has no line {BEGIN_MARKER:?}"))?;
    let end = document
        .find(END_MARKER)
        .with_context(|| format!("the document has no line {END_MARKER:?}"))?;
    if end < begin {
        bail!("the end marker comes before the begin marker");
    }
    if document[begin + BEGIN_MARKER.len()..].contains(BEGIN_MARKER) {
        bail!("the document has the begin marker twice");
    }
    let mut out = String::with_capacity(document.len() + section.len());
    out.push_str(&document[..begin + BEGIN_MARKER.len()]);
    out.push_str("\n\n");
    out.push_str(section.trim_end());
    out.push_str("\n\n");
    out.push_str(&document[end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        system: &str,
        workload: &str,
        durability: &str,
        rate: Option<f64>,
        msgs: f64,
        p99: f64,
    ) -> RunResult {
        let mut r = RunResult::new(system, "tcp", workload, 1000, 100, 1000.0 / msgs);
        r.durability = Some(durability.into());
        r.rate = rate;
        r.p50_us = Some(p99 / 4.0);
        r.p99_us = Some(p99);
        r.curve = vec![[50.0, p99 / 4.0], [99.0, p99]];
        r
    }

    fn sample() -> Vec<RunResult> {
        let mut results = vec![
            run("precursor", "produce", "leader", None, 600_000.0, 300.0),
            run("precursor", "produce", "leader", None, 500_000.0, 200.0),
            run("precursor", "produce", "leader", None, 700_000.0, 900.0),
            run(
                "nats-jetstream",
                "produce",
                "leader",
                None,
                100_000.0,
                1_000.0,
            ),
            run("redis-streams", "produce", "leader", None, 200_000.0, 500.0),
            run("precursor", "produce", "durable", None, 80_000.0, 4_000.0),
            run(
                "nats-jetstream",
                "produce",
                "durable",
                None,
                4_000.0,
                40_000.0,
            ),
            run(
                "precursor",
                "produce",
                "leader",
                Some(10_000.0),
                10_000.0,
                50.0,
            ),
            run(
                "redis-streams",
                "produce",
                "leader",
                Some(10_000.0),
                10_000.0,
                150.0,
            ),
            run(
                "precursor",
                "produce",
                "durable",
                Some(1_000.0),
                1_000.0,
                900.0,
            ),
        ];
        let mut memcpy = RunResult::new("machine", "memory", "memcpy", 5, 64 << 20, 0.01);
        memcpy.gb_per_sec = Some(6.7);
        memcpy.mb_per_sec = 6_700.0;
        results.push(memcpy);
        let mut pingpong = RunResult::new("machine", "shm", "pingpong", 1_000, 8, 0.001);
        pingpong.p50_us = Some(0.25);
        results.push(pingpong);
        results
    }

    #[test]
    fn medians_per_configuration() {
        let report = Report::new(&sample());
        let p = report.find("precursor", "produce", "leader", 0).unwrap();
        assert_eq!(p.msgs_per_sec, 600_000.0);
        assert_eq!(p.p99_us, Some(300.0));
        // The curve comes from the run whose p99 is the median.
        assert_eq!(p.curve[1][1], 300.0);
        let row = report
            .rows
            .iter()
            .find(|r| {
                r.key.system == "precursor" && r.key.rate == 0 && r.key.durability == "leader"
            })
            .unwrap();
        assert_eq!(row.runs, 3);
        assert_eq!(report.rates(), vec![10_000, 1_000]);
        assert_eq!(
            report.durabilities("produce", 0),
            vec!["leader".to_string(), "durable".to_string()]
        );
    }

    #[test]
    fn renders_tables_ratios_and_plot_links() {
        let md = Report::new(&sample()).render("2 vCPUs (test)", "plots");
        assert!(md.contains("2 vCPUs (test)"));
        assert!(md.contains("Medians of 3 runs"));
        // produce leader: 600k / 100k and 600k / 200k.
        assert!(md.contains("| produce, acks=leader (peers: ack before fsync), Precursor | 600,000 | 100,000 | 200,000 | 6.00x | 3.00x |"), "{md}");
        // durable: Redis did not run: a dash, not a made-up number.
        assert!(md.contains("| 80,000 | 4,000 | - | 20x | - |"), "{md}");
        assert!(
            md.contains("| memcpy bandwidth, GB/s (buffers of 64 MiB) | 6.70 |"),
            "{md}"
        );
        assert!(md.contains("#### Latency at a fixed 10,000 msgs/s, acks=leader"));
        // Redis p99 150 us over Precursor's 50: 3x; Precursor's p50 (12.5) over ping-pong's 0.25: 50x.
        assert!(md.contains("| Redis Streams | 10,000 | 37.5 |"), "{md}");
        assert!(md.contains("| 3.00x |"));
        assert!(md.contains("| 50x |"));
        assert!(md.contains("](plots/latency-leader-10000.svg)"));
        assert!(
            !md.contains("consume from the start"),
            "no consume rows were given"
        );
    }

    #[test]
    fn summary_is_one_line_with_every_ratio() {
        let line = Report::new(&sample()).summary();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("throughput leader Precursor/NATS 6.00x"),
            "{line}"
        );
        assert!(
            line.contains("throughput durable Precursor/NATS 20x"),
            "{line}"
        );
        assert!(
            line.contains("throughput durable Precursor/Redis -"),
            "{line}"
        );
        assert!(
            line.contains("p99@10000/s leader Precursor/Redis 0.33x"),
            "{line}"
        );
        assert!(line.ends_with("errors 0"));
    }

    #[test]
    fn the_kafka_gateway_has_its_rows_and_its_ratio_to_the_native_path() {
        let mut results = sample();
        results.push(run(
            "precursor-ipc",
            "produce",
            "leader",
            None,
            2_000_000.0,
            100.0,
        ));
        results.push(run(
            "precursor-kafka",
            "produce",
            "leader",
            None,
            500_000.0,
            9_000.0,
        ));
        results.push(run(
            "precursor-kafka",
            "produce",
            "leader",
            Some(10_000.0),
            10_000.0,
            250.0,
        ));
        let report = Report::new(&results);
        let md = report.render("test", "plots");
        assert!(
            md.contains("| produce, acks=leader (peers: ack before fsync), Precursor via Kafka gateway | 500,000 | 100,000 | 200,000 | 5.00x | 2.50x |"),
            "{md}"
        );
        assert!(
            md.contains("| Precursor via Kafka gateway | 10,000 |"),
            "{md}"
        );
        let line = report.summary();
        assert!(
            line.contains("throughput leader Precursor-Kafka/Precursor-IPC 0.25x"),
            "{line}"
        );
        assert!(
            line.contains("p99@10000/s leader Precursor-Kafka/Redis 1.67x"),
            "{line}"
        );
        // No durable Kafka row: no durable Kafka ratios, not a row of dashes.
        assert!(!line.contains("durable Precursor-Kafka"), "{line}");
    }

    #[test]
    fn splice_keeps_the_hand_written_text() {
        let doc =
            format!("# Title\n\nmethod text\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\nafter\n");
        let out = splice(&doc, "new table\n").unwrap();
        assert_eq!(
            out,
            format!(
                "# Title\n\nmethod text\n\n{BEGIN_MARKER}\n\nnew table\n\n{END_MARKER}\n\nafter\n"
            )
        );
        // Idempotent: splicing the same section again changes nothing.
        assert_eq!(splice(&out, "new table\n").unwrap(), out);
    }

    #[test]
    fn splice_refuses_missing_or_misordered_markers() {
        assert!(splice("no markers", "x")
            .unwrap_err()
            .to_string()
            .contains("begin"));
        assert!(splice(&format!("{BEGIN_MARKER}\n"), "x")
            .unwrap_err()
            .to_string()
            .contains("no line"));
        let reversed = format!("{END_MARKER}\n{BEGIN_MARKER}\n");
        assert!(splice(&reversed, "x")
            .unwrap_err()
            .to_string()
            .contains("before"));
    }

    #[test]
    fn numbers_and_ratios_read_well() {
        assert_eq!(number(Some(1_234_567.4)), "1,234,567");
        assert_eq!(number(Some(123.4)), "123");
        assert_eq!(number(Some(12.34)), "12.3");
        assert_eq!(number(Some(0.456)), "0.46");
        assert_eq!(number(None), "-");
        assert_eq!(number(Some(f64::NAN)), "-");
        assert_eq!(ratio(Some(50.0), Some(2.0)), "25x");
        assert_eq!(ratio(Some(1.0), Some(3.0)), "0.33x");
        assert_eq!(ratio(Some(75_982.0), Some(1.0)), "75,982x");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(1.0)), "-");
    }

    #[test]
    fn load_dir_reads_lines_and_names_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = sample().iter().map(|r| r.to_json_line()).collect();
        std::fs::write(dir.path().join("a.json"), lines.join("\n") + "\n\n").unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not json").unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().len(), lines.len());
        std::fs::write(dir.path().join("b.json"), "{\"schema\":1}\n").unwrap();
        let error = format!("{:#}", load_dir(dir.path()).unwrap_err());
        assert!(error.contains("b.json:1"), "{error}");
        let empty = tempfile::tempdir().unwrap();
        assert!(load_dir(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no results"));
    }
}
