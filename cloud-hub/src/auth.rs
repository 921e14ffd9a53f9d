//! Who may use the fleet API: API keys (bearer tokens) with a role.
//!
//! `cloud-hub apikey add NAME --role ROLE` prints a token once; the hub keeps only its
//! SHA-256. A token is `spk_` and 32 random bytes (base64url), so it cannot be guessed
//! and a fast hash is the right one (argon2 is for guessable passwords and would cost
//! tens of milliseconds per request). Every `/api/v1` request presents it as
//! `Authorization: Bearer <token>`; the route's minimum [`Role`] decides the rest.
//!
//! Roles, each including the ones below it:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read sites, chargers, sessions, meter series, commands, the OpenAPI document |
//! | `fleet_manager` | and send commands to sites |
//! | `admin` | and list the API keys |
//!
//! Every key sees every site for now: per-tenant scoping (a fleet manager sees their own
//! fleet) comes with users and tenants.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::db::{DbError, Row, Store, Ty};

/// The prefix of every token (recognisable in logs and by secret scanners).
pub const TOKEN_PREFIX: &str = "spk_";

/// What a key may do; ordered, each role includes the ones below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    FleetManager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::FleetManager, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::FleetManager => "fleet_manager",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role: use admin, fleet_manager or viewer"))
    }
}

/// Why a key could not be added or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key name must be 1 to 100 characters (got {0})")]
    BadName(usize),
    #[error("an API key named {0:?} already exists")]
    Exists(String),
    #[error("no API key with id or name {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A key as stored (never the token).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key and its token (which exists only here).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key: ApiKey,
    pub token: String,
}

/// A fresh token: the prefix and 32 bytes from the OS generator, base64url.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a token: SHA-256, lower-case hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

const KEY_COLUMNS: [Ty; 6] = [Ty::Text, Ty::Text, Ty::Text, Ty::Time, Ty::Time, Ty::Time];

fn key_row(r: &Row) -> ApiKey {
    ApiKey {
        id: r.text(0).unwrap_or_default().to_owned(),
        name: r.text(1).unwrap_or_default().to_owned(),
        // A role this version does not know gets the least rights.
        role: r.text(2).and_then(|s| s.parse().ok()).unwrap_or(Role::Viewer),
        created_at: r.time(3),
        last_used_at: r.time(4),
        revoked_at: r.time(5),
    }
}

/// Creates a key; the token is in the result and nowhere else.
pub async fn add_key(store: &Store, name: &str, role: Role) -> Result<NewKey, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyError::BadName(name.chars().count()));
    }
    let token = generate_token();
    let id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let inserted = store
        .exec(
            "INSERT INTO api_keys (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO NOTHING",
            &[id.as_str().into(), name.into(), role.as_str().into(), token_hash(&token).into(), now.into()],
        )
        .await?;
    if inserted == 0 {
        return Err(KeyError::Exists(name.to_owned()));
    }
    let key = ApiKey { id, name: name.to_owned(), role, created_at: Some(now), last_used_at: None, revoked_at: None };
    Ok(NewKey { key, token })
}

/// The key a token belongs to, if it is valid (known and not revoked).
pub async fn authenticate(store: &Store, token: &str) -> Result<Option<ApiKey>, DbError> {
    Ok(store
        .fetch_opt(
            "SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_keys \
             WHERE token_hash = $1 AND revoked_at IS NULL",
            &[token_hash(token).into()],
            &KEY_COLUMNS,
        )
        .await?
        .map(|r| key_row(&r)))
}

/// Notes that a key was used.
pub async fn touch(store: &Store, id: &str, at: DateTime<Utc>) -> Result<(), DbError> {
    store.exec("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", &[id.into(), at.into()]).await.map(|_| ())
}

/// Every key, by name (revoked ones too).
pub async fn list_keys(store: &Store) -> Result<Vec<ApiKey>, DbError> {
    Ok(store
        .fetch(
            "SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_keys ORDER BY name",
            &[],
            &KEY_COLUMNS,
        )
        .await?
        .iter()
        .map(key_row)
        .collect())
}

/// Revokes the key with this id or name; false when it was revoked already.
pub async fn revoke_key(store: &Store, id_or_name: &str) -> Result<bool, KeyError> {
    let exists = store
        .fetch_opt("SELECT id FROM api_keys WHERE id = $1 OR name = $1", &[id_or_name.into()], &[Ty::Text])
        .await?;
    if exists.is_none() {
        return Err(KeyError::NotFound(id_or_name.to_owned()));
    }
    let changed = store
        .exec(
            "UPDATE api_keys SET revoked_at = $2 WHERE (id = $1 OR name = $1) AND revoked_at IS NULL",
            &[id_or_name.into(), Utc::now().into()],
        )
        .await?;
    Ok(changed > 0)
}

/// The token of an `Authorization` header value: `Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 §11.1). `Err` says what is wrong.
pub fn parse_bearer(header: &str) -> Result<&str, &'static str> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header must use the Bearer scheme: `Authorization: Bearer <API key>`");
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err("the Authorization header has the Bearer scheme but no token");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin.allows(Role::FleetManager) && Role::FleetManager.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::FleetManager));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(parse_bearer("Bearer spk_x"), Ok("spk_x"));
        assert_eq!(parse_bearer("bearer   spk_x "), Ok("spk_x"));
        assert!(parse_bearer("Basic dXNlcjpwdw==").is_err());
        assert!(parse_bearer("Bearer").is_err());
        assert!(parse_bearer("spk_x").is_err());
    }
}
