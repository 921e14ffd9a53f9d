//! Bad input gets a precise error, never a crash (invariant 4): malformed frames, unknown
//! actions, wrong types, missing fields, oversized frames, and refused handshakes for an
//! unknown charger, a wrong password or a missing subprotocol.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use shared_model::ocpp::framing::{ErrorCode, Frame};
use tests::{RawClient, TestAgent, password, raw_connect};

fn error_of(frame: &Frame) -> (String, ErrorCode) {
    match frame {
        Frame::CallError(e) => (e.unique_id.clone(), e.code),
        other => panic!("expected a CALLERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_refusals_have_precise_http_statuses() {
    let agent = TestAgent::start().await;
    let url = agent.ocpp_url();
    // Unknown charge point (policy reject) -> 404.
    assert_eq!(raw_connect(&url, "CP-UNKNOWN", Some("whatever-1234"), &["ocpp1.6"]).await.err(), Some(404));
    // Wrong password -> 401; no credentials -> 401; another charger's password -> 401.
    assert_eq!(raw_connect(&url, "CP-1", Some("wrong-password"), &["ocpp1.6"]).await.err(), Some(401));
    assert_eq!(raw_connect(&url, "CP-1", None, &["ocpp1.6"]).await.err(), Some(401));
    assert_eq!(raw_connect(&url, "CP-1", Some(password("CP-2")), &["ocpp1.6"]).await.err(), Some(401));
    // No subprotocol, or only ones we do not speak -> 400.
    assert_eq!(raw_connect(&url, "CP-1", Some(password("CP-1")), &[]).await.err(), Some(400));
    assert_eq!(raw_connect(&url, "CP-1", Some(password("CP-1")), &["ocpp2.0.1"]).await.err(), Some(400));
    // An identity with characters outside the allowed set -> 400.
    assert_eq!(raw_connect(&url, "CP%201", Some("x"), &["ocpp1.6"]).await.err(), Some(400));
    // A wrong path -> 404.
    let wrong_base = url.replace("/ocpp", "/nope");
    assert_eq!(raw_connect(&wrong_base, "CP-1", Some(password("CP-1")), &["ocpp1.6"]).await.err(), Some(404));
    // Offering several subprotocols picks ocpp1.6; the agent still works.
    let mut ws = RawClient {
        ws: raw_connect(&url, "CP-1", Some(password("CP-1")), &["ocpp2.0.1", "ocpp1.6"]).await.expect("accepted"),
    };
    let hb = ws.call("hb1", "Heartbeat", json!({})).await.unwrap();
    assert!(matches!(hb, Frame::CallResult(ref r) if r.unique_id == "hb1" && r.payload["currentTime"].is_string()));
    // Refusals are counted by reason.
    let (_, _) = agent.get("/health").await;
    let metrics = agent.http.get(agent.api("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"sitepilot_edge_ocpp_handshake_refused_total{reason="bad_credentials"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sitepilot_edge_ocpp_handshake_refused_total{reason="no_credentials"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"sitepilot_edge_ocpp_handshake_refused_total{reason="subprotocol"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"sitepilot_edge_ocpp_handshake_refused_total{reason="unknown"} 1"#), "{metrics}");
}

#[tokio::test]
async fn malformed_frames_get_the_callerror_the_spec_names() {
    let agent = TestAgent::start_with("max_frame_bytes = 2048").await;
    let mut c = RawClient::connect(&agent, "CP-1").await;

    // Not JSON at all: no id can be read, answered with id "-1".
    let f = c.send_text("this is not json").await.unwrap();
    assert_eq!(error_of(&f), ("-1".into(), ErrorCode::FormationViolation));
    // JSON, but not an OCPP-J array.
    let f = c.send_text(r#"{"hello": "world"}"#).await.unwrap();
    assert_eq!(error_of(&f).1, ErrorCode::FormationViolation);
    // A CALL with a missing payload element.
    let f = c.send_text(r#"[2,"m1","Heartbeat"]"#).await.unwrap();
    assert_eq!(error_of(&f), ("m1".into(), ErrorCode::FormationViolation));
    // Unknown action.
    let f = c.call("u1", "MakeCoffee", json!({})).await.unwrap();
    assert_eq!(error_of(&f), ("u1".into(), ErrorCode::NotImplemented));
    // An action only a central system sends.
    let f = c.call("u2", "Reset", json!({"type": "Hard"})).await.unwrap();
    assert_eq!(error_of(&f), ("u2".into(), ErrorCode::NotSupported));
    // Wrong type: connectorId as a string.
    let f = c
        .call(
            "t1",
            "StartTransaction",
            json!({"connectorId": "1", "idTag": "TAG-OK", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(error_of(&f), ("t1".into(), ErrorCode::TypeConstraintViolation));
    // Missing required field.
    let f = c.call("o1", "BootNotification", json!({"chargePointVendor": "ACME"})).await.unwrap();
    assert_eq!(error_of(&f), ("o1".into(), ErrorCode::OccurenceConstraintViolation));
    // A value outside its constraints: idTag longer than 20 characters, unknown enum value.
    let f = c.call("p1", "Authorize", json!({"idTag": "X".repeat(21)})).await.unwrap();
    assert_eq!(error_of(&f), ("p1".into(), ErrorCode::PropertyConstraintViolation));
    let f = c
        .call("p2", "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Dancing"}))
        .await
        .unwrap();
    assert_eq!(error_of(&f), ("p2".into(), ErrorCode::PropertyConstraintViolation));
    // Oversized frame: refused with the id it carries, not processed.
    let big = json!({"vendorId": "ACME", "data": "x".repeat(4000)});
    let f = c.call("big1", "DataTransfer", big).await.unwrap();
    assert_eq!(error_of(&f), ("big1".into(), ErrorCode::FormationViolation));

    // The connection survived all of it.
    let f = c.call("hb", "Heartbeat", json!({})).await.unwrap();
    assert!(matches!(f, Frame::CallResult(_)), "{f:?}");

    // Every refusal is counted by code and every frame is in the log.
    let metrics = agent.http.get(agent.api("/metrics")).send().await.unwrap().text().await.unwrap();
    for (code, n) in [
        ("FormationViolation", 4),
        ("NotImplemented", 1),
        ("NotSupported", 1),
        ("TypeConstraintViolation", 1),
        ("OccurenceConstraintViolation", 1),
        ("PropertyConstraintViolation", 2),
    ] {
        let line = format!(r#"sitepilot_edge_ocpp_callerrors_total{{direction="out",code="{code}"}} {n}"#);
        assert!(metrics.contains(&line), "missing {line}\n{metrics}");
    }
    let log = tests::eventually(5, || async {
        let log = agent.message_log().await;
        (log.iter().filter(|r| r["direction"] == "out" && r["message_type"] == 4).count() == 10).then_some(log)
    })
    .await
    .expect("all 10 CALLERRORs logged");
    assert!(log.iter().any(|r| r["payload"] == "this is not json"), "raw invalid input kept in the log");
}

#[tokio::test]
async fn unknown_charger_pending_until_an_installer_approves_it() {
    let agent = TestAgent::start_with("unknown_chargers = \"pending\"").await;
    let url = agent.ocpp_url();
    let mut c = RawClient { ws: raw_connect(&url, "NEW-1", Some("its-own-secret-1"), &["ocpp1.6"]).await.unwrap() };
    let boot = json!({"chargePointVendor": "ACME", "chargePointModel": "Wallbox"});
    let f = c.call("b1", "BootNotification", boot.clone()).await.unwrap();
    let Frame::CallResult(r) = f else { panic!("{f:?}") };
    assert_eq!(r.payload["status"], "Pending");
    assert_eq!(r.payload["interval"], 60);
    // While pending, nothing but BootNotification is accepted.
    let f = c
        .call("s1", "StatusNotification", json!({"connectorId": 1, "errorCode": "NoError", "status": "Available"}))
        .await
        .unwrap();
    assert_eq!(error_of(&f).1, ErrorCode::SecurityError);
    let (status, list) = agent.get("/api/v1/chargers/NEW-1").await;
    assert_eq!((status, list["registration"].as_str()), (200, Some("pending")));
    // The installer approves it; the password it presented becomes its password.
    let (status, _) = agent.post("/api/v1/chargers/NEW-1/approve", json!({})).await;
    assert_eq!(status, 200);
    let f = c.call("b2", "BootNotification", boot).await.unwrap();
    let Frame::CallResult(r) = f else { panic!("{f:?}") };
    assert_eq!(r.payload["status"], "Accepted");
    drop(c);
    assert_eq!(raw_connect(&url, "NEW-1", Some("not-its-secret"), &["ocpp1.6"]).await.err(), Some(401));
    assert!(raw_connect(&url, "NEW-1", Some("its-own-secret-1"), &["ocpp1.6"]).await.is_ok());
    // Rejecting closes it and answers boots with Rejected.
    let (status, _) = agent.post("/api/v1/chargers/NEW-1/reject", json!({})).await;
    assert_eq!(status, 200);
    let mut c = RawClient { ws: raw_connect(&url, "NEW-1", Some("its-own-secret-1"), &["ocpp1.6"]).await.unwrap() };
    let f =
        c.call("b3", "BootNotification", json!({"chargePointVendor": "ACME", "chargePointModel": "W"})).await.unwrap();
    assert!(matches!(f, Frame::CallResult(ref r) if r.payload["status"] == "Rejected"), "{f:?}");
    // Every registration change (first seen, approved, rejected) is an outbox event.
    let db = rusqlite::Connection::open(agent.dir.path().join("edge.db")).unwrap();
    let registrations: Vec<String> = db
        .prepare("SELECT payload FROM outbox WHERE kind = 'station_registration' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|p| serde_json::from_str::<serde_json::Value>(&p.unwrap()).unwrap()["registration"].to_string())
        .collect();
    assert_eq!(registrations, [r#""pending""#, r#""accepted""#, r#""rejected""#]);
}

#[tokio::test]
async fn api_errors_are_problem_json_with_a_reason() {
    let agent = TestAgent::start().await;
    let (s, body) = agent.get("/api/v1/chargers/NOPE").await;
    assert_eq!(s, 404);
    assert_eq!(body["detail"], "no charger NOPE");
    let (s, body) = agent.get("/api/v1/transactions?limit=abc").await;
    assert_eq!(s, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    // A command to a known charger that is not connected.
    let (s, body) = agent.post("/api/v1/chargers/CP-1/commands/reset", json!({"type": "Soft"})).await;
    assert_eq!(s, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("not connected"), "{body}");
    // A payload that is not a valid OCPP request is refused before anything is sent.
    let (s, body) = agent.post("/api/v1/chargers/CP-1/commands/reset", json!({"type": "Sideways"})).await;
    assert_eq!(s, 422, "{body}");
    let (s, _) = agent.post("/api/v1/chargers/CP-1/commands/fly", json!({})).await;
    assert_eq!(s, 404);
    let (s, body) = agent.post("/api/v1/chargers/CP-1/ocpp/Heartbeat", json!({})).await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = agent.get("/api/v1/nothing-here").await;
    assert_eq!((s, body["title"].as_str()), (404, Some("not found")));
}
