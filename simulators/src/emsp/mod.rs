//! A simulated OCPI 2.2.1 eMSP: the roaming peer of the hub's CPO interface in tests and
//! the demo.
//!
//! It serves (on its own axum server, port 0 unless told otherwise) versions, version
//! details, credentials (a CPO registers with the token A it issued, or it registers with
//! a CPO given the CPO's versions URL and token A), a locations Receiver that records
//! every PUT / PATCH and applies it to its copy of the locations, a tokens Sender
//! (`GET tokens`) and real-time authorization (`POST tokens/{uid}/authorize`) answering
//! per token what it was told. As a client it crawls the CPO's locations page by page,
//! following the `Link` headers, pushes tokens, rotates its credentials and unregisters.
//!
//! Commands and charging profiles: it sends them to the CPO's Receivers
//! ([`Emsp::command`], [`Emsp::charging_profile`]) with a `response_url` of its own
//! ([`Emsp::response_url`]), where it records every asynchronous result the CPO POSTs
//! ([`Emsp::results_at`], [`Emsp::wait_for_result`]); [`Emsp::fail_next_results`] makes it
//! refuse some first, to see the CPO retry.
//!
//! [`VersionsMode`] makes it misbehave on purpose, for the CPO's error paths.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use simulators::emsp::{Emsp, EmspConfig};
//! let emsp = Emsp::start(EmspConfig::default()).await?;
//! emsp.register("http://127.0.0.1:8080/ocpi/versions", "token-a-from-the-cpo").await?;
//! let crawl = emsp.crawl_locations(Some(100), None).await?;
//! println!("{} locations in {} pages", crawl.locations.len(), crawl.pages.len());
//! # Ok(()) }
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use chrono::Utc;
use serde_json::{Value, json};
use shared_model::ocpi::{
    AuthorizationInfo, BusinessDetails, Credentials, CredentialsRole, Endpoint, Envelope, Token, VERSION, Version,
    VersionDetails, status, timestamp,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How the versions endpoints behave (for the CPO's error paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionsMode {
    #[default]
    Normal,
    /// `GET versions` answers HTML, not an OCPI envelope.
    Garbage,
    /// Only version 2.1.1 is offered.
    OnlyOldVersion,
    /// The 2.2.1 details have no credentials endpoint.
    NoCredentialsEndpoint,
}

/// Who the simulated eMSP is.
#[derive(Debug, Clone)]
pub struct EmspConfig {
    pub listen: SocketAddr,
    pub country_code: String,
    pub party_id: String,
    pub name: String,
    /// Send tokens raw instead of base64 (an OCPI 2.1-era peer).
    pub raw_tokens: bool,
    pub versions_mode: VersionsMode,
}

impl Default for EmspConfig {
    fn default() -> Self {
        EmspConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            country_code: "NL".to_owned(),
            party_id: "EMS".to_owned(),
            name: "Simulated eMSP".to_owned(),
            raw_tokens: false,
            versions_mode: VersionsMode::Normal,
        }
    }
}

/// What the eMSP answers to a real-time authorization of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAnswer {
    Allowed,
    Blocked,
    /// Answers 2002 (not enough information) unless the request names a location.
    NeedsLocation,
}

/// One push received on a Receiver (locations, tariffs, sessions, cdrs).
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// `locations`, `tariffs`, `sessions` or `cdrs`.
    pub module: String,
    pub method: String,
    /// The path below the module: `{country_code}/{party_id}/{location_id}[/{evse_uid}[/{connector_id}]]`
    /// for locations, `{country_code}/{party_id}/{tariff_id}` for tariffs,
    /// `{country_code}/{party_id}/{session_id}` for sessions, empty for a CDR POST.
    pub path: String,
    pub body: Value,
    /// The body as it came (numbers with their digits, e.g. a CDR's prices).
    pub raw: String,
}

/// One page of a crawl.
#[derive(Debug, Clone, PartialEq)]
pub struct PageInfo {
    pub url: String,
    pub count: usize,
    pub total: Option<u64>,
    pub limit: Option<u64>,
    pub next: Option<String>,
}

/// A whole crawl.
#[derive(Debug, Clone, Default)]
pub struct Crawl {
    pub pages: Vec<PageInfo>,
    /// The objects crawled (Locations for `crawl_locations`, else the module's objects).
    pub locations: Vec<Value>,
}

