//! A site asks whether an id tag it does not know may charge ([`AuthRequest`] on
//! `up/auth`, see `shared-model/SYNC.md`); the hub answers from the roaming partners.
//!
//! - A token an eMSP pushed with this uid (OCPI 2.2.1 "Tokens module"; the RFID reader's
//!   uid is the OCPP idTag): not `valid` → Blocked; whitelist `ALWAYS` or `ALLOWED` →
//!   Accepted from the store, no call (auth method WHITELIST); `ALLOWED_OFFLINE` → the
//!   eMSP's real-time authorization, and Accepted when the eMSP cannot be reached in time;
//!   `NEVER` → the eMSP's real-time authorization only (Unknown when it cannot answer).
//! - An id tag no partner pushed (with `[ocpi] authorize_unknown_tokens`): every
//!   registered eMSP with a tokens Sender endpoint is asked at once; an ALLOWED answer
//!   wins, else a refusal (BLOCKED, EXPIRED, NO_CREDIT, NOT_ALLOWED), else Invalid when
//!   every one said it does not know the token (2004), else Unknown.
//!
//! The request names the site's Location and, when the charger said which connector,
//! the EVSE (LocationReferences). Each eMSP call waits at most
//! `realtime_auth_timeout_ms`. Every answer that came from a partner (and every whitelist
//! decision) is recorded in `ocpi_authorizations`: the ALLOWED ones make the session
//! that follows the partner's (see [`super::sessions::owner`]), with its
//! `authorization_reference`.
//!
//! Each site has a budget of requests ([`RateLimiter`], `[ocpi] auth_rate_per_s` and
//! `auth_burst`): over it the answer is Unknown at once, no eMSP is asked, and the site's
//! offline policy decides.

use chrono::Utc;
use shared_model::ocpi::{AuthorizationInfo, LocationReferences, Token, auth_method, status};
use shared_model::sync::{AuthAnswer, AuthRequest, AuthVerdict, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

use super::OcpiState;
use super::client::ClientError;
use super::locations::evse_uid;
use super::partners::{self, PartnerState};
use super::tokens::{self, AuthorizeError};
use crate::db::{DbError, Ty};

/// A token bucket: `burst` tokens, refilled at `rate` per second; a request takes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(burst: u32, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(burst), at: now }
    }

    /// Takes a token at `now` if there is one (after refilling for the time since the
    /// last call).
    pub fn take(&mut self, rate: f64, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Each site's bucket of authorization requests (`[ocpi] auth_rate_per_s`,
/// `auth_burst`): a site whose chargers (or a misbehaving agent) ask faster than that is
/// answered Unknown at once, without calling any eMSP, and decides by its own offline
/// policy. Per hub replica: with several, a site may get up to that many times the rate.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter { rate, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether `site` may make a request at `now` (it takes a token when it may).
    pub fn admit(&self, site: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Full buckets carry no information: forget them now and then, so that sites
        // that stopped asking (or ids that were never sites) do not pile up.
        if buckets.len() > 10_000 {
            let full_after = Duration::from_secs_f64(f64::from(self.burst) / self.rate);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        let (rate, burst) = (self.rate, self.burst);
        buckets.entry(site.to_owned()).or_insert_with(|| Bucket::full(burst, now)).take(rate, burst, now)
    }
}

/// The answer to a site over its request budget.
pub fn rate_limited(req: &AuthRequest) -> AuthAnswer {
    unknown(req, "hub: too many authorization requests from this site; not asked now")
}

/// The verdict of an OCPI `allowed` value (AllowedType).
pub fn verdict(allowed: &str) -> AuthVerdict {
    match allowed {
        "ALLOWED" => AuthVerdict::Accepted,
        "BLOCKED" | "NO_CREDIT" => AuthVerdict::Blocked,
        "EXPIRED" => AuthVerdict::Expired,
        _ => AuthVerdict::Invalid,
    }
}

/// The answer that says the hub cannot tell.
pub fn unknown(req: &AuthRequest, why: &str) -> AuthAnswer {
    answer(req, AuthVerdict::Unknown, Some(why.to_owned()))
}

fn answer(req: &AuthRequest, verdict: AuthVerdict, source: Option<String>) -> AuthAnswer {
    AuthAnswer {
        v: PROTOCOL_VERSION,
        site_id: req.site_id.clone(),
        request_id: req.request_id.clone(),
        id_tag: req.id_tag.clone(),
        verdict,
        expiry: None,
        source,
        at: Utc::now(),
    }
}

/// What one eMSP said.
enum Asked {
    Info(Box<AuthorizationInfo>),
    /// It does not know the token (2004).
    UnknownToken,
    /// No usable answer (unreachable, too slow, another error status).
    NoAnswer(String),
}

async fn ask(
    state: &OcpiState,
    partner_id: &str,
    uid: &str,
    token_type: &str,
    location: Option<&LocationReferences>,
) -> Asked {
    let call = tokens::authorize(state, partner_id, uid, token_type, location);
    match tokio::time::timeout(state.settings.realtime_auth_timeout, call).await {
        Err(_) => Asked::NoAnswer(format!("no answer within {:?}", state.settings.realtime_auth_timeout)),
        Ok(Ok(info)) => Asked::Info(Box::new(info)),
        Ok(Err(AuthorizeError::Client(ClientError::Refused { code: status::UNKNOWN_TOKEN, .. }))) => {
            Asked::UnknownToken
        }
        Ok(Err(e)) => Asked::NoAnswer(e.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    state: &OcpiState,
    req: &AuthRequest,
    partner_id: &str,
    allowed: &str,
    method: &str,
    reference: Option<&str>,
    location: Option<&LocationReferences>,
    token: &Token,
) -> Result<(), DbError> {
    state
        .store
        .exec(
            "INSERT INTO ocpi_authorizations (id, id_tag, partner_id, site_id, station, allowed, auth_method, \
                 authorization_reference, location_id, token, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                uuid::Uuid::new_v4().to_string().into(),
                req.id_tag.as_str().into(),
                partner_id.into(),
                req.site_id.as_str().into(),
                req.station.as_deref().into(),
                allowed.into(),
                method.into(),
                reference.into(),
                location.map(|l| l.location_id.as_str()).into(),
                serde_json::to_string(token).unwrap_or_default().into(),
                Utc::now().into(),
            ],
        )
        .await
        .map(|_| ())
}

/// Where the site's chargers are, as OCPI names it (`None`: the site is no Location).
async fn location(state: &OcpiState, req: &AuthRequest) -> Result<Option<LocationReferences>, DbError> {
    let r = state
        .store
        .fetch_opt(
            "SELECT location_id FROM ocpi_locations WHERE site_id = $1",
            &[req.site_id.as_str().into()],
            &[Ty::Text],
        )
        .await?;
    Ok(r.and_then(|r| r.text(0).map(str::to_owned)).map(|location_id| {
        let evse_uids = match (&req.station, req.evse) {
            (Some(station), Some(evse)) if evse > 0 => Some(vec![evse_uid(&location_id, station, i64::from(evse))]),
            _ => None,
        };
        LocationReferences { location_id, evse_uids }
    }))
}

/// Answers a site's request (never fails: what goes wrong becomes Unknown, logged).
pub async fn authorize_for_site(state: &OcpiState, req: &AuthRequest) -> AuthAnswer {
    match decide(state, req).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(site = %req.site_id, error = %e, "OCPI: a site's authorization request failed");
            unknown(req, "hub: database error")
        }
    }
}

