//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), the server's side, as Kafka
//! speaks them: no channel binding (gs2 flag `n` or `y`, never `p`: no `-PLUS`), an
//! authorization id only when it is the user's own name, extensions ignored except
//! `tokenauth` (delegation tokens: refused).
//!
//! ```text
//!  client-first  n,,n=<user>,r=<client nonce>
//!  server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//!  client-final  c=biws,r=<both nonces>,p=<ClientProof>
//!  server-final  v=<ServerSignature>
//! ```
//!
//! A credential is what Kafka stores: salt, iterations, StoredKey = H(HMAC(SaltedPassword,
//! "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"); the password
//! itself is never kept. The proof is compared in constant time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use precursor_config::SaslMechanism;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Fewest PBKDF2 iterations a credential may have (Kafka's floor, RFC 7677's advice).
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations a credential may have (Kafka's ceiling).
pub const SCRAM_ITERATIONS_MAX: u32 = 16384;
/// Iterations of a credential made by `precursor user create` unless told otherwise.
pub const SCRAM_ITERATIONS_DEFAULT: u32 = 4096;
/// Bytes of a salt made here (`precursor user create`, decoys of unknown users).
pub const SCRAM_SALT_BYTES: usize = 32;
/// Random bytes in the server's nonce (base64 in the message).
pub const SCRAM_SERVER_NONCE_BYTES: usize = 24;

/// The hash function of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    pub const ALL: [ScramHash; 2] = [ScramHash::Sha256, ScramHash::Sha512];

    pub fn of(mechanism: SaslMechanism) -> Option<ScramHash> {
        match mechanism {
            SaslMechanism::ScramSha256 => Some(ScramHash::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramHash::Sha512),
            SaslMechanism::Plain => None,
        }
    }

    pub fn mechanism(self) -> SaslMechanism {
        match self {
            ScramHash::Sha256 => SaslMechanism::ScramSha256,
            ScramHash::Sha512 => SaslMechanism::ScramSha512,
        }
    }

    /// The mechanism's number in DescribeUserScramCredentials and
    /// AlterUserScramCredentials (Kafka's `ScramMechanism`: 1 SHA-256, 2 SHA-512).
    pub fn kafka_code(self) -> i8 {
        match self {
            ScramHash::Sha256 => 1,
            ScramHash::Sha512 => 2,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<ScramHash> {
        ScramHash::ALL.into_iter().find(|h| h.kafka_code() == code)
    }

    /// Bytes of the hash's output (a proof, a key).
    pub fn output_bytes(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// SaltedPassword = PBKDF2-HMAC-H(password, salt, iterations).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_bytes()];
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
            }
        }
        out
    }
}

/// One user's credential for one SCRAM mechanism, as Kafka stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl ScramCredential {
    /// From a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        hash: ScramHash,
        salt: Vec<u8>,
        salted_password: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let client_key = hash.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// From a password, salted with `salt`.
    pub fn from_password(
        hash: ScramHash,
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramCredential {
        let salted = hash.salted_password(password, &salt, iterations);
        ScramCredential::from_salted_password(hash, salt, &salted, iterations)
    }

    /// Whether `password` is this credential's (PLAIN), compared in constant time.
    pub fn verify_password(&self, hash: ScramHash, password: &[u8]) -> bool {
        let salted = hash.salted_password(password, &self.salt, self.iterations);
        let stored_key = hash.hash(&hash.hmac(&salted, b"Client Key"));
        bool::from(stored_key.ct_eq(&self.stored_key))
    }
}

/// Why a SCRAM exchange failed. Every one ends the exchange (SASL_AUTHENTICATION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("SCRAM {message} message is malformed: {reason}")]
    Malformed {
        message: &'static str,
        reason: &'static str,
    },
    #[error("SCRAM channel binding (gs2 flag p, the -PLUS mechanisms) is not supported")]
    ChannelBindingUnsupported,
    #[error(
        "SCRAM client-final channel binding (c=) is not the gs2 header of the client-first message"
    )]
    ChannelBindingMismatch,
    #[error("SCRAM client-final nonce does not end with this exchange's nonce (client nonce + server nonce)")]
    NonceMismatch,
    #[error("SCRAM authorization id differs from the user name")]
    AuthorizationId,
    #[error("SCRAM delegation tokens (tokenauth) are not supported")]
    TokenAuth,
    /// Kafka's own message: the same for a wrong password and an unknown user.
    #[error(
        "Authentication failed during authentication due to invalid credentials with SASL \
         mechanism {mechanism}"
    )]
    InvalidCredentials { mechanism: &'static str },
}

fn malformed(message: &'static str, reason: &'static str) -> ScramError {
    ScramError::Malformed { message, reason }
}