/// The CPO as the eMSP knows it.
#[derive(Debug, Clone)]
pub struct CpoPeer {
    pub versions_url: String,
    pub details: VersionDetails,
    /// The token the eMSP calls the CPO with.
    pub token: String,
    pub country_code: String,
    pub party_id: String,
}

/// An answer to a raw request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub http: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Why an eMSP action failed.
#[derive(Debug, thiserror::Error)]
pub enum EmspError {
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{url}: HTTP {http}, OCPI status {code:?}: {message}")]
    Refused { url: String, http: u16, code: Option<u16>, message: String },
    #[error("not registered with a CPO")]
    NotRegistered,
    #[error("the CPO has no {0} endpoint")]
    NoEndpoint(&'static str),
}

#[derive(Default)]
struct Inner {
    /// Tokens the CPO may call us with.
    accepted: HashSet<String>,
    cpo: Option<CpoPeer>,
    pushes: Vec<Push>,
    locations: BTreeMap<String, Value>,
    answers: HashMap<String, AuthAnswer>,
    authorizations: Vec<(String, Option<Value>)>,
    tokens: Vec<Token>,
    /// Results POSTed to our response URLs that we accepted: (path, body).
    results: Vec<(String, Value)>,
    /// Every result POST, refused ones too: paths.
    result_attempts: Vec<String>,
    /// Result POSTs still to refuse (HTTP 503).
    fail_results: u32,
    sessions: BTreeMap<String, Value>,
    /// CDRs received, by id: the body as it came.
    cdrs: BTreeMap<String, String>,
    /// Refuse every CDR POST (HTTP 400, status 2001), as a partner whose validation
    /// rejects our CDRs until it is fixed; each refused POST is counted.
    refuse_cdrs: bool,
    cdr_refusals: usize,
}

struct Shared {
    config: EmspConfig,
    base_url: String,
    http: reqwest::Client,
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulated eMSP.
pub struct Emsp {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: std::sync::Mutex<Option<Server>>,
}

/// The HTTP server, and how to make it go away (its open connections too).
struct Server {
    task: JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn envelope(http: StatusCode, code: u16, message: Option<&str>, data: Option<Value>) -> Response {
    let body = Envelope {
        data,
        status_code: code,
        status_message: message.map(str::to_owned),
        timestamp: timestamp(Utc::now()),
    };
    (http, axum::Json(body)).into_response()
}

fn ok(data: Value) -> Response {
    envelope(StatusCode::OK, status::SUCCESS, None, Some(data))
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let raw = v.strip_prefix("Token ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|t| t.chars().all(|c| c.is_ascii_graphic()));
    Some(decoded.unwrap_or_else(|| raw.to_owned()))
}

fn fresh_token() -> String {
    format!("emsp-{}", uuid::Uuid::new_v4().simple())
}

impl Emsp {
    /// Starts the server.
    pub async fn start(config: EmspConfig) -> anyhow::Result<Emsp> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            config,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        });
        let task = serve(listener, shared.clone());
        Ok(Emsp { addr, shared, server: std::sync::Mutex::new(Some(task)) })
    }

    /// Serves again on the same address after [`Emsp::stop`], with everything it knew.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let old = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            let _ = old.stop.send(true);
            let mut task = old.task;
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let server = serve(listener, self.shared.clone());
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        Ok(())
    }

    /// The sessions as the pushes built them, by id.
    pub fn session(&self, id: &str) -> Option<Value> {
        self.shared.lock().sessions.get(id).cloned()
    }

    /// The CDRs received (POSTed), by id: the body as it came.
    pub fn cdrs(&self) -> BTreeMap<String, String> {
        self.shared.lock().cdrs.clone()
    }

    /// Our versions URL.
    pub fn versions_url(&self) -> String {
        format!("{}/ocpi/versions", self.shared.base_url)
    }

    /// A token A for a CPO to register with us.
    pub fn issue_token_a(&self) -> String {
        let t = fresh_token();
        self.shared.lock().accepted.insert(t.clone());
        t
    }

    /// The CPO, once registered either way.
    pub fn cpo(&self) -> Option<CpoPeer> {
        self.shared.lock().cpo.clone()
    }

    /// How to answer a real-time authorization of `uid`.
    pub fn set_authorization(&self, uid: &str, answer: AuthAnswer) {
        self.shared.lock().answers.insert(uid.to_owned(), answer);
    }

    /// The real-time authorizations asked for so far: `(uid, LocationReferences body)`.
    pub fn authorizations(&self) -> Vec<(String, Option<Value>)> {
        self.shared.lock().authorizations.clone()
    }

