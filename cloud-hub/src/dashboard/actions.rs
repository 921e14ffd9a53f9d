//! Command buttons: `POST /sites/{id}/commands` from a site page sends a remote stop, an
//! unlock or an availability change to a charger, through the same path as the fleet
//! API's `POST /api/v1/sites/{site}/commands` (the same checks in
//! [`crate::fleet::command_body::parse`], the same [`crate::commands::issue`]).
//!
//! Only admins and CPO operators may (a fleet manager gets 403 and sees no buttons). The
//! request is CSRF-safe: the session cookie is SameSite=Strict and the [`Viewer`]
//! extractor refuses a POST whose `Origin` is not this host. The form's fields are the
//! command's (`type`, `station`, `transaction_id` / `connector`, `operative`), as text.
//!
//! The answer is `202` with JSON `{command_id, published, message}` when the request
//! accepts JSON (the page's script), else a redirect back to the site page; errors are
//! `4xx` with the reason, as JSON `{error}` or as a page. The site page lists the site's
//! recent commands with their results, pushed live when a result arrives.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};
use shared_model::sync::{Command, CommandOutcome};
use std::collections::HashMap;
use std::fmt::Write as _;

use super::pages::{check_site, esc, seg, time};
use super::{DashError, DashState, Viewer};
use crate::commands::{CommandRecord, Issuer};
use crate::fleet::views::{command_status, station_known};

/// The commands the dashboard sends.
const TYPES: [&str; 3] = ["remote_stop", "unlock_connector", "change_availability"];

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|m| m.trim().starts_with("application/json")))
}

fn refuse(json: bool, e: DashError) -> Response {
    if !json {
        return e.into_response();
    }
    if let DashError::Db(db) = &e {
        tracing::error!(error = %db, "dashboard: database error");
    }
    let (code, reason) = e.status_and_reason();
    (code, axum::Json(json!({ "error": reason }))).into_response()
}

fn invalid(why: String) -> DashError {
    DashError::Invalid(StatusCode::UNPROCESSABLE_ENTITY, why)
}

/// The command's JSON (as the fleet API takes it) from the form's text fields.
fn command_json(form: &HashMap<String, String>) -> Result<Value, DashError> {
    let kind = form.get("type").map(String::as_str).unwrap_or_default();
    if !TYPES.contains(&kind) {
        return Err(invalid(format!(
            "the dashboard sends {} (not {kind:?}); use the fleet API for other commands",
            TYPES.join(", ")
        )));
    }
    let mut out = Map::new();
    for (key, value) in form {
        let v = match key.as_str() {
            "type" | "station" => Value::String(value.clone()),
            "transaction_id" => Value::from(
                value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| invalid(format!("transaction_id {value:?} is not a whole number")))?,
            ),
            "connector" => Value::from(
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| invalid(format!("connector {value:?} is not a connector number")))?,
            ),
            "operative" => match value.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => return Err(invalid(format!("operative must be true or false, not {other:?}"))),
            },
            // Anything else is passed on, for the command's own check to name it.
            _ => Value::String(value.clone()),
        };
        out.insert(key.clone(), v);
    }
    Ok(Value::Object(out))
}

/// What the user is told the command does.
fn describe(command: &Command) -> String {
    match command {
        Command::RemoteStop { station, transaction_id } => format!("Stop of transaction {transaction_id} at {station}"),
        Command::UnlockConnector { station, connector } => format!("Unlock of {station} connector {connector}"),
        Command::ChangeAvailability { station, connector, operative } => format!(
            "{} of {station} connector {connector}",
            if *operative { "Making available" } else { "Making unavailable" }
        ),
        other => {
            let kind = serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(|t| t.replace('_', " ")))
                .unwrap_or_else(|| "command".to_owned());
            match other.station() {
                Some(station) => format!("{kind} at {station}"),
                None => kind,
            }
        }
    }
}

/// `POST /sites/{id}/commands`.
pub async fn send(
    State(state): State<DashState>,
    headers: HeaderMap,
    viewer: Result<Viewer, DashError>,
    Path(site): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let json = wants_json(&headers);
    match send_inner(&state, viewer, &site, &form).await {
        Ok((command_id, published, message)) if json => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "command_id": command_id, "published": published, "message": message })),
        )
            .into_response(),
        Ok(_) => Redirect::to(&format!("/sites/{}#commands", seg(&site))).into_response(),
        Err(e) => refuse(json, e),
    }
}

