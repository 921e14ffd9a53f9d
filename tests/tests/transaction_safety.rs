//! Invariant 3: nothing a charger reports is lost or duplicated — a charger reboot mid
//! session, a transaction started offline, a retransmitted StartTransaction, and the
//! agent killed with SIGKILL in the middle of a session.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use shared_model::ocpp::v16::{Reason, StopTransactionRequest};
use simulators::chargepoint::{ChargePoint, ChargePointConfig};
use std::time::Duration;
use tests::{TAG_OK, TestAgent, assert_log_schema_valid, config_text, eventually, http_json, password};

const WAIT: Duration = Duration::from_secs(10);

fn sim_config(base_url: &str, id: &str) -> ChargePointConfig {
    ChargePointConfig::new(id, base_url)
        .with_password(password(id))
        .with_meter_interval(Duration::from_millis(200))
        .fast()
}

async fn transactions(agent: &TestAgent, charger: &str) -> Vec<Value> {
    let (_, list) = agent.get(&format!("/api/v1/transactions?charger={charger}")).await;
    list.as_array().cloned().unwrap()
}

/// A charger that loses power mid-session and comes back keeps its transaction: the
/// boot does not fail it, later MeterValues and the StopTransaction complete it.
#[tokio::test]
async fn reboot_mid_session_keeps_the_transaction() {
    let agent = TestAgent::start().await;
    let cp = ChargePoint::connect(sim_config(&agent.ocpp_url(), "CP-1")).await.unwrap();
    cp.boot().await.unwrap();
    cp.plug_in(1).await.unwrap();
    let tx = cp.start_transaction(1, TAG_OK).await.unwrap();
    cp.wait_for_state(|s| s.connectors[0].meter_wh > 5.0, WAIT).await.unwrap();
    cp.power_loss().await.unwrap();
    // The agent notices the connection is gone; the transaction stays open.
    eventually(10, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
        (ch["connected"] == false).then_some(())
    })
    .await
    .expect("disconnect noticed");
    let boot = cp.reconnect().await.unwrap();
    assert_eq!(format!("{:?}", boot.status), "Accepted");
    let t = transactions(&agent, "CP-1").await;
    assert_eq!(t.len(), 1);
    assert!(t[0]["stop_source"].is_null(), "a boot must not end the transaction: {}", t[0]);
    cp.send_meter_values(1).await.unwrap();
    cp.stop_transaction(1, Reason::Local).await.unwrap();
    let t = transactions(&agent, "CP-1").await;
    assert_eq!(t.len(), 1, "still exactly one transaction");
    assert_eq!(t[0]["id"], i64::from(tx));
    assert_eq!(t[0]["stop_source"], "station");
    assert!(t[0]["energy_wh"].as_i64().unwrap() > 0);
    assert_log_schema_valid(&agent.message_log().await, &[]);
}

/// A session started and ended while the charger was offline reaches the agent after
/// reconnection: the queued StartTransaction gets an id and the StopTransaction uses it.
#[tokio::test]
async fn transaction_started_offline_is_recorded() {
    let agent = TestAgent::start().await;
    let cp = ChargePoint::connect(sim_config(&agent.ocpp_url(), "CP-2")).await.unwrap();
    cp.boot().await.unwrap();
    cp.power_loss().await.unwrap();
    cp.plug_in(1).await.unwrap();
    let local = cp.start_transaction(1, TAG_OK).await.unwrap();
    cp.wait_for_state(|s| s.connectors[0].meter_wh > 5.0, WAIT).await.unwrap();
    cp.stop_transaction(1, Reason::EVDisconnected).await.unwrap();
    assert!(cp.snapshot().queued_messages >= 2, "start and stop queued while offline");
    cp.reconnect().await.unwrap();
    cp.wait_queue_drained(WAIT).await.unwrap();
    let t = transactions(&agent, "CP-2").await;
    assert_eq!(t.len(), 1, "{t:?} (local id {local})");
    assert_eq!(t[0]["stop_reason"], "EVDisconnected");
    assert_eq!(t[0]["stop_source"], "station");
    assert!(t[0]["energy_wh"].as_i64().unwrap() > 0);
}

/// A StopTransaction for an id the agent never issued (the charger started it offline
/// and its StartTransaction never arrived) is accepted and recorded as such.
#[tokio::test]
async fn stop_for_an_unknown_transaction_id_is_accepted_as_offline() {
    let agent = TestAgent::start().await;
    let cp = ChargePoint::connect(sim_config(&agent.ocpp_url(), "CP-3")).await.unwrap();
    cp.boot().await.unwrap();
    let stop = StopTransactionRequest {
        id_tag: Some("TAG-OK".try_into().unwrap()),
        meter_stop: 12_345,
        timestamp: chrono::Utc::now(),
        transaction_id: 987_654,
        reason: Some(Reason::Local),
        transaction_data: None,
    };
    let answer = cp.call(stop.clone()).await.unwrap();
    assert_eq!(format!("{:?}", answer.id_tag_info.map(|i| i.status)), "Some(Accepted)");
    // The same stop again (the charger missed our answer) changes nothing.
    cp.call(stop).await.unwrap();
    let t = transactions(&agent, "CP-3").await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["origin"], "offline");
    assert_eq!(t[0]["station_transaction_id"], 987_654);
    assert_eq!(t[0]["meter_stop_wh"], 12_345);
}

