//! OCPP 1.6J Core profile scenarios against a real agent over real sockets, with the
//! charge point simulator playing the charger. Every scenario ends by checking every
//! frame that crossed the wire (both directions, from the agent's message log) against
//! the official schemas. Section numbers are OCPP 1.6 edition 2's.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use shared_model::ocpp::v16::{ChargePointStatus, Reason, RegistrationStatus};
use simulators::chargepoint::{ChargePoint, ChargePointConfig};
use std::time::Duration;
use tests::{TAG_BLOCKED, TAG_OK, TestAgent, assert_log_schema_valid, eventually, password};

const WAIT: Duration = Duration::from_secs(10);

async fn sim(agent: &TestAgent, id: &str, connectors: u32) -> ChargePoint {
    let cfg = ChargePointConfig::new(id, agent.ocpp_url())
        .with_password(password(id))
        .with_connectors(connectors)
        .with_meter_interval(Duration::from_millis(200))
        .fast();
    ChargePoint::connect(cfg).await.unwrap()
}

async fn transaction(agent: &TestAgent, id: i64) -> Value {
    let (status, tx) = agent.get(&format!("/api/v1/transactions/{id}")).await;
    assert_eq!(status, 200, "{tx}");
    tx
}

async fn schema_check(agent: &TestAgent) {
    let log = agent.message_log().await;
    let checked = assert_log_schema_valid(&log, &[]);
    if tests::schema_dir().is_some() {
        assert!(checked > 0, "no frames were schema-checked");
    }
}

/// §4.2 BootNotification, §4.6 Heartbeat, §4.9 StatusNotification.
#[tokio::test]
async fn core_boot_heartbeat_and_status() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 2).await;
    let boot = cp.boot().await.unwrap();
    assert_eq!(boot.status, RegistrationStatus::Accepted);
    assert_eq!(boot.interval, 300);
    cp.heartbeat().await.unwrap();
    let (status, ch) = agent.get("/api/v1/chargers/CP-1").await;
    assert_eq!(status, 200);
    assert_eq!(ch["vendor"], "Sitepilot");
    assert_eq!(ch["model"], "SimCharger");
    assert_eq!(ch["connected"], true);
    assert_eq!(ch["protocol"], "ocpp1.6");
    let connectors = eventually(5, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
        let c = ch["connectors"].as_array().cloned().unwrap_or_default();
        (c.len() == 3).then_some(c)
    })
    .await
    .expect("status of connectors 0, 1 and 2 reported");
    assert!(connectors.iter().all(|c| c["status"] == "Available"), "{connectors:?}");
    schema_check(&agent).await;
}

/// §4.1 Authorize: local list, blocked tag, unknown tag with the reject policy.
#[tokio::test]
async fn core_authorize_local_list() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 1).await;
    cp.boot().await.unwrap();
    let status = |r: shared_model::ocpp::v16::AuthorizeResponse| format!("{:?}", r.id_tag_info.status);
    assert_eq!(status(cp.authorize(TAG_OK).await.unwrap()), "Accepted");
    assert_eq!(status(cp.authorize(TAG_BLOCKED).await.unwrap()), "Blocked");
    assert_eq!(status(cp.authorize("NOBODY").await.unwrap()), "Invalid");
    schema_check(&agent).await;
}

