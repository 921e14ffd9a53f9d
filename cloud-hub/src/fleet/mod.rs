//! The fleet REST API under `/api/v1`: sites, chargers with live status, connectors,
//! sessions with energy, meter series, commands (send one, follow its result), API keys,
//! and the OpenAPI document of all of it.
//!
//! - **One table of routes** ([`routes`]): method, path, minimum role, query parameters,
//!   body and answer. The router is built from it and nothing else, the role check of
//!   each route is attached from it, and the OpenAPI document is generated from it
//!   ([`openapi::document`]); a test checks that every route the server answers is in
//!   the document and the other way round.
//! - **Authentication** on everything under `/api/v1` (unknown paths too, so that they
//!   reveal nothing): `Authorization: Bearer <API key>` (see [`crate::auth`]); 401 with
//!   the reason when it is missing or not valid, 403 when the key's role is below the
//!   route's. `/health` and `/metrics` stay open (firewall `/metrics`).
//! - **Errors** are problem JSON with a precise reason ([`problem`]); unknown or
//!   malformed query parameters are a 400, a body that is not JSON a 400, JSON of the
//!   wrong shape a 422.
//! - **Lists** page with `limit` / `offset` (`next_offset` in the answer, `null` on the
//!   last page); at most 1000 items a page (10000 for meter series).

pub mod command_body;
pub mod handlers;
pub mod openapi;
pub mod params;
pub mod problem;
pub mod views;

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use rumqttc::AsyncClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::{self, ApiKey, Role};
use crate::db::Store;
use crate::metrics::Metrics;
use params::{Kind, LIMIT, OFFSET, Param, SAMPLE_LIMIT};
use problem::ApiError;

/// Where the API lives.
pub const PREFIX: &str = "/api/v1";

/// Settings of the API (from `[api]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSettings {
    /// A command's lifetime when the request gives no `expires_in_s`, seconds.
    pub command_expiry_s: u32,
}

/// The longest lifetime a command may ask for: 7 days.
pub const MAX_COMMAND_EXPIRY_S: u64 = 7 * 24 * 3600;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// The hub's MQTT client, to publish commands.
    pub mqtt: AsyncClient,
    pub settings: ApiSettings,
    /// The OpenAPI document (built once).
    pub openapi: Arc<serde_json::Value>,
    /// When each key's `last_used_at` was last written (at most once a minute).
    touched: Arc<Mutex<HashMap<String, Instant>>>,
    /// Wakes the billing worker (absent when billing is off on this replica).
    pub billing: Option<crate::billing::worker::BillingHandle>,
    /// Who issues invoices (`[billing] issuer`).
    pub issuer: Arc<str>,
}

impl ApiState {
    pub fn new(store: Store, metrics: Arc<Metrics>, mqtt: AsyncClient, settings: ApiSettings) -> Self {
        ApiState {
            store,
            metrics,
            mqtt,
            settings,
            openapi: Arc::new(openapi::document(&routes())),
            touched: Arc::new(Mutex::new(HashMap::new())),
            billing: None,
            issuer: "Sitepilot charging".into(),
        }
    }

    /// With billing: the worker to wake and the issuer printed on invoices.
    pub fn with_billing(mut self, billing: Option<crate::billing::worker::BillingHandle>, issuer: &str) -> Self {
        self.billing = billing;
        self.issuer = issuer.into();
        self
    }

    /// Whether to write the key's `last_used_at` now.
    fn should_touch(&self, key_id: &str) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match touched.get(key_id) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
            _ => {
                touched.insert(key_id.to_owned(), now);
                true
            }
        }
    }
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
}

impl Verb {
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
        }
    }

    /// The OpenAPI operation key.
    pub fn key(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
        }
    }
}

/// How a route is described in the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub query: &'static [Param],
    /// The request body's schema (JSON), if it takes one.
    pub body: Option<&'static str>,
    /// The success status and its body's schema.
    pub ok: (u16, &'static str),
}

/// One route of the API.
pub struct Route {
    pub verb: Verb,
    /// Below [`PREFIX`], in axum's syntax, which is also OpenAPI's (`/sites/{site}`).
    pub path: &'static str,
    /// The least role that may call it.
    pub role: Role,
    pub doc: Doc,
    handler: MethodRouter<ApiState>,
}

