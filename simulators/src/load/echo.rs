//! The benchmark's baseline: a bare tokio-tungstenite server that parses each CALL and
//! answers it at once with a CALLRESULT of the size a central system's answer has (no
//! storage, no logic). Whatever the agent costs beyond this is its own.

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shared_model::ocpp::framing::{CallResult, Frame};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::debug;

/// Answers every connection on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let next_tx = Arc::new(AtomicI64::new(1));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let next_tx = next_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, next_tx).await {
                debug!("echo connection ended: {e}");
            }
        });
    }
}

/// Selects `ocpp1.6` when offered, like the agent.
#[allow(clippy::result_large_err)] // the callback signature is tungstenite's
fn select_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "ocpp1.6"));
    if offered {
        resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("ocpp1.6"));
    }
    Ok(resp)
}

async fn connection(stream: TcpStream, next_tx: Arc<AtomicI64>) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(stream, select_subprotocol, Some(config)).await?;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        if let Ok(Frame::Call(call)) = Frame::parse(text.as_str()) {
            let payload = answer(&call.action, &call.payload, &next_tx);
            let reply = Frame::CallResult(CallResult { unique_id: call.unique_id, payload }).to_text();
            ws.send(Message::text(reply)).await?;
        }
    }
    Ok(())
}

/// A CALLRESULT payload shaped like a central system's answer to `action`.
pub fn answer(action: &str, payload: &Value, next_tx: &AtomicI64) -> Value {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match action {
        "BootNotification" => json!({"status": "Accepted", "currentTime": now, "interval": 60}),
        "Heartbeat" => json!({"currentTime": now}),
        "Authorize" => json!({"idTagInfo": {"status": "Accepted"}}),
        "StartTransaction" => {
            json!({"transactionId": next_tx.fetch_add(1, Ordering::Relaxed), "idTagInfo": {"status": "Accepted"}})
        }
        "StopTransaction" => {
            if payload.get("idTag").is_some() {
                json!({"idTagInfo": {"status": "Accepted"}})
            } else {
                json!({})
            }
        }
        "DataTransfer" => json!({"status": "UnknownVendorId"}),
        _ => json!({}),
    }
}