/// §4.8 StartTransaction, §4.7 MeterValues, §4.10 StopTransaction: a full session.
#[tokio::test]
async fn core_full_session_with_meter_values() {
    let agent = TestAgent::start().await;
    let mut live = agent.running.shared.live.subscribe();
    let cp = sim(&agent, "CP-1", 1).await;
    cp.boot().await.unwrap();
    cp.plug_in(1).await.unwrap();
    let tx = cp.start_transaction(1, TAG_OK).await.unwrap();
    assert!(tx > 0);
    // Let periodic meter values flow, then send one more explicitly.
    cp.wait_for_state(|s| s.connectors[0].meter_wh > 5.0, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cp.send_meter_values(1).await.unwrap();
    let stop = cp.stop_transaction(1, Reason::EVDisconnected).await.unwrap().expect("answered");
    assert_eq!(format!("{:?}", stop.id_tag_info.map(|i| i.status)), "Some(Accepted)");
    cp.unplug(1).await.unwrap();

    let t = transaction(&agent, tx.into()).await;
    assert_eq!(t["id_tag"], TAG_OK);
    assert_eq!(t["origin"], "online");
    assert_eq!(t["stop_reason"], "EVDisconnected");
    assert_eq!(t["stop_source"], "station");
    let energy = t["energy_wh"].as_i64().unwrap();
    assert!(energy > 0, "{t}");
    let samples = t["meter_values"].as_array().unwrap();
    assert!(samples.len() >= 5, "meter values stored: {}", samples.len());
    assert!(samples.iter().any(|s| s["measurand"] == "Current.Import" && s["phase"] == "L2"), "per-phase values kept");
    assert!(samples.iter().any(|s| s["context"] == "Transaction.End"), "transactionData kept");
    // Every committed change was announced live, in order.
    use edge_agent::app::LiveKind;
    let mut kinds = Vec::new();
    while let Ok(e) = live.try_recv() {
        assert_eq!(e.station, "CP-1");
        kinds.push(e.kind);
    }
    let pos = |k: LiveKind| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("{k:?} missing: {kinds:?}"));
    assert!(pos(LiveKind::Connected) < pos(LiveKind::Booted));
    assert!(pos(LiveKind::Booted) < pos(LiveKind::TransactionStarted));
    assert!(pos(LiveKind::TransactionStarted) < pos(LiveKind::MeterValues));
    assert!(pos(LiveKind::MeterValues) < pos(LiveKind::TransactionStopped));
    let (_, stats) = agent.get("/api/v1/stats").await;
    assert_eq!(stats["active_transactions"], 0);
    assert!(stats["outbox"].as_i64().unwrap() >= 4, "state changes reached the outbox: {stats}");
    schema_check(&agent).await;
}

/// §5.11 RemoteStartTransaction and §5.12 RemoteStopTransaction through the local API.
#[tokio::test]
async fn core_remote_start_and_stop() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-2", 2).await;
    cp.boot().await.unwrap();
    cp.plug_in(2).await.unwrap();
    let (status, answer) =
        agent.post("/api/v1/chargers/CP-2/commands/remote-start", json!({"idTag": TAG_OK, "connectorId": 2})).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("Accepted")), "{answer}");
    let tx = eventually(10, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-2").await;
        ch["connectors"].as_array()?.iter().find(|c| c["connector_id"] == 2)?["active_transaction"].as_i64()
    })
    .await
    .expect("remote start led to a transaction");
    let (status, answer) = agent.post("/api/v1/chargers/CP-2/commands/remote-stop", json!({"transactionId": tx})).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("Accepted")), "{answer}");
    let t = eventually(10, || async {
        let t = transaction(&agent, tx).await;
        (t["stop_source"] == "station").then_some(t)
    })
    .await
    .expect("remote stop ended the transaction");
    assert_eq!(t["stop_reason"], "Remote");
    // Stopping an unknown transaction is refused by the charger, and we say so.
    let (status, answer) =
        agent.post("/api/v1/chargers/CP-2/commands/remote-stop", json!({"transactionId": 424242})).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("Rejected")), "{answer}");
    schema_check(&agent).await;
}

/// §5.2 ChangeAvailability: block and unblock a connector; Scheduled while charging.
#[tokio::test]
async fn core_change_availability_block_and_unblock() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 2).await;
    cp.boot().await.unwrap();
    let connector_status = |id: i64| {
        let agent = &agent;
        async move {
            let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
            ch["connectors"].as_array()?.iter().find(|c| c["connector_id"] == id)?["status"].as_str().map(str::to_owned)
        }
    };
    let (status, answer) = agent
        .post("/api/v1/chargers/CP-1/commands/availability", json!({"connectorId": 1, "type": "Inoperative"}))
        .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("Accepted")));
    eventually(5, || async { (connector_status(1).await.as_deref() == Some("Unavailable")).then_some(()) })
        .await
        .expect("connector 1 reported Unavailable");
    let (_, answer) =
        agent.post("/api/v1/chargers/CP-1/commands/availability", json!({"connectorId": 1, "type": "Operative"})).await;
    assert_eq!(answer["status"], "Accepted");
    eventually(5, || async { (connector_status(1).await.as_deref() == Some("Available")).then_some(()) })
        .await
        .expect("connector 1 reported Available again");
    // While a transaction runs the change is Scheduled.
    cp.plug_in(2).await.unwrap();
    cp.start_transaction(2, TAG_OK).await.unwrap();
    let (_, answer) = agent
        .post("/api/v1/chargers/CP-1/commands/availability", json!({"connectorId": 2, "type": "Inoperative"}))
        .await;
    assert_eq!(answer["status"], "Scheduled");
    schema_check(&agent).await;
}

