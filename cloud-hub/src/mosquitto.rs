//! The password file and the ACL file for an external Mosquitto 2.x broker, generated
//! from the sites table by `cloud-hub mosquitto-files`.
//!
//! The embedded broker checks a site's login against the argon2id hash in the database
//! and applies the topic ACL itself ([`crate::broker`]). Mosquitto cannot ask the
//! database; it reads two files instead, at start and on SIGHUP:
//!
//! - `password_file`: one `user:hash` line per user. `site add` and `site
//!   rotate-password` store, next to the argon2id hash, the hash Mosquitto's default
//!   `mosquitto_passwd` makes: `$7$ITERATIONS$SALT$HASH`, PBKDF2-HMAC-SHA512 with 101
//!   iterations, a 12-byte salt and a 64-byte key, both in standard base64 with padding
//!   (mosquitto `common/password_mosq.c`, `pw__encode_sha512_pbkdf2`). So few iterations
//!   would be weak for a password a person chose; a site's password is 192 random bits,
//!   which no iteration count makes any easier or harder to guess.
//! - `acl_file`: the hub's user reads every site's `up/` topics and writes every site's
//!   `down/` topics; every other user (a site, user name = site id) may publish only
//!   under `sitepilot/v1/{its id}/up/` (which holds its last will, `up/status`) and
//!   subscribe only under `sitepilot/v1/{its id}/down/` (`pattern` lines with `%u`).
//!   Mosquitto checks the read rule again for each message it delivers (2.0.11 may even
//!   grant a SUBSCRIBE to another site's filter, which then never gets a message), and a
//!   shared subscription `$share/{group}/sitepilot/v1/+/up/#` of the hub is covered by
//!   the same lines. It silently drops a PUBLISH the ACL denies (with a PUBACK under MQTT
//!   3.1.1).
//!
//! Sites added before schema 3 have no Mosquitto hash (the password itself is never
//! stored): they are left out of the password file, with a warning, until their password
//! is rotated.

use rand::RngCore as _;
use shared_model::sync::{TOPIC_ROOT, is_valid_site_id};
use std::io::Write as _;
use std::path::Path;

use crate::config::MqttConfig;
use crate::db::{DbError, Store, Ty};

/// PBKDF2 iterations: `mosquitto_passwd`'s default (`PW_DEFAULT_ITERATIONS`).
pub const PBKDF2_ITERATIONS: u32 = 101;
/// Salt length of `mosquitto_passwd` 2.0 (2.1 also accepts 64).
pub const SALT_LEN: usize = 12;
/// The derived key: one SHA-512 output.
pub const HASH_LEN: usize = 64;

/// The `$7$` (PBKDF2-HMAC-SHA512) hash of `password` with a fresh random salt, as a line
/// of Mosquitto's password file has it after the `user:`.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    hash_password_with(password, &salt, PBKDF2_ITERATIONS)
}

/// The `$7$` hash of `password` with this salt and iteration count.
pub fn hash_password_with(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = derive(password, salt, iterations);
    format!("$7${iterations}${}${}", b64.encode(salt), b64.encode(key))
}

fn derive(password: &str, salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut key = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, iterations, &mut key);
    key
}

/// Whether `password` matches a `$7$` hash (false for anything malformed). What
/// Mosquitto does at each login; the hub itself never needs it.
pub fn verify_password(password: &str, encoded: &str) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(rest) = encoded.strip_prefix("$7$") else { return false };
    let mut parts = rest.split('$');
    let (Some(iterations), Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(hash)) = (iterations.parse::<u32>(), b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    if iterations == 0 || hash.len() != HASH_LEN {
        return false;
    }
    let key = derive(password, &salt, iterations);
    // Constant time, like Mosquitto's `pw__memcmp_const`.
    key.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Why the files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    #[error(
        "the hub's MQTT user name {0:?} cannot go into Mosquitto's files: it must not contain ':', spaces or \
         control characters"
    )]
    HubUser(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The two files' contents, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct MosquittoFiles {
    /// `password_file`: `user:hash` lines.
    pub passwd: String,
    /// `acl_file`.
    pub acl: String,
    /// The sites in the password file.
    pub sites: usize,
    /// Whether the hub's own user is in the password file (only when `[mqtt] password`
    /// is set: without it the hub connects without a user name).
    pub hub_user_included: bool,
    /// Sites left out of the password file, and why.
    pub skipped: Vec<Skipped>,
}

/// A site that is not in the password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub site_id: String,
    pub reason: SkipReason,
}

/// Why a site is not in the password file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Added before schema 3: only the argon2id hash exists; rotate the password.
    NoHash,
    /// The id is the hub's user name (the config's `[mqtt] username` changed after the
    /// site was added): as a user it would get the hub's rights.
    HubUser,
    /// Not a valid site id (the row was not made by `site add`).
    InvalidId,
}

