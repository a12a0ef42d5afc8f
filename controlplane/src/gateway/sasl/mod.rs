//! SASL on the Kafka listeners (SASL_PLAINTEXT, SASL_SSL): SaslHandshake (17, v1 only:
//! the Kafka-framed tokens of KIP-43) and SaslAuthenticate (36, v0..v2; v1 tells the
//! session's lifetime, KIP-368), with PLAIN ([`plain`]) and SCRAM-SHA-256/512
//! ([`scram`]) against the broker's users ([`users`]), failed attempts counted and locked
//! out ([`lockout`]).
//!
//! ```text
//!  AwaitHandshake ─SaslHandshake(m)─> AwaitPlain | AwaitScramFirst
//!  AwaitPlain ─SaslAuthenticate(authzid\0user\0pw)──────────────────────────> Done
//!  AwaitScramFirst ─SaslAuthenticate(client-first)─> AwaitScramFinal ─(final)─> Done
//!  Done ─SaslHandshake(same m)─> ... (re-authentication: the same user, KIP-368)
//! ```
//!
//! Until the first success only ApiVersions, SaslHandshake and SaslAuthenticate are
//! served; any other request closes the connection (`requests::dispatch`), as does a
//! request after the session's lifetime ran out without a re-authentication. A failed
//! authentication is answered SASL_AUTHENTICATION_FAILED (58) with the reason, then the
//! connection is closed, as Kafka does. On a listener without SASL, SaslHandshake and
//! SaslAuthenticate are ILLEGAL_SASL_STATE (34).

pub mod credentials_api;
pub mod lockout;
pub mod plain;
pub mod scram;
pub mod users;

use super::requests::Context;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use precursor_config::SaslMechanism;
use scram::{ClientFirst, ScramExchange, ScramHash};
use std::time::{Duration, Instant};

/// Largest `auth_bytes` of one SaslAuthenticate, in bytes (a SCRAM message is ~200, a
/// PLAIN one ~2 user names and a password); a larger one fails the authentication.
pub const SASL_AUTH_BYTES_MAX: usize = 16 << 10;
/// Largest request a connection of a SASL listener may send before it authenticated, in
/// bytes (Kafka's `sasl.server.max.receive.size`); a larger one closes the connection.
pub const SASL_UNAUTHENTICATED_REQUEST_BYTES_MAX: u32 = 512 << 10;

/// Where a connection of a SASL listener is in its authentication.
#[derive(Debug)]
enum Step {
    AwaitHandshake,
    AwaitPlain,
    AwaitScramFirst(ScramHash),
    AwaitScramFinal(Box<ScramExchange>),
    Done,
}

/// The SASL state of one connection of a SASL listener.
#[derive(Debug)]
pub struct SaslSession {
    step: Step,
    /// The user authenticated (kept through a re-authentication).
    user: Option<String>,
    mechanism: Option<SaslMechanism>,
    /// When the session ends unless re-authenticated (`connections_max_reauth_ms`).
    expires_at: Option<Instant>,
}

impl Default for SaslSession {
    fn default() -> SaslSession {
        SaslSession {
            step: Step::AwaitHandshake,
            user: None,
            mechanism: None,
            expires_at: None,
        }
    }
}

