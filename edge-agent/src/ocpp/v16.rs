//! The OCPP 1.6J adapter: maps charge-point-initiated CALLs onto the version-neutral
//! operations in [`crate::chargers`] and their results back onto 1.6 responses.
//!
//! Each CALL is decoded into its typed request (a decode failure becomes the CALLERROR
//! the spec names), then applied in one store job together with the message-log rows of
//! the CALL and its answer; the answer goes out only after that job committed.

use super::connection::ConnCtx;
use crate::app::{LiveEvent, LiveKind};
use crate::chargers::{self, AuthResult, Registration, StartReport, StatusReport, StopReport};
use crate::message_log::{self, Direction, Entry};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;
use shared_model::model::{self, ConnectorRef, ConnectorStatus, MeterSample, StationInfo, StopReason};
use shared_model::ocpp::OcppRequest;
use shared_model::ocpp::framing::{Call, CallError, CallResult, ErrorCode, Frame, decode_payload};
use shared_model::ocpp::v16::*;

/// Handles one CALL from a station and returns the frame to answer with.
pub async fn handle_call(ctx: &ConnCtx, call: Call) -> Frame {
    let registration = ctx.shared.directory.registration(ctx.station.as_str());
    if registration != Registration::Accepted && call.action != BootNotificationRequest::ACTION {
        // OCPP 1.6 §4.2.1: until accepted, a charge point may only send BootNotification.
        let msg = format!("charge point is {}: send BootNotification and wait to be accepted", registration.as_str());
        return error(ctx, call, ErrorCode::SecurityError, msg).await;
    }
    if call.action == AuthorizeRequest::ACTION || call.action == StartTransactionRequest::ACTION {
        // An id tag the site does not know: the hub may (real-time authorization through
        // the roaming partners); its verdict lands in the cache the handler reads.
        let id_tag = call.payload.get("idTag").and_then(serde_json::Value::as_str);
        // Only a well-formed idTag (CiString20); anything else gets its CALLERROR below.
        if let Some(id_tag) = id_tag.filter(|t| (1..=20).contains(&t.len())) {
            let evse = call.payload.get("connectorId").and_then(serde_json::Value::as_u64);
            let evse = evse.and_then(|c| u32::try_from(c).ok()).filter(|c| *c > 0);
            crate::sync::realtime::consult_hub(&ctx.shared, ctx.station.as_str(), id_tag, evse).await;
        }
    }
    match call.action.as_str() {
        BootNotificationRequest::ACTION => handle::<BootNotificationRequest, _>(ctx, call, boot).await,
        HeartbeatRequest::ACTION => handle::<HeartbeatRequest, _>(ctx, call, heartbeat).await,
        StatusNotificationRequest::ACTION => handle::<StatusNotificationRequest, _>(ctx, call, status).await,
        AuthorizeRequest::ACTION => handle::<AuthorizeRequest, _>(ctx, call, authorize).await,
        StartTransactionRequest::ACTION => handle::<StartTransactionRequest, _>(ctx, call, start).await,
        StopTransactionRequest::ACTION => handle::<StopTransactionRequest, _>(ctx, call, stop).await,
        MeterValuesRequest::ACTION => handle::<MeterValuesRequest, _>(ctx, call, meter_values).await,
        DataTransferRequest::ACTION => handle::<DataTransferRequest, _>(ctx, call, data_transfer).await,
        DiagnosticsStatusNotificationRequest::ACTION => {
            handle::<DiagnosticsStatusNotificationRequest, _>(ctx, call, |conn, req, cx| {
                record_station_status(conn, cx, "diagnostics_status", &wire(&req.status))?;
                Ok(DiagnosticsStatusNotificationResponse {})
            })
            .await
        }
        FirmwareStatusNotificationRequest::ACTION => {
            handle::<FirmwareStatusNotificationRequest, _>(ctx, call, |conn, req, cx| {
                record_station_status(conn, cx, "firmware_status", &wire(&req.status))?;
                Ok(FirmwareStatusNotificationResponse {})
            })
            .await
        }
        // Security whitepaper messages a station may send.
        SecurityEventNotificationRequest::ACTION => {
            handle::<SecurityEventNotificationRequest, _>(ctx, call, |conn, req, cx| {
                tracing::warn!(station = cx.station, event = %req.r#type, "ocpp: security event");
                chargers::touch(conn, cx.station, cx.now)?;
                Ok(SecurityEventNotificationResponse {})
            })
            .await
        }
        LogStatusNotificationRequest::ACTION => {
            handle::<LogStatusNotificationRequest, _>(ctx, call, |conn, _, cx| {
                chargers::touch(conn, cx.station, cx.now)?;
                Ok(LogStatusNotificationResponse {})
            })
            .await
        }
        SignedFirmwareStatusNotificationRequest::ACTION => {
            handle::<SignedFirmwareStatusNotificationRequest, _>(ctx, call, |conn, req, cx| {
                record_station_status(conn, cx, "firmware_status", &wire(&req.status))?;
                Ok(SignedFirmwareStatusNotificationResponse {})
            })
            .await
        }
        SignCertificateRequest::ACTION => {
            // Security profile 3 (client certificates) is not offered yet, so there is no
            // CA to sign with: refuse in the message's own terms.
            handle::<SignCertificateRequest, _>(ctx, call, |conn, _, cx| {
                chargers::touch(conn, cx.station, cx.now)?;
                Ok(SignCertificateResponse { status: GenericStatus::Rejected })
            })
            .await
        }
        other if is_known_action(other) => {
            let msg = format!("{other} is sent by a central system, not by a charge point");
            error(ctx, call, ErrorCode::NotSupported, msg).await
        }
        other => {
            let msg = format!("unknown action {other:?}");
            error(ctx, call, ErrorCode::NotImplemented, msg).await
        }
    }
}

/// What a handler gets besides the connection and the request.
pub struct Cx<'a> {
    pub station: &'a str,
    pub now: DateTime<Utc>,
    pub config: &'a crate::config::Config,
    /// Tags the hub vouched for (remote starts, reservations).
    pub grants: &'a crate::remote_auth::RemoteAuth,
}