/// §5.13 Reset: the charger reboots and boots again; the agent sees it come back.
#[tokio::test]
async fn core_soft_reset_reboots_the_charger() {
    let agent = TestAgent::start().await;
    let cfg = ChargePointConfig::new("CP-3", agent.ocpp_url()).with_password(password("CP-3")).fast();
    let cp = ChargePoint::connect(cfg).await.unwrap();
    cp.boot().await.unwrap();
    let (_, before) = agent.get("/api/v1/chargers/CP-3").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, answer) = agent.post("/api/v1/chargers/CP-3/commands/reset", json!({"type": "Soft"})).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("Accepted")));
    let after = eventually(10, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-3").await;
        (ch["last_boot"] != before["last_boot"] && ch["connected"] == true).then_some(ch)
    })
    .await
    .expect("the charger booted again after the reset");
    assert!(after["last_boot"].as_str() > before["last_boot"].as_str());
    schema_check(&agent).await;
}

/// §5.8 GetConfiguration, §5.3 ChangeConfiguration, §5.17 TriggerMessage, §5.18
/// UnlockConnector, §5.4 ClearCache through the friendly API; the charger's answer comes back.
#[tokio::test]
async fn core_configuration_trigger_unlock_clear_cache() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 1).await;
    cp.boot().await.unwrap();
    let (status, answer) = agent
        .post("/api/v1/chargers/CP-1/commands/get-configuration", json!({"key": ["HeartbeatInterval", "Nope"]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["configurationKey"][0]["key"], "HeartbeatInterval");
    assert_eq!(answer["unknownKey"], json!(["Nope"]));
    let (_, answer) = agent
        .post(
            "/api/v1/chargers/CP-1/commands/change-configuration",
            json!({"key": "MeterValueSampleInterval", "value": "30"}),
        )
        .await;
    assert_eq!(answer["status"], "Accepted");
    assert_eq!(cp.snapshot().configuration["MeterValueSampleInterval"].value, "30");
    let (_, answer) = agent
        .post("/api/v1/chargers/CP-1/commands/change-configuration", json!({"key": "NoSuchKey", "value": "1"}))
        .await;
    assert_eq!(answer["status"], "NotSupported");
    let (_, answer) =
        agent.post("/api/v1/chargers/CP-1/commands/trigger-message", json!({"requestedMessage": "Heartbeat"})).await;
    assert_eq!(answer["status"], "Accepted");
    let (_, answer) = agent.post("/api/v1/chargers/CP-1/commands/unlock", json!({"connectorId": 1})).await;
    assert_eq!(answer["status"], "Unlocked");
    let (_, answer) = agent.post("/api/v1/chargers/CP-1/commands/clear-cache", json!({})).await;
    assert_eq!(answer["status"], "Accepted");
    // The triggered heartbeat arrived and was answered.
    let log = eventually(5, || async {
        let log = agent.message_log().await;
        (log.iter().filter(|r| r["action"] == "Heartbeat" && r["direction"] == "in").count() >= 1).then_some(log)
    })
    .await
    .expect("triggered heartbeat logged");
    // The message log can be queried by action and by charger.
    let (_, by_action) = agent.get("/api/v1/messages?action=UnlockConnector").await;
    assert_eq!(by_action.as_array().unwrap().len(), 2, "the CALL and its CALLRESULT");
    let (_, by_charger) = agent.get("/api/v1/messages?charger=CP-2").await;
    assert!(by_charger.as_array().unwrap().is_empty());
    assert!(log.len() > 10);
    schema_check(&agent).await;
}

/// Every other central-system call of the six profiles, through the generic endpoint:
/// Smart Charging, Local Auth List, Reservation, Firmware, Remote Trigger, DataTransfer.
#[tokio::test]
async fn every_central_system_call_is_sent_and_answered() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 2).await;
    cp.boot().await.unwrap();
    let profile = json!({
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 7, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}
        }
    });
    let calls: Vec<(&str, Value, &str)> = vec![
        ("SetChargingProfile", profile, "Accepted"),
        ("GetCompositeSchedule", json!({"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"}), "Accepted"),
        ("ClearChargingProfile", json!({"id": 7}), "Accepted"),
        (
            "SendLocalList",
            json!({"listVersion": 3, "updateType": "Full", "localAuthorizationList": [{"idTag": "A1", "idTagInfo": {"status": "Accepted"}}]}),
            "Accepted",
        ),
        ("GetLocalListVersion", json!({}), ""),
        (
            "ReserveNow",
            json!({"connectorId": 2, "expiryDate": "2030-01-01T00:00:00Z", "idTag": TAG_OK, "reservationId": 11}),
            "Accepted",
        ),
        ("CancelReservation", json!({"reservationId": 11}), "Accepted"),
        ("TriggerMessage", json!({"requestedMessage": "StatusNotification", "connectorId": 1}), "Accepted"),
        (
            "UpdateFirmware",
            json!({"location": "https://example.invalid/fw.bin", "retrieveDate": "2026-01-01T00:00:00Z"}),
            "",
        ),
        ("GetDiagnostics", json!({"location": "ftp://example.invalid/diag/"}), ""),
        ("DataTransfer", json!({"vendorId": "org.example", "messageId": "x"}), "UnknownVendorId"),
    ];
    for (action, payload, expected) in calls {
        let (status, answer) = agent.post(&format!("/api/v1/chargers/CP-1/ocpp/{action}"), payload).await;
        assert_eq!(status, 200, "{action}: {answer}");
        if !expected.is_empty() {
            assert_eq!(answer["status"], expected, "{action}: {answer}");
        }
    }
    let (_, v) = agent.post("/api/v1/chargers/CP-1/ocpp/GetLocalListVersion", json!({})).await;
    assert_eq!(v["listVersion"], 3);
    // The firmware and diagnostics status notifications reach the charger record.
    let ch = eventually(10, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
        (ch["firmware_status"] == "Installed" && ch["diagnostics_status"] == "Uploaded").then_some(ch)
    })
    .await;
    assert!(ch.is_some(), "firmware and diagnostics status notifications recorded");
    schema_check(&agent).await;
}

