//! The credentials module (OCPI 2.2.1 "Credentials module"), both ways.
//!
//! A partner registers with us: we gave it token A (`POST /api/v1/ocpi/partners` or
//! `[ocpi.token_a]`); it reads our versions with it and POSTs its credentials (its
//! token B, its versions URL, its roles). We read its versions and endpoints with token
//! B, answer our credentials with a fresh token C, and token A stops working.
//!
//! We register with a partner ([`register_with`]): given its versions URL and the token
//! A it gave us, we read its endpoints, POST our credentials with a fresh token B (which
//! it may already use to read our versions while it handles the POST), and call it with
//! the token C it answers from then on.
//!
//! Rotation: a PUT by either side swaps both tokens. Our previous incoming token keeps
//! working for `rotation_grace_s`, so requests the partner already sent with it succeed;
//! the swap is conditional on the token it replaces, so of two racing rotations one wins
//! and the other is told to retry. DELETE unregisters: every token stops at once.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde_json::Value;
use shared_model::ocpi::{BusinessDetails, Credentials, CredentialsRole, status};

use super::client::{ClientError, Route};
use super::partners::{self, PartnerError, PartnerState, Registration, TokenUse};
use super::transport::{self, OcpiError, OcpiResult};
use super::{CallerExt, OcpiState, Settings};
use crate::auth::token_hash;
use crate::db::DbError;

/// Our credentials with `token`, the token the partner calls us with.
pub fn ours(s: &Settings, token: &str) -> Credentials {
    Credentials {
        token: token.to_owned(),
        url: s.versions_url(),
        roles: vec![CredentialsRole {
            role: "CPO".to_owned(),
            business_details: BusinessDetails { name: s.business_name.clone(), website: None },
            party_id: s.party_id.clone(),
            country_code: s.country_code.clone(),
        }],
    }
}

/// `GET credentials`: our credentials with the token the partner called with.
pub async fn get(State(state): State<OcpiState>, caller: CallerExt) -> Response {
    transport::ok(ours(&state.settings, &caller.token))
}

fn parse_credentials(body: &Bytes) -> OcpiResult<Credentials> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| OcpiError::invalid(format!("the body is not JSON: {e}")))?;
    let c: Credentials = serde_json::from_value(value)
        .map_err(|e| OcpiError::invalid(format!("the body is not a Credentials object: {e}")))?;
    if c.token.is_empty() || c.token.len() > 64 || !c.token.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(OcpiError::invalid("credentials.token must be 1 to 64 printable ASCII characters"));
    }
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        return Err(OcpiError::invalid(format!("credentials.url {:?} is not an http(s) URL", c.url)));
    }
    if c.roles.is_empty() {
        return Err(OcpiError::invalid("credentials.roles is empty: at least one role is needed"));
    }
    for r in &c.roles {
        if r.country_code.len() != 2 || r.party_id.is_empty() || r.party_id.len() > 3 {
            return Err(OcpiError::invalid(format!(
                "role {}: country_code must have 2 characters and party_id 1 to 3",
                r.role
            )));
        }
    }
    Ok(c)
}

/// What we learn from a partner's credentials: its versions and endpoints, read with
/// the token it gave.
async fn learn(state: &OcpiState, c: &Credentials, raw: bool) -> Result<Registration, ClientError> {
    // The first role that is not a CPO is the one we deal with (a platform may hold several).
    let Some(role) = c.roles.iter().find(|r| r.role != "CPO").or(c.roles.first()) else {
        return Err(ClientError::Garbage { url: c.url.clone(), reason: "the credentials have no roles".into() });
    };
    let (_, details) = state.client.discover(&c.url, &c.token, raw).await?;
    Ok(Registration {
        role: role.role.clone(),
        country_code: role.country_code.clone(),
        party_id: role.party_id.clone(),
        business_name: role.business_details.name.clone(),
        roles: serde_json::to_value(&c.roles).unwrap_or(Value::Null),
        versions_url: c.url.clone(),
        details,
        outgoing_token: c.token.clone(),
    })
}

fn client_error(e: &ClientError) -> OcpiError {
    // 3001-3003 are the server's errors in the partner's API, the request itself was fine.
    OcpiError::new(StatusCode::OK, e.code(), e.to_string())
}