async fn decide(state: &OcpiState, req: &AuthRequest) -> Result<AuthAnswer, DbError> {
    let location = location(state, req).await?;
    let pushed = state
        .store
        .fetch(
            "SELECT t.partner_id, t.body FROM ocpi_tokens t JOIN ocpi_partners p ON p.id = t.partner_id \
             WHERE t.uid = $1 AND p.state = 'registered' \
             ORDER BY CASE WHEN t.token_type = 'RFID' THEN 0 ELSE 1 END, t.received_at DESC LIMIT 1",
            &[req.id_tag.as_str().into()],
            &[Ty::Text, Ty::Json],
        )
        .await?;
    let known = pushed.first().and_then(|r| {
        let token: Token = serde_json::from_value(r.json(1)?.clone()).ok()?;
        Some((r.text(0)?.to_owned(), token))
    });
    if let Some((partner_id, token)) = known {
        return decide_known(state, req, &partner_id, &token, location.as_ref()).await;
    }
    if !state.settings.authorize_unknown_tokens {
        return Ok(unknown(req, "hub: no partner pushed this token"));
    }
    let asked: Vec<String> = partners::list(&state.store)
        .await?
        .into_iter()
        .filter(|p| p.state == PartnerState::Registered && p.endpoint("tokens", "SENDER").is_some())
        .map(|p| p.id)
        .collect();
    if asked.is_empty() {
        return Ok(unknown(req, "hub: no partner does real-time authorization"));
    }
    let mut calls = JoinSet::new();
    for partner_id in &asked {
        let (state, partner_id, uid, location) =
            (state.clone(), partner_id.clone(), req.id_tag.clone(), location.clone());
        calls.spawn(async move {
            let asked = ask(&state, &partner_id, &uid, "RFID", location.as_ref()).await;
            (partner_id, asked)
        });
    }
    let mut refusal: Option<(String, Box<AuthorizationInfo>)> = None;
    let mut unknown_to = 0;
    while let Some(done) = calls.join_next().await {
        let Ok((partner_id, asked)) = done else { continue };
        match asked {
            Asked::Info(info) if info.allowed == "ALLOWED" => {
                calls.abort_all();
                let reference = info.authorization_reference.as_deref();
                record(
                    state,
                    req,
                    &partner_id,
                    "ALLOWED",
                    auth_method::AUTH_REQUEST,
                    reference,
                    location.as_ref(),
                    &info.token,
                )
                .await?;
                return Ok(answer(req, AuthVerdict::Accepted, Some(format!("ocpi:{partner_id}:realtime"))));
            }
            Asked::Info(info) => refusal = refusal.or(Some((partner_id, info))),
            Asked::UnknownToken => unknown_to += 1,
            Asked::NoAnswer(why) => {
                tracing::info!(partner = %partner_id, reason = %why, "OCPI: no real-time authorization answer")
            }
        }
    }
    if let Some((partner_id, info)) = refusal {
        let reference = info.authorization_reference.as_deref();
        record(
            state,
            req,
            &partner_id,
            &info.allowed,
            auth_method::AUTH_REQUEST,
            reference,
            location.as_ref(),
            &info.token,
        )
        .await?;
        return Ok(answer(req, verdict(&info.allowed), Some(format!("ocpi:{partner_id}:realtime"))));
    }
    if unknown_to == asked.len() {
        return Ok(answer(req, AuthVerdict::Invalid, Some("ocpi: no partner knows this token".into())));
    }
    Ok(unknown(req, "ocpi: no partner could answer in time"))
}