/// A client-first message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` or `y,,` (or with `a=<the user>`): what the client-final's `c=` must carry.
    pub gs2_header: String,
    /// The message without the gs2 header (part of AuthMessage).
    pub bare: String,
    pub user: String,
    pub client_nonce: String,
}

/// `saslname` of RFC 5802: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A nonce's characters: printable ASCII but `,` (RFC 5802).
fn printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Extensions after the mandatory attributes: ignored, but `tokenauth=true` is refused.
fn check_extensions<'a>(extensions: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for extension in extensions {
        if extension.eq_ignore_ascii_case("tokenauth=true") {
            return Err(ScramError::TokenAuth);
        }
    }
    Ok(())
}

impl ClientFirst {
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        const WHAT: &str = "client-first";
        let text = std::str::from_utf8(message).map_err(|_| malformed(WHAT, "not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts
            .next()
            .ok_or(malformed(WHAT, "no gs2 header (n,, or y,,)"))?;
        let bare = parts
            .next()
            .ok_or(malformed(WHAT, "no gs2 header (n,, or y,,)"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(malformed(WHAT, "the gs2 flag is not n or y")),
        }
        let mut attributes = bare.split(',');
        let user = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(malformed(WHAT, "no user name (n=) first"))?;
        let user = decode_saslname(user).ok_or(malformed(WHAT, "a bad = escape in the name"))?;
        if user.is_empty() {
            return Err(malformed(WHAT, "an empty user name"));
        }
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed(WHAT, "no nonce (r=) after the name"))?;
        if !printable(client_nonce) {
            return Err(malformed(WHAT, "the nonce is empty or not printable ASCII"));
        }
        check_extensions(attributes)?;
        if !authzid.is_empty() {
            let id = authzid
                .strip_prefix("a=")
                .and_then(decode_saslname)
                .ok_or(malformed(WHAT, "the authorization id is not a=<name>"))?;
            if id != user {
                return Err(ScramError::AuthorizationId);
            }
        }
        Ok(ClientFirst {
            gs2_header: format!("{flag},{authzid},"),
            bare: bare.to_string(),
            user,
            client_nonce: client_nonce.to_string(),
        })
    }
}

/// A SCRAM exchange between the server-first and the client-final message.
#[derive(Debug)]
pub struct ScramExchange {
    pub hash: ScramHash,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    pub user: String,
    credential: ScramCredential,
}

impl ScramExchange {
    /// Answers `first` with the server-first message; `server_nonce` comes from a CSPRNG
    /// ([`server_nonce`]), `credential` is the user's or a decoy (unknown user).
    pub fn start(
        hash: ScramHash,
        first: ClientFirst,
        credential: ScramCredential,
        server_nonce: &str,
    ) -> (ScramExchange, String) {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let exchange = ScramExchange {
            hash,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first: server_first.clone(),
            nonce,
            user: first.user,
            credential,
        };
        (exchange, server_first)
    }

