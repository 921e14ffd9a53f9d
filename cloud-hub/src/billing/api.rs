//! The billing routes of the fleet API (tariffs, site tariffs, customers, CDRs, invoices)
//! and their schemas. They are part of the fleet API's one route table
//! ([`crate::fleet::routes`]), so authentication, roles and the OpenAPI document work as
//! for every other route.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::invoice;
use super::tariffs::{self, PutOutcome};
use super::{BillingError, cdr};
use crate::fleet::handlers::{ApiPath, is_json, require_site};
use crate::fleet::openapi::{
    list_of, object as closed, page_of as page, schema_ref as r, string, string_or_null, time,
};
use crate::fleet::params::{Kind, LIMIT, OFFSET, Param, Query};
use crate::fleet::problem::{ApiError, ApiResult};
use crate::fleet::views::PageOf;
use crate::fleet::{ApiState, Caller, PREFIX};

/// The route whose answer is the printable invoice (`text/html`, not JSON).
pub const HTML_DOCUMENT: &str = "InvoiceDocument";

const NONE: &[Param] = &[];

pub(crate) const TARIFFS_QUERY: &[Param] = &[LIMIT, OFFSET];
pub(crate) const CUSTOMERS_QUERY: &[Param] = &[LIMIT, OFFSET];
pub(crate) const CDRS_QUERY: &[Param] = &[
    Param { name: "site", kind: Kind::Text, description: "Only this site's CDRs." },
    Param { name: "customer", kind: Kind::Text, description: "Only this customer's CDRs." },
    Param { name: "transaction_uid", kind: Kind::Text, description: "Only the CDRs of this session." },
    Param { name: "from", kind: Kind::Time, description: "Only sessions that ended at or after this time (RFC 3339)." },
    Param { name: "to", kind: Kind::Time, description: "Only sessions that ended before this time (RFC 3339)." },
    LIMIT,
    OFFSET,
];
pub(crate) const INVOICES_QUERY: &[Param] =
    &[Param { name: "customer", kind: Kind::Text, description: "Only this customer's invoices." }, LIMIT, OFFSET];

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::Invalid(reason) => ApiError::unprocessable(reason),
            BillingError::NotFound(reason) => ApiError::not_found(reason),
            BillingError::Conflict(reason) => ApiError::new(StatusCode::CONFLICT, reason),
            BillingError::Db(e) => ApiError::db("billing", &e),
        }
    }
}

/// The body as JSON bytes: 415 unless declared JSON, 400 unless it parses.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult<(Bytes, Value)> {
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    let body = body?;
    let value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok((body, value))
}

/// A request body's fields: only `allowed`, each a string (or absent / null when optional).
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn of(value: &'a Value, allowed: &[&str]) -> ApiResult<Self> {
        let Some(map) = value.as_object() else {
            return Err(ApiError::unprocessable("the body must be a JSON object"));
        };
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::unprocessable(format!("unknown field {k:?}; expected {}", allowed.join(", "))));
        }
        Ok(Fields(map))
    }

    fn opt(&self, key: &str) -> ApiResult<Option<&'a str>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::unprocessable(format!("{key} must be a string"))),
        }
    }

    fn req(&self, key: &str) -> ApiResult<&'a str> {
        self.opt(key)?.ok_or_else(|| ApiError::unprocessable(format!("{key} is required")))
    }

    fn time(&self, key: &str) -> ApiResult<Option<DateTime<Utc>>> {
        self.opt(key)?
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| ApiError::unprocessable(format!("{key} {s:?} is not an RFC 3339 time: {e}")))
            })
            .transpose()
    }
}

fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if id.is_empty() || id.chars().count() > 64 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} {id:?} is not valid")));
    }
    Ok(())
}

// ---- tariffs ----------------------------------------------------------------------

pub async fn list_tariffs(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, TARIFFS_QUERY)?;
    let page = q.page();
    let rows = tariffs::list(&state.store, page).await.map_err(|e| ApiError::db("listing tariffs", &e))?;
    let items: Vec<Value> = rows.iter().map(|t| serde_json::from_str(&t.body).unwrap_or(Value::Null)).collect();
    Ok(Json(PageOf::from_rows(items, page)).into_response())
}

