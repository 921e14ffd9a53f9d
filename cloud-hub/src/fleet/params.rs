//! Query parameters, declared once per route ([`Param`]) and used both to check a
//! request (unknown, repeated or malformed parameters are a 400 with the reason) and to
//! describe the route in the OpenAPI document.

use axum::http::Uri;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use super::problem::{ApiError, ApiResult};

/// What a parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 3339, e.g. `2026-11-21T12:00:00Z`.
    Time,
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`; `default` when absent.
    Int { min: i64, max: i64, default: i64 },
    /// Any text of 1 to 200 characters.
    Text,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// One query parameter of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

/// Page size of lists: 1 to 1000, 100 by default.
pub const LIMIT: Param = Param {
    name: "limit",
    kind: Kind::Int { min: 1, max: 1000, default: 100 },
    description: "Page size (1 to 1000; default 100).",
};

/// Page size of meter series: 1 to 10000, 1000 by default.
pub const SAMPLE_LIMIT: Param = Param {
    name: "limit",
    kind: Kind::Int { min: 1, max: 10_000, default: 1000 },
    description: "Page size (1 to 10000; default 1000).",
};

/// How many items to skip (the `next_offset` of the previous page).
pub const OFFSET: Param = Param {
    name: "offset",
    kind: Kind::Int { min: 0, max: 100_000_000, default: 0 },
    description: "Items to skip: 0 for the first page, then the previous page's `next_offset`.",
};

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Time(DateTime<Utc>),
    Bool(bool),
    Int(i64),
    Text(String),
}

/// The checked query of one request.
#[derive(Debug, Clone, Default)]
pub struct Query {
    values: HashMap<&'static str, Value>,
    declared: HashMap<&'static str, Param>,
}

/// `from` and `to`, each optional.
pub type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Query {
    /// Checks the request's query against the route's parameters.
    pub fn parse(uri: &Uri, params: &'static [Param]) -> ApiResult<Query> {
        let pairs = match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri) {
            Ok(q) => q.0,
            Err(e) => return Err(ApiError::bad_request(format!("invalid query string: {}", e.body_text()))),
        };
        let declared: HashMap<&'static str, Param> = params.iter().map(|p| (p.name, *p)).collect();
        let mut values = HashMap::new();
        for (name, raw) in pairs {
            let Some(param) = declared.get(name.as_str()) else {
                let mut known: Vec<&str> = params.iter().map(|p| p.name).collect();
                known.sort_unstable();
                return Err(ApiError::bad_request(if known.is_empty() {
                    format!("unknown query parameter `{name}`: this route takes none")
                } else {
                    format!("unknown query parameter `{name}`: this route takes {}", known.join(", "))
                }));
            };
            let value = parse_value(param, &raw)?;
            if values.insert(param.name, value).is_some() {
                return Err(ApiError::bad_request(format!("query parameter `{name}` is given more than once")));
            }
        }
        Ok(Query { values, declared })
    }

    pub fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        match self.values.get(name) {
            Some(Value::Time(t)) => Some(*t),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer parameter, or its declared default.
    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Int(i)) => *i,
            _ => match self.declared.get(name).map(|p| p.kind) {
                Some(Kind::Int { default, .. }) => default,
                _ => 0,
            },
        }
    }

    /// `limit` and `offset`.
    pub fn page(&self) -> Page {
        Page { limit: self.int("limit"), offset: self.int("offset") }
    }

    /// `from` and `to` (`from` must not be after `to`).
    pub fn range(&self) -> ApiResult<TimeRange> {
        let (from, to) = (self.time("from"), self.time("to"));
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(ApiError::bad_request(format!(
                "`from` ({}) is after `to` ({})",
                f.to_rfc3339(),
                t.to_rfc3339()
            )));
        }
        Ok((from, to))
    }
}

fn parse_value(param: &Param, raw: &str) -> ApiResult<Value> {
    let name = param.name;
    match param.kind {
        Kind::Time => DateTime::parse_from_rfc3339(raw).map(|t| Value::Time(t.with_timezone(&Utc))).map_err(|e| {
            ApiError::bad_request(format!(
                "`{name}`: {raw:?} is not an RFC 3339 time ({e}); e.g. 2026-11-21T12:00:00Z (a `+` in the offset \
                 must be sent as %2B)"
            ))
        }),
        Kind::Bool => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(ApiError::bad_request(format!("`{name}`: {raw:?} is not a boolean: use true or false"))),
        },
        Kind::Int { min, max, .. } => match raw.parse::<i64>() {
            Ok(i) if (min..=max).contains(&i) => Ok(Value::Int(i)),
            Ok(i) => Err(ApiError::bad_request(format!("`{name}`: {i} is out of range: use {min} to {max}"))),
            Err(_) => Err(ApiError::bad_request(format!("`{name}`: {raw:?} is not an integer ({min} to {max})"))),
        },
        Kind::Text => {
            if raw.is_empty() || raw.chars().count() > 200 {
                Err(ApiError::bad_request(format!("`{name}`: must be 1 to 200 characters")))
            } else {
                Ok(Value::Text(raw.to_owned()))
            }
        }
        Kind::OneOf(words) => {
            if words.contains(&raw) {
                Ok(Value::Text(raw.to_owned()))
            } else {
                Err(ApiError::bad_request(format!("`{name}`: {raw:?} is not one of {}", words.join(", "))))
            }
        }
    }
}

/// The OpenAPI schema of a parameter.
pub fn schema(kind: Kind) -> serde_json::Value {
    match kind {
        Kind::Time => serde_json::json!({"type": "string", "format": "date-time"}),
        Kind::Bool => serde_json::json!({"type": "boolean"}),
        Kind::Int { min, max, default } => {
            serde_json::json!({"type": "integer", "minimum": min, "maximum": max, "default": default})
        }
        Kind::Text => serde_json::json!({"type": "string", "minLength": 1, "maxLength": 200}),
        Kind::OneOf(words) => serde_json::json!({"type": "string", "enum": words}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &[Param] = &[
        LIMIT,
        OFFSET,
        Param { name: "from", kind: Kind::Time, description: "" },
        Param { name: "to", kind: Kind::Time, description: "" },
        Param { name: "active", kind: Kind::Bool, description: "" },
        Param { name: "status", kind: Kind::OneOf(&["a", "b"]), description: "" },
    ];

    fn q(s: &str) -> ApiResult<Query> {
        Query::parse(&format!("/x?{s}").parse().expect("uri"), P)
    }

    fn err(s: &str) -> String {
        q(s).expect_err("invalid").detail
    }

    #[test]
    fn values_and_defaults() {
        let query = q("from=2026-11-21T12:00:00Z&to=2026-11-21T13:00:00%2B01:00&active=true&limit=5").expect("ok");
        assert_eq!(query.page(), Page { limit: 5, offset: 0 });
        assert_eq!(query.bool("active"), Some(true));
        let (from, to) = query.range().expect("range");
        assert_eq!(from, to, "13:00+01:00 is 12:00Z");
        assert_eq!(q("").expect("ok").page(), Page { limit: 100, offset: 0 });
    }

    #[test]
    fn errors_name_the_parameter_and_the_reason() {
        assert!(err("form=1").contains("unknown query parameter `form`: this route takes active, from, limit"));
        assert!(err("limit=0").contains("`limit`: 0 is out of range: use 1 to 1000"));
        assert!(err("limit=5000").contains("out of range"));
        assert!(err("limit=x").contains("not an integer"));
        assert!(err("active=yes").contains("not a boolean"));
        assert!(err("from=yesterday").contains("`from`: \"yesterday\" is not an RFC 3339 time"));
        assert!(err("limit=1&limit=2").contains("more than once"));
        assert!(err("status=c").contains("not one of a, b"));
        assert!(q("from=2026-11-21T13:00:00Z&to=2026-11-21T12:00:00Z").expect("parses").range().is_err());
        let none: &[Param] = &[];
        let e = Query::parse(&"/x?a=1".parse().expect("uri"), none).expect_err("none taken");
        assert!(e.detail.contains("this route takes none"), "{}", e.detail);
    }
}
