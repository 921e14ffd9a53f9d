//! OCPP-J connection mechanics against a hand-driven client: one outstanding CALL per
//! connection with a queue behind it, timeouts, and dead-connection detection.

#![allow(clippy::unwrap_used)]

use futures_util::SinkExt;
use serde_json::json;
use shared_model::ocpp::framing::{CallResult, Frame};
use std::time::Duration;
use tests::{RawClient, TestAgent, eventually};
use tokio_tungstenite::tungstenite::Message;

/// Three commands at once: the client sees one CALL at a time, each only after it
/// answered the previous one (OCPP-J §4.1.1), and every command gets its own answer.
#[tokio::test]
async fn one_outstanding_call_at_a_time_with_a_queue() {
    let agent = TestAgent::start().await;
    let mut c = RawClient::connect(&agent, "CP-1").await;
    let url = |cmd: &str| agent.api(&format!("/api/v1/chargers/CP-1/commands/{cmd}"));
    let http = agent.http.clone();
    let (u1, u2, u3) = (url("clear-cache"), url("reset"), url("unlock"));
    let requests = tokio::spawn(async move {
        tokio::join!(
            tests::http_json(http.post(u1).json(&json!({}))),
            tests::http_json(http.post(u2).json(&json!({"type": "Soft"}))),
            tests::http_json(http.post(u3).json(&json!({"connectorId": 1}))),
        )
    });
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Frame::Call(call) = c.next_frame().await.unwrap() else { panic!("expected a CALL") };
        // Nothing else arrives while this one is unanswered.
        let early = tokio::time::timeout(Duration::from_millis(300), c.next_frame()).await;
        assert!(early.is_err(), "a second CALL arrived before the first was answered");
        let status = match call.action.as_str() {
            "UnlockConnector" => "Unlocked",
            _ => "Accepted",
        };
        let reply =
            Frame::CallResult(CallResult { unique_id: call.unique_id.clone(), payload: json!({"status": status}) });
        c.ws.send(Message::text(reply.to_text())).await.unwrap();
        seen.push(call.action);
    }
    seen.sort();
    assert_eq!(seen, vec!["ClearCache", "Reset", "UnlockConnector"]);
    let (a, b, d) = requests.await.unwrap();
    assert_eq!((a.0, a.1["status"].as_str()), (200, Some("Accepted")));
    assert_eq!((b.0, b.1["status"].as_str()), (200, Some("Accepted")));
    assert_eq!((d.0, d.1["status"].as_str()), (200, Some("Unlocked")));
}

/// A charger that never answers: the command times out (504) and the next one is sent.
#[tokio::test]
async fn unanswered_call_times_out_and_frees_the_slot() {
    let agent = TestAgent::start_with("call_timeout_s = 1").await;
    let mut c = RawClient::connect(&agent, "CP-1").await;
    let http = agent.http.clone();
    let u = agent.api("/api/v1/chargers/CP-1/commands/clear-cache");
    let pending = tokio::spawn(async move { tests::http_json(http.post(u).json(&json!({}))).await });
    let Frame::Call(first) = c.next_frame().await.unwrap() else { panic!("expected a CALL") };
    let (status, body) = pending.await.unwrap();
    assert_eq!(status, 504, "{body}");
    // A late answer is ignored; the next command works.
    let late = Frame::CallResult(CallResult { unique_id: first.unique_id, payload: json!({"status": "Accepted"}) });
    c.ws.send(Message::text(late.to_text())).await.unwrap();
    let http = agent.http.clone();
    let u = agent.api("/api/v1/chargers/CP-1/commands/clear-cache");
    let next = tokio::spawn(async move { tests::http_json(http.post(u).json(&json!({}))).await });
    let Frame::Call(second) = c.next_frame().await.unwrap() else { panic!("expected a CALL") };
    let ok = Frame::CallResult(CallResult { unique_id: second.unique_id, payload: json!({"status": "Rejected"}) });
    c.ws.send(Message::text(ok.to_text())).await.unwrap();
    let (status, body) = next.await.unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("Rejected")));
    let metrics = agent.http.get(agent.api("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sitepilot_edge_ocpp_call_timeouts_total{action="ClearCache"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"sitepilot_edge_ocpp_call_roundtrip_seconds_count{action="ClearCache"} 1"#),
        "{metrics}"
    );
}

/// A charger whose connection went silent (no frames, no pongs) is detected as dead and
/// disconnected; its pending commands end instead of hanging.
#[tokio::test]
async fn silent_connection_is_detected_as_dead() {
    let agent = TestAgent::start_with("ping_interval_s = 1\nidle_timeout_s = 2").await;
    // Connect and then never read again: pings go unanswered.
    let c = RawClient::connect(&agent, "CP-1").await;
    let connected = eventually(5, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
        (ch["connected"] == true).then_some(())
    })
    .await;
    assert!(connected.is_some());
    let gone = eventually(10, || async {
        let (_, ch) = agent.get("/api/v1/chargers/CP-1").await;
        (ch["connected"] == false).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the dead connection was not detected");
    drop(c);
    let (_, health) = agent.get("/health").await;
    assert_eq!(health["connections"], 0);
}

/// Commands beyond the queue bound are refused at once with 503, not left hanging.
#[tokio::test]
async fn commands_beyond_the_queue_bound_are_refused() {
    let agent = TestAgent::start_with("max_queued_calls = 1\ncall_timeout_s = 2").await;
    let mut c = RawClient::connect(&agent, "CP-1").await;
    let post = || {
        let http = agent.http.clone();
        let u = agent.api("/api/v1/chargers/CP-1/commands/clear-cache");
        tokio::spawn(async move { tests::http_json(http.post(u).json(&json!({}))).await })
    };
    let first = post();
    let Frame::Call(_) = c.next_frame().await.unwrap() else { panic!("expected a CALL") };
    let second = post();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = post().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("too many calls queued"), "{body}");
    // The first times out (never answered), the second then goes out and times out too.
    assert_eq!(first.await.unwrap().0, 504);
    assert_eq!(second.await.unwrap().0, 504);
}
