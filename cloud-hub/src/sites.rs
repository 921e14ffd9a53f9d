//! Site provisioning: `cloud-hub site add NAME` creates a site with its MQTT credentials
//! (user name = site id, a random password of which only hashes are kept: argon2id for the
//! embedded broker, and the PBKDF2 one of Mosquitto's password file, see
//! [`crate::mosquitto`]); `cloud-hub site rotate-password ID` gives it a new password.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use shared_model::sync::is_valid_site_id;

use crate::db::{DbError, Store, Ty, Val};

/// Why a site could not be added.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("{0:?} is not a valid site id: use 1 to 64 letters, digits, '-' or '_'")]
    InvalidId(String),
    #[error("the site name must not be empty")]
    EmptyName,
    #[error("a site with id {0:?} already exists")]
    Exists(String),
    #[error("{0:?} is the hub's own MQTT user name and cannot be a site id")]
    HubUser(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("no site with id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What `site add` and `site rotate-password` hand out (the password exists only here;
/// it is not stored).
#[derive(Debug, Clone)]
pub struct SiteCredentials {
    pub site_id: String,
    pub name: String,
    pub mqtt_username: String,
    pub mqtt_password: String,
}

/// A site as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteRow {
    pub id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    pub applied_through: u64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_hello_at: Option<DateTime<Utc>>,
    pub agent_version: Option<String>,
    pub online: Option<bool>,
}

/// A site id from a name: its letters and digits, lower case, dashes between words, and
/// a random suffix so two sites called "Depot" do not clash.
pub fn site_id_from_name(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let mut suffix = [0u8; 4];
    rand::rng().fill_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    if slug.is_empty() { format!("site-{suffix}") } else { format!("{slug}-{suffix}") }
}

/// A random password: 24 bytes from the OS generator, base64url (32 characters).
pub fn generate_password() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// argon2id (the crate's default parameters) as a PHC string.
pub fn hash_password(password: &str) -> Result<String, SiteError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| SiteError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SiteError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string (false for a malformed hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Creates a site (`id`: chosen by the caller, else made from the name) with a fresh
/// MQTT password.
pub async fn add_site(
    store: &Store,
    name: &str,
    id: Option<&str>,
    hub_user: &str,
) -> Result<SiteCredentials, SiteError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(SiteError::EmptyName);
    }
    let site_id = match id {
        Some(id) => id.to_owned(),
        None => site_id_from_name(name),
    };
    if !is_valid_site_id(&site_id) {
        return Err(SiteError::InvalidId(site_id));
    }
    if site_id == hub_user {
        return Err(SiteError::HubUser(site_id));
    }
    let password = generate_password();
    let hash = hash_password(&password)?;
    let mosquitto_hash = crate::mosquitto::hash_password(&password);
    let inserted = store
        .exec(
            "INSERT INTO sites (id, name, mqtt_password_hash, mosquitto_password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            &[site_id.as_str().into(), name.into(), hash.into(), mosquitto_hash.into(), Utc::now().into()],
        )
        .await?;
    if inserted == 0 {
        return Err(SiteError::Exists(site_id));
    }
    Ok(SiteCredentials { mqtt_username: site_id.clone(), site_id, name: name.to_owned(), mqtt_password: password })
}

/// Gives a site a new random MQTT password (both hashes replaced at once). The embedded
/// broker takes it at the site's next login; an external Mosquitto once its password
/// file is written again and reloaded. Connections already open stay open.
pub async fn rotate_password(store: &Store, site_id: &str) -> Result<SiteCredentials, SiteError> {
    let password = generate_password();
    let hash = hash_password(&password)?;
    let mosquitto_hash = crate::mosquitto::hash_password(&password);
    let row = store
        .fetch_opt(
            "UPDATE sites SET mqtt_password_hash = $2, mosquitto_password_hash = $3 WHERE id = $1 RETURNING name",
            &[site_id.into(), hash.into(), mosquitto_hash.into()],
            &[Ty::Text],
        )
        .await?
        .ok_or_else(|| SiteError::NotFound(site_id.to_owned()))?;
    Ok(SiteCredentials {
        site_id: site_id.to_owned(),
        name: row.text(0).unwrap_or_default().to_owned(),
        mqtt_username: site_id.to_owned(),
        mqtt_password: password,
    })
}