    /// Every push received so far.
    pub fn pushes(&self) -> Vec<Push> {
        self.shared.lock().pushes.clone()
    }

    /// The locations as the pushes built them, by id.
    pub fn location(&self, id: &str) -> Option<Value> {
        self.shared.lock().locations.get(id).cloned()
    }

    /// Waits until a push satisfies `f`; the push, or `None` after `timeout`.
    pub async fn wait_for_push(&self, timeout: Duration, f: impl Fn(&Push) -> bool) -> Option<Push> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(p) = self.shared.lock().pushes.iter().find(|p| f(p)).cloned() {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn authorization(&self, token: &str) -> String {
        shared_authorization(&self.shared, token)
    }

    /// A request to the CPO with the token we hold (or `token` instead); the envelope
    /// parsed when it is JSON.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Result<Answer, EmspError> {
        let token = match token {
            Some(t) => t.to_owned(),
            None => self.cpo().ok_or(EmspError::NotRegistered)?.token,
        };
        let mut req = self.shared.http.request(method, url).header("authorization", self.authorization(&token));
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await?;
        let http = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { http, headers, body })
    }

    async fn call(&self, method: Method, url: &str, token: &str, body: Option<&Value>) -> Result<Value, EmspError> {
        let a = self.request(method, url, body, Some(token)).await?;
        let code = a.body.get("status_code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
        if a.http != 200 || code != Some(status::SUCCESS) {
            let message = a.body.get("status_message").and_then(Value::as_str).unwrap_or_default().to_owned();
            return Err(EmspError::Refused { url: url.to_owned(), http: a.http, code, message });
        }
        Ok(a.body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Registers with a CPO given its versions URL and the token A it gave us.
    pub async fn register(&self, versions_url: &str, token_a: &str) -> Result<CpoPeer, EmspError> {
        let details = discover(&self.shared, versions_url, token_a).await?;
        let url = details.url("credentials", "SENDER").ok_or(EmspError::NoEndpoint("credentials"))?.to_owned();
        let token_b = fresh_token();
        self.shared.lock().accepted.insert(token_b.clone());
        let ours = serde_json::to_value(our_credentials(&self.shared, &token_b)).unwrap_or(Value::Null);
        let data = self.call(Method::POST, &url, token_a, Some(&ours)).await?;
        let theirs: Credentials = serde_json::from_value(data).map_err(|e| EmspError::Refused {
            url: url.clone(),
            http: 200,
            code: None,
            message: format!("not credentials: {e}"),
        })?;
        let peer = peer_from(&theirs, details);
        self.shared.lock().cpo = Some(peer.clone());
        Ok(peer)
    }

    /// Rotates from our side: PUT with a fresh token for the CPO to call us with; the
    /// CPO's answer is the token we call it with from now on. Our previous token stays
    /// accepted (the CPO may still have requests under way with it).
    pub async fn rotate(&self) -> Result<String, EmspError> {
        let cpo = self.cpo().ok_or(EmspError::NotRegistered)?;
        let url = cpo.details.url("credentials", "SENDER").ok_or(EmspError::NoEndpoint("credentials"))?.to_owned();
        let token_b = fresh_token();
        self.shared.lock().accepted.insert(token_b.clone());
        let ours = serde_json::to_value(our_credentials(&self.shared, &token_b)).unwrap_or(Value::Null);
        let data = self.call(Method::PUT, &url, &cpo.token, Some(&ours)).await?;
        let theirs: Credentials = serde_json::from_value(data).map_err(|e| EmspError::Refused {
            url,
            http: 200,
            code: None,
            message: format!("not credentials: {e}"),
        })?;
        if let Some(c) = self.shared.lock().cpo.as_mut() {
            c.token = theirs.token.clone();
        }
        Ok(theirs.token)
    }

    /// Unregisters from the CPO (DELETE credentials); forgets it whatever it answers.
    pub async fn unregister(&self) -> Result<(), EmspError> {
        let cpo = self.cpo().ok_or(EmspError::NotRegistered)?;
        let url = cpo.details.url("credentials", "SENDER").ok_or(EmspError::NoEndpoint("credentials"))?.to_owned();
        let result = self.call(Method::DELETE, &url, &cpo.token, None).await;
        self.shared.lock().cpo = None;
        result.map(|_| ())
    }

    /// Crawls the CPO's locations from the first page, following `Link: <...>; rel="next"`.
    pub async fn crawl_locations(&self, limit: Option<u64>, date_from: Option<&str>) -> Result<Crawl, EmspError> {
        self.crawl("locations", limit, date_from).await
    }

    /// Crawls a Sender module's list (`locations`, `tariffs`, ...) from the first page,
    /// following `Link: <...>; rel="next"`; the objects are in [`Crawl::locations`].
    pub async fn crawl(
        &self,
        module: &'static str,
        limit: Option<u64>,
        date_from: Option<&str>,
    ) -> Result<Crawl, EmspError> {
        let cpo = self.cpo().ok_or(EmspError::NotRegistered)?;
        let base = cpo.details.url(module, "SENDER").ok_or(EmspError::NoEndpoint(module))?;
        let mut query = Vec::new();
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        if let Some(d) = date_from {
            query.push(format!("date_from={d}"));
        }
        let mut next = Some(if query.is_empty() { base.to_owned() } else { format!("{base}?{}", query.join("&")) });
        let mut crawl = Crawl::default();
        while let Some(url) = next.take() {
            let a = self.request(Method::GET, &url, None, Some(&cpo.token)).await?;
            let code = a.body.get("status_code").and_then(Value::as_u64);
            if a.http != 200 || code != Some(u64::from(status::SUCCESS)) {
                return Err(EmspError::Refused {
                    url,
                    http: a.http,
                    code: code.and_then(|c| u16::try_from(c).ok()),
                    message: a.body.to_string(),
                });
            }
            let items = a.body.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
            let h = |name: &str| a.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let link = h("link").and_then(|l| parse_next_link(&l));
            crawl.pages.push(PageInfo {
                url,
                count: items.len(),
                total: h("x-total-count").and_then(|v| v.parse().ok()),
                limit: h("x-limit").and_then(|v| v.parse().ok()),
                next: link.clone(),
            });
            crawl.locations.extend(items);
            next = link;
        }
        Ok(crawl)
    }

    /// Pushes a token to the CPO's tokens Receiver (PUT).
    pub async fn push_token(&self, token: &Token) -> Result<(), EmspError> {
        let cpo = self.cpo().ok_or(EmspError::NotRegistered)?;
        let base = cpo.details.url("tokens", "RECEIVER").ok_or(EmspError::NoEndpoint("tokens"))?;
        let url = format!("{base}/{}/{}/{}?type={}", token.country_code, token.party_id, token.uid, token.token_type);
        let body = serde_json::to_value(token).unwrap_or(Value::Null);
        self.call(Method::PUT, &url, &cpo.token, Some(&body)).await?;
        self.shared.lock().tokens.push(token.clone());
        Ok(())
    }

    /// A token of ours, valid and whitelisted ALLOWED.
    pub fn token(&self, uid: &str) -> Token {
        Token {
            country_code: self.shared.config.country_code.clone(),
            party_id: self.shared.config.party_id.clone(),
            uid: uid.to_owned(),
            token_type: "RFID".to_owned(),
            contract_id: format!("{}-{}-{uid}", self.shared.config.country_code, self.shared.config.party_id),
            issuer: self.shared.config.name.clone(),
            valid: true,
            whitelist: "ALLOWED".to_owned(),
            last_updated: timestamp(Utc::now()),
            extra: serde_json::Map::new(),
        }
    }

    /// A fresh `response_url` of ours for a request to the CPO's `module` (`commands`,
    /// `chargingprofiles`).
    pub fn response_url(&self, module: &str) -> String {
        format!("{}/ocpi/{VERSION}/{module}/{}", self.shared.base_url, uuid::Uuid::new_v4().simple())
    }

    /// `POST {commands Receiver}/{command}` with `body`.
    pub async fn command(&self, command: &str, body: &Value) -> Result<Answer, EmspError> {
        let cpo = self.cpo().ok_or(EmspError::NotRegistered)?;
        let base = cpo.details.url("commands", "RECEIVER").ok_or(EmspError::NoEndpoint("commands"))?;
        self.request(Method::POST, &format!("{base}/{command}"), Some(body), Some(&cpo.token)).await
    }

    /// A request to `{chargingprofiles Receiver}/{session_id}[?query]`.
    pub async fn charging_profile(
        &self,
        method: Method,
        session_id: &str,
        query: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, EmspError> {
        let cpo = self.cpo().ok_or(EmspError::NotRegistered)?;
        let base = cpo.details.url("chargingprofiles", "RECEIVER").ok_or(EmspError::NoEndpoint("chargingprofiles"))?;
        let url = match query {
            Some(q) => format!("{base}/{session_id}?{q}"),
            None => format!("{base}/{session_id}"),
        };
        self.request(method, &url, body, Some(&cpo.token)).await
    }

    /// The results accepted at `response_url`, in order.
    pub fn results_at(&self, response_url: &str) -> Vec<Value> {
        let path = path_of(response_url);
        self.shared.lock().results.iter().filter(|(p, _)| *p == path).map(|(_, b)| b.clone()).collect()
    }

    /// How many POSTs reached `response_url`, refused ones included.
    pub fn result_attempts(&self, response_url: &str) -> usize {
        let path = path_of(response_url);
        self.shared.lock().result_attempts.iter().filter(|p| **p == path).count()
    }

    /// Waits for the first result accepted at `response_url`; `None` after `timeout`.
    pub async fn wait_for_result(&self, response_url: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(r) = self.results_at(response_url).into_iter().next() {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Refuses every CDR POST from now on (`true`, HTTP 400 with status 2001) or takes
    /// them again (`false`).
    pub fn refuse_cdrs(&self, refuse: bool) {
        self.shared.lock().refuse_cdrs = refuse;
    }

    /// How many CDR POSTs were refused so far.
    pub fn cdr_refusals(&self) -> usize {
        self.shared.lock().cdr_refusals
    }

    /// Refuses the next `n` result POSTs (HTTP 503, status 3000), as a partner that is
    /// briefly down.
    pub fn fail_next_results(&self, n: u32) {
        self.shared.lock().fail_results = n;
    }

    /// Stops the server: it accepts no connection and closes the open ones (after
    /// answering what they are sending) until [`Emsp::resume`].
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = server.stop.send(true);
        }
    }
}

impl Drop for Emsp {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = server.stop.send(true);
            server.task.abort();
        }
    }
}

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Server {
    let v = format!("/ocpi/{VERSION}");
    let app = Router::new()
        .route("/ocpi/versions", get(versions))
        .route(&v, get(details))
        .route(
            &format!("{v}/credentials"),
            get(get_credentials).post(post_credentials).put(put_credentials).delete(delete_credentials),
        )
        .route(&format!("{v}/locations/{{*rest}}"), put(receive_location).patch(receive_location))
        .route(&format!("{v}/tariffs/{{*rest}}"), put(receive_tariff))
        .route(&format!("{v}/sessions/{{*rest}}"), put(receive_session).patch(receive_session))
        .route(&format!("{v}/cdrs"), post(receive_cdr))
        .route(&format!("{v}/cdrs/{{id}}"), get(stored_cdr))
        .route(&format!("{v}/tokens"), get(list_tokens))
        .route(&format!("{v}/tokens/{{uid}}/authorize"), post(authorize))
        .route(&format!("{v}/commands/{{*rest}}"), post(receive_result))
        .route(&format!("{v}/chargingprofiles/{{*rest}}"), post(receive_result))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "eMSP simulator stopped");
        }
    });
    Server { task, stop }
}

