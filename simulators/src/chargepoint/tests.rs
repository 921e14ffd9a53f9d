//! The simulator over real sockets against a small in-process central system.

use super::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use shared_model::ocpp::framing::{Call, CallError, CallResult, ErrorCode};
use shared_model::ocpp::v16::{ResetRequest, ResetType};
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

const WAIT: Duration = Duration::from_secs(5);

/// What the mock central system saw from a charge point.
#[derive(Debug)]
enum Seen {
    Call(Call),
    Answer(Frame),
}

struct MockCs {
    base_url: String,
    seen: UnboundedReceiver<Seen>,
    to_cp: Arc<Mutex<Option<UnboundedSender<String>>>>,
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn check_upgrade(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode| {
        let mut r = ErrorResponse::new(Some(format!("refused: {status}")));
        *r.status_mut() = status;
        Err(r)
    };
    if !req.uri().path().starts_with("/ocpp/CP") {
        return refuse(StatusCode::NOT_FOUND);
    }
    let id = req.uri().path().trim_start_matches("/ocpp/");
    let expected =
        format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{id}:secret")));
    if req.headers().get("Authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED);
    }
    let offered = req.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !offered.split(',').any(|p| p.trim() == "ocpp1.6") {
        return refuse(StatusCode::BAD_REQUEST);
    }
    resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("ocpp1.6"));
    Ok(resp)
}

fn answer(call: &Call, next_tx: &AtomicI32) -> Frame {
    let payload = match call.action.as_str() {
        "BootNotification" => json!({"status": "Accepted", "currentTime": chrono::Utc::now(), "interval": 300}),
        "Heartbeat" => json!({"currentTime": chrono::Utc::now()}),
        "Authorize" => {
            json!({"idTagInfo": {"status": if call.payload["idTag"] == "BAD" { "Invalid" } else { "Accepted" }}})
        }
        "StartTransaction" => json!({"transactionId": next_tx.fetch_add(1, Ordering::SeqCst),
            "idTagInfo": {"status": if call.payload["idTag"] == "BAD" { "Invalid" } else { "Accepted" }}}),
        "Nope" => return Frame::CallError(CallError::new(call.unique_id.clone(), ErrorCode::NotImplemented, "nope")),
        _ => json!({}),
    };
    Frame::CallResult(CallResult { unique_id: call.unique_id.clone(), payload })
}

impl MockCs {
    async fn start() -> MockCs {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (seen_tx, seen) = unbounded_channel();
        let to_cp: Arc<Mutex<Option<UnboundedSender<String>>>> = Arc::new(Mutex::new(None));
        let to_cp2 = to_cp.clone();
        tokio::spawn(async move {
            let next_tx = Arc::new(AtomicI32::new(100));
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check_upgrade).await else { continue };
                let (mut sink, mut stream) = ws.split();
                let (out_tx, mut out_rx) = unbounded_channel::<String>();
                *to_cp2.lock().expect("lock") = Some(out_tx.clone());
                let seen_tx = seen_tx.clone();
                let next_tx = next_tx.clone();
                tokio::spawn(async move {
                    while let Some(text) = out_rx.recv().await {
                        if sink.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some(Ok(msg)) = stream.next().await {
                        let Message::Text(text) = msg else { continue };
                        match Frame::parse(text.as_str()) {
                            Ok(Frame::Call(call)) => {
                                let _ = out_tx.send(answer(&call, &next_tx).to_text());
                                let _ = seen_tx.send(Seen::Call(call));
                            }
                            Ok(other) => {
                                let _ = seen_tx.send(Seen::Answer(other));
                            }
                            Err(e) => {
                                if let Some(id) = e.unique_id {
                                    let _ =
                                        out_tx.send(Frame::CallError(CallError::new(id, e.code, e.message)).to_text());
                                }
                            }
                        }
                    }
                });
            }
        });
        MockCs { base_url: format!("ws://{addr}/ocpp"), seen, to_cp }
    }

    fn config(&self, id: &str) -> ChargePointConfig {
        ChargePointConfig::new(id, self.base_url.clone()).with_password("secret").fast().with_connectors(2)
    }

    fn send(&self, text: String) {
        if let Some(tx) = self.to_cp.lock().expect("lock").as_ref() {
            let _ = tx.send(text);
        }
    }

    /// Next CALL with `action` (skipping others).
    async fn call(&mut self, action: &str) -> Call {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.seen.recv().await {
                    Some(Seen::Call(c)) if c.action == action => return c,
                    Some(_) => {}
                    None => panic!("mock closed"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {action} within {WAIT:?}"))
    }

    /// Next answer of the charge point to our CALLs.
    async fn answer(&mut self) -> Frame {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.seen.recv().await {
                    Some(Seen::Answer(f)) => return f,
                    Some(_) => {}
                    None => panic!("mock closed"),
                }
            }
        })
        .await
        .expect("an answer in time")
    }

    /// All CALLs seen so far (without waiting).
    fn drain_calls(&mut self) -> Vec<Call> {
        let mut out = Vec::new();
        while let Ok(s) = self.seen.try_recv() {
            if let Seen::Call(c) = s {
                out.push(c);
            }
        }
        out
    }
}