pub(crate) fn route<H, T>(verb: Verb, path: &'static str, role: Role, handler: H, doc: Doc) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    Route { verb, path, role, doc, handler: axum::routing::on(verb.filter(), handler) }
}

pub(crate) const fn doc(
    operation_id: &'static str,
    tag: &'static str,
    summary: &'static str,
    ok: (u16, &'static str),
) -> Doc {
    Doc { operation_id, tag, summary, description: "", query: &[], body: None, ok }
}

impl Doc {
    pub(crate) const fn query(mut self, query: &'static [Param]) -> Self {
        self.query = query;
        self
    }
    pub(crate) const fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }
    pub(crate) const fn describe(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
}

const FROM: Param = Param { name: "from", kind: Kind::Time, description: "" };
const TO: Param = Param { name: "to", kind: Kind::Time, description: "" };

pub(crate) const SITES_QUERY: &[Param] = &[
    Param {
        name: "online",
        kind: Kind::Bool,
        description: "Only sites whose last presence status is online (true) or offline (false).",
    },
    LIMIT,
    OFFSET,
];
const CONNECTED: Param = Param {
    name: "connected",
    kind: Kind::Bool,
    description: "Only chargers connected (true) or not connected (false) to their site.",
};
pub(crate) const SITE_CHARGERS_QUERY: &[Param] = &[CONNECTED, LIMIT, OFFSET];
pub(crate) const CHARGERS_QUERY: &[Param] =
    &[Param { name: "site", kind: Kind::Text, description: "Only this site's chargers." }, CONNECTED, LIMIT, OFFSET];
const SESSION_FILTERS: [Param; 4] = [
    Param { name: "station", kind: Kind::Text, description: "Only sessions of this charging station." },
    Param { name: "from", description: "Only sessions started at or after this time (RFC 3339).", ..FROM },
    Param { name: "to", description: "Only sessions started before this time (RFC 3339).", ..TO },
    Param {
        name: "active",
        kind: Kind::Bool,
        description: "Only active sessions (true: no stop seen yet) or finished ones (false).",
    },
];
pub(crate) const SITE_SESSIONS_QUERY: &[Param] =
    &[SESSION_FILTERS[0], SESSION_FILTERS[1], SESSION_FILTERS[2], SESSION_FILTERS[3], LIMIT, OFFSET];
pub(crate) const SESSIONS_QUERY: &[Param] = &[
    Param { name: "site", kind: Kind::Text, description: "Only this site's sessions." },
    SESSION_FILTERS[0],
    SESSION_FILTERS[1],
    SESSION_FILTERS[2],
    SESSION_FILTERS[3],
    LIMIT,
    OFFSET,
];
pub(crate) const SAMPLES_QUERY: &[Param] = &[
    Param { description: "Samples at or after this time (RFC 3339). Default: the earliest.", ..FROM },
    Param { description: "Samples before this time (RFC 3339). Default: no end.", ..TO },
    Param {
        name: "measurand",
        kind: Kind::Text,
        description: "Only this measurand, e.g. Energy.Active.Import.Register or Power.Active.Import.",
    },
    Param { name: "transaction_uid", kind: Kind::Text, description: "Only samples of this session." },
    SAMPLE_LIMIT,
    OFFSET,
];
pub(crate) const COMMANDS_QUERY: &[Param] = &[
    Param {
        name: "status",
        kind: Kind::OneOf(&["sent", "answered", "unanswered"]),
        description: "Only commands with this status.",
    },
    LIMIT,
    OFFSET,
];

/// Every route of the API. The router, the role checks and the OpenAPI document are
/// all made from this list.
pub fn routes() -> Vec<Route> {
    use Role::{Admin, FleetManager, Viewer};
    use Verb::{Get, Post};
    use handlers::*;
    let mut routes = vec![
        route(
            Get,
            "/sites",
            Viewer,
            list_sites,
            doc("listSites", "sites", "List sites", (200, "SitePage"))
                .query(SITES_QUERY)
                .describe("Sites by id, with how far their events are applied and whether they are online."),
        ),
        route(
            Get,
            "/sites/{site}",
            Viewer,
            get_site,
            doc("getSite", "sites", "Get a site", (200, "Site")).describe(
                "`online` comes from the site's retained presence (`up/status`, its MQTT last will says \
                 false); `last_hello_at` from its last (re)connect.",
            ),
        ),
        route(
            Get,
            "/sites/{site}/energy",
            Viewer,
            get_site_energy,
            doc("getSiteEnergy", "sites", "A site's power per phase against its limits", (200, "SiteEnergy")).describe(
                "The newest `site_energy` report of the site's edge (on a cadence, default 15 s, and at once \
                     when its load balancer's fail-safe state changes): every circuit's meter reading per phase, \
                     every limit on it (fuse, power limit, grid operator cap or its safe values, active \
                     schedule periods), the allocations and the fail-safe state. `report` and `received_at` are null \
                     until the site reports.",
            ),
        ),
        route(
            Get,
            "/sites/{site}/chargers",
            Viewer,
            list_site_chargers,
            doc("listSiteChargers", "chargers", "List a site's chargers with live status", (200, "ChargerPage"))
                .query(SITE_CHARGERS_QUERY),
        ),
        route(
            Get,
            "/sites/{site}/chargers/{station}",
            Viewer,
            get_charger,
            doc("getCharger", "chargers", "Get a charger with its connectors", (200, "Charger")),
        ),
        route(
            Get,
            "/sites/{site}/chargers/{station}/connectors",
            Viewer,
            list_connectors,
            doc(
                "listConnectors",
                "chargers",
                "List a charger's connectors and their last status",
                (200, "ConnectorList"),
            ),
        ),
        route(
            Get,
            "/sites/{site}/chargers/{station}/meter-samples",
            Viewer,
            list_meter_samples,
            doc(
                "listMeterSamples",
                "meter series",
                "A charger's meter series over a time range",
                (200, "MeterSamplePage"),
            )
            .query(SAMPLES_QUERY)
            .describe(
                "Every sampled value in `[from, to)`, oldest first, as sent (`value`) and in the base unit \
                     (`value_num`: Wh, W, A, V). Served by the (site, station, time) index.",
            ),
        ),
        route(
            Get,
            "/chargers",
            Viewer,
            list_chargers,
            doc("listChargers", "chargers", "List chargers across sites with live status", (200, "ChargerPage"))
                .query(CHARGERS_QUERY),
        ),
        route(
            Get,
            "/sessions",
            Viewer,
            list_sessions,
            doc("listSessions", "sessions", "List charging sessions across sites", (200, "SessionPage"))
                .query(SESSIONS_QUERY)
                .describe(
                    "Newest start first; sessions whose start the hub has not seen yet come last (and are left \
                     out by `from` / `to`).",
                ),
        ),
        route(
            Get,
            "/sites/{site}/sessions",
            Viewer,
            list_site_sessions,
            doc("listSiteSessions", "sessions", "List a site's charging sessions", (200, "SessionPage"))
                .query(SITE_SESSIONS_QUERY),
        ),
        route(
            Get,
            "/sites/{site}/sessions/{transaction_uid}",
            Viewer,
            get_session,
            doc("getSession", "sessions", "Get a charging session", (200, "Session")),
        ),
        route(
            Post,
            "/sites/{site}/commands",
            FleetManager,
            send_command,
            doc("sendCommand", "commands", "Send a command to a site", (202, "CommandAccepted"))
                .body("CommandRequest")
                .describe(
                    "The body is a command (`type` and its fields) with an optional `expires_in_s` (1 to 604800; \
                     default from the hub's `[api] command_expiry_s`). The command is stored, published to the \
                     site (MQTT QoS 1), and published again each time the site reconnects until its result \
                     arrives or it expires; the site runs each command once. Follow it at `location`.",
                ),
        ),
        route(
            Get,
            "/sites/{site}/commands",
            Viewer,
            list_site_commands,
            doc("listSiteCommands", "commands", "List a site's commands, newest first", (200, "CommandPage"))
                .query(COMMANDS_QUERY),
        ),
        route(
            Get,
            "/commands/{command_id}",
            Viewer,
            get_command,
            doc("getCommand", "commands", "Get a command's status and result", (200, "CommandStatus")),
        ),
        route(
            Get,
            "/api-keys",
            Admin,
            list_api_keys,
            doc("listApiKeys", "api keys", "List the API keys (never their tokens)", (200, "ApiKeyList")),
        ),
        route(
            Get,
            "/openapi.json",
            Viewer,
            get_openapi,
            doc("getOpenApi", "meta", "This document", (200, "OpenApiDocument")).describe(
                "Authenticated like every `/api/v1` route (any role). `cloud-hub openapi` prints the same \
                 document without a running hub or a key.",
            ),
        ),
    ];
    routes.extend(billing_routes());
    routes
}

/// The billing routes (handlers in [`crate::billing::api`]).
fn billing_routes() -> Vec<Route> {
    use crate::billing::api::*;
    use Role::{Admin, FleetManager, Viewer};
    use Verb::{Get, Post, Put};
    vec![
        route(
            Get,
            "/tariffs",
            Viewer,
            list_tariffs,
            doc("listTariffs", "billing", "List tariffs", (200, "TariffPage")).query(TARIFFS_QUERY),
        ),
        route(
            Get,
            "/tariffs/{tariff_id}",
            Viewer,
            get_tariff,
            doc("getTariff", "billing", "Get a tariff", (200, "Tariff")),
        ),
        route(
            Put,
            "/tariffs/{tariff_id}",
            Admin,
            put_tariff,
            doc("putTariff", "billing", "Create or change a tariff", (200, "TariffStored")).body("Tariff").describe(
                "The body is an OCPI 2.2.1 Tariff (its `id` the path's); the tariff engine checks it (currency, \
                 elements, components, restrictions) and a 422 says what is wrong. 201 when created. \
                 `last_updated` is set by the hub and moves only when the content changes. The sites whose \
                 tariff in force it is are sent the new version (SetTariff).",
            ),
        ),
        route(
            Get,
            "/sites/{site}/tariffs",
            Viewer,
            list_site_tariffs,
            doc("listSiteTariffs", "billing", "A site's tariffs over time", (200, "SiteTariffList")),
        ),
        route(
            Post,
            "/sites/{site}/tariffs",
            FleetManager,
            assign_site_tariff,
            doc("assignSiteTariff", "billing", "Give a site a tariff", (201, "SiteTariffAssigned"))
                .body("SiteTariffRequest")
                .describe(
                    "Sessions that start at or after `valid_from` are priced with it, in `time_zone`; the \
                     tariff is sent to the site (SetTariff) for its installer page and receipts.",
                ),
        ),
        route(
            Get,
            "/customers",
            Viewer,
            list_customers,
            doc("listCustomers", "billing", "List customers", (200, "CustomerPage")).query(CUSTOMERS_QUERY),
        ),
        route(
            Post,
            "/customers",
            FleetManager,
            add_customer,
            doc("addCustomer", "billing", "Add a customer", (201, "Customer")).body("CustomerRequest"),
        ),
        route(
            Get,
            "/customers/{customer_id}",
            Viewer,
            get_customer,
            doc("getCustomer", "billing", "Get a customer with its id tags", (200, "Customer")),
        ),
        route(
            Post,
            "/customers/{customer_id}/id-tags",
            FleetManager,
            add_customer_id_tag,
            doc("addCustomerIdTag", "billing", "Bill an id tag's sessions to the customer", (200, "Customer"))
                .body("IdTagRequest"),
        ),
        route(
            Get,
            "/cdrs",
            Viewer,
            list_cdrs,
            doc("listCdrs", "billing", "List CDRs, newest end first", (200, "CdrPage")).query(CDRS_QUERY),
        ),
        route(Get, "/cdrs/{cdr_id}", Viewer, get_cdr, doc("getCdr", "billing", "Get a CDR", (200, "Cdr"))),
        route(
            Post,
            "/cdrs/{cdr_id}/credit",
            Admin,
            credit_cdr,
            doc("creditCdr", "billing", "Credit a CDR", (201, "Cdr")).body("CreditRequest").describe(
                "Issues a credit CDR cancelling the debit CDR (a refund); 409 when it is a credit or already \
                 credited. CDRs are never changed or deleted.",
            ),
        ),
        route(
            Post,
            "/invoices",
            FleetManager,
            create_invoice,
            doc("createInvoice", "billing", "Invoice a customer's period", (201, "Invoice"))
                .body("InvoiceRequest")
                .describe(
                    "Every CDR of the customer that ended in [from, to) and is on no invoice yet; 409 when there is \
                 none, 422 when they are in several currencies.",
                ),
        ),
        route(
            Get,
            "/invoices",
            Viewer,
            list_invoices,
            doc("listInvoices", "billing", "List invoices, newest first", (200, "InvoicePage")).query(INVOICES_QUERY),
        ),
        route(
            Get,
            "/invoices/{invoice_id}",
            Viewer,
            get_invoice,
            doc("getInvoice", "billing", "Get an invoice", (200, "Invoice")),
        ),
        route(
            Get,
            "/invoices/{invoice_id}/document",
            Viewer,
            get_invoice_document,
            doc("getInvoiceDocument", "billing", "The invoice as a printable page", (200, HTML_DOCUMENT)),
        ),
    ]
}

/// The API router (to be nested at [`PREFIX`]).
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let needed = r.role;
        let label: Arc<str> = format!("{} {PREFIX}{}", r.verb.method(), r.path).into();
        let metrics = state.metrics.clone();
        let handler = r.handler.route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let (label, metrics) = (label.clone(), metrics.clone());
            async move { authorize(needed, &label, &metrics, req, next).await }
        }));
        router = router.route(r.path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// The caller's key (put there by the authentication layer of [`router`]).
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKey);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ApiKey>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::unauthorized("this route needs an API key", false))
    }
}