/// The site's MQTT password hash, if the site exists.
pub async fn password_hash(store: &Store, site_id: &str) -> Result<Option<String>, DbError> {
    Ok(store
        .fetch_opt("SELECT mqtt_password_hash FROM sites WHERE id = $1", &[site_id.into()], &[Ty::Text])
        .await?
        .and_then(|r| r.text(0).map(str::to_owned)))
}

const SITE_COLUMNS: [Ty; 8] = [Ty::Text, Ty::Text, Ty::Time, Ty::Int, Ty::Time, Ty::Time, Ty::Text, Ty::Bool];

fn site_row(r: &crate::db::Row) -> SiteRow {
    SiteRow {
        id: r.text(0).unwrap_or_default().to_owned(),
        name: r.text(1).unwrap_or_default().to_owned(),
        created_at: r.time(2),
        applied_through: r.int(3).and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        last_event_at: r.time(4),
        last_hello_at: r.time(5),
        agent_version: r.text(6).map(str::to_owned),
        online: r.bool(7),
    }
}

/// One site.
pub async fn get_site(store: &Store, site_id: &str) -> Result<Option<SiteRow>, DbError> {
    Ok(store
        .fetch_opt(
            "SELECT id, name, created_at, applied_through, last_event_at, last_hello_at, agent_version, online \
             FROM sites WHERE id = $1",
            &[Val::from(site_id)],
            &SITE_COLUMNS,
        )
        .await?
        .map(|r| site_row(&r)))
}

/// Every site, by id.
pub async fn list_sites(store: &Store) -> Result<Vec<SiteRow>, DbError> {
    Ok(store
        .fetch(
            "SELECT id, name, created_at, applied_through, last_event_at, last_hello_at, agent_version, online \
             FROM sites ORDER BY id",
            &[],
            &SITE_COLUMNS,
        )
        .await?
        .iter()
        .map(site_row)
        .collect())
}

/// The lines an installer pastes into the site's `edge-agent.toml`.
pub fn edge_config_snippet(creds: &SiteCredentials, broker_url: &str) -> String {
    format!(
        "[site]\nid = \"{id}\"\nname = {name}\n\n[sync]\nbroker = \"{broker_url}\"\nusername = \"{id}\"\npassword = \"{pw}\"\n",
        id = creds.site_id,
        name = toml_string(&creds.name),
        pw = creds.mqtt_password,
    )
}

fn toml_string(s: &str) -> String {
    // A TOML basic string is a JSON string for everything a name holds.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_names_are_valid_and_readable() {
        let id = site_id_from_name("Depot Nord / Hall 2");
        assert!(id.starts_with("depot-nord-hall-2-"), "{id}");
        assert!(is_valid_site_id(&id), "{id}");
        assert!(site_id_from_name("§§§").starts_with("site-"));
        assert!(is_valid_site_id(&site_id_from_name(&"x".repeat(200))));
        assert_ne!(site_id_from_name("a"), site_id_from_name("a"), "random suffix");
    }

    #[test]
    fn passwords_hash_and_verify() {
        let pw = generate_password();
        assert_eq!(pw.len(), 32);
        let hash = hash_password(&pw).expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&pw, &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password(&pw, "not a hash"));
    }

    #[test]
    fn the_snippet_is_valid_toml() {
        let creds = SiteCredentials {
            site_id: "s-1".into(),
            name: "Quote \" and \\ backslash".into(),
            mqtt_username: "s-1".into(),
            mqtt_password: "pw".into(),
        };
        let text = edge_config_snippet(&creds, "mqtt://hub.example:1883");
        let v: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["site"]["name"].as_str(), Some("Quote \" and \\ backslash"));
        assert_eq!(v["sync"]["username"].as_str(), Some("s-1"));
    }
}
