//! Charger credentials (OCPP 1.6 security whitepaper, security profile 1: HTTP Basic
//! authentication with a per-charger password). Passwords are stored as argon2id PHC
//! strings; a verified password is remembered as a SHA-256 digest in memory so a charger
//! that reconnects often does not pay the argon2 cost every time.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Hashes a password into an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks that a string is a PHC hash we can verify against.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC password hash ({e})"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("hash algorithm {} is not argon2", parsed.algorithm));
    }
    Ok(())
}

/// Parses an `Authorization: Basic ...` header value into (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Verifies passwords, remembering successful verifications.
#[derive(Default)]
pub struct Verifier {
    // (charger id, phc) -> digest of the password that verified against that phc.
    verified: Mutex<HashMap<(String, String), [u8; 32]>>,
}

impl Verifier {
    /// Whether `password` matches `phc` for `charger`.
    pub fn verify(&self, charger: &str, phc: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (charger.to_owned(), phc.to_owned());
        if let Ok(cache) = self.verified.lock()
            && cache.get(&key) == Some(&digest)
        {
            return true;
        }
        let Ok(parsed) = PasswordHash::new(phc) else { return false };
        let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        if ok && let Ok(mut cache) = self.verified.lock() {
            cache.insert(key, digest);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("s3cret-key-0123456789").expect("hash");
        assert!(check_phc(&phc).is_ok());
        let v = Verifier::default();
        assert!(v.verify("CP1", &phc, "s3cret-key-0123456789"));
        assert!(v.verify("CP1", &phc, "s3cret-key-0123456789"), "cached path");
        assert!(!v.verify("CP1", &phc, "wrong"));
        assert!(!v.verify("CP1", "garbage", "s3cret-key-0123456789"));
    }

    #[test]
    fn basic_header() {
        let h = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("CP1:pa:ss"));
        assert_eq!(parse_basic(&h), Some(("CP1".into(), "pa:ss".into())));
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn phc_check_rejects_garbage() {
        assert!(check_phc("plain").is_err());
    }
}
