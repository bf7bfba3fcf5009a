//! API keys for the REST API. Keys are random, so a plain SHA-256 of each
//! is what configuration holds (`sha256:<64 hex>`): a leaked config file
//! does not leak a usable key, and checking a key costs one hash.

use sha2::{Digest as _, Sha256};

/// The prefix of every generated key, so leaked keys are easy to grep for.
const KEY_PREFIX: &str = "wharf_";
/// The prefix of a key hash in configuration.
const HASH_PREFIX: &str = "sha256:";

/// The configured API keys, as hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Parses `sha256:<hex>` entries; the error names the bad entry.
    pub fn from_hashes<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let hashes = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                parse_hash(entry.as_ref()).ok_or_else(|| {
                    format!(
                        "entry {i} is not a key hash: expected sha256:<64 hex digits> (`wharf api-key new` prints one)"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ApiKeys { hashes })
    }

    /// Adds `key` itself: a development key generated at start-up.
    pub fn with_key(mut self, key: &str) -> Self {
        self.hashes.push(digest(key));
        self
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `presented` is one of the keys.
    pub fn verify(&self, presented: &str) -> bool {
        let presented = digest(presented);
        // Every entry is compared in full: timing says nothing about which.
        self.hashes
            .iter()
            .fold(false, |found, hash| found | same(hash, &presented))
    }
}

/// A fresh random API key.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("{KEY_PREFIX}{}", hex(&bytes))
}

/// What configuration holds for `key`: `sha256:<hex>`.
pub fn hash_api_key(key: &str) -> String {
    format!("{HASH_PREFIX}{}", hex(&digest(key)))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(entry: &str) -> Option<[u8; 32]> {
    let hex = entry.strip_prefix(HASH_PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_key_whose_hash_is_configured() {
        let key = generate_api_key();
        assert!(key.starts_with("wharf_") && key.len() == 6 + 48, "{key}");
        let keys = ApiKeys::from_hashes(&[hash_api_key(&key)]).unwrap();
        assert!(keys.verify(&key));
        assert!(!keys.verify(&generate_api_key()));
        assert!(!keys.verify(""));
    }

    #[test]
    fn names_the_bad_entry() {
        let error = ApiKeys::from_hashes(&["sha256:00", "plain-key"]).unwrap_err();
        assert!(error.starts_with("entry 0 is not a key hash"), "{error}");
        assert!(ApiKeys::from_hashes::<&str>(&[]).unwrap().is_empty());
    }
}
