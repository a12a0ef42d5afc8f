//! Admin commands (`topic ...`, `status`): one request to the control plane's admin socket,
//! printed as a table for people or as JSON with `--json`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use precursor_config::limits::PARTITIONS_PER_TOPIC_MAX;
use precursor_config::Config;
use precursor_controlplane::admin::{self, NodeStatus, Request, Response};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the control plane is, and how to print its answer.
#[derive(Args, Clone, Debug)]
pub struct AdminTarget {
    /// Configuration file naming the admin socket (controlplane.admin_socket).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The admin socket itself [default: /run/precursor/precursor.sock].
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

impl AdminTarget {
    pub(super) fn socket(&self) -> Result<PathBuf> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        Ok(config.controlplane.admin_socket)
    }
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (1..=1024).
        #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=PARTITIONS_PER_TOPIC_MAX as i64))]
        partitions: u32,
        /// Delete segments whose newest record is older than this, in ms
        /// [default, or 0: the node's storage.retention_ms].
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Delete the oldest segments while a partition is larger than this, in bytes
        /// [default, or 0: the node's storage.retention_bytes].
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List topics.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Show a topic's partitions: offsets and sizes.
    Describe {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Change a topic's retention (at least one of --retention-ms, --retention-bytes).
    #[command(group(clap::ArgGroup::new("retention").required(true).multiple(true)))]
    Alter {
        name: String,
        /// New time retention, in ms (0: no limit).
        #[arg(long, group = "retention")]
        retention_ms: Option<u64>,
        /// New size retention per partition, in bytes (0: no limit).
        #[arg(long, group = "retention")]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

pub fn topic(command: TopicCommand) -> Result<ExitCode> {
    let (request, target) = match command {
        TopicCommand::Create {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            target,
        } => (
            Request::CreateTopic {
                name,
                partitions,
                retention_ms,
                retention_bytes,
            },
            target,
        ),
        TopicCommand::List { target } => (Request::ListTopics, target),
        TopicCommand::Describe { name, target } => (Request::DescribeTopic { name }, target),
        TopicCommand::Delete { name, target } => (Request::DeleteTopic { name }, target),
        TopicCommand::Alter {
            name,
            retention_ms,
            retention_bytes,
            target,
        } => (
            Request::AlterTopic {
                name,
                retention_ms,
                retention_bytes,
            },
            target,
        ),
    };
    ask(&target, &request)
}

pub fn status(target: AdminTarget) -> Result<ExitCode> {
    ask(&target, &Request::Status)
}

fn ask(target: &AdminTarget, request: &Request) -> Result<ExitCode> {
    let socket = target.socket()?;
    let response = admin::request(&socket, request)?;
    if let Response::Error { code, message } = &response {
        if target.json {
            println!("{}", serde_json::to_string(&response)?);
            eprintln!("precursor: {message} ({code})");
            return Ok(ExitCode::FAILURE);
        }
        bail!("{message} ({code})");
    }
    if target.json {
        println!("{}", json(&response)?);
    } else {
        print!("{}", human(request, &response)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The answer's content as JSON, without the response tag.
fn json(response: &Response) -> Result<String> {
    Ok(match response {
        Response::Ok => serde_json::json!({ "ok": true }).to_string(),
        Response::TopicCreated {
            name,
            topic_id,
            partitions,
        } => serde_json::json!({ "name": name, "topic_id": topic_id, "partitions": partitions })
            .to_string(),
        Response::Topics(topics) => serde_json::to_string(topics)?,
        Response::Topic(topic) => serde_json::to_string(topic)?,
        Response::Status(status) => serde_json::to_string(status)?,
        Response::Config(text) => serde_json::json!({ "config": text }).to_string(),
        Response::Latency {
            count,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
        } => serde_json::json!({
            "count": count, "p50_ns": p50_ns, "p90_ns": p90_ns, "p99_ns": p99_ns,
            "p999_ns": p999_ns, "max_ns": max_ns
        })
        .to_string(),
        Response::Error { .. } => serde_json::to_string(response)?,
    })
}

fn human(request: &Request, response: &Response) -> Result<String> {
    Ok(match response {
        Response::Ok => match request {
            Request::DeleteTopic { name } => format!("deleted topic {name}\n"),
            Request::AlterTopic { name, .. } => format!("altered topic {name}\n"),
            _ => "ok\n".into(),
        },
        Response::TopicCreated {
            name,
            topic_id,
            partitions,
        } => format!("created topic {name} (id {topic_id}) with {partitions} partition(s)\n"),
        Response::Topics(topics) if topics.is_empty() => "no topics\n".into(),
        Response::Topics(topics) => table(
            &["TOPIC", "PARTITIONS", "MESSAGES", "BYTES", "SEGMENTS"],
            topics
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partitions.to_string(),
                        t.messages.to_string(),
                        bytes(t.bytes),
                        t.segments.to_string(),
                    ]
                })
                .collect(),
        ),
        Response::Topic(topic) => {
            let mut text = format!(
                "topic {}: {} partition(s)\n",
                topic.name,
                topic.partitions.len()
            );
            text.push_str(&table(
                &["PARTITION", "START", "END", "DURABLE", "BYTES", "SEGMENTS"],
                topic
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.partition.to_string(),
                            p.start_offset.to_string(),
                            p.end_offset.to_string(),
                            p.durable_offset.to_string(),
                            bytes(p.bytes),
                            p.segments.to_string(),
                        ]
                    })
                    .collect(),
            ));
            text
        }
        Response::Status(status) => status_text(status),
        Response::Config(text) => text.clone(),
        Response::Latency {
            count,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
        } => format!(
            "{count} pings: p50 {p50_ns} ns, p90 {p90_ns} ns, p99 {p99_ns} ns, \
             p99.9 {p999_ns} ns, max {max_ns} ns\n"
        ),
        Response::Error { code, message } => format!("{message} ({code})\n"),
    })
}

