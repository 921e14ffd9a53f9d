//! Id tags the hub vouched for: a remote start or a reservation it sent (OCPI START_SESSION
//! / RESERVE_NOW on behalf of a roaming partner, who authorized its own token). A charger
//! then starts (or authorizes) with a tag the site's list may not know; while the grant
//! lasts, that tag is accepted at that station (and connector, when one was named) even
//! with `unknown_id_tags = "reject"`, unless the site's own list blocks it.
//!
//! OCPI 2.2.1 "Commands module", StartSession: "the CPO SHALL NOT check the validity of
//! the Token", and an RFID token is not to be authorized again for 15 minutes at that
//! Charge Point: [`REMOTE_START_GRANT`].
//!
//! Grants live in memory: after a restart a late start falls back to the site's policy.

use chrono::{DateTime, Utc};
use std::sync::Mutex;

/// How long a remote start vouches for its tag.
pub const REMOTE_START_GRANT: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Debug, Clone)]
struct Grant {
    key: String,
    station: String,
    connector: Option<u32>,
    id_tag: String,
    until: DateTime<Utc>,
}

/// The grants in force.
#[derive(Debug, Default)]
pub struct RemoteAuth {
    grants: Mutex<Vec<Grant>>,
}

impl RemoteAuth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Grant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Vouches for `id_tag` at `station` (on `connector`, or any) until `until`; `key`
    /// names the grant (a command id, a reservation) and replaces an earlier one.
    pub fn grant(&self, key: &str, station: &str, connector: Option<u32>, id_tag: &str, until: DateTime<Utc>) {
        let mut grants = self.lock();
        let now = Utc::now();
        grants.retain(|g| g.key != key && g.until > now);
        grants.push(Grant {
            key: key.to_owned(),
            station: station.to_owned(),
            connector,
            id_tag: id_tag.to_owned(),
            until,
        });
    }

    /// Withdraws a grant (the command failed, or came too late); true if there was one.
    pub fn revoke(&self, key: &str) -> bool {
        let mut grants = self.lock();
        let before = grants.len();
        grants.retain(|g| g.key != key);
        grants.len() < before
    }

    /// Whether `id_tag` (OCPP id tags compare without case) is vouched for at `station`
    /// on `connector` (0: the charger did not say) at `now`.
    pub fn allows(&self, station: &str, connector: u32, id_tag: &str, now: DateTime<Utc>) -> bool {
        self.lock().iter().any(|g| {
            g.until > now
                && g.station == station
                && g.id_tag.eq_ignore_ascii_case(id_tag)
                && (connector == 0 || g.connector.is_none_or(|c| c == connector))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_per_station_connector_and_time() {
        let auth = RemoteAuth::default();
        let now = Utc::now();
        auth.grant("cmd-1", "CP-1", Some(2), "EMSP-TOKEN", now + chrono::Duration::minutes(1));
        assert!(auth.allows("CP-1", 2, "emsp-token", now), "tags compare without case");
        assert!(auth.allows("CP-1", 0, "EMSP-TOKEN", now), "an Authorize names no connector");
        assert!(!auth.allows("CP-1", 1, "EMSP-TOKEN", now), "another connector");
        assert!(!auth.allows("CP-2", 2, "EMSP-TOKEN", now), "another station");
        assert!(!auth.allows("CP-1", 2, "OTHER", now));
        assert!(!auth.allows("CP-1", 2, "EMSP-TOKEN", now + chrono::Duration::minutes(2)), "expired");
        assert!(auth.revoke("cmd-1"));
        assert!(!auth.allows("CP-1", 2, "EMSP-TOKEN", now));
        assert!(!auth.revoke("cmd-1"));
    }
}
