//! OCPI 2.2.1 "Transport and format": the response envelope with its status codes, the
//! `Authorization: Token <base64>` header, `X-Request-ID` / `X-Correlation-ID`, the
//! `OCPI-from-*` / `OCPI-to-*` routing headers, and `offset` / `limit` / `date_from` /
//! `date_to` pagination answered with `X-Total-Count`, `X-Limit` and `Link`.

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared_model::ocpi::{Envelope, parse_timestamp, status, timestamp};

use crate::db::DbError;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");
pub const X_LIMIT: HeaderName = HeaderName::from_static("x-limit");
pub const OCPI_FROM_COUNTRY: HeaderName = HeaderName::from_static("ocpi-from-country-code");
pub const OCPI_FROM_PARTY: HeaderName = HeaderName::from_static("ocpi-from-party-id");
pub const OCPI_TO_COUNTRY: HeaderName = HeaderName::from_static("ocpi-to-country-code");
pub const OCPI_TO_PARTY: HeaderName = HeaderName::from_static("ocpi-to-party-id");

/// An OCPI error answer: the HTTP status and the envelope's status code and message.
/// Internals (SQL, driver messages) are logged, never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcpiError {
    pub http: StatusCode,
    pub code: u16,
    pub message: String,
}

pub type OcpiResult<T> = Result<T, OcpiError>;

impl OcpiError {
    pub fn new(http: StatusCode, code: u16, message: impl Into<String>) -> Self {
        OcpiError { http, code, message: message.into() }
    }

    /// 401: no token, or one no partner holds (OCPI 2.2.1 "Transport and format",
    /// Authorization header).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        OcpiError::new(StatusCode::UNAUTHORIZED, status::CLIENT_ERROR, message)
    }

    /// 2001, HTTP 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        OcpiError::new(StatusCode::BAD_REQUEST, status::INVALID_PARAMETERS, message)
    }

    /// 2003, HTTP 404.
    pub fn unknown_location(message: impl Into<String>) -> Self {
        OcpiError::new(StatusCode::NOT_FOUND, status::UNKNOWN_LOCATION, message)
    }

    /// 2004, HTTP 404.
    pub fn unknown_token(message: impl Into<String>) -> Self {
        OcpiError::new(StatusCode::NOT_FOUND, status::UNKNOWN_TOKEN, message)
    }

    /// 405 with 2000: e.g. POST credentials by a partner that is already registered
    /// (OCPI 2.2.1 "Credentials module", POST).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        OcpiError::new(StatusCode::METHOD_NOT_ALLOWED, status::CLIENT_ERROR, message)
    }

    /// 3000, HTTP 500, after logging what went wrong.
    pub fn db(doing: &str, e: &DbError) -> Self {
        tracing::error!(error = %e, "OCPI: {doing}");
        OcpiError::new(StatusCode::INTERNAL_SERVER_ERROR, status::SERVER_ERROR, format!("internal error while {doing}"))
    }
}

impl IntoResponse for OcpiError {
    fn into_response(self) -> Response {
        let body: Envelope<Value> = Envelope {
            data: None,
            status_code: self.code,
            status_message: Some(self.message),
            timestamp: timestamp(Utc::now()),
        };
        (self.http, Json(body)).into_response()
    }
}

/// A 1000 answer with `data`.
pub fn ok<T: Serialize>(data: T) -> Response {
    let body = Envelope {
        data: Some(data),
        status_code: status::SUCCESS,
        status_message: None,
        timestamp: timestamp(Utc::now()),
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// A 1000 answer whose `data` is the list of `items`, each already JSON text (stored
/// objects served as stored): the same envelope as [`ok`], without parsing them.
pub fn ok_json_list(items: &[&str]) -> Response {
    let len = items.iter().map(|i| i.len() + 1).sum::<usize>() + 96;
    let mut body = String::with_capacity(len);
    body.push_str("{\"data\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("],\"status_code\":");
    body.push_str(&status::SUCCESS.to_string());
    body.push_str(",\"timestamp\":");
    body.push_str(&serde_json::to_string(&timestamp(Utc::now())).unwrap_or_else(|_| "\"\"".to_owned()));
    body.push('}');
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A 1000 answer without data.
pub fn ok_empty() -> Response {
    let body: Envelope<Value> =
        Envelope { data: None, status_code: status::SUCCESS, status_message: None, timestamp: timestamp(Utc::now()) };
    (StatusCode::OK, Json(body)).into_response()
}

/// The tokens an `Authorization` value may stand for: `Token <base64 of the token>` as
/// OCPI 2.2.1 wants it, and the text after `Token ` as is (only accepted for partners
/// flagged `raw_tokens`, OCPI 2.1 sent tokens unencoded). `(decoded, raw)`; `Err` says
/// what is wrong with the header.
pub fn parse_token_header(value: &str) -> Result<(Option<String>, String), &'static str> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("token") {
        return Err("the Authorization header must be `Token <base64 of your token>`");
    }
    let raw = rest.trim();
    if raw.is_empty() {
        return Err("the Authorization header has the Token scheme but no token");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()));
    Ok((decoded, raw.to_owned()))
}

/// The `Authorization` value for a token we send: base64 unless the partner wants raw.
pub fn token_header(token: &str, raw: bool) -> String {
    if raw {
        format!("Token {token}")
    } else {
        format!("Token {}", base64::engine::general_purpose::STANDARD.encode(token))
    }
}

/// `offset`, `limit`, `date_from`, `date_to` of a list request (OCPI 2.2.1 "Transport
/// and format", Pagination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub offset: u64,
    /// Already capped at the server's maximum.
    pub limit: u64,
    /// Only objects with `last_updated >= date_from`.
    pub date_from: Option<DateTime<Utc>>,
    /// Only objects with `last_updated < date_to`.
    pub date_to: Option<DateTime<Utc>>,
}

