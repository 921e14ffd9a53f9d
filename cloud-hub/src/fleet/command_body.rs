//! The body of `POST /api/v1/sites/{site}/commands`: a [`Command`] as JSON (its `type`
//! and fields, as in `shared_model::sync`) plus an optional `expires_in_s`. Checked
//! strictly, because a command acts on real chargers: an unknown `type`, a missing or
//! mistyped field, and also an unknown field (a typo such as `conector` would otherwise
//! be dropped silently) are refused with the reason.

use serde_json::{Map, Value};
use shared_model::sync::Command;

use super::MAX_COMMAND_EXPIRY_S;

/// Every command `type`, in the order of [`Command`].
pub const COMMAND_TYPES: [&str; 13] = [
    "remote_start",
    "remote_stop",
    "change_availability",
    "reset",
    "unlock_connector",
    "change_configuration",
    "set_local_list",
    "set_tariff",
    "set_site_limits",
    "reserve_now",
    "cancel_reservation",
    "set_session_limit",
    "get_composite_schedule",
];

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    pub command: Command,
    pub expires_in_s: Option<u64>,
}

/// Parses and checks a request body (already valid JSON); `Err` is the reason for a 422.
pub fn parse(body: &Value) -> Result<CommandRequest, String> {
    let Value::Object(fields) = body else {
        return Err(format!(
            "the body must be a JSON object (a command such as {{\"type\": \"reset\", \"station\": \"CP-1\", \
             \"hard\": false}}), not {}",
            kind_of(body)
        ));
    };
    let mut fields: Map<String, Value> = fields.clone();
    let expires_in_s = match fields.remove("expires_in_s") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(s) if (1..=MAX_COMMAND_EXPIRY_S).contains(&s) => Some(s),
            _ => {
                return Err(format!(
                    "`expires_in_s` must be a whole number of seconds from 1 to {MAX_COMMAND_EXPIRY_S} (7 days), \
                     not {v}"
                ));
            }
        },
    };
    let kind = match fields.get("type") {
        None => return Err(format!("the command has no `type`: use one of {}", COMMAND_TYPES.join(", "))),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("`type` must be a string, not {}", kind_of(other))),
    };
    if !COMMAND_TYPES.contains(&kind.as_str()) {
        return Err(format!("unknown command type {kind:?}: use one of {}", COMMAND_TYPES.join(", ")));
    }
    let given = Value::Object(fields);
    let command: Command = serde_json::from_value(given.clone()).map_err(|e| format!("{kind} command: {e}"))?;
    // Every field the command has is written back (absent options as null): what is
    // left over is not one of its fields.
    if let (Value::Object(given), Ok(Value::Object(known))) = (&given, serde_json::to_value(&command)) {
        let mut unknown: Vec<&str> = given.keys().filter(|k| !known.contains_key(*k)).map(String::as_str).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            let mut fields: Vec<&str> = known.keys().filter(|k| *k != "type").map(String::as_str).collect();
            fields.sort_unstable();
            return Err(format!(
                "{kind} command: unknown field{} {}: its fields are {} (and `expires_in_s`)",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", "),
                fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    check(&command).map_err(|reason| format!("{kind} command: {reason}"))?;
    Ok(CommandRequest { command, expires_in_s })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_empty(name: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("`{name}` must not be empty"));
    }
    if value.chars().count() > 500 {
        return Err(format!("`{name}` is longer than 500 characters"));
    }
    Ok(())
}

