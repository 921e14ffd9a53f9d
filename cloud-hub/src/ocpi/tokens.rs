//! The tokens module (OCPI 2.2.1 "Tokens module"): our Receiver interface, where eMSPs
//! push their tokens (`GET` / `PUT` / `PATCH tokens/{country_code}/{party_id}/{token_uid}
//! [?type=RFID]`), and the client of their real-time authorization
//! (`POST {tokens Sender}/{token_uid}/authorize[?type=]`, [`authorize`]).
//!
//! A partner may only push tokens of its own party (its credentials' country code and
//! party id); the token is stored as sent, unknown fields included.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;
use shared_model::ocpi::{AuthorizationInfo, LocationReferences, TOKEN_TYPES, Token, parse_timestamp};

use super::client::{ClientError, Route};
use super::partners::{self, PartnerState};
use super::transport::{self, OcpiError, OcpiResult, form_pairs};
use super::{Caller, CallerExt, OcpiState};
use crate::db::{DbError, Store, Ty};

type Key = (String, String, String);

/// The `type` query parameter (default `RFID`).
fn token_type(uri: &Uri) -> OcpiResult<String> {
    let t = form_pairs(uri.query().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v)
        .unwrap_or_else(|| "RFID".to_owned());
    if !TOKEN_TYPES.contains(&t.as_str()) {
        return Err(OcpiError::invalid(format!("type {t:?} is not one of {}", TOKEN_TYPES.join(", "))));
    }
    Ok(t)
}

fn own_party(caller: &Caller, cc: &str, pid: &str) -> OcpiResult<()> {
    let p = &caller.partner;
    if p.country_code.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(cc))
        && p.party_id.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(pid))
    {
        Ok(())
    } else {
        Err(OcpiError::invalid(format!(
            "{cc}/{pid} is not your party: push tokens of your own country code and party id"
        )))
    }
}

/// A stored token.
pub async fn stored(store: &Store, cc: &str, pid: &str, uid: &str, ty: &str) -> Result<Option<Token>, DbError> {
    Ok(store
        .fetch_opt(
            "SELECT body FROM ocpi_tokens WHERE country_code = $1 AND party_id = $2 AND uid = $3 AND token_type = $4",
            &[cc.into(), pid.into(), uid.into(), ty.into()],
            &[Ty::Json],
        )
        .await?
        .and_then(|r| r.json(0).and_then(|v| serde_json::from_value(v.clone()).ok())))
}

/// `GET tokens/{country_code}/{party_id}/{token_uid}`.
pub async fn get(State(state): State<OcpiState>, caller: CallerExt, Path(key): Path<Key>, uri: Uri) -> Response {
    let inner = async {
        let (cc, pid, uid) = key;
        own_party(&caller, &cc, &pid)?;
        let ty = token_type(&uri)?;
        stored(&state.store, &cc, &pid, &uid, &ty)
            .await
            .map_err(|e| OcpiError::db("reading a token", &e))?
            .ok_or_else(|| OcpiError::unknown_token(format!("no {ty} token {uid:?} of {cc}/{pid}")))
    };
    match inner.await {
        Ok(t) => transport::ok(t),
        Err(e) => e.into_response(),
    }
}

fn parse_token(value: Value) -> OcpiResult<Token> {
    let t: Token =
        serde_json::from_value(value).map_err(|e| OcpiError::invalid(format!("the body is not a Token: {e}")))?;
    if !TOKEN_TYPES.contains(&t.token_type.as_str()) {
        return Err(OcpiError::invalid(format!("type {:?} is not one of {}", t.token_type, TOKEN_TYPES.join(", "))));
    }
    if !["ALWAYS", "ALLOWED", "ALLOWED_OFFLINE", "NEVER"].contains(&t.whitelist.as_str()) {
        return Err(OcpiError::invalid(format!("whitelist {:?} is not an OCPI WhitelistType", t.whitelist)));
    }
    if t.uid.is_empty() || t.uid.len() > 36 {
        return Err(OcpiError::invalid("uid must be 1 to 36 characters"));
    }
    if parse_timestamp(&t.last_updated).is_none() {
        return Err(OcpiError::invalid(format!("last_updated {:?} is not an RFC 3339 time", t.last_updated)));
    }
    Ok(t)
}