    /// Checks the client-final message; the server-final message when the proof holds.
    pub fn finish(&self, message: &[u8]) -> Result<String, ScramError> {
        const WHAT: &str = "client-final";
        let text = std::str::from_utf8(message).map_err(|_| malformed(WHAT, "not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(malformed(WHAT, "no proof (p=) last"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(malformed(WHAT, "no channel binding (c=) first"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed(WHAT, "no nonce (r=) second"))?;
        check_extensions(attributes)?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| malformed(WHAT, "c= is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        // The nonce must end with this exchange's (client nonce + server nonce): Kafka
        // checks `endsWith`, not equality, because librdkafka up to 2.x sends its client
        // nonce twice (cnonce + the server-first's r=). The proof covers the whole
        // message, so a prefix changes nothing of what is proven.
        let suffix = nonce
            .len()
            .checked_sub(self.nonce.len())
            .map(|at| &nonce.as_bytes()[at..]);
        if !suffix.is_some_and(|s| bool::from(s.ct_eq(self.nonce.as_bytes()))) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed(WHAT, "p= is not base64"))?;
        let invalid = ScramError::InvalidCredentials {
            mechanism: self.hash.mechanism().name(),
        };
        if proof.len() != self.hash.output_bytes() {
            return Err(invalid);
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = self
            .hash
            .hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = self.hash.hash(&client_key);
        if !bool::from(stored_key.ct_eq(&self.credential.stored_key)) {
            return Err(invalid);
        }
        let server_signature = self
            .hash
            .hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

/// A server nonce: [`SCRAM_SERVER_NONCE_BYTES`] from the OS CSPRNG, base64.
pub fn server_nonce() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SCRAM_SERVER_NONCE_BYTES];
    getrandom::getrandom(&mut bytes)?;
    Ok(BASE64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc7677_credential() -> ScramCredential {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredential::from_password(ScramHash::Sha256, b"pencil", salt, 4096)
    }

    fn rfc7677_exchange() -> ScramExchange {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.user, "user");
        let (exchange, server_first) =
            ScramExchange::start(ScramHash::Sha256, first, rfc7677_credential(), SERVER_NONCE);
        assert_eq!(server_first, SERVER_FIRST);
        exchange
    }

    #[test]
    fn rfc7677_test_vector() {
        let exchange = rfc7677_exchange();
        assert_eq!(
            exchange.finish(CLIENT_FINAL.as_bytes()).unwrap(),
            SERVER_FINAL
        );
    }

    #[test]
    fn librdkafkas_doubled_client_nonce_is_accepted_as_kafka_accepts_it() {
        // librdkafka writes r=<cnonce><r of server-first>: the client nonce twice. The
        // proof is over the message as sent, so it is computed here the same way.
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let credential = rfc7677_credential();
        let (exchange, server_first) =
            ScramExchange::start(ScramHash::Sha256, first, credential, SERVER_NONCE);
        let without_proof = format!("c=biws,r=rOprNGfwEbeRWgbNEkqO{}", &server_first[2..52]);
        let salted = ScramHash::Sha256.salted_password(
            b"pencil",
            &BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let client_key = ScramHash::Sha256.hmac(&salted, b"Client Key");
        let stored_key = ScramHash::Sha256.hash(&client_key);
        let auth = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{without_proof}");
        let signature = ScramHash::Sha256.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let message = format!("{without_proof},p={}", BASE64.encode(proof));
        assert!(exchange.finish(message.as_bytes()).is_ok());
    }

    #[test]
    fn a_tampered_proof_nonce_or_binding_is_refused() {
        let exchange = rfc7677_exchange();
        let proof = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(
            exchange.finish(proof.as_bytes()),
            Err(ScramError::InvalidCredentials {
                mechanism: "SCRAM-SHA-256"
            })
        );
        let nonce = CLIENT_FINAL.replace("hNlF$k0", "hNlF$k1");
        assert_eq!(
            exchange.finish(nonce.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        let binding = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert_eq!(
            exchange.finish(binding.as_bytes()),
            Err(ScramError::ChannelBindingMismatch)
        );
        let short =
            CLIENT_FINAL.replace("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "p=AAAA");
        assert!(matches!(
            exchange.finish(short.as_bytes()),
            Err(ScramError::InvalidCredentials { .. })
        ));
        assert!(matches!(
            exchange.finish(b"c=biws"),
            Err(ScramError::Malformed { .. })
        ));
    }

    #[test]
    fn a_wrong_password_fails_like_an_unknown_user() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let other = ScramCredential::from_password(ScramHash::Sha256, b"crayon", salt, 4096);
        let (exchange, _) = ScramExchange::start(ScramHash::Sha256, first, other, SERVER_NONCE);
        assert_eq!(
            exchange.finish(CLIENT_FINAL.as_bytes()),
            Err(ScramError::InvalidCredentials {
                mechanism: "SCRAM-SHA-256"
            })
        );
    }

    #[test]
    fn client_first_forms() {
        let first = ClientFirst::parse(b"y,a=us=2Cer,n=us=2Cer,r=abc,ext=1").unwrap();
        assert_eq!(first.user, "us,er");
        assert_eq!(first.gs2_header, "y,a=us=2Cer,");
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=user,r=abc"),
            Err(ScramError::ChannelBindingUnsupported)
        );
        assert_eq!(
            ClientFirst::parse(b"n,a=root,n=user,r=abc"),
            Err(ScramError::AuthorizationId)
        );
        assert_eq!(
            ClientFirst::parse(b"n,,n=user,r=abc,tokenauth=true"),
            Err(ScramError::TokenAuth)
        );
        for bad in [
            &b"n,,n=user"[..],
            b"n,,r=abc",
            b"n,,n=,r=abc",
            b"n,,n=u=ZZ,r=abc",
            b"x,,n=user,r=abc",
            b"n,,n=user,r=",
            b"\xff",
        ] {
            assert!(
                matches!(ClientFirst::parse(bad), Err(ScramError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn plain_passwords_verify_against_a_scram_credential() {
        let credential = rfc7677_credential();
        assert!(credential.verify_password(ScramHash::Sha256, b"pencil"));
        assert!(!credential.verify_password(ScramHash::Sha256, b"pencil "));
        let sha512 = ScramCredential::from_password(ScramHash::Sha512, b"pw", vec![1; 32], 4096);
        assert_eq!(sha512.stored_key.len(), 64);
        assert!(sha512.verify_password(ScramHash::Sha512, b"pw"));
    }

    #[test]
    fn server_nonces_differ_and_are_printable() {
        let (a, b) = (server_nonce().unwrap(), server_nonce().unwrap());
        assert_ne!(a, b);
        assert!(printable(&a) && a.len() == 32);
    }
}
