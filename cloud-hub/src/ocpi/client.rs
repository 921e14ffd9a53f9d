//! Calls to a partner's OCPI API: versions, version details, module requests with our
//! token, the envelope checked. Failures carry the OCPI status code they amount to
//! (OCPI 2.2.1 "Status codes"): 3001 when the partner cannot be reached or answers
//! something that is not an OCPI envelope, 3002 when it speaks no version we speak,
//! 3003 when an endpoint we need is missing; a partner's own error status comes back as is.

use axum::http::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared_model::ocpi::{Envelope, VERSION, Version, VersionDetails, status};
use std::time::Duration;

use super::transport::{
    OCPI_FROM_COUNTRY, OCPI_FROM_PARTY, OCPI_TO_COUNTRY, OCPI_TO_PARTY, X_CORRELATION_ID, X_REQUEST_ID, token_header,
};

/// Why a call to a partner failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer an OCPI response: {reason}")]
    Garbage { url: String, reason: String },
    #[error("{url} answered HTTP {http} with OCPI status {code}: {message}")]
    Refused { url: String, http: u16, code: u16, message: String },
    #[error("the partner at {url} does not support OCPI {VERSION} (it offers: {offered})")]
    UnsupportedVersion { url: String, offered: String },
    #[error("the partner's version {VERSION} has no {what} endpoint")]
    NoMatchingEndpoints { what: String },
}

impl ClientError {
    /// The OCPI status code this failure amounts to.
    pub fn code(&self) -> u16 {
        match self {
            ClientError::Unreachable { .. } | ClientError::Garbage { .. } => status::UNABLE_TO_USE_CLIENT_API,
            ClientError::Refused { code, .. } => *code,
            ClientError::UnsupportedVersion { .. } => status::UNSUPPORTED_VERSION,
            ClientError::NoMatchingEndpoints { .. } => status::NO_MATCHING_ENDPOINTS,
        }
    }
}

/// Who a request goes from and to (the `OCPI-from-*` / `OCPI-to-*` headers).
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub from: Option<(String, String)>,
    pub to: Option<(String, String)>,
}

/// An HTTP client for partners (one per hub: it pools connections).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(Duration::from_secs(10))
    }
}

impl Client {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client { http }
    }

    /// One request; the envelope's `data` as `T` when the status code is 1000.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        token: &str,
        raw_token: bool,
        route: &Route,
        body: Option<&Value>,
    ) -> Result<Option<T>, ClientError> {
        let text = body.map(Value::to_string);
        self.call_text(method, url, token, raw_token, route, text.as_deref()).await.map(|(data, _)| data)
    }

    /// One request whose body is JSON text already (objects holding money are kept as
    /// text, never through a float); the envelope's `data` as `T` when the status code is
    /// 1000, and the answer's headers (a CDR POST is answered with a `Location`).
    pub async fn call_text<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        token: &str,
        raw_token: bool,
        route: &Route,
        body: Option<&str>,
    ) -> Result<(Option<T>, reqwest::header::HeaderMap), ClientError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut req = self
            .http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, token_header(token, raw_token))
            .header(X_REQUEST_ID, &request_id)
            .header(X_CORRELATION_ID, &request_id);
        if let Some((cc, pid)) = &route.from {
            req = req.header(OCPI_FROM_COUNTRY, cc).header(OCPI_FROM_PARTY, pid);
        }
        if let Some((cc, pid)) = &route.to {
            req = req.header(OCPI_TO_COUNTRY, cc).header(OCPI_TO_PARTY, pid);
        }
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_owned());
        }
        let res =
            req.send().await.map_err(|e| ClientError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
        let http = res.status().as_u16();
        let headers = res.headers().clone();
        let text =
            res.text().await.map_err(|e| ClientError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
        let envelope: Envelope<Value> = serde_json::from_str(&text).map_err(|e| ClientError::Garbage {
            url: url.to_owned(),
            reason: format!("HTTP {http}, body not an OCPI envelope ({e}): {}", snippet(&text)),
        })?;
        if envelope.status_code != status::SUCCESS || !(200..300).contains(&http) {
            return Err(ClientError::Refused {
                url: url.to_owned(),
                http,
                code: envelope.status_code,
                message: envelope.status_message.unwrap_or_default(),
            });
        }
        let data = match envelope.data {
            None | Some(Value::Null) => None,
            Some(data) => Some(serde_json::from_value(data).map_err(|e| ClientError::Garbage {
                url: url.to_owned(),
                reason: format!("the data is not what was asked for: {e}"),
            })?),
        };
        Ok((data, headers))
    }

    /// `GET versions`, then the details of [`VERSION`]: `(version URL, details)`.
    pub async fn discover(
        &self,
        versions_url: &str,
        token: &str,
        raw_token: bool,
    ) -> Result<(String, VersionDetails), ClientError> {
        let none = Route::default();
        let versions: Vec<Version> =
            self.call(Method::GET, versions_url, token, raw_token, &none, None).await?.ok_or_else(|| {
                ClientError::Garbage { url: versions_url.to_owned(), reason: "no versions listed".into() }
            })?;
        let Some(v) = versions.iter().find(|v| v.version == VERSION) else {
            let offered = versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>().join(", ");
            return Err(ClientError::UnsupportedVersion { url: versions_url.to_owned(), offered });
        };
        let details: VersionDetails = self
            .call(Method::GET, &v.url, token, raw_token, &none, None)
            .await?
            .ok_or_else(|| ClientError::Garbage { url: v.url.clone(), reason: "no version details".into() })?;
        if details.version != VERSION {
            return Err(ClientError::UnsupportedVersion { url: v.url.clone(), offered: details.version });
        }
        if !details.endpoints.iter().any(|e| e.identifier == "credentials") {
            return Err(ClientError::NoMatchingEndpoints { what: "credentials".into() });
        }
        Ok((v.url.clone(), details))
    }
}

fn snippet(text: &str) -> String {
    let s: String = text.chars().take(80).collect();
    if s.len() < text.len() { format!("{s:?}...") } else { format!("{s:?}") }
}
