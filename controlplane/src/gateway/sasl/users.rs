//! The SCRAM users of a broker: `<gateway state dir>/users.log`, one JSON object per
//! line (an upsert of one user's credential for one mechanism, or a deletion), appended
//! and fdatasync'd before the change is answered, replayed at start. A torn last line (a
//! crash in the middle of an append) is ignored and cut off; a bad line elsewhere stops
//! the start. Only salted credentials are written (salt, StoredKey, ServerKey,
//! iterations), never a password.
//!
//! An unknown user gets a decoy credential: its salt and keys are HMACs of the name with
//! a per-broker secret (`<state dir>/sasl_secret`, made at the first start), so the
//! server-first message of an unknown user is the same at every attempt and across
//! restarts, and its exchange costs what a known user's does.

use super::scram::{ScramCredential, ScramHash, SCRAM_ITERATIONS_DEFAULT, SCRAM_SALT_BYTES};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The users file in the gateway's state directory.
pub const USERS_FILE: &str = "users.log";
/// The per-broker secret of the decoy credentials.
pub const SECRET_FILE: &str = "sasl_secret";
/// Bytes of the per-broker secret.
pub const SECRET_BYTES: usize = 32;
/// Longest user name, in bytes.
pub const USER_NAME_BYTES_MAX: usize = 256;

/// Why the users file cannot be used, or a change not made.
#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    #[error("users file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("users file {} line {line}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("sasl secret {}: {reason}", path.display())]
    Secret { path: PathBuf, reason: String },
    #[error("user name {0:?}: empty, longer than {USER_NAME_BYTES_MAX} bytes, or with a control character")]
    BadName(String),
}

/// One line of the users file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum UserRecord {
    Upsert {
        user: String,
        mechanism: ScramHash,
        iterations: u32,
        salt: String,
        stored_key: String,
        server_key: String,
    },
    Delete {
        user: String,
        mechanism: ScramHash,
    },
}

/// A user's credentials, one per SCRAM mechanism it has.
pub type UserCredentials = BTreeMap<ScramHash, ScramCredential>;

/// The users of this broker.
pub struct UserStore {
    path: PathBuf,
    file: Mutex<File>,
    users: RwLock<BTreeMap<String, UserCredentials>>,
    secret: [u8; SECRET_BYTES],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UserStoreError + '_ {
    move |source| UserStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `name` can be a user: 1..=[`USER_NAME_BYTES_MAX`] bytes, no control character.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= USER_NAME_BYTES_MAX && !name.chars().any(char::is_control)
}

fn apply(users: &mut BTreeMap<String, UserCredentials>, record: UserRecord) -> Result<(), String> {
    match record {
        UserRecord::Upsert {
            user,
            mechanism,
            iterations,
            salt,
            stored_key,
            server_key,
        } => {
            let decode = |field: &str, text: &str| {
                BASE64
                    .decode(text)
                    .map_err(|e| format!("{field} is not base64: {e}"))
            };
            let credential = ScramCredential {
                salt: decode("salt", &salt)?,
                stored_key: decode("stored_key", &stored_key)?,
                server_key: decode("server_key", &server_key)?,
                iterations,
            };
            users.entry(user).or_default().insert(mechanism, credential);
        }
        UserRecord::Delete { user, mechanism } => {
            if let Some(credentials) = users.get_mut(&user) {
                credentials.remove(&mechanism);
                if credentials.is_empty() {
                    users.remove(&user);
                }
            }
        }
    }
    Ok(())
}

