//! Roaming partners and their tokens (table `ocpi_partners`).
//!
//! Tokens a partner calls us with are stored as SHA-256 only (like API keys); the token
//! we call a partner with is stored as is. After a rotation the previous incoming token
//! keeps working until `incoming_prev_until` (the grace window), so requests already
//! under way with it do not fail; every change of the incoming token is a conditional
//! UPDATE on the token it replaces, so two rotations racing cannot both win.

use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::Serialize;
use serde_json::Value;
use shared_model::ocpi::{Endpoint, VersionDetails};

use crate::auth::token_hash;
use crate::db::{DbError, Row, Store, Ty, Val};

/// Where a partner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartnerState {
    /// We issued a token A; the partner has not registered yet.
    Pending,
    /// We are registering with the partner (our token B is out).
    Registering,
    Registered,
    Unregistered,
}

impl PartnerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerState::Pending => "pending",
            PartnerState::Registering => "registering",
            PartnerState::Registered => "registered",
            PartnerState::Unregistered => "unregistered",
        }
    }

    fn parse(s: &str) -> PartnerState {
        match s {
            "pending" => PartnerState::Pending,
            "registering" => PartnerState::Registering,
            "registered" => PartnerState::Registered,
            _ => PartnerState::Unregistered,
        }
    }
}

/// A partner as stored (never its incoming tokens).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partner {
    pub id: String,
    pub state: PartnerState,
    pub role: Option<String>,
    pub country_code: Option<String>,
    pub party_id: Option<String>,
    pub business_name: Option<String>,
    pub versions_url: Option<String>,
    pub version: Option<String>,
    pub endpoints: Vec<Endpoint>,
    #[serde(skip)]
    pub outgoing_token: Option<String>,
    pub raw_tokens: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Partner {
    /// The URL of the partner's module `identifier` in `role`.
    pub fn endpoint(&self, identifier: &str, role: &str) -> Option<&str> {
        self.endpoints.iter().find(|e| e.identifier == identifier && e.role == role).map(|e| e.url.as_str())
    }
}

const TYPES: [Ty; 16] = [
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Json,
    Ty::Text,
    Ty::Bool,
    Ty::Time,
    Ty::Time,
    Ty::Text,
    Ty::Text,
    Ty::Time,
];

fn partner(r: &Row) -> Partner {
    let endpoints = r.json(8).and_then(|v| serde_json::from_value::<Vec<Endpoint>>(v.clone()).ok()).unwrap_or_default();
    Partner {
        id: r.text(0).unwrap_or_default().to_owned(),
        state: PartnerState::parse(r.text(1).unwrap_or_default()),
        role: r.text(2).map(str::to_owned),
        country_code: r.text(3).map(str::to_owned),
        party_id: r.text(4).map(str::to_owned),
        business_name: r.text(5).map(str::to_owned),
        versions_url: r.text(6).map(str::to_owned),
        version: r.text(7).map(str::to_owned),
        endpoints,
        outgoing_token: r.text(9).map(str::to_owned),
        raw_tokens: r.bool(10).unwrap_or(false),
        created_at: r.time(11),
        updated_at: r.time(12),
    }
}

/// A fresh token: 32 bytes from the OS generator as 64 hex digits (printable, fits the
/// OCPI 2.2.1 `string(64)` of Credentials.token).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One partner by name.
pub async fn get(store: &Store, id: &str) -> Result<Option<Partner>, DbError> {
    Ok(store
        .fetch_opt(
            "SELECT id, state, role, country_code, party_id, business_name, versions_url, version, endpoints, \
             outgoing_token, raw_tokens, created_at, updated_at, incoming_token_hash, incoming_prev_hash, \
             incoming_prev_until FROM ocpi_partners WHERE id = $1",
            &[id.into()],
            &TYPES,
        )
        .await?
        .map(|r| partner(&r)))
}