fn tariff_response(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_owned()).into_response()
}

pub async fn get_tariff(State(state): State<ApiState>, ApiPath(id): ApiPath<String>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_id("tariff id", &id)?;
    match tariffs::get(&state.store, &id).await {
        Ok(Some(t)) => Ok(tariff_response(StatusCode::OK, &t.body)),
        Ok(None) => Err(ApiError::not_found(format!("no tariff {id:?}"))),
        Err(e) => Err(ApiError::db("reading the tariff", &e)),
    }
}

pub async fn put_tariff(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_id("tariff id", &id)?;
    let (bytes, _) = json_body(&headers, body)?;
    let tariff = tariffs::parse_tariff(&bytes, Some(&id)).map_err(ApiError::unprocessable)?;
    let now = Utc::now();
    let (outcome, stored) =
        tariffs::put(&state.store, tariff, now).await.map_err(|e| ApiError::db("storing the tariff", &e))?;
    let mut notified = Vec::new();
    if outcome == PutOutcome::Updated {
        let sites =
            tariffs::sites_using(&state.store, &id, now).await.map_err(|e| ApiError::db("finding its sites", &e))?;
        for site in sites {
            let (command_id, published) =
                tariffs::send_to_site(&state.store, &state.mqtt, &site, &stored, Some(&caller.name), now)
                    .await
                    .map_err(|e| ApiError::db("sending the tariff", &e))?;
            notified.push(json!({"site_id": site, "command_id": command_id, "published": published}));
        }
    }
    if outcome == PutOutcome::Updated
        && let Some(billing) = &state.billing
    {
        billing.wake();
    }
    let tariff: Value = serde_json::from_str(&stored.body).unwrap_or(Value::Null);
    let (status, outcome) = match outcome {
        PutOutcome::Created => (StatusCode::CREATED, "created"),
        PutOutcome::Updated => (StatusCode::OK, "updated"),
        PutOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    tracing::info!(tariff = id, outcome, key = caller.name, "tariff stored");
    Ok((status, Json(json!({"outcome": outcome, "tariff": tariff, "sites_notified": notified}))).into_response())
}

// ---- site tariffs -----------------------------------------------------------------

pub async fn list_site_tariffs(
    State(state): State<ApiState>,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    require_site(&state, &site).await?;
    let items =
        tariffs::site_tariffs(&state.store, &site).await.map_err(|e| ApiError::db("listing site tariffs", &e))?;
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn assign_site_tariff(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    ApiPath(site): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    require_site(&state, &site).await?;
    let (_, value) = json_body(&headers, body)?;
    let f = Fields::of(&value, &["tariff_id", "time_zone", "valid_from"])?;
    let (tariff_id, time_zone) = (f.req("tariff_id")?, f.req("time_zone")?);
    let now = Utc::now();
    let valid_from = f.time("valid_from")?.unwrap_or(now);
    let assignment =
        tariffs::assign(&state.store, &site, tariff_id, time_zone, valid_from, Some(&caller.name), now).await?;
    if let Some(billing) = &state.billing {
        billing.rescan();
    }
    // The site gets the tariff in force now (an assignment for later goes out when it is
    // assigned too: the site keeps every tariff it was sent).
    let stored = tariffs::get(&state.store, tariff_id)
        .await
        .map_err(|e| ApiError::db("reading the tariff", &e))?
        .ok_or_else(|| ApiError::not_found(format!("no tariff {tariff_id:?}")))?;
    let (command_id, published) =
        tariffs::send_to_site(&state.store, &state.mqtt, &site, &stored, Some(&caller.name), now)
            .await
            .map_err(|e| ApiError::db("sending the tariff", &e))?;
    tracing::info!(site, tariff = tariff_id, %valid_from, key = caller.name, "site tariff assigned");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "assignment": assignment,
            "command_id": command_id,
            "published": published,
            "command": format!("{PREFIX}/commands/{command_id}"),
        })),
    )
        .into_response())
}

// ---- customers --------------------------------------------------------------------