#[tokio::test]
async fn refused_upgrades_keep_the_http_status() {
    let cs = MockCs::start().await;
    let wrong = ChargePointConfig::new("CP1", cs.base_url.clone()).with_password("wrong");
    assert!(matches!(ChargePoint::connect(wrong).await, Err(SimError::Refused { status: 401, .. })));
    let unknown = ChargePointConfig::new("XX1", cs.base_url.clone()).with_password("secret");
    assert!(matches!(ChargePoint::connect(unknown).await, Err(SimError::Refused { status: 404, .. })));
    let no_proto = cs.config("CP1").with_subprotocol(None);
    assert!(matches!(ChargePoint::connect(no_proto).await, Err(SimError::Refused { status: 400, .. })));
    let other_proto = cs.config("CP1").with_subprotocol(Some("ocpp2.0.1"));
    assert!(matches!(ChargePoint::connect(other_proto).await, Err(SimError::Refused { status: 400, .. })));
    let nobody = ChargePointConfig::new("CP1", "ws://127.0.0.1:1/ocpp");
    assert!(matches!(ChargePoint::connect(nobody).await, Err(SimError::Connect(_))));
}

#[tokio::test]
async fn session_with_a_charging_profile() {
    let mut cs = MockCs::start().await;
    let cp = ChargePoint::connect(cs.config("CP1").with_ev(EvModel::instant().with_max_current(16.0)))
        .await
        .expect("connect");
    let boot = cp.boot().await.expect("boot");
    assert_eq!(boot.status, RegistrationStatus::Accepted);
    assert_eq!(cs.call("BootNotification").await.payload["chargePointModel"], "SimCharger");
    assert_eq!(cp.authorize("BAD").await.expect("authorize").id_tag_info.status, AuthorizationStatus::Invalid);
    cp.plug_in(1).await.expect("plug in");
    let tx = cp.start_transaction(1, "TAG1").await.expect("start");
    assert_eq!(tx, 100);
    assert_eq!(cs.call("StartTransaction").await.payload["idTag"], "TAG1");

    cs.send(
        json!([2, "cs-1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}}}])
        .to_string(),
    );
    let a = cs.answer().await;
    assert!(matches!(&a, Frame::CallResult(r) if r.unique_id == "cs-1" && r.payload["status"] == "Accepted"), "{a:?}");
    let s = cp.wait_for_state(|s| s.connectors[0].current_a == 10.0, WAIT).await.expect("EV follows the limit");
    assert_eq!(s.connectors[0].profile_limit_a, Some(10.0));
    let logged = cp.wait_for_call("SetChargingProfile", WAIT).await.expect("logged");
    assert!(matches!(logged.response, Frame::CallResult(_)));

    cp.send_meter_values(1).await.expect("meter values");
    let mv = cs.call("MeterValues").await;
    assert_eq!(mv.payload["transactionId"], 100);
    let stop = cp.stop_transaction(1, Reason::Local).await.expect("stop");
    assert!(stop.is_some());
    let st = cs.call("StopTransaction").await;
    assert_eq!(st.payload["transactionId"], 100);
    assert_eq!(st.payload["reason"], "Local");
    cp.unplug(1).await.expect("unplug");
    let s = cp.state().await.expect("state");
    assert_eq!(s.connectors[0].status, ChargePointStatus::Available);
    assert!(s.connectors[0].meter_wh > 0.0);

    // A CALLERROR becomes a typed error; a rejected tag stops the transaction.
    let err = cp.call_value("Nope", json!({})).await;
    assert!(matches!(err, Err(SimError::CallError { code: ErrorCode::NotImplemented, .. })), "{err:?}");
    let bad = cp.start_transaction(2, "BAD").await;
    assert!(matches!(bad, Err(SimError::IdTagRejected { .. })), "{bad:?}");
    let st = cs.call("StopTransaction").await;
    assert_eq!(st.payload["reason"], "DeAuthorized");
    cp.disconnect().await.expect("disconnect");
    assert!(!cp.state().await.expect("state").connected);
}

#[tokio::test]
async fn offline_transaction_is_replayed_after_reconnect() {
    let mut cs = MockCs::start().await;
    let cp = ChargePoint::connect(cs.config("CP2")).await.expect("connect");
    cp.boot().await.expect("boot");
    cp.power_loss().await.expect("power loss");
    assert!(matches!(cp.heartbeat().await, Err(SimError::NotConnected)));
    let local = cp.start_transaction(1, "TAG1").await.expect("start offline");
    assert!(local < 0, "offline start gives the local id, got {local}");
    cp.send_meter_values(1).await.expect("meter values offline");
    assert_eq!(cp.stop_transaction(1, Reason::Local).await.expect("stop offline"), None);
    assert_eq!(cp.state().await.expect("state").queued_messages, 3);
    cs.drain_calls();

    let boot = cp.reconnect().await.expect("reconnect");
    assert_eq!(boot.status, RegistrationStatus::Accepted);
    let s = cp.state().await.expect("state");
    assert_eq!(s.queued_messages, 0);
    let calls: Vec<Call> = cs
        .drain_calls()
        .into_iter()
        .filter(|c| {
            matches!(c.action.as_str(), "BootNotification" | "StartTransaction" | "MeterValues" | "StopTransaction")
        })
        .collect();
    let actions: Vec<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["BootNotification", "StartTransaction", "MeterValues", "StopTransaction"]);
    assert_eq!(calls[2].payload["transactionId"], 100);
    assert_eq!(calls[3].payload["transactionId"], 100);

    // Retransmission: the identical StartTransaction payload again.
    let first = calls[1].payload.clone();
    let again = cp.retransmit_last_start().await.expect("retransmit");
    assert_eq!(again, 101, "this mock does not deduplicate");
    assert_eq!(cs.call("StartTransaction").await.payload, first);
}

#[tokio::test]
async fn server_calls_raw_frames_and_reset() {
    let mut cs = MockCs::start().await;
    let cp = ChargePoint::connect(cs.config("CP3")).await.expect("connect");
    // Raw frames before boot: a CALL with an invalid payload gets the mock's CALLERROR.
    let f = cp.send_raw(r#"[2,"raw-1","Heartbeat",[]]"#).await.expect("raw answer");
    assert!(matches!(&f, Frame::CallError(e) if e.unique_id == "raw-1" && e.code == ErrorCode::FormationViolation));
    let silent = cp.send_raw_with_timeout(r#"[3,"nobody",{}]"#, Duration::from_millis(200)).await;
    assert!(matches!(silent, Err(SimError::Timeout { .. })));
    cp.boot().await.expect("boot");
    cs.drain_calls();

    // Malformed CALLs from the server get precise CALLERRORs, garbage is ignored.
    cs.send("garbage".to_string());
    cs.send(r#"[2,"bad-1","Reset",{"type":5}]"#.to_string());
    let a = cs.answer().await;
    assert!(
        matches!(&a, Frame::CallError(e) if e.unique_id == "bad-1" && e.code == ErrorCode::TypeConstraintViolation),
        "{a:?}"
    );
    cs.send(r#"[2,"bad-2","Teleport",{}]"#.to_string());
    assert!(matches!(cs.answer().await, Frame::CallError(e) if e.code == ErrorCode::NotImplemented));
    cs.send(r#"[2,"gc-1","GetConfiguration",{"key":["MeterValueSampleInterval"]}]"#.to_string());
    assert!(
        matches!(cs.answer().await, Frame::CallResult(r) if r.payload["configurationKey"][0]["key"] == "MeterValueSampleInterval")
    );
    cs.send(r#"[2,"tm-1","TriggerMessage",{"requestedMessage":"Heartbeat"}]"#.to_string());
    assert!(matches!(cs.answer().await, Frame::CallResult(r) if r.payload["status"] == "Accepted"));
    cs.call("Heartbeat").await;

    // Reset during a transaction: StopTransaction(SoftReset), reconnect, boot again.
    cp.start_transaction(1, "TAG1").await.expect("start");
    let reset = Frame::Call(Call {
        unique_id: "reset-1".into(),
        action: "Reset".into(),
        payload: serde_json::to_value(ResetRequest { r#type: ResetType::Soft }).expect("json"),
    });
    cs.send(reset.to_text());
    assert_eq!(cs.call("StopTransaction").await.payload["reason"], "SoftReset");
    cs.call("BootNotification").await;
    let s = cp.wait_for_state(|s| s.connected && s.registration == Some(RegistrationStatus::Accepted), WAIT).await;
    assert!(s.is_ok(), "{s:?}");
    assert!(cp.received_calls().iter().any(|c| c.action == "Reset"));
}