fn shared_authorization(shared: &Shared, token: &str) -> String {
    if shared.config.raw_tokens {
        format!("Token {token}")
    } else {
        format!("Token {}", base64::engine::general_purpose::STANDARD.encode(token))
    }
}

/// The URL of a `Link` header's `rel="next"`.
pub fn parse_next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        part.get(start..end).map(str::to_owned)
    })
}

fn our_credentials(shared: &Shared, token: &str) -> Credentials {
    Credentials {
        token: token.to_owned(),
        url: format!("{}/ocpi/versions", shared.base_url),
        roles: vec![CredentialsRole {
            role: "EMSP".to_owned(),
            business_details: BusinessDetails { name: shared.config.name.clone(), website: None },
            party_id: shared.config.party_id.clone(),
            country_code: shared.config.country_code.clone(),
        }],
    }
}

fn peer_from(c: &Credentials, details: VersionDetails) -> CpoPeer {
    let role = c.roles.iter().find(|r| r.role == "CPO").or(c.roles.first());
    CpoPeer {
        versions_url: c.url.clone(),
        details,
        token: c.token.clone(),
        country_code: role.map(|r| r.country_code.clone()).unwrap_or_default(),
        party_id: role.map(|r| r.party_id.clone()).unwrap_or_default(),
    }
}