pub async fn list_customers(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, CUSTOMERS_QUERY)?;
    let page = q.page();
    let items = invoice::customers(&state.store, page).await.map_err(|e| ApiError::db("listing customers", &e))?;
    Ok(Json(PageOf::from_rows(items, page)).into_response())
}

pub async fn add_customer(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    let (_, value) = json_body(&headers, body)?;
    let f = Fields::of(&value, &["id", "name", "email", "address", "vat_id"])?;
    let c = invoice::add_customer(
        &state.store,
        f.opt("id")?,
        f.req("name")?,
        f.opt("email")?,
        f.opt("address")?,
        f.opt("vat_id")?,
        Utc::now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

pub async fn get_customer(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_id("customer id", &id)?;
    match invoice::customer(&state.store, &id).await {
        Ok(Some(c)) => Ok(Json(c).into_response()),
        Ok(None) => Err(ApiError::not_found(format!("no customer {id:?}"))),
        Err(e) => Err(ApiError::db("reading the customer", &e)),
    }
}

pub async fn add_customer_id_tag(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_id("customer id", &id)?;
    let (_, value) = json_body(&headers, body)?;
    let f = Fields::of(&value, &["id_tag"])?;
    invoice::add_token(&state.store, &id, f.req("id_tag")?, Utc::now()).await?;
    match invoice::customer(&state.store, &id).await {
        Ok(Some(c)) => Ok(Json(c).into_response()),
        Ok(None) => Err(ApiError::not_found(format!("no customer {id:?}"))),
        Err(e) => Err(ApiError::db("reading the customer", &e)),
    }
}

// ---- CDRs -------------------------------------------------------------------------

pub async fn list_cdrs(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, CDRS_QUERY)?;
    let page = q.page();
    let filter = cdr::CdrFilter {
        site: q.text("site").map(str::to_owned),
        customer: q.text("customer").map(str::to_owned),
        transaction_uid: q.text("transaction_uid").map(str::to_owned),
        from: q.time("from"),
        to: q.time("to"),
    };
    let items = cdr::list(&state.store, &filter, page).await.map_err(|e| ApiError::db("listing CDRs", &e))?;
    Ok(Json(PageOf::from_rows(items, page)).into_response())
}

pub async fn get_cdr(State(state): State<ApiState>, ApiPath(id): ApiPath<String>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_id("CDR id", &id)?;
    match cdr::get(&state.store, &id).await {
        Ok(Some(c)) => Ok(Json(c).into_response()),
        Ok(None) => Err(ApiError::not_found(format!("no CDR {id:?}"))),
        Err(e) => Err(ApiError::db("reading the CDR", &e)),
    }
}

pub async fn credit_cdr(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    check_id("CDR id", &id)?;
    let (_, value) = json_body(&headers, body)?;
    let f = Fields::of(&value, &["reason"])?;
    let reason = f.req("reason")?.trim();
    if reason.is_empty() {
        return Err(ApiError::unprocessable("reason must not be empty: say why the CDR is credited"));
    }
    let reason = format!("{reason} (by {})", caller.name);
    let credit = cdr::credit(&state.store, &id, &reason, Utc::now()).await?;
    tracing::info!(cdr = id, credit = credit.id, key = caller.name, "CDR credited");
    Ok((StatusCode::CREATED, Json(credit)).into_response())
}

// ---- invoices ---------------------------------------------------------------------

pub async fn create_invoice(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    let (_, value) = json_body(&headers, body)?;
    let f = Fields::of(&value, &["customer_id", "from", "to"])?;
    let customer = f.req("customer_id")?;
    let from = f.time("from")?.ok_or_else(|| ApiError::unprocessable("from is required"))?;
    let to = f.time("to")?.ok_or_else(|| ApiError::unprocessable("to is required"))?;
    let inv = invoice::create(&state.store, customer, from, to, Utc::now()).await?;
    tracing::info!(invoice = inv.id, number = inv.number, customer, key = caller.name, "invoice issued");
    Ok((StatusCode::CREATED, Json(inv)).into_response())
}

pub async fn list_invoices(State(state): State<ApiState>, uri: Uri) -> ApiResult<Response> {
    let q = Query::parse(&uri, INVOICES_QUERY)?;
    let page = q.page();
    let items = invoice::list(&state.store, q.text("customer"), page)
        .await
        .map_err(|e| ApiError::db("listing invoices", &e))?;
    Ok(Json(PageOf::from_rows(items, page)).into_response())
}

async fn load_invoice(state: &ApiState, id: &str) -> ApiResult<invoice::Invoice> {
    check_id("invoice id", id)?;
    match invoice::get(&state.store, id).await {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Err(ApiError::not_found(format!("no invoice {id:?}"))),
        Err(e) => Err(ApiError::db("reading the invoice", &e)),
    }
}

pub async fn get_invoice(State(state): State<ApiState>, ApiPath(id): ApiPath<String>, uri: Uri) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    Ok(Json(load_invoice(&state, &id).await?).into_response())
}

