//! Asking another broker's control plane: one admin request over TCP to its cluster
//! listener (`cluster.brokers[].admin`), one JSON line each way, as on the admin socket.

use super::{Request, Response, RESPONSE_BYTES_MAX};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a connection to another broker may take to open, in milliseconds. A broker
/// whose link is cut never answers the SYN; one that is stopped refuses at once.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// Why another broker gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "cannot connect: {0}: is its control plane running, with controlplane.cluster_listen set?"
    )]
    Connect(#[source] std::io::Error),
    #[error(
        "no connection within {CONNECT_TIMEOUT_MS} ms: is the broker up and its link connected?"
    )]
    ConnectTimeout,
    #[error("connection lost: {0}")]
    Io(#[source] std::io::Error),
    #[error("no answer within {0} ms; the request may still be carried out there")]
    AnswerTimeout(u64),
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
}

/// Sends `request` to the cluster listener at `address` (`host:port`) and returns its
/// answer; waits at most [`CONNECT_TIMEOUT_MS`] to connect and `answer_timeout` for it.
pub async fn ask_broker(
    address: &str,
    request: &Request,
    answer_timeout: Duration,
) -> Result<Response, ForwardError> {
    let connect = TcpStream::connect(address);
    let stream = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
        .await
        .map_err(|_| ForwardError::ConnectTimeout)?
        .map_err(ForwardError::Connect)?;
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .map_err(ForwardError::Io)?;
        let mut answer = Vec::new();
        BufReader::new(read.take(RESPONSE_BYTES_MAX as u64))
            .read_until(b'\n', &mut answer)
            .await
            .map_err(ForwardError::Io)?;
        if !answer.ends_with(b"\n") {
            return Err(ForwardError::BadAnswer(if answer.is_empty() {
                "the control plane closed the connection".into()
            } else {
                format!("no complete line within {RESPONSE_BYTES_MAX} bytes")
            }));
        }
        serde_json::from_slice(&answer).map_err(|e| ForwardError::BadAnswer(e.to_string()))
    };
    let timeout_ms = answer_timeout.as_millis() as u64;
    tokio::time::timeout(answer_timeout, exchange)
        .await
        .map_err(|_| ForwardError::AnswerTimeout(timeout_ms))?
}
