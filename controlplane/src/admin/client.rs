//! The CLI's side of the admin socket: blocking, one request per connection.

use super::{Request, Response, RESPONSE_BYTES_MAX};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the CLI waits for the control plane's answer, in milliseconds. Longer than any
/// `command_timeout_ms` a sane config sets: the control plane answers `timeout` itself.
pub const CLIENT_RESPONSE_TIMEOUT_MS: u64 = 120_000;

/// Why an admin request got no [`Response`].
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot reach the control plane at {}: is the broker running? (precursor up / ci/up.sh)",
        path.display()
    )]
    Unreachable { path: PathBuf },
    #[error("admin socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin socket {}: no answer within {timeout_ms} ms", path.display())]
    NoAnswer { path: PathBuf, timeout_ms: u64 },
    #[error("admin socket {}: unreadable answer: {reason}", path.display())]
    BadResponse { path: PathBuf, reason: String },
}

/// Sends one request to the control plane at `socket` and returns its answer, waiting at
/// most [`CLIENT_RESPONSE_TIMEOUT_MS`].
pub fn request(socket: &Path, request: &Request) -> Result<Response, AdminError> {
    request_within(
        socket,
        request,
        Duration::from_millis(CLIENT_RESPONSE_TIMEOUT_MS),
    )
}

/// [`request`], waiting at most `timeout` for each read and write.
pub fn request_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, AdminError> {
    let io = |source: std::io::Error| {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            AdminError::NoAnswer {
                path: socket.to_path_buf(),
                timeout_ms: timeout.as_millis() as u64,
            }
        } else {
            AdminError::Io {
                path: socket.to_path_buf(),
                source,
            }
        }
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            AdminError::Unreachable {
                path: socket.to_path_buf(),
            }
        }
        _ => io(source),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .take(RESPONSE_BYTES_MAX as u64)
        .read_line(&mut answer)
        .map_err(io)?;
    if !answer.ends_with('\n') {
        return Err(AdminError::BadResponse {
            path: socket.to_path_buf(),
            reason: if answer.is_empty() {
                "the control plane closed the connection".into()
            } else {
                format!("no complete line within {RESPONSE_BYTES_MAX} bytes")
            },
        });
    }
    serde_json::from_str(&answer).map_err(|e| AdminError::BadResponse {
        path: socket.to_path_buf(),
        reason: e.to_string(),
    })
}