/// What the types alone do not say.
fn check(command: &Command) -> Result<(), String> {
    if let Some(station) = command.station() {
        non_empty("station", station)?;
    }
    match command {
        Command::RemoteStart { connector, id_tag, .. } => {
            non_empty("id_tag", id_tag)?;
            if *connector == Some(0) {
                return Err("`connector` must be 1 or more (leave it out to let the charger choose)".into());
            }
        }
        // OCPP 1.6 UnlockConnector: connectorId > 0.
        Command::UnlockConnector { connector: 0, .. } => return Err("`connector` must be 1 or more".into()),
        Command::ChangeConfiguration { key, .. } => non_empty("key", key)?,
        Command::SetLocalList { entries, .. } => {
            for (i, e) in entries.iter().enumerate() {
                non_empty(&format!("entries[{i}].id_tag"), &e.id_tag)?;
            }
        }
        Command::SetTariff { tariff_id, tariff } => {
            non_empty("tariff_id", tariff_id)?;
            if !tariff.is_object() {
                return Err(format!("`tariff` must be an object (OCPI tariff JSON), not {}", kind_of(tariff)));
            }
        }
        Command::SetSiteLimits { limits } if !limits.is_object() => {
            return Err(format!("`limits` must be an object, not {}", kind_of(limits)));
        }
        Command::ReserveNow { connector, id_tag, .. } => {
            non_empty("id_tag", id_tag)?;
            if *connector == 0 {
                return Err("`connector` must be 1 or more".into());
            }
        }
        Command::SetSessionLimit { connector: 0, .. } | Command::GetCompositeSchedule { connector: 0, .. } => {
            return Err("`connector` must be 1 or more".into());
        }
        Command::SetSessionLimit { limit: Some(limit), .. } => {
            if limit.periods.is_empty() {
                return Err("`limit.periods` must hold at least one period".into());
            }
            if limit.periods.windows(2).any(|w| w[1].start_s <= w[0].start_s) {
                return Err("`limit.periods` must be in ascending `start_s`".into());
            }
            if limit.periods.iter().any(|p| !p.limit.is_finite() || p.limit < 0.0) {
                return Err("every `limit.periods[].limit` must be a number of 0 or more".into());
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        parse(&v).expect_err("invalid")
    }

    #[test]
    fn every_command_type_parses() {
        let examples = [
            json!({"type": "remote_start", "station": "CP-1", "connector": 1, "id_tag": "T"}),
            json!({"type": "remote_stop", "station": "CP-1", "transaction_id": 4}),
            json!({"type": "change_availability", "station": "CP-1", "connector": 0, "operative": false}),
            json!({"type": "reset", "station": "CP-1", "hard": true}),
            json!({"type": "unlock_connector", "station": "CP-1", "connector": 1}),
            json!({"type": "change_configuration", "station": "CP-1", "key": "HeartbeatInterval", "value": "60"}),
            json!({"type": "set_local_list", "full": true, "entries": [{"id_tag": "T", "status": "Accepted"}]}),
            json!({"type": "set_tariff", "tariff_id": "t1", "tariff": {"currency": "EUR"}}),
            json!({"type": "set_site_limits", "limits": {"import_w": 50000}}),
            json!({"type": "reserve_now", "station": "CP-1", "connector": 1, "expiry": "2026-11-21T13:00:00Z",
                "id_tag": "T", "reservation_id": 3}),
            json!({"type": "cancel_reservation", "station": "CP-1", "reservation_id": 3}),
            json!({"type": "set_session_limit", "station": "CP-1", "connector": 1, "transaction_id": 4,
                "limit": {"start": null, "duration_s": null, "unit": "A", "min_rate": null,
                    "periods": [{"start_s": 0, "limit": 10.0}]}}),
            json!({"type": "get_composite_schedule", "station": "CP-1", "connector": 1, "duration_s": 600}),
        ];
        for (example, kind) in examples.iter().zip(COMMAND_TYPES) {
            let r = parse(example).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(serde_json::to_value(&r.command).expect("json")["type"], kind);
        }
        let r = parse(&json!({"type": "reset", "station": "CP-1", "hard": false, "expires_in_s": 60})).expect("ok");
        assert_eq!(r.expires_in_s, Some(60));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(err(json!([1])).contains("must be a JSON object"));
        assert!(err(json!({"station": "CP-1"})).contains("no `type`: use one of remote_start"));
        assert!(err(json!({"type": 3})).contains("`type` must be a string"));
        assert!(err(json!({"type": "self_destruct"})).contains("unknown command type \"self_destruct\""));
        assert!(err(json!({"type": "reset", "station": "CP-1"})).contains("reset command: missing field `hard`"));
        assert!(err(json!({"type": "reset", "station": "CP-1", "hard": "yes"})).contains("invalid type"));
        let e = err(json!({"type": "remote_start", "station": "CP-1", "conector": 1, "id_tag": "T"}));
        assert!(e.contains("unknown field `conector`: its fields are `connector`, `id_tag`, `station`"), "{e}");
        assert!(err(json!({"type": "remote_start", "station": " ", "id_tag": "T"})).contains("`station` must not be"));
        assert!(err(json!({"type": "unlock_connector", "station": "CP-1", "connector": 0})).contains("1 or more"));
        let e = err(json!({"type": "reset", "station": "CP-1", "hard": true, "expires_in_s": 0}));
        assert!(e.contains("`expires_in_s` must be a whole number of seconds from 1 to 604800"), "{e}");
        assert!(err(json!({"type": "reset", "station": "CP-1", "hard": true, "expires_in_s": 1.5})).contains("whole"));
        assert!(err(json!({"type": "set_tariff", "tariff_id": "t", "tariff": 3})).contains("must be an object"));
        let limit = |periods: Value| {
            json!({"type": "set_session_limit", "station": "CP-1", "connector": 1, "transaction_id": 4,
                "limit": {"start": null, "duration_s": null, "unit": "W", "min_rate": null, "periods": periods}})
        };
        assert!(err(limit(json!([]))).contains("at least one period"));
        assert!(err(limit(json!([{"start_s": 5, "limit": 1.0}, {"start_s": 5, "limit": 2.0}]))).contains("ascending"));
        assert!(err(limit(json!([{"start_s": 0, "limit": -1.0}]))).contains("0 or more"));
    }
}