async fn handle<R, F>(ctx: &ConnCtx, call: Call, f: F) -> Frame
where
    R: OcppRequest + Send + 'static,
    R::Response: Send,
    F: FnOnce(&Connection, R, &Cx<'_>) -> Result<R::Response, StoreError> + Send + 'static,
{
    let request: R = match decode_payload(&call.payload) {
        Ok(r) => r,
        Err((code, reason)) => {
            let msg = format!("{} payload: {reason}", call.action);
            return error(ctx, call, code, msg).await;
        }
    };
    let shared = ctx.shared.clone();
    let station = ctx.station.as_str().to_owned();
    let unique_id = call.unique_id.clone();
    let error_id = call.unique_id.clone();
    let call_action = call.action.clone();
    let action = call.action.clone();
    // Serialise what does not depend on the outcome here, not on the single writer thread
    // (the store's bottleneck under load).
    let now = Utc::now();
    let inbound = Entry::frame(now, ctx.station.as_str(), Direction::In, &Frame::Call(call), None);
    let result = ctx
        .shared
        .store
        .write(move |conn| {
            let cx = Cx { station: &station, now, config: &shared.config, grants: &shared.remote_auth };
            let response = f(conn, request, &cx)?;
            let reply = Frame::CallResult(CallResult { unique_id, payload: serde_json::to_value(&response)? });
            let outbound = Entry::frame(now, &station, Direction::Out, &reply, Some(&action));
            message_log::append(conn, &[inbound, outbound])?;
            Ok(reply)
        })
        .await;
    match result {
        Ok(reply) => {
            let kind = match call_action.as_str() {
                "BootNotification" => Some(LiveKind::Booted),
                "StatusNotification" => Some(LiveKind::StatusChanged),
                "StartTransaction" => Some(LiveKind::TransactionStarted),
                "StopTransaction" => Some(LiveKind::TransactionStopped),
                "MeterValues" => Some(LiveKind::MeterValues),
                _ => None,
            };
            if let Some(kind) = kind {
                // No subscriber is fine.
                let _ = ctx.shared.live.send(LiveEvent { station: ctx.station.as_str().to_owned(), kind });
            }
            reply
        }
        Err(e) => {
            tracing::error!(station = %ctx.station, error = %e, "ocpp: applying a CALL failed");
            Frame::CallError(CallError::new(
                error_id,
                ErrorCode::InternalError,
                "the central system could not store the message; please retry",
            ))
        }
    }
}

/// Answers a CALL with a CALLERROR, logging both.
async fn error(ctx: &ConnCtx, call: Call, code: ErrorCode, description: String) -> Frame {
    let reply = Frame::CallError(CallError::new(call.unique_id.clone(), code, description));
    let station = ctx.station.as_str().to_owned();
    let entries = vec![
        Entry::frame(Utc::now(), &station, Direction::In, &Frame::Call(call.clone()), None),
        Entry::frame(Utc::now(), &station, Direction::Out, &reply, Some(&call.action)),
    ];
    if let Err(e) = ctx.shared.store.write(move |conn| message_log::append(conn, &entries)).await {
        tracing::error!(%station, error = %e, "store: logging a CALLERROR failed");
    }
    reply
}

/// The wire spelling of a serde enum value.
fn wire<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn record_station_status(conn: &Connection, cx: &Cx<'_>, column: &str, value: &str) -> Result<(), StoreError> {
    // `column` is one of two constants above, never input.
    conn.prepare_cached(&format!("UPDATE chargers SET {column} = ?2, last_seen = ?3 WHERE id = ?1"))?
        .execute(rusqlite::params![cx.station, value, crate::store::ts(cx.now)])?;
    Ok(())
}

fn boot(conn: &Connection, req: BootNotificationRequest, cx: &Cx<'_>) -> Result<BootNotificationResponse, StoreError> {
    let info = StationInfo {
        vendor: req.charge_point_vendor.into_string(),
        model: req.charge_point_model.into_string(),
        serial_number: req.charge_point_serial_number.or(req.charge_box_serial_number).map(CiString25::into_string),
        firmware_version: req.firmware_version.map(CiString50::into_string),
        iccid: req.iccid.map(CiString20::into_string),
        imsi: req.imsi.map(CiString20::into_string),
        meter_type: req.meter_type.map(CiString25::into_string),
        meter_serial_number: req.meter_serial_number.map(CiString25::into_string),
    };
    let registration = chargers::boot(conn, cx.station, &info, cx.now)?;
    let (status, interval) = match registration {
        Registration::Accepted => (RegistrationStatus::Accepted, cx.config.ocpp.heartbeat_interval_s),
        Registration::Pending => (RegistrationStatus::Pending, cx.config.ocpp.boot_retry_interval_s),
        Registration::Rejected => (RegistrationStatus::Rejected, cx.config.ocpp.boot_retry_interval_s),
    };
    Ok(BootNotificationResponse { status, current_time: cx.now, interval: interval.into() })
}

fn heartbeat(conn: &Connection, _: HeartbeatRequest, cx: &Cx<'_>) -> Result<HeartbeatResponse, StoreError> {
    chargers::touch(conn, cx.station, cx.now)?;
    Ok(HeartbeatResponse { current_time: cx.now })
}

fn status(
    conn: &Connection,
    req: StatusNotificationRequest,
    cx: &Cx<'_>,
) -> Result<StatusNotificationResponse, StoreError> {
    let status = ConnectorStatus::parse(&wire(&req.status)).unwrap_or(ConnectorStatus::Unavailable);
    let error_code = wire(&req.error_code);
    let report = StatusReport {
        connector: ConnectorRef::from_v16(req.connector_id),
        status,
        error_code: (error_code != "NoError").then_some(error_code),
        info: req.info.map(CiString50::into_string),
        vendor_error_code: req.vendor_error_code.map(CiString50::into_string),
        timestamp: req.timestamp,
    };
    chargers::status(conn, cx.station, &report, cx.now)?;
    chargers::touch(conn, cx.station, cx.now)?;
    Ok(StatusNotificationResponse {})
}

fn id_tag_info(auth: &AuthResult) -> IdTagInfo {
    IdTagInfo {
        expiry_date: auth.expiry,
        parent_id_tag: auth.parent_id_tag.as_deref().and_then(|p| IdToken::try_new(p).ok()),
        status: match auth.status {
            model::AuthorizationStatus::Accepted => AuthorizationStatus::Accepted,
            model::AuthorizationStatus::Blocked => AuthorizationStatus::Blocked,
            model::AuthorizationStatus::Expired => AuthorizationStatus::Expired,
            model::AuthorizationStatus::Invalid => AuthorizationStatus::Invalid,
            model::AuthorizationStatus::ConcurrentTx => AuthorizationStatus::ConcurrentTx,
        },
    }
}

/// Whether a tag the site does not accept (unknown, or expired in its list) is vouched
/// for by the hub here (see [`crate::remote_auth`]); a tag the site blocks stays blocked.
fn vouched(auth: &AuthResult, connector: u32, id_tag: &str, cx: &Cx<'_>) -> bool {
    matches!(auth.status, model::AuthorizationStatus::Invalid | model::AuthorizationStatus::Expired)
        && cx.grants.allows(cx.station, connector, id_tag, cx.now)
}

fn authorize(conn: &Connection, req: AuthorizeRequest, cx: &Cx<'_>) -> Result<AuthorizeResponse, StoreError> {
    let mut auth = chargers::authorize(conn, req.id_tag.as_str(), &cx.config.authorization, true, cx.now)?;
    if vouched(&auth, 0, req.id_tag.as_str(), cx) {
        auth = AuthResult { status: model::AuthorizationStatus::Accepted, expiry: None, parent_id_tag: None };
    }
    chargers::touch(conn, cx.station, cx.now)?;
    Ok(AuthorizeResponse { id_tag_info: id_tag_info(&auth) })
}

fn start(conn: &Connection, req: StartTransactionRequest, cx: &Cx<'_>) -> Result<StartTransactionResponse, StoreError> {
    let report = StartReport {
        connector: ConnectorRef::from_v16(req.connector_id),
        id_tag: req.id_tag.into_string(),
        meter_start_wh: req.meter_start,
        timestamp: req.timestamp,
        reservation_id: req.reservation_id.map(i64::from),
    };
    let mut outcome = chargers::start_transaction(conn, cx.station, &report, &cx.config.authorization, cx.now)?;
    if !outcome.duplicate && vouched(&outcome.auth, req.connector_id, &report.id_tag, cx) {
        outcome.auth = AuthResult { status: model::AuthorizationStatus::Accepted, expiry: None, parent_id_tag: None };
        // A retransmitted StartTransaction is answered from the stored status.
        conn.prepare_cached("UPDATE transactions SET auth_status = ?3 WHERE charger_id = ?1 AND station_tx_id = ?2")?
            .execute(rusqlite::params![cx.station, outcome.transaction_id, outcome.auth.status.as_str()])?;
    }
    chargers::touch(conn, cx.station, cx.now)?;
    let transaction_id = i32::try_from(outcome.transaction_id)
        .map_err(|_| StoreError::Conflict("transaction id outside the OCPP 1.6 integer range".into()))?;
    Ok(StartTransactionResponse { id_tag_info: id_tag_info(&outcome.auth), transaction_id })
}

fn samples(values: &[MeterValue]) -> Vec<MeterSample> {
    values
        .iter()
        .flat_map(|mv| {
            mv.sampled_value.iter().map(move |sv| MeterSample {
                timestamp: mv.timestamp,
                value: sv.value.clone(),
                measurand: sv.measurand.as_ref().map(wire).unwrap_or_else(|| "Energy.Active.Import.Register".into()),
                phase: sv.phase.as_ref().map(wire),
                location: sv.location.as_ref().map(wire),
                unit: sv.unit.as_ref().map(wire),
                context: sv.context.as_ref().map(wire),
                format: sv.format.as_ref().map(wire),
            })
        })
        .collect()
}

/// Both enums use the spec's spellings, so the wire name converts one into the other.
fn stop_reason(reason: &Reason) -> Option<StopReason> {
    serde_json::from_value(serde_json::Value::String(wire(reason))).ok()
}

fn stop(conn: &Connection, req: StopTransactionRequest, cx: &Cx<'_>) -> Result<StopTransactionResponse, StoreError> {
    let report = StopReport {
        station_tx_id: i64::from(req.transaction_id),
        id_tag: req.id_tag.map(CiString20::into_string),
        meter_stop_wh: req.meter_stop,
        timestamp: req.timestamp,
        // Absent reason means Local (OCPP 1.6 §6.49).
        reason: req.reason.as_ref().and_then(stop_reason).or(Some(StopReason::Local)),
        samples: samples(req.transaction_data.as_deref().unwrap_or_default()),
    };
    let outcome = chargers::stop_transaction(conn, cx.station, &report, &cx.config.authorization, cx.now)?;
    chargers::touch(conn, cx.station, cx.now)?;
    if outcome.offline {
        tracing::info!(
            station = cx.station,
            transaction_id = req.transaction_id,
            "ocpp: recorded a transaction started offline"
        );
    }
    Ok(StopTransactionResponse { id_tag_info: outcome.auth.as_ref().map(id_tag_info) })
}

fn meter_values(conn: &Connection, req: MeterValuesRequest, cx: &Cx<'_>) -> Result<MeterValuesResponse, StoreError> {
    let samples = samples(&req.meter_value);
    chargers::meter_values(
        conn,
        cx.station,
        ConnectorRef::from_v16(req.connector_id),
        req.transaction_id.map(i64::from),
        &samples,
        cx.now,
    )?;
    chargers::touch(conn, cx.station, cx.now)?;
    Ok(MeterValuesResponse {})
}

fn data_transfer(conn: &Connection, req: DataTransferRequest, cx: &Cx<'_>) -> Result<DataTransferResponse, StoreError> {
    // No vendor extensions are implemented: the spec's answer is UnknownVendorId. The
    // message itself is kept in the message log.
    tracing::info!(station = cx.station, vendor = %req.vendor_id, "ocpp: DataTransfer from an unknown vendor");
    chargers::touch(conn, cx.station, cx.now)?;
    Ok(DataTransferResponse { status: DataTransferStatus::UnknownVendorId, data: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stop_reason_maps_to_its_neutral_twin() {
        let all = [
            Reason::DeAuthorized,
            Reason::EmergencyStop,
            Reason::EVDisconnected,
            Reason::HardReset,
            Reason::Local,
            Reason::Other,
            Reason::PowerLoss,
            Reason::Reboot,
            Reason::Remote,
            Reason::SoftReset,
            Reason::UnlockCommand,
        ];
        for r in all {
            let neutral = stop_reason(&r).unwrap_or_else(|| panic!("{r:?} unmapped"));
            assert_eq!(neutral.as_str(), wire(&r));
        }
    }
}