async fn fetch_data(shared: &Shared, url: &str, token: &str) -> Result<Value, EmspError> {
    let res = shared.http.get(url).header("authorization", shared_authorization(shared, token)).send().await?;
    let http = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body.get("status_code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    if http != 200 || code != Some(status::SUCCESS) {
        let message = body.get("status_message").and_then(Value::as_str).unwrap_or_default().to_owned();
        return Err(EmspError::Refused { url: url.to_owned(), http, code, message });
    }
    Ok(body.get("data").cloned().unwrap_or(Value::Null))
}

async fn discover(shared: &Shared, versions_url: &str, token: &str) -> Result<VersionDetails, EmspError> {
    let refused =
        |url: &str, message: String| EmspError::Refused { url: url.to_owned(), http: 200, code: None, message };
    let versions: Vec<Version> = serde_json::from_value(fetch_data(shared, versions_url, token).await?)
        .map_err(|e| refused(versions_url, e.to_string()))?;
    let v = versions
        .iter()
        .find(|v| v.version == VERSION)
        .ok_or_else(|| refused(versions_url, format!("no version {VERSION}")))?;
    serde_json::from_value(fetch_data(shared, &v.url, token).await?).map_err(|e| refused(&v.url, e.to_string()))
}

async fn authenticate(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(token) = header_token(req.headers()) else {
        return envelope(StatusCode::UNAUTHORIZED, status::CLIENT_ERROR, Some("no Token authorization"), None);
    };
    if !shared.lock().accepted.contains(&token) {
        return envelope(StatusCode::UNAUTHORIZED, status::CLIENT_ERROR, Some("unknown token"), None);
    }
    next.run(req).await
}