async fn decide_known(
    state: &OcpiState,
    req: &AuthRequest,
    partner_id: &str,
    token: &Token,
    location: Option<&LocationReferences>,
) -> Result<AuthAnswer, DbError> {
    let whitelisted = |source: &str| answer(req, AuthVerdict::Accepted, Some(format!("ocpi:{partner_id}:{source}")));
    if !token.valid {
        return Ok(answer(req, AuthVerdict::Blocked, Some(format!("ocpi:{partner_id}:token not valid"))));
    }
    if matches!(token.whitelist.as_str(), "ALWAYS" | "ALLOWED") {
        record(state, req, partner_id, "ALLOWED", auth_method::WHITELIST, None, location, token).await?;
        return Ok(whitelisted("whitelist"));
    }
    match ask(state, partner_id, &token.uid, &token.token_type, location).await {
        Asked::Info(info) => {
            let reference = info.authorization_reference.as_deref();
            record(state, req, partner_id, &info.allowed, auth_method::AUTH_REQUEST, reference, location, &info.token)
                .await?;
            Ok(answer(req, verdict(&info.allowed), Some(format!("ocpi:{partner_id}:realtime"))))
        }
        Asked::UnknownToken => {
            Ok(answer(req, AuthVerdict::Invalid, Some(format!("ocpi:{partner_id}:the eMSP does not know it"))))
        }
        Asked::NoAnswer(why) if token.whitelist == "ALLOWED_OFFLINE" => {
            tracing::info!(partner = %partner_id, reason = %why, "OCPI: eMSP unreachable; ALLOWED_OFFLINE token let in");
            record(state, req, partner_id, "ALLOWED", auth_method::WHITELIST, None, location, token).await?;
            Ok(whitelisted("allowed offline"))
        }
        Asked::NoAnswer(why) => {
            tracing::info!(partner = %partner_id, reason = %why, "OCPI: no real-time authorization answer");
            Ok(unknown(req, &format!("ocpi:{partner_id}: no answer")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        assert!((0..3).all(|_| b.take(2.0, 3, t0)), "the burst");
        assert!(!b.take(2.0, 3, t0), "then nothing at once");
        assert!(!b.take(2.0, 3, t0 + Duration::from_millis(400)), "0.8 of a token is not one");
        assert!(b.take(2.0, 3, t0 + Duration::from_millis(500)), "two per second: one after 0.5 s");
        assert!(!b.take(2.0, 3, t0 + Duration::from_millis(500)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(2.0, 3, later)).count(), 3);
        // A clock that goes backwards takes nothing away and gives nothing.
        assert!(!b.take(2.0, 3, t0));
    }

    #[test]
    fn each_site_has_its_own_bucket() {
        let limiter = RateLimiter::new(1.0, 2);
        let now = Instant::now();
        assert!(limiter.admit("a", now) && limiter.admit("a", now));
        assert!(!limiter.admit("a", now), "a is over its burst");
        assert!(limiter.admit("b", now), "b is not held up by a");
        assert!(limiter.admit("a", now + Duration::from_secs(1)));
    }

    #[test]
    fn allowed_types_map_to_verdicts() {
        assert_eq!(verdict("ALLOWED"), AuthVerdict::Accepted);
        assert_eq!(verdict("BLOCKED"), AuthVerdict::Blocked);
        assert_eq!(verdict("NO_CREDIT"), AuthVerdict::Blocked);
        assert_eq!(verdict("EXPIRED"), AuthVerdict::Expired);
        assert_eq!(verdict("NOT_ALLOWED"), AuthVerdict::Invalid);
        assert_eq!(verdict("SOMETHING_NEW"), AuthVerdict::Invalid);
    }
}