pub async fn get_invoice_document(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    uri: Uri,
) -> ApiResult<Response> {
    Query::parse(&uri, NONE)?;
    let inv = load_invoice(&state, &id).await?;
    let html = invoice::html(&inv, &state.issuer);
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

// ---- schemas ----------------------------------------------------------------------

fn decimal() -> Value {
    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "description": "An exact decimal."})
}
fn decimal_or_null() -> Value {
    json!({"type": ["string", "null"], "pattern": "^-?[0-9]+(\\.[0-9]+)?$"})
}
fn body(description: &str, props: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let properties: Map<String, Value> = props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    json!({"type": "object", "description": description, "required": required, "properties": properties,
           "additionalProperties": false})
}

/// The billing schemas of the OpenAPI document.
pub fn schemas() -> Vec<(&'static str, Value)> {
    let vat_line = closed(
        "Net amount and VAT at one rate (percent; null when the tariff gave no price including VAT).",
        vec![("rate", decimal_or_null()), ("net", decimal()), ("vat", decimal())],
    );
    vec![
        (
            "Tariff",
            json!({"type": "object", "description": "An OCPI 2.2.1 Tariff object (module tariffs, §11.3.1); prices \
                are JSON numbers. `last_updated` is set by the hub and moves only when the content changes.",
                "required": ["country_code", "party_id", "id", "currency", "elements", "last_updated"]}),
        ),
        ("TariffPage", page("Tariff")),
        (
            "TariffStored",
            closed(
                "What a PUT of a tariff did: created, updated (the sites using it are sent the new version) or \
                 unchanged (same content: nothing written, `last_updated` kept).",
                vec![
                    ("outcome", json!({"enum": ["created", "updated", "unchanged"]})),
                    ("tariff", r("Tariff")),
                    (
                        "sites_notified",
                        json!({"type": "array", "items": closed("A SetTariff command sent to a site.", vec![
                            ("site_id", string()), ("command_id", string()), ("published", json!({"type": "boolean"})),
                        ])}),
                    ),
                ],
            ),
        ),
        (
            "SiteTariff",
            closed(
                "The tariff of a site from `valid_from` on, and the site's time zone for its restrictions.",
                vec![
                    ("site_id", string()),
                    ("tariff_id", string()),
                    ("valid_from", time()),
                    ("time_zone", string()),
                    ("assigned_at", time()),
                    ("assigned_by", string_or_null()),
                ],
            ),
        ),
        ("SiteTariffList", list_of("SiteTariff")),
        (
            "SiteTariffRequest",
            body(
                "Gives the site a tariff from `valid_from` (default: now) on.",
                vec![
                    ("tariff_id", string()),
                    ("time_zone", json!({"type": "string", "description": "IANA, e.g. Europe/Amsterdam"})),
                    ("valid_from", time()),
                ],
                &["tariff_id", "time_zone"],
            ),
        ),
        (
            "SiteTariffAssigned",
            closed(
                "The assignment, and the SetTariff command that takes the tariff to the site.",
                vec![
                    ("assignment", r("SiteTariff")),
                    ("command_id", string()),
                    ("published", json!({"type": "boolean"})),
                    ("command", string()),
                ],
            ),
        ),
        (
            "Customer",
            closed(
                "Who pays for the sessions of its id tags.",
                vec![
                    ("id", string()),
                    ("name", string()),
                    ("email", string_or_null()),
                    ("address", string_or_null()),
                    ("vat_id", string_or_null()),
                    ("created_at", time()),
                    ("id_tags", json!({"type": "array", "items": string()})),
                ],
            ),
        ),
        ("CustomerPage", page("Customer")),
        (
            "CustomerRequest",
            body(
                "A new customer (id: default a UUID).",
                vec![
                    ("id", string()),
                    ("name", string()),
                    ("email", string()),
                    ("address", string()),
                    ("vat_id", string()),
                ],
                &["name"],
            ),
        ),
        ("IdTagRequest", body("Bills the id tag's sessions to the customer.", vec![("id_tag", string())], &["id_tag"])),
        ("VatLine", vat_line),
        (
            "Cdr",
            closed(
                "A charge detail record: a finished session priced by the site's tariff (debit), or the \
                 cancellation of one (credit, amounts negated). Never changed once issued.",
                vec![
                    ("id", string()),
                    ("site_id", string()),
                    ("transaction_uid", string()),
                    ("kind", json!({"enum": ["debit", "credit"]})),
                    ("revision", json!({"type": "integer"})),
                    ("credits", string_or_null()),
                    ("reason", string_or_null()),
                    ("customer_id", string_or_null()),
                    ("id_tag", string_or_null()),
                    ("station", string()),
                    ("evse", json!({"type": ["integer", "null"]})),
                    ("connector", json!({"type": ["integer", "null"]})),
                    ("tariff_id", string()),
                    ("time_zone", string()),
                    ("currency", string()),
                    ("start_date_time", time()),
                    ("end_date_time", time()),
                    ("meter_start_wh", json!({"type": "integer"})),
                    ("meter_stop_wh", json!({"type": "integer"})),
                    ("total_energy_kwh", decimal()),
                    ("total_time_h", decimal()),
                    ("total_parking_time_h", decimal()),
                    ("total_cost_excl_vat", decimal()),
                    ("total_cost_incl_vat", decimal_or_null()),
                    (
                        "detail",
                        json!({"type": "object", "description": "totals per dimension, OCPI charging_periods, vat \
                            lines, the tariff as it was, dropped_samples", "required": ["totals", "charging_periods", "vat", "tariff"]}),
                    ),
                    ("created_at", time()),
                    ("invoice_id", string_or_null()),
                ],
            ),
        ),
        ("CdrPage", page("Cdr")),
        ("CreditRequest", body("Why the CDR is credited.", vec![("reason", string())], &["reason"])),
        (
            "InvoiceRequest",
            body(
                "Invoices the customer's CDRs that ended in [from, to) and are on no invoice yet.",
                vec![("customer_id", string()), ("from", time()), ("to", time())],
                &["customer_id", "from", "to"],
            ),
        ),
        (
            "InvoiceLine",
            closed(
                "One CDR on an invoice.",
                vec![
                    ("cdr_id", string()),
                    ("kind", json!({"enum": ["debit", "credit"]})),
                    ("credits", string_or_null()),
                    ("site_id", string()),
                    ("station", string()),
                    ("id_tag", string_or_null()),
                    ("start_date_time", time()),
                    ("end_date_time", time()),
                    ("energy_kwh", decimal()),
                    ("time_h", decimal()),
                    ("net", decimal()),
                    ("vat", decimal()),
                    ("gross", decimal()),
                ],
            ),
        ),
        (
            "Invoice",
            closed(
                "An invoice; numbers are gapless in order of issue.",
                vec![
                    ("id", string()),
                    ("number", json!({"type": "integer"})),
                    ("customer", r("Customer")),
                    ("currency", string()),
                    ("period_from", time()),
                    ("period_to", time()),
                    ("issued_at", time()),
                    ("lines", json!({"type": "array", "items": r("InvoiceLine")})),
                    ("tax_lines", json!({"type": "array", "items": r("VatLine")})),
                    ("total_excl_vat", decimal()),
                    ("total_vat", decimal()),
                    ("total_incl_vat", decimal()),
                ],
            ),
        ),
        ("InvoicePage", page("Invoice")),
        (HTML_DOCUMENT, json!({"type": "string", "description": "The invoice as a printable HTML page."})),
    ]
}