impl PageRequest {
    /// Parses the query of `uri`; a bad value is a 2001 that names it. A `limit` above
    /// `max_limit` is lowered to it (the answer's `X-Limit` says so).
    pub fn parse(uri: &Uri, max_limit: u64) -> OcpiResult<PageRequest> {
        let mut page = PageRequest { offset: 0, limit: max_limit, date_from: None, date_to: None };
        for (key, value) in form_pairs(uri.query().unwrap_or("")) {
            match key.as_str() {
                "offset" => {
                    page.offset = value.parse().map_err(|_| {
                        OcpiError::invalid(format!("offset {value:?} is not a whole number of 0 or more"))
                    })?;
                }
                "limit" => {
                    let limit: u64 = value.parse().ok().filter(|l| *l > 0).ok_or_else(|| {
                        OcpiError::invalid(format!("limit {value:?} is not a whole number of 1 or more"))
                    })?;
                    page.limit = limit.min(max_limit);
                }
                "date_from" | "date_to" => {
                    let at = parse_timestamp(&value).ok_or_else(|| {
                        OcpiError::invalid(format!(
                            "{key} {value:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
                        ))
                    })?;
                    if key == "date_from" {
                        page.date_from = Some(at);
                    } else {
                        page.date_to = Some(at);
                    }
                }
                _ => {}
            }
        }
        Ok(page)
    }

    /// The headers of a page of `total` objects: `X-Total-Count`, `X-Limit` and, when
    /// more follow, `Link: <next page>; rel="next"` (built on `base_url`).
    pub fn headers(&self, total: u64, base_url: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_TOTAL_COUNT, HeaderValue::from(total));
        headers.insert(X_LIMIT, HeaderValue::from(self.limit));
        let next = self.offset.saturating_add(self.limit);
        if next < total {
            let mut url = format!("{base_url}?offset={next}&limit={}", self.limit);
            if let Some(from) = self.date_from {
                url.push_str(&format!("&date_from={}", timestamp(from)));
            }
            if let Some(to) = self.date_to {
                url.push_str(&format!("&date_to={}", timestamp(to)));
            }
            if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
                headers.insert(axum::http::header::LINK, v);
            }
        }
        headers
    }
}

/// `application/x-www-form-urlencoded` pairs of a query string (`+` is a space, `%XX` a
/// byte); pairs that do not decode to UTF-8 are kept as sent.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spliced_list_is_the_envelope_ok_writes() {
        let items = [r#"{"id":"A","n":1}"#, r#"{"id":"B","nested":{"x":[1,2]}}"#];
        let spliced = ok_json_list(&items);
        assert_eq!(spliced.headers()[axum::http::header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(spliced.into_body(), usize::MAX).await.expect("body");
        let got: Value = serde_json::from_slice(&bytes).expect("JSON");
        let values: Vec<Value> = items.iter().map(|i| serde_json::from_str(i).expect("item")).collect();
        let bytes = axum::body::to_bytes(ok(values).into_body(), usize::MAX).await.expect("body");
        let mut want: Value = serde_json::from_slice(&bytes).expect("JSON");
        want["timestamp"] = got["timestamp"].clone();
        assert_eq!(got, want);
        let empty = axum::body::to_bytes(ok_json_list(&[]).into_body(), usize::MAX).await.expect("body");
        let empty: Value = serde_json::from_slice(&empty).expect("JSON");
        assert_eq!((empty["data"].clone(), empty["status_code"].clone()), (serde_json::json!([]), 1000.into()));
    }

    #[test]
    fn token_header_base64_and_raw() {
        let (decoded, raw) = parse_token_header("Token dG9rZW4tMTIz").expect("valid");
        assert_eq!(decoded.as_deref(), Some("token-123"));
        assert_eq!(raw, "dG9rZW4tMTIz");
        let (decoded, raw) = parse_token_header("token raw-token!").expect("valid");
        assert_eq!(decoded, None);
        assert_eq!(raw, "raw-token!");
        assert!(parse_token_header("Bearer x").is_err());
        assert!(parse_token_header("Token ").is_err());
        assert_eq!(token_header("token-123", false), "Token dG9rZW4tMTIz");
        assert_eq!(token_header("token-123", true), "Token token-123");
    }

    #[test]
    fn page_parsing_and_errors() {
        let uri: Uri = "/x?offset=10&limit=5000&date_from=2026-01-01T00%3A00%3A00%2B01%3A00".parse().expect("uri");
        let p = PageRequest::parse(&uri, 1000).expect("valid");
        assert_eq!((p.offset, p.limit), (10, 1000));
        assert_eq!(p.date_from.map(timestamp).as_deref(), Some("2025-12-31T23:00:00.000Z"));
        for bad in ["/x?offset=-1", "/x?limit=0", "/x?limit=ten", "/x?date_to=tomorrow"] {
            let e = PageRequest::parse(&bad.parse().expect("uri"), 100).expect_err(bad);
            assert_eq!(e.code, status::INVALID_PARAMETERS, "{bad}");
        }
    }

    #[test]
    fn link_only_when_more_follow() {
        let p = PageRequest { offset: 0, limit: 100, date_from: None, date_to: None };
        let h = p.headers(250, "http://h/ocpi/2.2.1/locations");
        assert_eq!(h["link"], "<http://h/ocpi/2.2.1/locations?offset=100&limit=100>; rel=\"next\"");
        assert_eq!(h["x-total-count"], "250");
        let last = PageRequest { offset: 200, ..p };
        assert!(last.headers(250, "http://h").get("link").is_none());
    }
}