/// Every partner, by name.
pub async fn list(store: &Store) -> Result<Vec<Partner>, DbError> {
    Ok(store
        .fetch(
            "SELECT id, state, role, country_code, party_id, business_name, versions_url, version, endpoints, \
             outgoing_token, raw_tokens, created_at, updated_at, incoming_token_hash, incoming_prev_hash, \
             incoming_prev_until FROM ocpi_partners ORDER BY id",
            &[],
            &TYPES,
        )
        .await?
        .iter()
        .map(partner)
        .collect())
}

/// The registered partners that have `identifier` in `role`.
pub async fn registered_with(store: &Store, identifier: &str, role: &str) -> Result<Vec<Partner>, DbError> {
    Ok(list(store)
        .await?
        .into_iter()
        .filter(|p| p.state == PartnerState::Registered && p.endpoint(identifier, role).is_some())
        .collect())
}

/// Which of a partner's tokens a request came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    Current,
    /// The one before the last rotation, inside the grace window.
    Previous,
}

/// The partner holding one of the tokens an `Authorization` header stands for (see
/// [`super::transport::parse_token_header`]): the decoded one for every partner, the raw
/// one only for partners flagged `raw_tokens`. Returns the token that matched too.
pub async fn authenticate(
    store: &Store,
    decoded: Option<&str>,
    raw: &str,
    now: DateTime<Utc>,
) -> Result<Option<(Partner, TokenUse, String)>, DbError> {
    let raw_hash = token_hash(raw);
    let decoded_hash = decoded.map(token_hash);
    let rows = store
        .fetch(
            "SELECT id, state, role, country_code, party_id, business_name, versions_url, version, endpoints, \
             outgoing_token, raw_tokens, created_at, updated_at, incoming_token_hash, incoming_prev_hash, \
             incoming_prev_until FROM ocpi_partners WHERE state <> 'unregistered' AND \
             (incoming_token_hash IN ($1, $2) OR incoming_prev_hash IN ($1, $2))",
            &[decoded_hash.clone().unwrap_or_else(|| raw_hash.clone()).into(), raw_hash.clone().into()],
            &TYPES,
        )
        .await?;
    for r in &rows {
        let p = partner(r);
        let mut candidates: Vec<(&str, &str)> = Vec::new();
        if let (Some(h), Some(t)) = (decoded_hash.as_deref(), decoded) {
            candidates.push((h, t));
        }
        if p.raw_tokens {
            candidates.push((raw_hash.as_str(), raw));
        }
        for (hash, token) in candidates {
            if r.text(13) == Some(hash) {
                return Ok(Some((p, TokenUse::Current, token.to_owned())));
            }
            if r.text(14) == Some(hash) && r.time(15).is_some_and(|until| until > now) {
                return Ok(Some((p, TokenUse::Previous, token.to_owned())));
            }
        }
    }
    Ok(None)
}