async fn versions(State(shared): State<Arc<Shared>>) -> Response {
    match shared.config.versions_mode {
        VersionsMode::Garbage => (StatusCode::OK, "<html>this is not OCPI</html>").into_response(),
        VersionsMode::OnlyOldVersion => {
            ok(json!([{ "version": "2.1.1", "url": format!("{}/ocpi/2.1.1", shared.base_url) }]))
        }
        _ => ok(json!([{ "version": VERSION, "url": format!("{}/ocpi/{VERSION}", shared.base_url) }])),
    }
}

async fn details(State(shared): State<Arc<Shared>>) -> Response {
    let base = format!("{}/ocpi/{VERSION}", shared.base_url);
    let e = |identifier: &str, role: &str, path: &str| Endpoint {
        identifier: identifier.to_owned(),
        role: role.to_owned(),
        url: format!("{base}/{path}"),
    };
    let mut endpoints = vec![
        e("commands", "SENDER", "commands"),
        e("locations", "RECEIVER", "locations"),
        e("tariffs", "RECEIVER", "tariffs"),
        e("sessions", "RECEIVER", "sessions"),
        e("cdrs", "RECEIVER", "cdrs"),
        e("tokens", "SENDER", "tokens"),
    ];
    if shared.config.versions_mode != VersionsMode::NoCredentialsEndpoint {
        endpoints.push(e("credentials", "SENDER", "credentials"));
        endpoints.push(e("credentials", "RECEIVER", "credentials"));
    }
    ok(serde_json::to_value(VersionDetails { version: VERSION.to_owned(), endpoints }).unwrap_or(Value::Null))
}

async fn get_credentials(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = header_token(&headers).unwrap_or_default();
    ok(serde_json::to_value(our_credentials(&shared, &token)).unwrap_or(Value::Null))
}

/// A CPO registers (POST) or rotates (PUT): read its versions with its token, answer ours.
async fn take_credentials(shared: Arc<Shared>, headers: HeaderMap, body: Bytes, update: bool) -> Response {
    let Ok(theirs) = serde_json::from_slice::<Credentials>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("not a Credentials object"), None);
    };
    let registered = shared.lock().cpo.is_some();
    if registered != update {
        return envelope(StatusCode::METHOD_NOT_ALLOWED, status::CLIENT_ERROR, Some("wrong registration state"), None);
    }
    let details = match discover(&shared, &theirs.url, &theirs.token).await {
        Ok(d) => d,
        Err(e) => return envelope(StatusCode::OK, status::UNABLE_TO_USE_CLIENT_API, Some(&e.to_string()), None),
    };
    let token_c = fresh_token();
    {
        let mut inner = shared.lock();
        // Token A (or our previous token) is used up; keep only the one in this request
        // for a moment longer when rotating.
        if !update {
            inner.accepted.clear();
        } else if let Some(old) = header_token(&headers) {
            inner.accepted.retain(|t| t == &old);
        }
        inner.accepted.insert(token_c.clone());
        inner.cpo = Some(peer_from(&theirs, details));
    }
    ok(serde_json::to_value(our_credentials(&shared, &token_c)).unwrap_or(Value::Null))
}

