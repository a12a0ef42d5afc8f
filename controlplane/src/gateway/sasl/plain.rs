//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one message. The password is
//! checked against the user's salted SCRAM credential (never stored as such).

/// Why a PLAIN message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("PLAIN message is malformed: {0}")]
    Malformed(&'static str),
    #[error("PLAIN authorization id differs from the user name")]
    AuthorizationId,
    /// Kafka's own message: the same for a wrong password and an unknown user.
    #[error("Authentication failed: Invalid username or password")]
    InvalidCredentials,
}

/// A PLAIN message, read: the user and the password.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainMessage<'a> {
    pub user: &'a str,
    pub password: &'a [u8],
}

impl<'a> PlainMessage<'a> {
    pub fn parse(message: &'a [u8]) -> Result<PlainMessage<'a>, PlainError> {
        let mut parts = message.split(|&b| b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PlainError::Malformed(
                "not authzid NUL user NUL password (three fields)",
            ));
        };
        let user =
            std::str::from_utf8(user).map_err(|_| PlainError::Malformed("user is not UTF-8"))?;
        if user.is_empty() || password.is_empty() {
            return Err(PlainError::Malformed("empty user or password"));
        }
        if !authzid.is_empty() && authzid != user.as_bytes() {
            return Err(PlainError::AuthorizationId);
        }
        Ok(PlainMessage { user, password })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(
            PlainMessage::parse(b"\0alice\0secret").unwrap(),
            PlainMessage {
                user: "alice",
                password: b"secret"
            }
        );
        assert!(PlainMessage::parse(b"alice\0alice\0secret").is_ok());
        assert_eq!(
            PlainMessage::parse(b"bob\0alice\0secret"),
            Err(PlainError::AuthorizationId)
        );
        for bad in [
            &b"alice\0secret"[..],
            b"\0\0secret",
            b"\0alice\0",
            b"\0a\0b\0c",
        ] {
            assert!(
                matches!(PlainMessage::parse(bad), Err(PlainError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