fn status_text(status: &NodeStatus) -> String {
    let mut text = String::new();
    let dataplane = match (status.dataplane_pid, status.dataplane_alive) {
        (Some(pid), true) => format!(
            "running, pid {pid}, attached {}",
            duration(status.dataplane_uptime_s.unwrap_or(0))
        ),
        (Some(pid), false) => format!("NOT RUNNING (pid {pid} stopped its heartbeat)"),
        (None, _) => "NOT RUNNING".into(),
    };
    text.push_str(&format!("data plane:     {dataplane}\n"));
    text.push_str(&format!(
        "control plane:  up {}, data plane restarts {}, command ring depth {}\n",
        duration(status.uptime_s),
        status.restarts,
        status.command_ring_depth
    ));
    if !status.dataplane_alive {
        return text;
    }
    text.push_str(&format!(
        "storage:        {} topic(s), {} partition(s), {} on disk\n",
        status.topics,
        status.partitions,
        bytes(status.disk_bytes)
    ));
    if !status.ports.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &[
                "PORT",
                "NAME",
                "LINK",
                "SPEED",
                "RX PKTS",
                "RX BYTES",
                "RX MISSED",
                "RX ERRS",
                "TX PKTS",
                "TX BYTES",
                "TX ERRS",
            ],
            status
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.port.clone(),
                        p.name.clone().unwrap_or_else(|| "-".into()),
                        if p.link_up { "up" } else { "down" }.into(),
                        if p.speed_mbps == 0 {
                            "-".into()
                        } else {
                            format!("{} Mb/s", p.speed_mbps)
                        },
                        p.rx_packets.to_string(),
                        bytes(p.rx_bytes),
                        p.rx_missed.to_string(),
                        p.rx_errors.to_string(),
                        p.tx_packets.to_string(),
                        bytes(p.tx_bytes),
                        p.tx_errors.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    for lcore in &status.lcores {
        text.push_str(&format!("\nlcore {}:\n", lcore.lcore));
        for (name, value) in &lcore.counters {
            text.push_str(&format!("  {name} {value}\n"));
        }
    }
    text
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push('\n');
        text
    };
    let mut text = line(header.to_vec());
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("precursor").chain(args.iter().copied()))
    }

    #[test]
    fn bad_admin_arguments_are_usage_errors() {
        for args in [
            &["topic", "create", "orders"][..], // no --partitions
            &["topic", "create", "orders", "--partitions", "0"], // below 1
            &["topic", "create", "orders", "--partitions", "1025"], // above 1024
            &["topic", "create", "orders", "--partitions", "many"],
            &["topic", "alter", "orders"], // nothing to alter
            &["topic", "describe"],        // no name
            &["topic", "list", "--socket", "/s", "--config", "/c"], // one or the other
            &["topic", "rename", "a", "b"],
            &["status", "--retention-ms", "5"],
        ] {
            let error = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }

    #[test]
    fn good_admin_arguments_parse() {
        for args in [
            &[
                "topic",
                "create",
                "orders",
                "-p",
                "3",
                "--retention-ms",
                "60000",
            ][..],
            &["topic", "list", "--json", "--socket", "/tmp/p.sock"],
            &["topic", "describe", "orders", "--config", "precursor.toml"],
            &["topic", "delete", "orders"],
            &[
                "topic",
                "alter",
                "orders",
                "--retention-bytes",
                "1073741824",
            ],
            &["status", "--json"],
            &["up", "--config", "precursor.toml"],
            &["controlplane"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(3 << 20), "3.0 MiB");
        assert_eq!(super::duration(59), "59 s");
        assert_eq!(super::duration(61), "1 min 1 s");
        assert_eq!(super::duration(7260), "2 h 1 min");
    }
}