impl UserStore {
    /// Opens (or makes) the users file and the secret in `state_dir`, replaying the file.
    pub fn open(state_dir: &Path) -> Result<UserStore, UserStoreError> {
        let secret = read_or_make_secret(&state_dir.join(SECRET_FILE))?;
        let path = state_dir.join(USERS_FILE);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut users = BTreeMap::new();
        let mut good_bytes = 0usize;
        let mut torn = false;
        let mut lines = text.split_inclusive(|&b| b == b'\n').enumerate().peekable();
        while let Some((index, line)) = lines.next() {
            let last = lines.peek().is_none();
            let complete = line.ends_with(b"\n");
            let parsed = std::str::from_utf8(line)
                .map_err(|e| e.to_string())
                .and_then(|l| serde_json::from_str::<UserRecord>(l).map_err(|e| e.to_string()))
                .and_then(|record| apply(&mut users, record));
            match parsed {
                Ok(()) if complete => good_bytes += line.len(),
                Ok(()) | Err(_) if last && !complete => torn = true,
                Ok(()) => unreachable!("only the last line can lack its newline"),
                Err(reason) => {
                    return Err(UserStoreError::Corrupt {
                        path,
                        line: index + 1,
                        reason,
                    })
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if torn {
            eprintln!(
                "precursor-controlplane: kafka gateway: users file {}: the last line is torn \
                 (a crash while it was written): ignored and cut off",
                path.display()
            );
            file.set_len(good_bytes as u64).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
        }
        Ok(UserStore {
            path,
            file: Mutex::new(file),
            users: RwLock::new(users),
            secret,
        })
    }

    fn append(&self, records: &[UserRecord]) -> Result<(), UserStoreError> {
        let mut text = String::new();
        for record in records {
            text.push_str(&serde_json::to_string(record).expect("records serialize"));
            text.push('\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(text.as_bytes()).map_err(io(&self.path))?;
        file.sync_data().map_err(io(&self.path))
    }

    /// Sets `user`'s credential for `hash`, durably.
    pub fn upsert(
        &self,
        user: &str,
        hash: ScramHash,
        credential: ScramCredential,
    ) -> Result<(), UserStoreError> {
        if !valid_user_name(user) {
            return Err(UserStoreError::BadName(user.to_string()));
        }
        let record = UserRecord::Upsert {
            user: user.to_string(),
            mechanism: hash,
            iterations: credential.iterations,
            salt: BASE64.encode(&credential.salt),
            stored_key: BASE64.encode(&credential.stored_key),
            server_key: BASE64.encode(&credential.server_key),
        };
        // The map's write lock is held across the append, so the file's order is the
        // map's order.
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        self.append(&[record])?;
        users
            .entry(user.to_string())
            .or_default()
            .insert(hash, credential);
        Ok(())
    }

    /// Sets `user`'s credential for every hash in `hashes` from `password`, each with a
    /// fresh salt (`precursor user create`).
    pub fn set_password(
        &self,
        user: &str,
        password: &[u8],
        hashes: &[ScramHash],
        iterations: u32,
    ) -> Result<(), UserStoreError> {
        for &hash in hashes {
            let mut salt = vec![0u8; SCRAM_SALT_BYTES];
            getrandom::getrandom(&mut salt).map_err(|e| UserStoreError::Secret {
                path: self.path.clone(),
                reason: format!("no randomness for a salt: {e}"),
            })?;
            let credential = ScramCredential::from_password(hash, password, salt, iterations);
            self.upsert(user, hash, credential)?;
        }
        Ok(())
    }

    /// Deletes `user`'s credential for `hash` (every hash: None); whether one existed.
    pub fn delete(&self, user: &str, hash: Option<ScramHash>) -> Result<bool, UserStoreError> {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        let Some(credentials) = users.get(user) else {
            return Ok(false);
        };
        let hashes: Vec<ScramHash> = credentials
            .keys()
            .copied()
            .filter(|h| hash.is_none() || hash == Some(*h))
            .collect();
        if hashes.is_empty() {
            return Ok(false);
        }
        let records: Vec<UserRecord> = hashes
            .iter()
            .map(|&mechanism| UserRecord::Delete {
                user: user.to_string(),
                mechanism,
            })
            .collect();
        self.append(&records)?;
        for record in records {
            apply(&mut users, record).expect("deletions apply");
        }
        Ok(true)
    }

    /// `user`'s credential for `hash`, if it has one.
    pub fn get(&self, user: &str, hash: ScramHash) -> Option<ScramCredential> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.get(user)?.get(&hash).cloned()
    }

    /// `user`'s credential for `hash`, or a decoy that no password opens (see the module
    /// doc); whether it is the user's.
    pub fn credential_or_decoy(&self, user: &str, hash: ScramHash) -> (ScramCredential, bool) {
        match self.get(user, hash) {
            Some(credential) => (credential, true),
            None => (self.decoy(user, hash), false),
        }
    }

    fn decoy(&self, user: &str, hash: ScramHash) -> ScramCredential {
        let derive = |purpose: &str| {
            let data = format!("{purpose}\0{}\0{user}", hash.mechanism().name());
            ScramHash::Sha512.hmac(&self.secret, data.as_bytes())
        };
        let salt = derive("salt")[..SCRAM_SALT_BYTES].to_vec();
        let out = hash.output_bytes();
        ScramCredential {
            salt,
            stored_key: derive("stored_key")[..out].to_vec(),
            server_key: derive("server_key")[..out].to_vec(),
            iterations: SCRAM_ITERATIONS_DEFAULT,
        }
    }

    /// Every user (sorted) with its mechanisms and their iterations.
    pub fn list(&self) -> Vec<(String, Vec<(ScramHash, u32)>)> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users
            .iter()
            .map(|(name, credentials)| {
                let mechanisms = credentials
                    .iter()
                    .map(|(hash, c)| (*hash, c.iterations))
                    .collect();
                (name.clone(), mechanisms)
            })
            .collect()
    }

    /// `user`'s mechanisms and their iterations; empty when unknown.
    pub fn describe(&self, user: &str) -> Vec<(ScramHash, u32)> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.get(user).map_or_else(Vec::new, |credentials| {
            credentials
                .iter()
                .map(|(hash, c)| (*hash, c.iterations))
                .collect()
        })
    }
}

fn read_or_make_secret(path: &Path) -> Result<[u8; SECRET_BYTES], UserStoreError> {
    let bad = |reason: String| UserStoreError::Secret {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            return bytes
                .try_into()
                .map_err(|b: Vec<u8>| bad(format!("{} bytes, not {SECRET_BYTES}", b.len())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut secret).map_err(|e| bad(format!("no randomness: {e}")))?;
    crate::gateway::write_durably(path, &secret).map_err(io(path))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_survive_a_reopen_and_a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(dir.path()).unwrap();
        store
            .set_password("alice", b"alice-password-1", &ScramHash::ALL, 4096)
            .unwrap();
        store
            .set_password("bob", b"bob-password-2", &[ScramHash::Sha512], 8192)
            .unwrap();
        assert!(store.delete("alice", Some(ScramHash::Sha256)).unwrap());
        assert!(!store.delete("carol", None).unwrap());
        let alice = store.get("alice", ScramHash::Sha512).unwrap();
        let decoy = store.credential_or_decoy("mallory", ScramHash::Sha512).0;
        drop(store);
        let text = std::fs::read_to_string(dir.path().join(USERS_FILE)).unwrap();
        // Passwords with '-', which no base64 of a salt or key holds: a random salt once
        // spelled "pw".
        for password in ["alice-password-1", "bob-password-2"] {
            assert!(!text.contains(password), "no password on disk");
        }
        // A torn append.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(USERS_FILE))
            .unwrap();
        file.write_all(br#"{"op":"upsert","user":"eve"#).unwrap();
        drop(file);
        let store = UserStore::open(dir.path()).unwrap();
        assert_eq!(
            store.list(),
            vec![
                ("alice".to_string(), vec![(ScramHash::Sha512, 4096)]),
                ("bob".to_string(), vec![(ScramHash::Sha512, 8192)]),
            ]
        );
        assert_eq!(store.get("alice", ScramHash::Sha512).unwrap(), alice);
        assert!(alice.verify_password(ScramHash::Sha512, b"alice-password-1"));
        // The decoy is the same after a restart, and no password opens it.
        let (again, real) = store.credential_or_decoy("mallory", ScramHash::Sha512);
        assert!(!real);
        assert_eq!(again, decoy);
        assert!(!again.verify_password(ScramHash::Sha512, b"alice-password-1"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(USERS_FILE)).unwrap(),
            text,
            "the torn line was cut off"
        );
        // A bad line in the middle stops the start.
        std::fs::write(dir.path().join(USERS_FILE), format!("nonsense\n{text}")).unwrap();
        assert!(matches!(
            UserStore::open(dir.path()),
            Err(UserStoreError::Corrupt { line: 1, .. })
        ));
    }
}