async fn post_credentials(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    take_credentials(shared, headers, body, false).await
}

async fn put_credentials(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    take_credentials(shared, headers, body, true).await
}

async fn delete_credentials(State(shared): State<Arc<Shared>>) -> Response {
    let mut inner = shared.lock();
    inner.cpo = None;
    inner.accepted.clear();
    ok(Value::Null)
}

async fn receive_location(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("not JSON"), None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    {
        let mut inner = shared.lock();
        match (method.as_str(), parts.as_slice()) {
            ("PUT", [_, _, id]) => {
                inner.locations.insert((*id).to_owned(), body.clone());
            }
            (m, [_, _, id, uid]) => {
                if let Some(evses) =
                    inner.locations.get_mut(*id).and_then(|l| l.get_mut("evses")).and_then(Value::as_array_mut)
                {
                    match evses.iter_mut().find(|e| e.get("uid").and_then(Value::as_str) == Some(*uid)) {
                        Some(evse) if m == "PATCH" => {
                            if let (Value::Object(e), Value::Object(b)) = (evse, &body) {
                                e.extend(b.clone());
                            }
                        }
                        Some(evse) => *evse = body.clone(),
                        None => evses.push(body.clone()),
                    }
                }
            }
            _ => {}
        }
        inner.pushes.push(Push {
            module: "locations".to_owned(),
            method: method.to_string(),
            path: rest.clone(),
            body,
            raw,
        });
    }
    shared.changed.notify_waiters();
    ok(Value::Null)
}

/// `PUT tariffs/{country_code}/{party_id}/{tariff_id}`: recorded as a push.
async fn receive_tariff(State(shared): State<Arc<Shared>>, Path(rest): Path<String>, body: Bytes) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("not JSON"), None);
    };
    if rest.split('/').count() != 3 {
        return envelope(
            StatusCode::BAD_REQUEST,
            status::INVALID_PARAMETERS,
            Some("expected tariffs/{country_code}/{party_id}/{tariff_id}"),
            None,
        );
    }
    shared.lock().pushes.push(Push { module: "tariffs".to_owned(), method: "PUT".to_owned(), path: rest, body, raw });
    shared.changed.notify_waiters();
    ok(Value::Null)
}

/// The path of a URL (what the server sees of a response URL).
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned())
}

/// A CommandResult (or charging profile result) POSTed to one of our response URLs.
async fn receive_result(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let refuse = {
        let mut inner = shared.lock();
        inner.result_attempts.push(path.clone());
        if inner.fail_results > 0 {
            inner.fail_results -= 1;
            true
        } else {
            false
        }
    };
    shared.changed.notify_waiters();
    if refuse {
        return envelope(StatusCode::SERVICE_UNAVAILABLE, status::SERVER_ERROR, Some("briefly down (simulated)"), None);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("not JSON"), None);
    };
    if body.get("result").and_then(Value::as_str).is_none() {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("no result"), None);
    }
    shared.lock().results.push((path, body));
    shared.changed.notify_waiters();
    ok(Value::Null)
}

/// `PUT` / `PATCH sessions/{country_code}/{party_id}/{session_id}`: recorded as a push and
/// applied to the copy (a PATCH of a session never PUT is 2001, as a real eMSP would).
async fn receive_session(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("not JSON"), None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [_, _, id] = parts.as_slice() else {
        return envelope(
            StatusCode::BAD_REQUEST,
            status::INVALID_PARAMETERS,
            Some("expected sessions/{country_code}/{party_id}/{session_id}"),
            None,
        );
    };
    {
        let mut inner = shared.lock();
        if method == Method::PATCH {
            let Some(Value::Object(session)) = inner.sessions.get_mut(*id) else {
                return envelope(StatusCode::NOT_FOUND, status::INVALID_PARAMETERS, Some("unknown session"), None);
            };
            if let Value::Object(b) = &body {
                session.extend(b.clone());
            }
        } else {
            inner.sessions.insert((*id).to_owned(), body.clone());
        }
        inner.pushes.push(Push { module: "sessions".to_owned(), method: method.to_string(), path: rest, body, raw });
    }
    shared.changed.notify_waiters();
    ok(Value::Null)
}

