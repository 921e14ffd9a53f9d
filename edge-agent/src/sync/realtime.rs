//! Real-time authorization through the hub (`up/auth` / `down/auth`, see
//! `shared-model/SYNC.md`).
//!
//! When a charger presents an id tag (Authorize, StartTransaction) that is neither in the
//! local list nor answered in the authorization cache recently (`auth_refresh_s`), and the
//! link to the hub is up, the OCPP handler asks the hub first ([`consult_hub`]) and waits
//! at most `auth_timeout_ms`. The hub asks its roaming partners (an eMSP's real-time
//! authorization, or the tokens they pushed). A verdict goes into `auth_cache`, which
//! [`chargers::authorize`] reads next, so the charger gets it and the site keeps it for
//! offline use. No answer in time (the link is down, the hub is older and does not know
//! `up/auth`, an eMSP is slow) or an `unknown` verdict leave the cache alone: the local
//! policy (`[authorization] unknown_id_tags`, or an older cached answer) decides.

use crate::app::Shared;
use crate::chargers;
use chrono::Utc;
use rumqttc::{AsyncClient, QoS};
use shared_model::model::AuthorizationStatus;
use shared_model::sync::{AuthAnswer, AuthRequest, AuthVerdict, PROTOCOL_VERSION, Topic};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Default)]
struct BridgeState {
    /// The client and the site id while connected.
    link: Option<(AsyncClient, String)>,
    /// Requests waiting for their answer, by request id.
    waiting: HashMap<String, oneshot::Sender<AuthAnswer>>,
}

/// Between the OCPP handlers that ask and the sync task that owns the MQTT link.
#[derive(Default)]
pub struct AuthBridge {
    state: Mutex<BridgeState>,
}

impl AuthBridge {
    fn lock(&self) -> std::sync::MutexGuard<'_, BridgeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link is up (the sync task subscribed to `down/auth`).
    pub(crate) fn connected(&self, client: AsyncClient, site: String) {
        self.lock().link = Some((client, site));
    }

    /// The link is down: nobody waits for an answer that cannot come.
    pub(crate) fn disconnected(&self) {
        let mut s = self.lock();
        s.link = None;
        s.waiting.clear();
    }

    /// An answer arrived on `down/auth`.
    pub(crate) fn deliver(&self, site: &str, payload: &[u8]) {
        let answer: AuthAnswer = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "sync: an authorization answer that does not parse; ignored");
                return;
            }
        };
        if answer.site_id != site {
            tracing::warn!(site = %answer.site_id, "sync: an authorization answer for another site; ignored");
            return;
        }
        let waiter = self.lock().waiting.remove(&answer.request_id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(answer);
            }
            None => tracing::debug!(request = %answer.request_id, "sync: a late authorization answer; ignored"),
        }
    }

    /// Asks the hub about `id_tag`; `None` when the link is down or no answer came within
    /// `timeout`.
    pub async fn ask(&self, id_tag: &str, station: &str, evse: Option<u32>, timeout: Duration) -> Option<AuthAnswer> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.lock();
            let (client, site) = s.link.clone()?;
            let req = AuthRequest {
                v: PROTOCOL_VERSION,
                site_id: site.clone(),
                request_id: request_id.clone(),
                id_tag: id_tag.to_owned(),
                station: Some(station.to_owned()),
                evse,
                at: Utc::now(),
            };
            let payload = serde_json::to_vec(&req).ok()?;
            if let Err(e) = client.try_publish(Topic::AuthRequests.of(&site), QoS::AtLeastOnce, false, payload) {
                tracing::debug!(error = %e, "sync: cannot queue an authorization request");
                return None;
            }
            s.waiting.insert(request_id.clone(), tx);
        }
        let answer = tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok);
        if answer.is_none() {
            self.lock().waiting.remove(&request_id);
        }
        answer
    }
}

/// The OCPP status a verdict is cached as (`None`: nothing to cache).
pub fn status_of(verdict: AuthVerdict) -> Option<AuthorizationStatus> {
    match verdict {
        AuthVerdict::Accepted => Some(AuthorizationStatus::Accepted),
        AuthVerdict::Blocked => Some(AuthorizationStatus::Blocked),
        AuthVerdict::Expired => Some(AuthorizationStatus::Expired),
        AuthVerdict::Invalid => Some(AuthorizationStatus::Invalid),
        AuthVerdict::Unknown => None,
    }
}

/// Asks the hub about an id tag the site has no (fresh) answer for and caches its
/// verdict, before the charger's Authorize or StartTransaction is answered. Does
/// nothing without `[sync]`, with `auth_timeout_ms = 0`, or while the link is down.
pub async fn consult_hub(shared: &Shared, station: &str, id_tag: &str, evse: Option<u32>) {
    let Some(cfg) = shared.config.sync.as_ref() else { return };
    let Some(timeout) = cfg.auth_timeout() else { return };
    let max_age = chrono::Duration::seconds(i64::try_from(cfg.auth_refresh_s).unwrap_or(i64::MAX / 1000));
    let tag = id_tag.to_owned();
    let now = Utc::now();
    match shared.store.read(move |c| chargers::needs_online_authorization(c, &tag, max_age, now)).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "sync: cannot read the authorization cache");
            return;
        }
    }
    let Some(answer) = shared.sync.auth.ask(id_tag, station, evse, timeout).await else {
        tracing::info!(station, id_tag, "sync: no authorization answer from the hub; the local policy decides");
        return;
    };
    tracing::info!(station, id_tag, verdict = ?answer.verdict, source = ?answer.source, "sync: the hub answered");
    let Some(status) = status_of(answer.verdict) else { return };
    let (tag, expiry) = (id_tag.to_owned(), answer.expiry);
    if let Err(e) =
        shared.store.write(move |c| chargers::cache_authorization(c, &tag, status, expiry, Utc::now())).await
    {
        tracing::warn!(error = %e, "sync: cannot cache the hub's authorization answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(request_id: &str, site: &str) -> Vec<u8> {
        serde_json::to_vec(&AuthAnswer {
            v: PROTOCOL_VERSION,
            site_id: site.into(),
            request_id: request_id.into(),
            id_tag: "T".into(),
            verdict: AuthVerdict::Accepted,
            expiry: None,
            source: None,
            at: Utc::now(),
        })
        .expect("json")
    }

    #[tokio::test]
    async fn without_a_link_nothing_is_asked() {
        let bridge = AuthBridge::default();
        assert_eq!(bridge.ask("T", "CP-1", None, Duration::from_secs(5)).await, None);
        // Answers nobody waits for are ignored.
        bridge.deliver("s", &answer("nobody", "s"));
        bridge.deliver("s", b"not json");
        assert!(bridge.lock().waiting.is_empty());
    }

    #[test]
    fn verdicts_become_cached_statuses() {
        assert_eq!(status_of(AuthVerdict::Accepted), Some(AuthorizationStatus::Accepted));
        assert_eq!(status_of(AuthVerdict::Invalid), Some(AuthorizationStatus::Invalid));
        assert_eq!(status_of(AuthVerdict::Unknown), None);
    }
}