/// Why a partner could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    #[error("{0:?} is not a partner name: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("partner {0:?} already exists ({1})")]
    Exists(String, &'static str),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Creates a partner waiting to register with `token_a` (state `pending`). An existing
/// `unregistered` partner of that name starts over; any other state is an error.
pub async fn create_pending(store: &Store, id: &str, token_a: &str, raw_tokens: bool) -> Result<(), PartnerError> {
    if !super::config::is_valid_partner_name(id) {
        return Err(PartnerError::BadName(id.to_owned()));
    }
    let now = Utc::now();
    let changed = store
        .exec(
            "INSERT INTO ocpi_partners (id, state, incoming_token_hash, raw_tokens, created_at, updated_at) \
             VALUES ($1, 'pending', $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET state = 'pending', incoming_token_hash = excluded.incoming_token_hash, \
                 incoming_prev_hash = NULL, incoming_prev_until = NULL, outgoing_token = NULL, \
                 raw_tokens = excluded.raw_tokens, updated_at = excluded.updated_at \
             WHERE ocpi_partners.state = 'unregistered'",
            &[id.into(), token_hash(token_a).into(), raw_tokens.into(), now.into()],
        )
        .await?;
    if changed == 0 {
        let state = get(store, id).await?.map(|p| p.state.as_str()).unwrap_or("unknown");
        return Err(PartnerError::Exists(id.to_owned(), state));
    }
    Ok(())
}

/// The config's bootstrap tokens: a pending partner for each name without a row.
pub async fn bootstrap(store: &Store, config: &super::config::OcpiConfig) -> Result<(), DbError> {
    for (id, token) in &config.token_a {
        let raw = config.raw_token_partners.contains(id);
        store
            .exec(
                "INSERT INTO ocpi_partners (id, state, incoming_token_hash, raw_tokens, created_at, updated_at) \
                 VALUES ($1, 'pending', $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING",
                &[id.into(), token_hash(token).into(), raw.into(), Utc::now().into()],
            )
            .await?;
    }
    Ok(())
}

/// What a registration learnt about the partner.
#[derive(Debug, Clone)]
pub struct Registration {
    pub role: String,
    pub country_code: String,
    pub party_id: String,
    pub business_name: String,
    pub roles: Value,
    pub versions_url: String,
    pub details: VersionDetails,
    /// The token we call the partner with.
    pub outgoing_token: String,
}

/// Completes a registration the partner started with token A (hash `token_a_hash`): the
/// partner is `registered`, calls us with `token_c` from now on, and token A stops
/// working. False when the partner's token A was used concurrently.
pub async fn complete_incoming(
    store: &Store,
    id: &str,
    token_a_hash: &str,
    token_c: &str,
    reg: &Registration,
) -> Result<bool, DbError> {
    let changed = store
        .exec(
            "UPDATE ocpi_partners SET state = 'registered', role = $3, country_code = $4, party_id = $5, \
                 business_name = $6, roles = $7, versions_url = $8, version = $9, endpoints = $10, \
                 outgoing_token = $11, incoming_token_hash = $12, incoming_prev_hash = NULL, \
                 incoming_prev_until = NULL, updated_at = $13 \
             WHERE id = $1 AND state = 'pending' AND incoming_token_hash = $2",
            &registration_args(id, token_a_hash, token_c, reg),
        )
        .await?;
    Ok(changed == 1)
}

fn registration_args(id: &str, old_hash: &str, new_token: &str, reg: &Registration) -> Vec<Val> {
    vec![
        id.into(),
        old_hash.into(),
        reg.role.as_str().into(),
        reg.country_code.as_str().into(),
        reg.party_id.as_str().into(),
        reg.business_name.as_str().into(),
        reg.roles.clone().into(),
        reg.versions_url.as_str().into(),
        reg.details.version.as_str().into(),
        serde_json::to_value(&reg.details.endpoints).unwrap_or(Value::Null).into(),
        reg.outgoing_token.as_str().into(),
        token_hash(new_token).into(),
        Utc::now().into(),
    ]
}

/// A credentials update (PUT) by the partner, which called with its current token
/// (hash `current_hash`): it calls with `new_token` from now on and `current_hash` keeps
/// working until `grace_until`. False when its token changed in between (a racing
/// rotation won).
pub async fn rotate_incoming(
    store: &Store,
    id: &str,
    current_hash: &str,
    new_token: &str,
    grace_until: DateTime<Utc>,
    reg: &Registration,
) -> Result<bool, DbError> {
    let mut args = registration_args(id, current_hash, new_token, reg);
    args.push(grace_until.into());
    let changed = store
        .exec(
            "UPDATE ocpi_partners SET role = $3, country_code = $4, party_id = $5, \
                 business_name = $6, roles = $7, versions_url = $8, version = $9, endpoints = $10, \
                 outgoing_token = $11, incoming_token_hash = $12, incoming_prev_hash = $2, \
                 incoming_prev_until = $14, updated_at = $13 \
             WHERE id = $1 AND state = 'registered' AND incoming_token_hash = $2",
            &args,
        )
        .await?;
    Ok(changed == 1)
}

/// Starts our registration with a partner: it exists (state `registering`) with our
/// token B as its incoming token, so that it can call our versions endpoint while it
/// handles our POST. An `unregistered` or `pending` partner of that name starts over;
/// a registered one is an error.
pub async fn start_outgoing(
    store: &Store,
    id: &str,
    versions_url: &str,
    token_b: &str,
    raw_tokens: bool,
) -> Result<(), PartnerError> {
    if !super::config::is_valid_partner_name(id) {
        return Err(PartnerError::BadName(id.to_owned()));
    }
    let changed = store
        .exec(
            "INSERT INTO ocpi_partners (id, state, versions_url, incoming_token_hash, raw_tokens, created_at, \
                 updated_at) VALUES ($1, 'registering', $2, $3, $4, $5, $5) \
             ON CONFLICT (id) DO UPDATE SET state = 'registering', versions_url = excluded.versions_url, \
                 incoming_token_hash = excluded.incoming_token_hash, incoming_prev_hash = NULL, \
                 incoming_prev_until = NULL, raw_tokens = excluded.raw_tokens, updated_at = excluded.updated_at \
             WHERE ocpi_partners.state IN ('unregistered', 'pending')",
            &[id.into(), versions_url.into(), token_hash(token_b).into(), raw_tokens.into(), Utc::now().into()],
        )
        .await?;
    if changed == 0 {
        let state = get(store, id).await?.map(|p| p.state.as_str()).unwrap_or("unknown");
        return Err(PartnerError::Exists(id.to_owned(), state));
    }
    Ok(())
}

/// Completes our registration: the partner answered with the token we call it with.
pub async fn complete_outgoing(store: &Store, id: &str, token_b: &str, reg: &Registration) -> Result<bool, DbError> {
    let changed = store
        .exec(
            "UPDATE ocpi_partners SET state = 'registered', role = $3, country_code = $4, party_id = $5, \
                 business_name = $6, roles = $7, versions_url = $8, version = $9, endpoints = $10, \
                 outgoing_token = $11, incoming_token_hash = $12, updated_at = $13 \
             WHERE id = $1 AND state = 'registering' AND incoming_token_hash = $2",
            &registration_args(id, &token_hash(token_b), token_b, reg),
        )
        .await?;
    Ok(changed == 1)
}

/// Our own rotation, first half: the partner may call with `new_token` from now on, and
/// with its current token until `grace_until`. False when a racing rotation won.
pub async fn begin_own_rotation(
    store: &Store,
    id: &str,
    current_hash: &str,
    new_token: &str,
    grace_until: DateTime<Utc>,
) -> Result<bool, DbError> {
    let changed = store
        .exec(
            "UPDATE ocpi_partners SET incoming_token_hash = $3, incoming_prev_hash = $2, incoming_prev_until = $4, \
                 updated_at = $5 WHERE id = $1 AND state = 'registered' AND incoming_token_hash = $2",
            &[id.into(), current_hash.into(), token_hash(new_token).into(), grace_until.into(), Utc::now().into()],
        )
        .await?;
    Ok(changed == 1)
}

/// The token we call the partner with, after it answered our rotation.
pub async fn set_outgoing(store: &Store, id: &str, token: &str) -> Result<(), DbError> {
    store
        .exec(
            "UPDATE ocpi_partners SET outgoing_token = $2, updated_at = $3 WHERE id = $1",
            &[id.into(), token.into(), Utc::now().into()],
        )
        .await?;
    Ok(())
}

/// The hash of the partner's current incoming token.
pub async fn incoming_hash(store: &Store, id: &str) -> Result<Option<String>, DbError> {
    Ok(store
        .fetch_opt("SELECT incoming_token_hash FROM ocpi_partners WHERE id = $1", &[id.into()], &[Ty::Text])
        .await?
        .and_then(|r| r.text(0).map(str::to_owned)))
}

/// Unregisters: every token of the partner stops working at once, both ways.
pub async fn unregister(store: &Store, id: &str) -> Result<bool, DbError> {
    let changed = store
        .exec(
            "UPDATE ocpi_partners SET state = 'unregistered', incoming_token_hash = NULL, incoming_prev_hash = NULL, \
                 incoming_prev_until = NULL, outgoing_token = NULL, updated_at = $2 \
             WHERE id = $1 AND state <> 'unregistered'",
            &[id.into(), Utc::now().into()],
        )
        .await?;
    Ok(changed == 1)
}
