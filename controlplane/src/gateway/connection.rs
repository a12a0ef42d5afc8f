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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

const LOG: &str = "precursor-controlplane: kafka gateway";

/// A TLS handshake that takes longer than this closes the connection, in milliseconds.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// What a listener is: its config (None for the default `gateway.listen`) and its TLS
/// acceptor when it speaks TLS.
#[derive(Clone)]
pub struct ListenerKind {
    pub config: Option<Arc<precursor_config::ListenerConfig>>,
    pub tls: Option<TlsAcceptor>,
}

impl ListenerKind {
    fn name(&self) -> &str {
        self.config.as_ref().map_or("default", |c| c.name.as_str())
    }
}

/// Accepts connections until the task is dropped.
pub async fn accept_forever(listener: TcpListener, gateway: Arc<Gateway>, kind: ListenerKind) {
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
                let kind = kind.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let Ok(local) = stream.local_addr() else {
                        return;
                    };
                    let mut context = Context::new(open.0.clone(), local, peer);
                    context.listener = kind.config.clone();
                    if kind.config.as_ref().is_some_and(|c| c.protocol.sasl()) {
                        context.sasl = Some(super::sasl::SaslSession::default());
                    }
                    let Some(acceptor) = kind.tls.clone() else {
                        serve_connection(stream, context, &open.0).await;
                        return;
                    };
                    let handshake = tokio::time::timeout(
                        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            if let Some(cert) =
                                tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                            {
                                context.principal = super::tls::principal_of(cert);
                                eprintln!(
                                    "{LOG}: listener {}: {peer} authenticated by its \
                                     certificate as {}",
                                    kind.name(),
                                    context.principal
                                );
                            }
                            serve_connection(tls, context, &open.0).await;
                        }
                        Ok(Err(error)) => {
                            open.0.metrics.malformed("tls_handshake");
                            eprintln!(
                                "{LOG}: listener {}: closing {peer}: TLS handshake failed: {error}",
                                kind.name()
                            );
                        }
                        Err(_) => {
                            open.0.metrics.malformed("tls_handshake");
                            eprintln!(
                                "{LOG}: listener {}: closing {peer}: no TLS handshake within \
                                 {TLS_HANDSHAKE_TIMEOUT_MS} ms",
                                kind.name()
                            );
                        }
                    }
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

async fn serve_connection<S>(stream: S, mut context: Context, gateway: &Arc<Gateway>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer = context.peer;
    let config = &gateway.config;
    let (read, mut write) = tokio::io::split(stream);
    // Until a client of a SASL listener authenticated, its requests are small.
    let unauthenticated_bytes_max = config
        .request_bytes_max
        .min(super::sasl::SASL_UNAUTHENTICATED_REQUEST_BYTES_MAX);
    let mut frame_bytes_max = match &context.sasl {
        Some(_) => unauthenticated_bytes_max,
        None => config.request_bytes_max,
    };
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(frame_bytes_max as usize)
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
                    if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                        return;
                    }
                }
                Outcome::Silent => {}
                Outcome::RespondThenClose(bytes, reason) => {
                    let _ = write.write_all(&bytes).await;
                    let _ = write.flush().await;
                    eprintln!("{LOG}: closing {peer}: {reason}");
                    return;
                }
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
                    Ok(Some(Ok(frame))) => match requests::dispatch(&mut context, frame.freeze()) {
                        Ok(answer) => {
                            pending.push_back(answer);
                            if frame_bytes_max != config.request_bytes_max
                                && context.sasl.as_ref().is_some_and(|s| s.authenticated())
                            {
                                frame_bytes_max = config.request_bytes_max;
                                frames
                                    .decoder_mut()
                                    .set_max_frame_length(frame_bytes_max as usize);
                            }
                        }
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