impl SaslSession {
    /// Whether the connection authenticated (possibly re-authenticating now).
    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Whether the session's lifetime ran out at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// What a SaslAuthenticate leads to besides its answer.
pub struct AuthenticateOutcome {
    pub response: SaslAuthenticateResponse,
    /// Close the connection after the answer (a failure).
    pub close: bool,
    /// Send the answer only after this long (a locked-out attempt).
    pub delay: Option<Duration>,
}

/// SaslHandshake: picks the mechanism of the exchange that follows.
pub fn handshake(context: &mut Context, request: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mut response = SaslHandshakeResponse::default();
    let offered: Vec<SaslMechanism> = context
        .listener
        .as_ref()
        .map(|l| l.sasl_mechanisms.clone())
        .unwrap_or_default();
    let Some(session) = context.sasl.as_mut() else {
        response.error_code = ResponseError::IllegalSaslState.code();
        return response;
    };
    response.mechanisms = offered
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    if !matches!(session.step, Step::AwaitHandshake | Step::Done) {
        response.error_code = ResponseError::IllegalSaslState.code();
        return response;
    }
    let Some(mechanism) =
        SaslMechanism::parse(request.mechanism.as_str()).filter(|m| offered.contains(m))
    else {
        response.error_code = ResponseError::UnsupportedSaslMechanism.code();
        return response;
    };
    if session.mechanism.is_some_and(|m| m != mechanism) {
        // KIP-368: a re-authentication keeps the mechanism.
        response.error_code = ResponseError::IllegalSaslState.code();
        return response;
    }
    session.step = match ScramHash::of(mechanism) {
        Some(hash) => Step::AwaitScramFirst(hash),
        None => Step::AwaitPlain,
    };
    response
}

fn failure(code: ResponseError, message: String) -> AuthenticateOutcome {
    let mut response = SaslAuthenticateResponse::default();
    response.error_code = code.code();
    response.error_message = Some(StrBytes::from_string(message));
    AuthenticateOutcome {
        response,
        close: true,
        delay: None,
    }
}

/// SaslAuthenticate: one token of the exchange the handshake chose.
pub fn authenticate(
    context: &mut Context,
    request: SaslAuthenticateRequest,
) -> AuthenticateOutcome {
    let gateway = context.gateway.clone();
    let peer = context.peer;
    let listener_name = context
        .listener
        .as_ref()
        .map_or_else(|| "default".to_string(), |l| l.name.clone());
    let reauth_ms = context
        .listener
        .as_ref()
        .map_or(0, |l| l.connections_max_reauth_ms);
    let Some(session) = context.sasl.as_mut() else {
        return failure(
            ResponseError::IllegalSaslState,
            "this listener does not take SASL".into(),
        );
    };
    let step = std::mem::replace(&mut session.step, Step::AwaitHandshake);
    let mechanism = match &step {
        Step::AwaitPlain => SaslMechanism::Plain,
        Step::AwaitScramFirst(hash) => hash.mechanism(),
        Step::AwaitScramFinal(exchange) => exchange.hash.mechanism(),
        Step::AwaitHandshake | Step::Done => {
            return failure(
                ResponseError::IllegalSaslState,
                "SaslAuthenticate without a SaslHandshake first".into(),
            );
        }
    };
    let metrics = &gateway.metrics;
    let lockout = &gateway.sasl_lockout;
    let now = Instant::now();
    let fail = |user: Option<&str>, message: String| {
        metrics.sasl_authentication(mechanism.name(), "failure");
        if lockout.failed(user, peer.ip(), now) {
            eprintln!(
                "precursor-controlplane: kafka gateway: listener {listener_name}: {peer}: \
                 {} failed SASL authentications (user {user:?} or this address): locked out \
                 for {} ms",
                lockout.policy.failures_max,
                lockout.policy.lockout.as_millis()
            );
        }
        failure(ResponseError::SaslAuthenticationFailed, message)
    };
    if request.auth_bytes.len() > SASL_AUTH_BYTES_MAX {
        return fail(
            None,
            format!(
                "SASL message of {} bytes is larger than SASL_AUTH_BYTES_MAX ({SASL_AUTH_BYTES_MAX})",
                request.auth_bytes.len()
            ),
        );
    }
    let locked = |user: Option<&str>| -> Option<AuthenticateOutcome> {
        let refused = lockout.check(user, peer.ip(), now).err()?;
        metrics.sasl_authentication(mechanism.name(), "locked");
        let mut outcome = failure(ResponseError::SaslAuthenticationFailed, refused.to_string());
        outcome.delay = Some(lockout.policy.delay);
        Some(outcome)
    };
    let bytes = &request.auth_bytes[..];
    let (user, server_message) = match step {
        Step::AwaitPlain => {
            let message = match plain::PlainMessage::parse(bytes) {
                Ok(message) => message,
                Err(error) => return fail(None, error.to_string()),
            };
            if let Some(outcome) = locked(Some(message.user)) {
                return outcome;
            }
            // SCRAM-SHA-512's credential first, else SHA-256's; a decoy when neither.
            let (hash, credential) = [ScramHash::Sha512, ScramHash::Sha256]
                .into_iter()
                .find_map(|h| Some((h, gateway.users.get(message.user, h)?)))
                .unwrap_or_else(|| {
                    let hash = ScramHash::Sha512;
                    (
                        hash,
                        gateway.users.credential_or_decoy(message.user, hash).0,
                    )
                });
            if !credential.verify_password(hash, message.password) {
                let error = plain::PlainError::InvalidCredentials;
                return fail(Some(message.user), error.to_string());
            }
            (message.user.to_string(), Vec::new())
        }
        Step::AwaitScramFirst(hash) => {
            let first = match ClientFirst::parse(bytes) {
                Ok(first) => first,
                Err(error) => return fail(None, error.to_string()),
            };
            if let Some(outcome) = locked(Some(&first.user)) {
                return outcome;
            }
            let nonce = match scram::server_nonce() {
                Ok(nonce) => nonce,
                Err(error) => {
                    return failure(
                        ResponseError::SaslAuthenticationFailed,
                        format!("no randomness from the operating system: {error}"),
                    )
                }
            };
            let (credential, _known) = gateway.users.credential_or_decoy(&first.user, hash);
            let (exchange, server_first) = ScramExchange::start(hash, first, credential, &nonce);
            session.step = Step::AwaitScramFinal(Box::new(exchange));
            let mut response = SaslAuthenticateResponse::default();
            response.auth_bytes = server_first.into_bytes().into();
            return AuthenticateOutcome {
                response,
                close: false,
                delay: None,
            };
        }
        Step::AwaitScramFinal(exchange) => match exchange.finish(bytes) {
            Ok(server_final) => (exchange.user.clone(), server_final.into_bytes()),
            Err(error) => return fail(Some(&exchange.user), error.to_string()),
        },
        Step::AwaitHandshake | Step::Done => unreachable!("answered above"),
    };
    if let Some(previous) = session.user.as_ref().filter(|p| **p != user) {
        let message = format!("re-authentication as {user:?} on a connection of {previous:?}");
        return fail(Some(&user), message);
    }
    let reauthenticated = session.user.is_some();
    metrics.sasl_authentication(mechanism.name(), "success");
    session.step = Step::Done;
    session.user = Some(user.clone());
    session.mechanism = Some(mechanism);
    session.expires_at = (reauth_ms > 0).then(|| now + Duration::from_millis(reauth_ms));
    context.principal = format!("User:{user}");
    eprintln!(
        "precursor-controlplane: kafka gateway: listener {listener_name}: {peer} {} with {} as {}",
        if reauthenticated {
            "re-authenticated"
        } else {
            "authenticated"
        },
        mechanism.name(),
        context.principal
    );
    let mut response = SaslAuthenticateResponse::default();
    response.auth_bytes = server_message.into();
    response.session_lifetime_ms = reauth_ms as i64;
    AuthenticateOutcome {
        response,
        close: false,
        delay: None,
    }
}