async fn send_inner(
    state: &DashState,
    viewer: Result<Viewer, DashError>,
    site: &str,
    form: &HashMap<String, String>,
) -> Result<(String, bool, String), DashError> {
    let viewer = viewer?;
    if !viewer.may_command() {
        return Err(DashError::Forbidden);
    }
    check_site(&state.store, &viewer, site).await?;
    let request = crate::fleet::command_body::parse(&command_json(form)?).map_err(invalid)?;
    let station = request.command.station().unwrap_or_default().to_owned();
    if !station_known(&state.store, site, &station).await? {
        return Err(invalid(format!("station {station:?} is not known at this site")));
    }
    if let Command::RemoteStop { transaction_id, .. } = &request.command {
        // A button on a page that is out of date must not stop whatever runs now.
        let running = state
            .store
            .fetch_opt(
                "SELECT transaction_uid FROM sessions WHERE site_id = $1 AND station = $2 \
                 AND station_transaction_id = $3 AND stopped_at IS NULL",
                &[site.into(), station.as_str().into(), transaction_id.to_string().into()],
                &[crate::db::Ty::Text],
            )
            .await?;
        if running.is_none() {
            return Err(DashError::Invalid(
                StatusCode::CONFLICT,
                format!("no session with transaction {transaction_id} is running at {station} (it may have ended)"),
            ));
        }
    }
    let message = describe(&request.command);
    let issued = crate::commands::issue(
        &state.store,
        &state.settings.mqtt,
        &state.settings.metrics,
        Issuer { via: "dashboard", name: &viewer.username },
        site,
        request.command,
        u64::from(state.settings.command_expiry_s),
    )
    .await?;
    super::live::changed(site);
    let message = if issued.published {
        format!("{message}: sent; the site's answer shows under Recent commands.")
    } else {
        format!("{message}: stored; it goes out when the site is back online.")
    };
    Ok((issued.envelope.command_id, issued.published, message))
}

fn outcome(o: CommandOutcome) -> (&'static str, &'static str) {
    match o {
        CommandOutcome::Accepted => ("accepted", "ok"),
        CommandOutcome::Rejected => ("rejected", "bad"),
        CommandOutcome::Failed => ("failed", "bad"),
        CommandOutcome::Expired => ("expired", "bad"),
    }
}

/// The site's recent commands with their results (for viewers who may command).
pub(super) fn commands_table(commands: &[CommandRecord]) -> String {
    let mut out = String::from("<section id=\"commands\"><h2>Recent commands</h2>");
    if commands.is_empty() {
        out.push_str("<p class=\"empty\">No commands sent to this site yet.</p></section>");
        return out;
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"command-list\" class=\"stack\"><thead><tr><th>Command</th><th>By</th><th>Sent</th>\
         <th>Result</th></tr></thead><tbody>",
    );
    let now = Utc::now();
    for c in commands {
        let env = &c.envelope;
        let kind = serde_json::to_value(&env.command)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        let status = command_status(&c.status, env.expires_at, now);
        let result = match &c.result {
            Some(r) => {
                let (label, class) = outcome(r.outcome);
                let reason = r.detail.get("reason").and_then(Value::as_str).map(|s| format!(" · {}", esc(s)));
                format!("<span class=\"badge {class}\">{label}</span>{}", reason.unwrap_or_default())
            }
            None if status == "unanswered" => "<span class=\"badge bad\">no answer</span>".to_owned(),
            None => "<span class=\"badge busy\">waiting</span>".to_owned(),
        };
        let _ = write!(
            out,
            "<tr class=\"command\" data-command=\"{}\" data-type=\"{}\" data-status=\"{status}\"><td data-label=\"Command\">{}</td>\
             <td data-label=\"By\">{}</td><td data-label=\"Sent\">{}</td><td data-label=\"Result\">{result}</td></tr>",
            esc(&env.command_id),
            esc(&kind),
            esc(&describe(&env.command)),
            esc(c.issued_by.as_deref().unwrap_or("—")),
            time(Some(env.issued_at)),
        );
    }
    out.push_str("</tbody></table></div></section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn form_fields_become_the_fleet_api_command() {
        let v = command_json(&form(&[("type", "remote_stop"), ("station", "CP-1"), ("transaction_id", "17")]))
            .expect("valid");
        assert_eq!(v, json!({"type": "remote_stop", "station": "CP-1", "transaction_id": 17}));
        let v = command_json(&form(&[
            ("type", "change_availability"),
            ("station", "CP-1"),
            ("connector", "2"),
            ("operative", "false"),
        ]))
        .expect("valid");
        assert_eq!(v["operative"], false);
        assert_eq!(v["connector"], 2);
    }

    #[test]
    fn bad_form_fields_say_why() {
        let reason = |f: &[(&str, &str)]| match command_json(&form(f)) {
            Err(DashError::Invalid(code, why)) => (code.as_u16(), why),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason(&[("type", "reset"), ("station", "CP-1")]).1.contains("use the fleet API"));
        assert!(reason(&[("station", "CP-1")]).1.contains("the dashboard sends remote_stop"));
        let (code, why) = reason(&[("type", "remote_stop"), ("station", "CP-1"), ("transaction_id", "x1")]);
        assert_eq!(code, 422);
        assert!(why.contains("transaction_id \"x1\" is not a whole number"), "{why}");
        assert!(reason(&[("type", "unlock_connector"), ("connector", "-1")]).1.contains("not a connector number"));
        assert!(reason(&[("type", "change_availability"), ("operative", "yes")]).1.contains("true or false"));
    }
}