/// Whether a user name can be written into both files as it is: not empty, no `:` (the
/// password file's separator), no white space or control characters (the ACL file's
/// `user NAME` takes the rest of the line).
fn is_file_safe_user(user: &str) -> bool {
    !user.is_empty() && !user.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

/// The ACL file for the hub's user `hub_user`.
pub fn acl_file(hub_user: &str) -> String {
    format!(
        "# Mosquitto ACL file, written by `cloud-hub mosquitto-files`: do not edit, run it again.\n\
         # The hub reads every site's up/ topics (also through $share/GROUP/...) and writes\n\
         # every site's down/ topics (acks, commands).\n\
         user {hub_user}\n\
         topic read {TOPIC_ROOT}/+/up/#\n\
         topic write {TOPIC_ROOT}/+/down/#\n\
         \n\
         # Every user is a site otherwise (user name = site id): it publishes only under its own\n\
         # up/ (hello, events, results, status; its last will is up/status) and subscribes only\n\
         # under its own down/.\n\
         pattern write {TOPIC_ROOT}/%u/up/#\n\
         pattern read {TOPIC_ROOT}/%u/down/#\n"
    )
}

/// Reads every site's Mosquitto hash and makes both files for the hub's `[mqtt]` settings.
pub async fn generate(store: &Store, mqtt: &MqttConfig) -> Result<MosquittoFiles, MosquittoError> {
    let hub_user = mqtt.username.as_str();
    if !is_file_safe_user(hub_user) {
        return Err(MosquittoError::HubUser(hub_user.to_owned()));
    }
    let rows =
        store.fetch("SELECT id, mosquitto_password_hash FROM sites ORDER BY id", &[], &[Ty::Text, Ty::Text]).await?;
    let mut passwd = String::from("# Mosquitto password file, written by `cloud-hub mosquitto-files`: do not edit.\n");
    let mut skipped = Vec::new();
    let mut sites = 0;
    for row in &rows {
        let site_id = row.text(0).unwrap_or_default();
        let reason = if !is_valid_site_id(site_id) {
            Some(SkipReason::InvalidId)
        } else if site_id == hub_user {
            Some(SkipReason::HubUser)
        } else {
            match row.text(1) {
                Some(hash) if hash.starts_with("$7$") && !hash.contains(['\n', '\r']) => {
                    passwd.push_str(&format!("{site_id}:{hash}\n"));
                    sites += 1;
                    None
                }
                _ => Some(SkipReason::NoHash),
            }
        };
        if let Some(reason) = reason {
            skipped.push(Skipped { site_id: site_id.to_owned(), reason });
        }
    }
    let hub_user_included = match &mqtt.password {
        Some(password) => {
            passwd.push_str(&format!("{hub_user}:{}\n", hash_password(password)));
            true
        }
        None => false,
    };
    Ok(MosquittoFiles { passwd, acl: acl_file(hub_user), sites, hub_user_included, skipped })
}

/// Replaces `path` with `contents` at once: written to a new file in the same directory
/// (created with `mode` on Unix, so a password file is never readable by others, not even
/// for a moment), flushed to disk, then renamed over `path`. Mosquitto reloading at the
/// same time sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a file name", path.display()))
    })?;
    let mut suffix = [0u8; 6];
    rand::rng().fill_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{}.{suffix}.tmp", name.to_string_lossy()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        // The umask may have taken bits away from `mode` at creation; set exactly it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.sync_all()
    });
    let result = result.and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Mosquitto 2.0.11's own tool: `mosquitto_passwd -b FILE hub hubpw`.
    const FROM_MOSQUITTO_PASSWD: &str = "$7$101$7DOtLcPWlCO/51zs$cng9qnG1msmRPP/Ss/bGV8c23Mw4/ZlH7Gj1sQ7+29or8uhJ4iNQm1Qlg3qCxENQ8/JRfrlze+ljw9KsO7xr6Q==";

    #[test]
    fn hashes_match_mosquitto_passwd() {
        use base64::Engine as _;
        let salt = base64::engine::general_purpose::STANDARD.decode("7DOtLcPWlCO/51zs").expect("salt");
        assert_eq!(salt.len(), SALT_LEN);
        assert_eq!(hash_password_with("hubpw", &salt, 101), FROM_MOSQUITTO_PASSWD);
        assert!(verify_password("hubpw", FROM_MOSQUITTO_PASSWD));
        assert!(!verify_password("hubpW", FROM_MOSQUITTO_PASSWD));
    }

    #[test]
    fn fresh_hashes_have_mosquittos_shape_and_verify() {
        let pw = crate::sites::generate_password();
        let hash = hash_password(&pw);
        let parts: Vec<&str> = hash.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"], "{hash}");
        assert_eq!(parts[3].len(), 16, "12 bytes of salt: {hash}");
        assert_eq!(parts[4].len(), 88, "64 bytes of key, padded: {hash}");
        assert!(parts[4].ends_with("=="), "{hash}");
        assert!(verify_password(&pw, &hash));
        assert_ne!(hash, hash_password(&pw), "a new salt each time");
        for bad in ["", "$6$abc$def", "$7$101$!!$x", "$7$0$7DOtLcPWlCO/51zs$AAAA", "$7$101$7DOtLcPWlCO/51zs"] {
            assert!(!verify_password(&pw, bad), "{bad}");
        }
    }

    #[test]
    fn the_acl_names_the_hub_and_patterns_for_sites() {
        let acl = acl_file("hub-1");
        let lines: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                "user hub-1",
                "topic read sitepilot/v1/+/up/#",
                "topic write sitepilot/v1/+/down/#",
                "pattern write sitepilot/v1/%u/up/#",
                "pattern read sitepilot/v1/%u/down/#",
            ]
        );
    }

    #[test]
    fn user_names_that_would_break_the_files_are_refused() {
        assert!(is_file_safe_user("sitepilot-hub"));
        for bad in ["", "a:b", "a b", "a\nuser x", "tab\t"] {
            assert!(!is_file_safe_user(bad), "{bad:?}");
        }
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("passwd");
        std::fs::write(&path, "old").expect("write");
        write_atomically(&path, "new\n", 0o600).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        }
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["passwd"], "no temporary file left");
        let err = write_atomically(&dir.path().join("missing/passwd"), "x", 0o600).expect_err("no such directory");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
