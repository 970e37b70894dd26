//! Several galleries in one store, and the API keys that open them.
//!
//! A service serves many clients from one store (an SQLite file, a PostgreSQL database). Each
//! client's key belongs to one gallery and has a [`Role`]; a key never opens another gallery.
//! Keys are random, shown once, and stored only as SHA-256 hashes; a presented key is found by
//! its public id and its hash compared in constant time.
//!
//! ```text
//! facenet keys create --gallery acme --role write   # prints the key once
//! curl -H "x-api-key: fnk_..." http://127.0.0.1:8080/api/v1/subjects
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{GalleryError, GalleryStore, Result};

/// The gallery a store opens when no name is given (the CLI's).
pub const DEFAULT_GALLERY: &str = "default";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Detect, embed, verify, identify, list.
    Read,
    /// Also enrol, rename and delete.
    Write,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            other => Err(GalleryError::Invalid(format!(
                "role `{other}`: a role is `read` or `write`"
            ))),
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id (the 12 hex digits after `fnk_`), for listing and revoking.
    pub id: String,
    /// The gallery it opens.
    pub gallery: String,
    /// What it may do.
    pub role: Role,
    /// A note of the owner's (who has it, what for).
    pub label: String,
    /// Unix time of creation.
    pub created: i64,
}

/// A store of several galleries and of their keys. Implemented by every store; the key flows
/// ([`create_key`], [`authenticate`]) are written once over it.
pub trait Tenants: Send + Sync + std::fmt::Debug {
    /// Where the store is, for messages.
    fn location(&self) -> String;
    /// The gallery of that name, created (empty) if new; the name is checked
    /// ([`check_gallery_name`]).
    fn gallery(&self, name: &str) -> Result<Arc<dyn GalleryStore>>;
    /// The store as `Any`, for a caller that needs to know which store it is (the photo
    /// library keeps its tables in the same store).
    fn as_any(&self) -> &dyn std::any::Any;
    /// The names of the galleries, sorted.
    fn galleries(&self) -> Result<Vec<String>>;
    /// Stores a key's record and the SHA-256 hash (hex) of its secret.
    fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<()>;
    /// A key's record and hash by public id.
    fn key(&self, id: &str) -> Result<Option<(ApiKey, String)>>;
    /// Every key, by gallery then id.
    fn keys(&self) -> Result<Vec<ApiKey>>;
    /// Deletes a key; false if there was none of that id.
    fn revoke_key(&self, id: &str) -> Result<bool>;
}

/// Checks a gallery name: 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with `.` (it is used
/// in file names beside the store).
pub fn check_gallery_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(GalleryError::Invalid(format!(
            "gallery name `{}`: use 1 to 64 letters, digits, `_`, `.` or `-`, not starting with `.`",
            name.chars().take(80).collect::<String>()
        )))
    }
}

const PREFIX: &str = "fnk_";
const ID_HEX: usize = 12;
const SECRET_HEX: usize = 48;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a presented key, hex.
pub fn key_hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Creates a key for `gallery` (created if new): returns its record and the key itself, which
/// is shown once and never stored.
pub fn create_key(
    store: &dyn Tenants,
    gallery: &str,
    role: Role,
    label: &str,
) -> Result<(ApiKey, String)> {
    store.gallery(gallery)?;
    let mut random = [0u8; ID_HEX / 2 + SECRET_HEX / 2];
    getrandom::fill(&mut random).map_err(|e| {
        GalleryError::Invalid(format!(
            "the operating system gave no random bytes for a key: {e}"
        ))
    })?;
    let id = hex(&random[..ID_HEX / 2]);
    let secret = format!("{PREFIX}{id}_{}", hex(&random[ID_HEX / 2..]));
    let key = ApiKey {
        id,
        gallery: gallery.into(),
        role,
        label: label.into(),
        created: crate::now(),
    };
    store.insert_key(&key, &key_hash(&secret))?;
    Ok((key, secret))
}

/// The key a client presented, if it is one of the store's: the record is found by the public
/// id inside the key, then the hash of the whole key is compared in constant time.
pub fn authenticate(store: &dyn Tenants, presented: &str) -> Result<Option<ApiKey>> {
    let Some(rest) = presented.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let Some((id, secret)) = rest.split_once('_') else {
        return Ok(None);
    };
    if id.len() != ID_HEX || secret.len() != SECRET_HEX {
        return Ok(None);
    }
    let Some((key, stored)) = store.key(id)? else {
        return Ok(None);
    };
    let given = key_hash(presented);
    Ok(bool::from(given.as_bytes().ct_eq(stored.as_bytes())).then_some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gallery_names_are_checked() {
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_gallery_name(bad).is_err(), "{bad:?}");
        }
        for good in ["acme", "team-1", "a.b_c"] {
            check_gallery_name(good).unwrap();
        }
    }
}