/// `POST cdrs`: recorded as a push, kept as it came, answered with its `Location`.
async fn receive_cdr(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("not JSON"), None);
    };
    let Some(id) = body.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return envelope(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, Some("a CDR needs an id"), None);
    };
    {
        let mut inner = shared.lock();
        if inner.refuse_cdrs {
            inner.cdr_refusals += 1;
            drop(inner);
            shared.changed.notify_waiters();
            return envelope(
                StatusCode::BAD_REQUEST,
                status::INVALID_PARAMETERS,
                Some("CDR refused (simulated validation error)"),
                None,
            );
        }
        inner.cdrs.insert(id.clone(), raw.clone());
        inner.pushes.push(Push {
            module: "cdrs".to_owned(),
            method: "POST".to_owned(),
            path: String::new(),
            body,
            raw,
        });
    }
    shared.changed.notify_waiters();
    let mut r = ok(Value::Null);
    let location = format!("{}/ocpi/{VERSION}/cdrs/{id}", shared.base_url);
    if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
        r.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    r
}

/// `GET cdrs/{id}`: a CDR as it was POSTed.
async fn stored_cdr(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let raw = shared.lock().cdrs.get(&id).cloned();
    match raw.and_then(|r| serde_json::from_str::<Value>(&r).ok()) {
        Some(cdr) => ok(cdr),
        None => envelope(StatusCode::NOT_FOUND, status::INVALID_PARAMETERS, Some("unknown CDR"), None),
    }
}

async fn list_tokens(State(shared): State<Arc<Shared>>) -> Response {
    let tokens = shared.lock().tokens.clone();
    let mut r = ok(serde_json::to_value(tokens).unwrap_or(Value::Null));
    let count = shared.lock().tokens.len();
    r.headers_mut().insert("x-total-count", count.into());
    r
}

async fn authorize(State(shared): State<Arc<Shared>>, Path(uid): Path<String>, uri: Uri, body: Bytes) -> Response {
    let location: Option<Value> = serde_json::from_slice(&body).ok().filter(|v: &Value| v.is_object());
    let answer = {
        let mut inner = shared.lock();
        inner.authorizations.push((uid.clone(), location.clone()));
        inner.answers.get(&uid).copied()
    };
    shared.changed.notify_waiters();
    let token_type =
        uri.query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("type="))).unwrap_or("RFID").to_owned();
    let allowed = match answer {
        None => return envelope(StatusCode::NOT_FOUND, status::UNKNOWN_TOKEN, Some("unknown token"), None),
        Some(AuthAnswer::NeedsLocation) if location.is_none() => {
            return envelope(
                StatusCode::BAD_REQUEST,
                status::NOT_ENOUGH_INFORMATION,
                Some("this token needs a location to be authorized"),
                None,
            );
        }
        Some(AuthAnswer::Blocked) => "BLOCKED",
        Some(_) => "ALLOWED",
    };
    let token = Token {
        country_code: shared.config.country_code.clone(),
        party_id: shared.config.party_id.clone(),
        uid: uid.clone(),
        token_type,
        contract_id: format!("{}-{}-{uid}", shared.config.country_code, shared.config.party_id),
        issuer: shared.config.name.clone(),
        valid: true,
        whitelist: "NEVER".to_owned(),
        last_updated: timestamp(Utc::now()),
        extra: serde_json::Map::new(),
    };
    let info = AuthorizationInfo {
        allowed: allowed.to_owned(),
        token,
        authorization_reference: Some(uuid::Uuid::new_v4().simple().to_string()),
        location: location.and_then(|l| serde_json::from_value(l).ok()),
    };
    ok(serde_json::to_value(info).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_url_paths() {
        assert_eq!(path_of("http://127.0.0.1:9/ocpi/2.2.1/commands/abc"), "/ocpi/2.2.1/commands/abc");
        assert_eq!(path_of("https://h"), "/");
    }

    #[test]
    fn next_link() {
        assert_eq!(
            parse_next_link("<http://h/ocpi/2.2.1/locations?offset=100&limit=100>; rel=\"next\"").as_deref(),
            Some("http://h/ocpi/2.2.1/locations?offset=100&limit=100")
        );
        assert_eq!(parse_next_link("<http://h/x>; rel=\"prev\""), None);
    }
}