/// A retransmitted StartTransaction (the charger never got our answer) gets the same
/// transactionId, and there is still one transaction.
#[tokio::test]
async fn retransmitted_start_transaction_gets_the_same_id() {
    let agent = TestAgent::start().await;
    let cp = ChargePoint::connect(sim_config(&agent.ocpp_url(), "CP-1")).await.unwrap();
    cp.boot().await.unwrap();
    cp.plug_in(1).await.unwrap();
    let first = cp.start_transaction(1, TAG_OK).await.unwrap();
    let again = cp.retransmit_last_start().await.unwrap();
    let third = cp.retransmit_last_start().await.unwrap();
    assert_eq!((first, first), (again, third));
    assert_eq!(transactions(&agent, "CP-1").await.len(), 1);
    let (_, stats) = agent.get("/api/v1/stats").await;
    assert_eq!(stats["transactions"], 1);
}

/// The agent binary, built by `cargo test --workspace` next to this test's binary.
struct AgentProcess {
    process: tests::Spawned,
    ocpp: String,
    api: String,
}

async fn spawn_agent(config: &std::path::Path) -> AgentProcess {
    let bin = tests::workspace_binary("edge-agent", "SITEPILOT_EDGE_AGENT_BIN");
    let process = tests::Spawned::run(&bin, config).await;
    let ocpp = format!("ws://{}/ocpp", process.ready["ocpp"].as_str().unwrap());
    let api = format!("http://{}", process.ready["api"].as_str().unwrap());
    AgentProcess { process, ocpp, api }
}

async fn api_get(api: &str, path: &str) -> Value {
    let (status, v) = http_json(reqwest::Client::new().get(format!("{api}{path}"))).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// SIGKILL of the agent mid-session, then a restart on the same database: every message
/// the charger got an answer for is still there, and the session completes as one
/// transaction with the same id.
#[tokio::test]
async fn sigkill_mid_session_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, config_text(dir.path(), "")).unwrap();
    let agent = spawn_agent(&config).await;

    let cp = ChargePoint::connect(sim_config(&agent.ocpp, "CP-1")).await.unwrap();
    cp.boot().await.unwrap();
    cp.plug_in(1).await.unwrap();
    let tx = cp.start_transaction(1, TAG_OK).await.unwrap();
    cp.wait_for_state(|s| s.connectors[0].meter_wh > 5.0, WAIT).await.unwrap();
    // One acknowledged MeterValues right before the kill; periodic ones are in flight too.
    cp.send_meter_values(1).await.unwrap();
    let before = api_get(&agent.api, &format!("/api/v1/transactions/{tx}")).await;
    let samples_before: Vec<Value> = before["meter_values"].as_array().unwrap().clone();
    assert!(!samples_before.is_empty());

    let port = agent.ocpp.trim_start_matches("ws://").trim_end_matches("/ocpp").to_owned();
    agent.process.kill().await; // SIGKILL

    // Restart on the same database and the same port.
    let text = config_text(dir.path(), "").replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{port}\""), 1);
    std::fs::write(&config, text).unwrap();
    let agent = spawn_agent(&config).await;
    let boot = cp.reconnect().await.unwrap();
    assert_eq!(format!("{:?}", boot.status), "Accepted");
    cp.wait_queue_drained(WAIT).await.unwrap();
    cp.send_meter_values(1).await.unwrap();
    cp.stop_transaction(1, Reason::Local).await.unwrap();

    let after = api_get(&agent.api, &format!("/api/v1/transactions/{tx}")).await;
    assert_eq!(after["stop_source"], "station", "{after}");
    assert_eq!(after["meter_start_wh"], before["meter_start_wh"]);
    let samples_after = after["meter_values"].as_array().unwrap();
    for s in &samples_before {
        assert!(samples_after.contains(s), "sample acknowledged before the kill was lost: {s}");
    }
    assert!(samples_after.len() > samples_before.len());
    let all = api_get(&agent.api, "/api/v1/transactions?charger=CP-1").await;
    assert_eq!(all.as_array().unwrap().len(), 1, "one transaction, not two: {all}");
    let log = tests::message_log(&reqwest::Client::new(), &agent.api).await;
    assert_log_schema_valid(&log, &[]);
}