/// `POST credentials`: a partner registers with the token A we gave it.
pub async fn post(State(state): State<OcpiState>, caller: CallerExt, body: Bytes) -> Response {
    match post_inner(&state, &caller, &body).await {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

async fn post_inner(state: &OcpiState, caller: &super::Caller, body: &Bytes) -> OcpiResult<Response> {
    if caller.partner.state != PartnerState::Pending {
        return Err(OcpiError::method_not_allowed(
            "already registered: use PUT to update the credentials, or DELETE to unregister",
        ));
    }
    let c = parse_credentials(body)?;
    let reg = learn(state, &c, caller.partner.raw_tokens).await.map_err(|e| client_error(&e))?;
    let token_c = partners::generate_token();
    let done =
        partners::complete_incoming(&state.store, &caller.partner.id, &token_hash(&caller.token), &token_c, &reg)
            .await
            .map_err(|e| OcpiError::db("storing the registration", &e))?;
    if !done {
        return Err(OcpiError::method_not_allowed("this token A was used by a registration in the meantime"));
    }
    tracing::info!(partner = %caller.partner.id, party = %format!("{}*{}", reg.country_code, reg.party_id), "OCPI: partner registered with us");
    Ok(transport::ok(ours(&state.settings, &token_c)))
}

/// `PUT credentials`: the partner rotates its token (and maybe its versions URL).
pub async fn put(State(state): State<OcpiState>, caller: CallerExt, body: Bytes) -> Response {
    match put_inner(&state, &caller, &body).await {
        Ok(r) => r,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

async fn put_inner(state: &OcpiState, caller: &super::Caller, body: &Bytes) -> OcpiResult<Response> {
    if caller.partner.state != PartnerState::Registered {
        return Err(OcpiError::method_not_allowed("not registered: register with POST first"));
    }
    if caller.token_use != TokenUse::Current {
        return Err(OcpiError::new(
            StatusCode::CONFLICT,
            status::CLIENT_ERROR,
            "this token was replaced by a rotation: update the credentials with the current token",
        ));
    }
    let c = parse_credentials(body)?;
    let reg = learn(state, &c, caller.partner.raw_tokens).await.map_err(|e| client_error(&e))?;
    let token_c = partners::generate_token();
    let grace_until = Utc::now() + state.settings.rotation_grace;
    let done = partners::rotate_incoming(
        &state.store,
        &caller.partner.id,
        &token_hash(&caller.token),
        &token_c,
        grace_until,
        &reg,
    )
    .await
    .map_err(|e| OcpiError::db("storing the new credentials", &e))?;
    if !done {
        return Err(OcpiError::new(
            StatusCode::CONFLICT,
            status::CLIENT_ERROR,
            "the credentials changed in the meantime (a concurrent rotation): retry with the current token",
        ));
    }
    tracing::info!(partner = %caller.partner.id, "OCPI: partner rotated its credentials");
    Ok(transport::ok(ours(&state.settings, &token_c)))
}

/// `DELETE credentials`: the partner unregisters.
pub async fn delete(State(state): State<OcpiState>, caller: CallerExt) -> Response {
    if caller.partner.state != PartnerState::Registered {
        return axum::response::IntoResponse::into_response(OcpiError::method_not_allowed(
            "not registered: nothing to delete",
        ));
    }
    match partners::unregister(&state.store, &caller.partner.id).await {
        Ok(_) => {
            tracing::info!(partner = %caller.partner.id, "OCPI: partner unregistered");
            transport::ok_empty()
        }
        Err(e) => axum::response::IntoResponse::into_response(OcpiError::db("unregistering", &e)),
    }
}

/// Why our own registration, rotation or unregistering failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Partner(#[from] PartnerError),
    #[error("OCPI status {code}: {0}", code = .0.code())]
    Client(#[from] ClientError),
    #[error("partner {0:?} is not registered")]
    NotRegistered(String),
    #[error("partner {0:?}'s credentials changed in the meantime: retry")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl RegisterError {
    /// The OCPI status code this failure amounts to, when it comes from the partner.
    pub fn ocpi_code(&self) -> Option<u16> {
        match self {
            RegisterError::Client(e) => Some(e.code()),
            _ => None,
        }
    }
}

fn route_to(state: &OcpiState) -> Route {
    Route { from: Some(state.settings.us()), to: None }
}

/// Registers with a partner given its versions URL and the token A it gave us; the
/// partner is `registered` when this returns `Ok`.
pub async fn register_with(
    state: &OcpiState,
    id: &str,
    versions_url: &str,
    token_a: &str,
    raw_tokens: bool,
) -> Result<partners::Partner, RegisterError> {
    let (_, details) = state.client.discover(versions_url, token_a, raw_tokens).await?;
    let url = details
        .url("credentials", "RECEIVER")
        .or_else(|| details.url("credentials", "SENDER"))
        .map(str::to_owned)
        .ok_or_else(|| ClientError::NoMatchingEndpoints { what: "credentials".into() })?;
    let token_b = partners::generate_token();
    partners::start_outgoing(&state.store, id, versions_url, &token_b, raw_tokens).await?;
    let body = serde_json::to_value(ours(&state.settings, &token_b)).unwrap_or(Value::Null);
    let answer: Result<Option<Credentials>, ClientError> =
        state.client.call(Method::POST, &url, token_a, raw_tokens, &route_to(state), Some(&body)).await;
    let theirs = match answer {
        Ok(Some(c)) => c,
        Ok(None) => {
            partners::unregister(&state.store, id).await?;
            return Err(ClientError::Garbage { url, reason: "the answer has no credentials".into() }.into());
        }
        Err(e) => {
            partners::unregister(&state.store, id).await?;
            return Err(e.into());
        }
    };
    let reg = match learn(state, &theirs, raw_tokens).await {
        Ok(reg) => reg,
        Err(e) => {
            partners::unregister(&state.store, id).await?;
            return Err(e.into());
        }
    };
    if !partners::complete_outgoing(&state.store, id, &token_b, &reg).await? {
        return Err(RegisterError::Conflict(id.to_owned()));
    }
    tracing::info!(partner = %id, "OCPI: registered with the partner");
    partners::get(&state.store, id).await?.ok_or_else(|| RegisterError::NotRegistered(id.to_owned()))
}

/// Rotates the tokens with a registered partner from our side: a PUT with a fresh token
/// for it to call us with; its answer holds the one we call it with. Its previous token
/// keeps working for the grace window.
pub async fn rotate(state: &OcpiState, id: &str) -> Result<(), RegisterError> {
    let p = partners::get(&state.store, id).await?.filter(|p| p.state == PartnerState::Registered);
    let Some(p) = p else { return Err(RegisterError::NotRegistered(id.to_owned())) };
    let (Some(url), Some(token)) =
        (p.endpoint("credentials", "RECEIVER").or(p.endpoint("credentials", "SENDER")), p.outgoing_token.clone())
    else {
        return Err(ClientError::NoMatchingEndpoints { what: "credentials".into() }.into());
    };
    let Some(current) = partners::incoming_hash(&state.store, id).await? else {
        return Err(RegisterError::NotRegistered(id.to_owned()));
    };
    let new_token = partners::generate_token();
    let grace_until = Utc::now() + state.settings.rotation_grace;
    if !partners::begin_own_rotation(&state.store, id, &current, &new_token, grace_until).await? {
        return Err(RegisterError::Conflict(id.to_owned()));
    }
    let body = serde_json::to_value(ours(&state.settings, &new_token)).unwrap_or(Value::Null);
    let theirs: Option<Credentials> =
        state.client.call(Method::PUT, url, &token, p.raw_tokens, &route_to(state), Some(&body)).await?;
    let theirs = theirs.ok_or_else(|| ClientError::Garbage { url: url.to_owned(), reason: "no credentials".into() })?;
    partners::set_outgoing(&state.store, id, &theirs.token).await?;
    Ok(())
}

/// Unregisters from a partner: a DELETE on its credentials, then every token stops
/// here whatever it answered. `Err` with what the partner said when it did not confirm.
pub async fn unregister(state: &OcpiState, id: &str) -> Result<(), RegisterError> {
    let p = partners::get(&state.store, id).await?.filter(|p| p.state != PartnerState::Unregistered);
    let Some(p) = p else { return Err(RegisterError::NotRegistered(id.to_owned())) };
    let call = match (p.endpoint("credentials", "RECEIVER").or(p.endpoint("credentials", "SENDER")), &p.outgoing_token)
    {
        (Some(url), Some(token)) if p.state == PartnerState::Registered => {
            Some(state.client.call::<Value>(Method::DELETE, url, token, p.raw_tokens, &route_to(state), None).await)
        }
        _ => None,
    };
    partners::unregister(&state.store, id).await?;
    match call {
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}
