//! A zone (a failure domain such as a cloud availability zone): where a gateway, a batcher
//! or a worker runs, and where a task entered. Cloning is a reference count, not a copy, so a
//! gateway stamps its zone on every task without allocating.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest zone name: a Kubernetes label value's limit, which zone names come from.
pub const MAX_ZONE_LEN: usize = 63;

/// A checked zone name: 1 to 63 ASCII letters, digits, `-`, `_` or `.` (what a Kubernetes
/// `topology.kubernetes.io/zone` label holds), so it is safe in Redis keys and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zone(Arc<str>);

/// Why a zone name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zone {0:?} is not 1 to 63 ASCII letters, digits, '-', '_' or '.'")]
pub struct ZoneError(String);

impl Zone {
    /// The zone's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A zone from an optional flag value: empty means none (an unset `BATCHGATE_ZONE`, or a
    /// node without a zone label, runs without zones).
    pub fn optional(name: &str) -> Result<Option<Zone>, ZoneError> {
        if name.is_empty() {
            Ok(None)
        } else {
            name.parse().map(Some)
        }
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    fn from_str(name: &str) -> Result<Zone, ZoneError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_ZONE_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(Zone(Arc::from(name)))
        } else {
            Err(ZoneError(name.to_owned()))
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Zone {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_checked() {
        for ok in ["eu-west-1a", "zone_b", "us-central1.c", "a"] {
            assert_eq!(ok.parse::<Zone>().expect(ok).as_str(), ok);
        }
        for bad in ["", "a b", "a:b", "{a}", "é", &"a".repeat(64)] {
            assert!(bad.parse::<Zone>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Zone::optional("").expect("empty is none"), None);
        assert!(Zone::optional("x y").is_err());
    }
}
