//! Adapters for the systems a user would pick instead of Precursor, driven by the same
//! harness ([`crate::harness`]) with the same payloads and matched durability.

pub mod nats;
pub mod redis;

use anyhow::{bail, Result};

/// The Precursor acks level a peer's run is matched to (docs/benchmarks.md says exactly
/// how each peer is configured and what is and is not equivalent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// acks=leader: acknowledged before it is on disk; synced later, by policy.
    Leader,
    /// acks=durable: acknowledged only once fsync'd.
    Durable,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Leader => "leader",
            Durability::Durable => "durable",
        }
    }

    pub fn parse(text: &str) -> Result<Durability> {
        match text {
            "leader" => Ok(Durability::Leader),
            "durable" => Ok(Durability::Durable),
            other => bail!("durability {other:?}: expected leader or durable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_names_round_trip_and_bad_ones_are_refused() {
        for d in [Durability::Leader, Durability::Durable] {
            assert_eq!(Durability::parse(d.name()).unwrap(), d);
        }
        assert!(Durability::parse("all")
            .unwrap_err()
            .to_string()
            .contains("leader or durable"));
    }
}
