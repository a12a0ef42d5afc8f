//! One task per Kafka client connection: frames in, answers out, in request order.
//!
//! ```text
//!  socket ─> FramedRead(LengthDelimitedCodec, <= request_bytes_max)
//!              | frame (size prefix stripped)
//!              v
//!            requests::dispatch  (synchronous part, in arrival order)
//!              | Pending future
//!              v
//!            FuturesOrdered (<= connection_requests_in_flight_max) ─> answers in order ─> socket
//! ```
//!
//! The codec keeps partial frames in its own buffer, so reading is cancel-safe inside
//! `select!`. Kafka itself answers one request at a time per connection; reading ahead
//! lets produces with `acks=-1` of one connection share an fdatasync.

use super::requests::{self, Context, Malformed, Outcome, Pending};
use super::Gateway;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

const LOG: &str = "precursor-controlplane: kafka gateway";

/// Accepts connections until the task is dropped.
pub async fn accept_forever(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let open = gateway.connections.fetch_add(1, Ordering::AcqRel);
                if open >= gateway.config.connections_max {
                    gateway.connections.fetch_sub(1, Ordering::AcqRel);
                    gateway.metrics.connection_refused();
                    drop(stream);
                    continue;
                }
                gateway.metrics.connection_accepted();
                let open = OpenConnection(gateway.clone());
                tokio::spawn(async move {
                    serve_connection(stream, peer, &open.0).await;
                });
            }
            Err(error) => {
                // EMFILE and the like: wait a little rather than spin.
                eprintln!("{LOG}: accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts a connection as open until dropped (also when its task panics).
struct OpenConnection(Arc<Gateway>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.connection_closed();
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, gateway: &Arc<Gateway>) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let context = Context::new(gateway.clone(), local, peer);
    let config = &gateway.config;
    let (read, mut write) = stream.into_split();
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(config.request_bytes_max as usize)
        .new_codec();
    let mut frames = FramedRead::new(read, codec);
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let in_flight_max = config.connection_requests_in_flight_max as usize;
    let idle = Duration::from_millis(config.connection_idle_timeout_ms);
    loop {
        tokio::select! {
            biased;
            Some(outcome) = pending.next(), if !pending.is_empty() => match outcome {
                Outcome::Respond(bytes) => {
                    if write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Outcome::Silent => {}
                Outcome::Close(reason) => {
                    // acks=0 produce that failed: Kafka closes so the client notices.
                    eprintln!("{LOG}: closing {peer}: {reason}");
                    return;
                }
            },
            frame = tokio::time::timeout(idle, frames.next()), if pending.len() < in_flight_max => {
                match frame {
                    Err(_) => {
                        if pending.is_empty() {
                            return; // idle: nothing asked for connection_idle_timeout_ms
                        }
                    }
                    Ok(None) => return, // the client closed
                    Ok(Some(Err(error))) => {
                        let reason = if error.kind() == std::io::ErrorKind::InvalidData {
                            Malformed::TooLarge
                        } else {
                            return; // reset by the peer and the like: not a bad request
                        };
                        gateway.metrics.malformed(reason.reason());
                        eprintln!("{LOG}: closing {peer}: {reason}");
                        return;
                    }
                    Ok(Some(Ok(frame))) => match requests::dispatch(&context, frame.freeze()) {
                        Ok(answer) => pending.push_back(answer),
                        Err(malformed) => {
                            gateway.metrics.malformed(malformed.reason());
                            eprintln!("{LOG}: closing {peer}: {malformed}");
                            return;
                        }
                    },
                }
            }
        }
    }
}