/// A charger that reconnects replaces its old connection cleanly; commands go to the new one.
#[tokio::test]
async fn reconnect_replaces_the_old_connection() {
    let agent = TestAgent::start().await;
    let first = sim(&agent, "CP-1", 1).await;
    first.boot().await.unwrap();
    let second = sim(&agent, "CP-1", 1).await;
    second.boot().await.unwrap();
    first.wait_for_state(|s| !s.connected, WAIT).await.expect("the old connection was closed");
    let (_, answer) = agent.post("/api/v1/chargers/CP-1/commands/clear-cache", json!({})).await;
    assert_eq!(answer["status"], "Accepted");
    assert!(second.received_calls().iter().any(|c| c.action == "ClearCache"));
    assert!(!first.received_calls().iter().any(|c| c.action == "ClearCache"));
    let (_, health) = agent.get("/health").await;
    assert_eq!(health["connections"], 1);
}

/// Status changes are stored and reported in order.
#[tokio::test]
async fn status_notifications_update_live_status() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 1).await;
    cp.boot().await.unwrap();
    cp.status_notification(1, ChargePointStatus::Faulted).await.unwrap();
    let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
    let c1 = ch["connectors"].as_array().unwrap().iter().find(|c| c["connector_id"] == 1).cloned().unwrap();
    assert_eq!(c1["status"], "Faulted");
}