async fn save(state: &OcpiState, caller: &Caller, t: &Token) -> OcpiResult<()> {
    state
        .store
        .exec(
            "INSERT INTO ocpi_tokens (country_code, party_id, uid, token_type, partner_id, valid, whitelist, body, \
                 last_updated, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (country_code, party_id, uid, token_type) DO UPDATE SET partner_id = excluded.partner_id, \
                 valid = excluded.valid, whitelist = excluded.whitelist, body = excluded.body, \
                 last_updated = excluded.last_updated, received_at = excluded.received_at",
            &[
                t.country_code.as_str().into(),
                t.party_id.as_str().into(),
                t.uid.as_str().into(),
                t.token_type.as_str().into(),
                caller.partner.id.as_str().into(),
                t.valid.into(),
                t.whitelist.as_str().into(),
                serde_json::to_value(t).unwrap_or(Value::Null).into(),
                t.last_updated.as_str().into(),
                Utc::now().into(),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| OcpiError::db("storing a token", &e))
}

/// `PUT tokens/{country_code}/{party_id}/{token_uid}[?type=]`: a new or replaced token.
pub async fn put(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(key): Path<Key>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let inner = async {
        let (cc, pid, uid) = key;
        own_party(&caller, &cc, &pid)?;
        let ty = token_type(&uri)?;
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| OcpiError::invalid(format!("the body is not JSON: {e}")))?;
        let t = parse_token(value)?;
        if t.country_code != cc || t.party_id != pid || t.uid != uid || t.token_type != ty {
            return Err(OcpiError::invalid(format!(
                "the token's country_code/party_id/uid/type ({}/{}/{}/{}) differ from the URL's ({cc}/{pid}/{uid}/{ty})",
                t.country_code, t.party_id, t.uid, t.token_type
            )));
        }
        save(&state, &caller, &t).await
    };
    match inner.await {
        Ok(()) => transport::ok_empty(),
        Err(e) => e.into_response(),
    }
}

/// `PATCH tokens/{country_code}/{party_id}/{token_uid}[?type=]`: some fields of a known
/// token; `last_updated` is required.
pub async fn patch(
    State(state): State<OcpiState>,
    caller: CallerExt,
    Path(key): Path<Key>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let inner = async {
        let (cc, pid, uid) = key;
        own_party(&caller, &cc, &pid)?;
        let ty = token_type(&uri)?;
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
            return Err(OcpiError::invalid("the body must be a JSON object of the fields to change"));
        };
        if !fields.contains_key("last_updated") {
            return Err(OcpiError::invalid("a PATCH must contain last_updated"));
        }
        for (k, v) in [("country_code", &cc), ("party_id", &pid), ("uid", &uid), ("type", &ty)] {
            if fields.get(k).is_some_and(|f| f != &Value::String(v.clone())) {
                return Err(OcpiError::invalid(format!("{k} cannot be changed by a PATCH")));
            }
        }
        let current = stored(&state.store, &cc, &pid, &uid, &ty)
            .await
            .map_err(|e| OcpiError::db("reading a token", &e))?
            .ok_or_else(|| OcpiError::unknown_token(format!("no {ty} token {uid:?} of {cc}/{pid}: PUT it first")))?;
        let mut merged = serde_json::to_value(current).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut merged {
            m.extend(fields);
        }
        let t = parse_token(merged)?;
        save(&state, &caller, &t).await
    };
    match inner.await {
        Ok(()) => transport::ok_empty(),
        Err(e) => e.into_response(),
    }
}

/// Why a real-time authorization could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("no registered partner {0:?}")]
    NoPartner(String),
    #[error("partner {0:?} has no tokens Sender endpoint (no real-time authorization)")]
    NoEndpoint(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Asks the eMSP `partner_id` whether `uid` (of `token_type`) may charge, optionally at
/// `location` (OCPI 2.2.1 "Tokens module", Real-time authorization). Its 2002 (not enough
/// information) and 2004 (unknown token) come back as [`ClientError::Refused`].
pub async fn authorize(
    state: &OcpiState,
    partner_id: &str,
    uid: &str,
    token_type: &str,
    location: Option<&LocationReferences>,
) -> Result<AuthorizationInfo, AuthorizeError> {
    let p = partners::get(&state.store, partner_id)
        .await?
        .filter(|p| p.state == PartnerState::Registered)
        .ok_or_else(|| AuthorizeError::NoPartner(partner_id.to_owned()))?;
    let (Some(base), Some(token)) = (p.endpoint("tokens", "SENDER"), p.outgoing_token.as_deref()) else {
        return Err(AuthorizeError::NoEndpoint(partner_id.to_owned()));
    };
    let uid_enc: String = uid
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let url = format!("{base}/{uid_enc}/authorize?type={token_type}");
    let body = location.map(|l| serde_json::to_value(l).unwrap_or(Value::Null));
    let route = Route { from: Some(state.settings.us()), to: p.country_code.clone().zip(p.party_id.clone()) };
    let info: Option<AuthorizationInfo> =
        state.client.call(Method::POST, &url, token, p.raw_tokens, &route, body.as_ref()).await?;
    info.ok_or_else(|| ClientError::Garbage { url, reason: "no AuthorizationInfo in the answer".into() }.into())
}