/// Checks the bearer token of every request under `/api/v1`.
async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let refuse = |state: &ApiState, e: ApiError| {
        state.metrics.api_refused.get_or_create(&crate::metrics::ReasonLabels { reason: "unauthenticated" }).inc();
        e.into_response()
    };
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return refuse(
            &state,
            ApiError::unauthorized(
                "no Authorization header: send `Authorization: Bearer <API key>` (keys are made with \
                 `cloud-hub apikey add`)",
                false,
            ),
        );
    };
    let Ok(value) = value.to_str() else {
        return refuse(&state, ApiError::unauthorized("the Authorization header is not ASCII text", false));
    };
    let token = match auth::parse_bearer(value) {
        Ok(t) => t,
        Err(reason) => return refuse(&state, ApiError::unauthorized(reason, false)),
    };
    let key = match auth::authenticate(&state.store, token).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return refuse(&state, ApiError::unauthorized("the API key is not valid (unknown or revoked)", true));
        }
        Err(e) => return ApiError::db("checking the API key", &e).into_response(),
    };
    if state.should_touch(&key.id) {
        let (store, id) = (state.store.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = auth::touch(&store, &id, chrono::Utc::now()).await {
                tracing::debug!(error = %e, "cannot note an API key's use");
            }
        });
    }
    req.extensions_mut().insert(key);
    next.run(req).await
}

/// Checks the caller's role against the route's.
async fn authorize(needed: Role, route: &str, metrics: &Metrics, req: Request, next: Next) -> Response {
    let Some(key) = req.extensions().get::<ApiKey>() else {
        return ApiError::unauthorized("this route needs an API key", false).into_response();
    };
    if !key.role.allows(needed) {
        let allowed: Vec<&str> = Role::ALL.iter().filter(|r| r.allows(needed)).map(|r| r.as_str()).collect();
        tracing::info!(key = key.name, role = %key.role, route, "fleet API: role does not allow the route");
        metrics.api_refused.get_or_create(&crate::metrics::ReasonLabels { reason: "forbidden" }).inc();
        return ApiError::forbidden(format!(
            "the API key {:?} has the role {}; {route} needs the role {}",
            key.name,
            key.role,
            allowed.join(" or ")
        ))
        .into_response();
    }
    next.run(req).await
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!("no route {}: see {PREFIX}/openapi.json", uri.path()))
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}: see {PREFIX}/openapi.json", uri.path()),
    )
}