/// The local authorization list is managed over the API and used at once.
#[tokio::test]
async fn local_list_managed_through_the_api() {
    let agent = TestAgent::start().await;
    let cp = sim(&agent, "CP-1", 1).await;
    cp.boot().await.unwrap();
    let status = |r: shared_model::ocpp::v16::AuthorizeResponse| format!("{:?}", r.id_tag_info.status);
    assert_eq!(status(cp.authorize("NEW-CARD").await.unwrap()), "Invalid");
    let (s, _) = http(&agent, reqwest::Method::PUT, "/api/v1/id-tags/NEW-CARD", json!({"status": "Accepted"})).await;
    assert_eq!(s, 200);
    assert_eq!(status(cp.authorize("NEW-CARD").await.unwrap()), "Accepted");
    let (s, body) = http(&agent, reqwest::Method::PUT, "/api/v1/id-tags/NEW-CARD", json!({"status": "Lost"})).await;
    assert_eq!(s, 422, "{body}");
    let (_, list) = agent.get("/api/v1/id-tags").await;
    assert!(list.as_array().unwrap().iter().any(|t| t["id_tag"] == "NEW-CARD" && t["source"] == "api"));
    let (s, _) = http(&agent, reqwest::Method::DELETE, "/api/v1/id-tags/NEW-CARD", Value::Null).await;
    assert_eq!(s, 204);
    assert_eq!(status(cp.authorize("NEW-CARD").await.unwrap()), "Invalid");
    let (s, _) = http(&agent, reqwest::Method::DELETE, "/api/v1/id-tags/NEW-CARD", Value::Null).await;
    assert_eq!(s, 404);
    // Both changes reached the outbox (one event each; the refused one none).
    let db = rusqlite_count(&agent, "SELECT count(*) FROM outbox WHERE kind = 'id_tag_changed'");
    assert_eq!(db, 2);
}

fn rusqlite_count(agent: &TestAgent, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(agent.dir.path().join("edge.db")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

async fn http(agent: &TestAgent, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let mut req = agent.http.request(method, agent.api(path));
    if !body.is_null() {
        req = req.json(&body);
    }
    tests::http_json(req).await
}

/// MeterValues with every kind of qualifier and a signed value: stored verbatim.
#[tokio::test]
async fn meter_values_are_kept_verbatim_including_signed_data() {
    let agent = TestAgent::start().await;
    let mut c = tests::RawClient::connect(&agent, "CP-1").await;
    let start = json!({"connectorId": 1, "idTag": TAG_OK, "meterStart": 1000, "timestamp": "2026-03-01T10:00:00Z"});
    let shared_model::ocpp::framing::Frame::CallResult(r) = c.call("s1", "StartTransaction", start).await.unwrap()
    else {
        panic!("start refused")
    };
    let tx = r.payload["transactionId"].as_i64().unwrap();
    let signed = "OCMF|{\"FV\":\"1.0\",\"RD\":[{\"RV\":\"0.0815\",\"RI\":\"1-b:1.8.0\"}]}|{\"SD\":\"3045022100\"}";
    let mv = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{
    "timestamp": "2026-03-01T10:05:00Z",
    "sampledValue": [
        {"value": "1.5", "unit": "kWh", "measurand": "Energy.Active.Import.Register", "context": "Sample.Periodic"},
        {"value": "230.12", "unit": "V", "measurand": "Voltage", "phase": "L1-N", "location": "Outlet"},
        {"value": "-3.25", "unit": "A", "measurand": "Current.Export", "phase": "L3"},
        {"value": "21.5", "unit": "Celsius", "measurand": "Temperature", "location": "Body"},
        {"value": "80", "unit": "Percent", "measurand": "SoC", "location": "EV"},
        {"value": signed, "format": "SignedData", "context": "Sample.Clock"}
    ]}]});
    let answer = c.call("m1", "MeterValues", mv).await.unwrap();
    assert!(matches!(answer, shared_model::ocpp::framing::Frame::CallResult(_)), "{answer:?}");
    let t = transaction(&agent, tx).await;
    let values = t["meter_values"].as_array().unwrap();
    assert_eq!(values.len(), 6);
    assert!(
        values.iter().any(|v| v["value"] == signed && v["format"] == "SignedData" && v["context"] == "Sample.Clock")
    );
    assert!(values.iter().any(|v| v["value"] == "230.12" && v["phase"] == "L1-N" && v["location"] == "Outlet"));
    assert!(values.iter().any(|v| v["value"] == "-3.25" && v["measurand"] == "Current.Export"));
    assert_eq!(t["last_meter_wh"], 1500, "kWh converted to Wh for the running total");
    schema_check(&agent).await;
}
