//! One station's connection: a single task with one `select!` over the WebSocket, the
//! command channel (CALLs from the rest of the agent) and a timer (CALL timeouts, pings,
//! dead-connection detection). Generic over any `Sink + Stream` of WebSocket messages so
//! tests can drive it without a socket.
//!
//! Incoming CALLs are handled one after the other (a station has at most one CALL
//! outstanding, OCPP-J §4.1.1); each is answered only after its effects are committed.

use super::calls::{Finished, OutboundCalls, Outcome};
use super::registry::Command;
use crate::app::{LiveEvent, LiveKind, Shared};
use crate::message_log::{Direction, Entry};
use crate::metrics::ActionLabels;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use shared_model::ids::ChargePointId;
use shared_model::ocpp::ProtocolVersion;
use shared_model::ocpp::framing::{CallError, ErrorCode, Frame};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Context of one connection, handed to the version adapter.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub station: ChargePointId,
}

/// Runs the connection until it closes, is replaced, dies, or the agent shuts down.
pub async fn run<S>(
    shared: Arc<Shared>,
    station: ChargePointId,
    version: ProtocolVersion,
    mut ws: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let cfg = &shared.config.ocpp;
    let (conn_id, mut commands) = shared.registry.attach(station.as_str(), version.subprotocol());
    shared.metrics.connections.inc();
    tracing::info!(%station, conn_id, protocol = version.subprotocol(), "ocpp: station connected");
    record_connection(&shared, &station, version, true).await;

    let id_prefix = format!("{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut calls: OutboundCalls<oneshot::Sender<Outcome>> =
        OutboundCalls::new(Duration::from_secs(cfg.call_timeout_s.into()), cfg.max_queued_calls, id_prefix);
    let ping_every = Duration::from_secs(cfg.ping_interval_s.into());
    let idle_limit = Duration::from_secs(cfg.idle_timeout_s.into());
    let mut last_rx = Instant::now();
    let mut next_ping = Instant::now() + ping_every;
    let ctx = ConnCtx { shared: shared.clone(), station: station.clone() };
    let mut replaced = false;

    let close_reason: &str = loop {
        // Put queued CALLs on the wire (at most one outstanding).
        let now = Instant::now();
        let mut send_failed = false;
        while let Some(call) = calls.poll_transmit(now.into_std()) {
            let frame = Frame::Call(call);
            log_frames(&shared, vec![Entry::frame(chrono::Utc::now(), station.as_str(), Direction::Out, &frame, None)]);
            shared.metrics.frame("out", "call", action_of(&frame));
            if ws.send(Message::text(frame.to_text())).await.is_err() {
                send_failed = true;
                break;
            }
        }
        if send_failed {
            break "send failed";
        }
        let wake = [Some(next_ping), calls.poll_timeout().map(Instant::from_std), Some(last_rx + idle_limit)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + ping_every);

        tokio::select! {
            msg = ws.next() => {
                last_rx = Instant::now();
                match msg {
                    None => break "closed by peer",
                    Some(Err(e)) => {
                        tracing::info!(%station, error = %e, "ocpp: connection error");
                        break "connection error";
                    }
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = handle_text(&ctx, &mut calls, text.as_str()).await
                            && ws.send(Message::text(reply.to_text())).await.is_err()
                        {
                            break "send failed";
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        // OCPP-J uses text frames only (§3.3); there is no id to answer to.
                        tracing::warn!(%station, "ocpp: binary frame ignored");
                        shared.metrics.frame("in", "invalid", "");
                    }
                    Some(Ok(Message::Close(_))) => break "closed by peer",
                    Some(Ok(_)) => {} // ping / pong: tungstenite answers pings itself
                }
            }
            cmd = commands.recv() => match cmd {
                Some(Command::Call { action, payload, reply }) => {
                    if let Err((_, reply)) = calls.enqueue(action, payload, reply) {
                        let _ = reply.send(Outcome::QueueFull);
                    }
                }
                Some(Command::Replaced) => { replaced = true; break "replaced by a new connection"; }
                Some(Command::Close) | None => break "closed by the agent",
            },
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if let Some(done) = calls.handle_timeout(now.into_std()) {
                    shared.metrics.call_timeouts.get_or_create(&ActionLabels { action: done.action.clone() }).inc();
                    tracing::warn!(%station, action = %done.action, "ocpp: CALL timed out");
                    let _ = done.token.send(Outcome::Timeout);
                }
                if now >= last_rx + idle_limit {
                    break "no traffic (dead connection)";
                }
                if now >= next_ping {
                    next_ping = now + ping_every;
                    if ws.send(Message::Ping(Default::default())).await.is_err() {
                        break "send failed";
                    }
                }
            }
            _ = shutdown.changed() => break "agent shutting down",
        }
    };

    let _ = ws
        .send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: close_reason.to_owned().into() })))
        .await;
    for done in calls.drain(Instant::now().into_std()) {
        let _ = done.token.send(done.outcome);
    }
    shared.metrics.connections.dec();
    let detached = shared.registry.detach(station.as_str(), conn_id);
    if detached && !replaced {
        record_connection(&shared, &station, version, false).await;
    }
    tracing::info!(%station, conn_id, reason = close_reason, "ocpp: station disconnected");
}

fn action_of(frame: &Frame) -> &str {
    match frame {
        Frame::Call(c) => &c.action,
        _ => "",
    }
}

async fn record_connection(shared: &Shared, station: &ChargePointId, version: ProtocolVersion, connected: bool) {
    let id = station.as_str().to_owned();
    let protocol = version.subprotocol();
    let now = chrono::Utc::now();
    match shared.store.write(move |conn| crate::chargers::connection_changed(conn, &id, protocol, connected, now)).await
    {
        Ok(()) => {
            let kind = if connected { LiveKind::Connected } else { LiveKind::Disconnected };
            let _ = shared.live.send(LiveEvent { station: station.as_str().to_owned(), kind });
        }
        Err(e) => tracing::error!(%station, error = %e, "store: recording the connection failed"),
    }
}

/// Writes log entries without waiting (audit only; order is kept by the writer queue).
fn log_frames(shared: &Arc<Shared>, entries: Vec<Entry>) {
    let store = shared.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.write(move |conn| crate::message_log::append(conn, &entries)).await {
            tracing::error!(error = %e, "store: writing the message log failed");
        }
    });
}

/// Extracts the unique id of an oversized frame without parsing all of it.
fn sniff_call_id(text: &str) -> Option<String> {
    let head: String = text.chars().take(64).collect();
    let rest = head.trim_start().strip_prefix('[')?.trim_start().strip_prefix('2')?.trim_start().strip_prefix(',')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    (!id.is_empty() && id.len() <= 36).then(|| id.to_owned())
}

/// Handles one text message; returns the frame to send back, if any.
async fn handle_text(ctx: &ConnCtx, calls: &mut OutboundCalls<oneshot::Sender<Outcome>>, text: &str) -> Option<Frame> {
    let shared = &ctx.shared;
    let station = ctx.station.as_str();
    let max = shared.config.ocpp.max_frame_bytes;
    let now = chrono::Utc::now();
    if text.len() > max {
        let reply = sniff_call_id(text).map(|id| {
            Frame::CallError(CallError::new(
                id,
                ErrorCode::FormationViolation,
                format!("message of {} bytes exceeds the limit of {max} bytes", text.len()),
            ))
        });
        shared.metrics.frame("in", "invalid", "");
        let mut entries = vec![Entry::raw(now, station, text, 4096)];
        if let Some(r) = &reply {
            shared.metrics.call_error("out", ErrorCode::FormationViolation);
            entries.push(Entry::frame(now, station, Direction::Out, r, None));
        }
        log_frames(shared, entries);
        return reply;
    }
    match Frame::parse(text) {
        Err(e) => {
            shared.metrics.frame("in", "invalid", "");
            // Only a CALL may be answered; when even its id is unreadable we answer with
            // id "-1" (the OCPP 2.0.1 convention) so the station learns why.
            let reply = if e.was_call || e.unique_id.is_none() {
                let id = e.unique_id.clone().unwrap_or_else(|| "-1".to_owned());
                Some(Frame::CallError(CallError::new(id, e.code, e.message.clone())))
            } else {
                None
            };
            let mut entries = vec![Entry::raw(now, station, text, 4096)];
            if let Some(r) = &reply {
                shared.metrics.call_error("out", e.code);
                entries.push(Entry::frame(now, station, Direction::Out, r, None));
            }
            log_frames(shared, entries);
            tracing::info!(%station, error = %e, "ocpp: malformed frame");
            reply
        }
        Ok(Frame::Call(call)) => {
            shared.metrics.frame("in", "call", &call.action);
            let reply = super::v16::handle_call(ctx, call).await;
            match &reply {
                Frame::CallError(e) => shared.metrics.call_error("out", e.code),
                _ => shared.metrics.frame("out", "result", ""),
            }
            Some(reply)
        }
        Ok(Frame::CallResult(result)) => {
            let action = calls.pending_action(&result.unique_id).map(str::to_owned);
            shared.metrics.frame("in", "result", action.as_deref().unwrap_or(""));
            let frame = Frame::CallResult(result.clone());
            log_frames(shared, vec![Entry::frame(now, station, Direction::In, &frame, action.as_deref())]);
            if let Some(done) = calls.handle_result(result, std::time::Instant::now()) {
                finish(shared, done);
            } else {
                tracing::info!(%station, "ocpp: CALLRESULT for no outstanding CALL ignored");
            }
            None
        }
        Ok(Frame::CallError(error)) => {
            let action = calls.pending_action(&error.unique_id).map(str::to_owned);
            shared.metrics.call_error("in", error.code);
            let frame = Frame::CallError(error.clone());
            log_frames(shared, vec![Entry::frame(now, station, Direction::In, &frame, action.as_deref())]);
            if let Some(done) = calls.handle_error(error, std::time::Instant::now()) {
                finish(shared, done);
            }
            None
        }
    }
}

fn finish(shared: &Shared, done: Finished<oneshot::Sender<Outcome>>) {
    shared
        .metrics
        .call_roundtrip
        .get_or_create(&ActionLabels { action: done.action.clone() })
        .observe(done.round_trip.as_secs_f64());
    let _ = done.token.send(done.outcome);
}

#[cfg(test)]
mod tests {
    use super::sniff_call_id;

    #[test]
    fn sniffs_ids_of_oversized_calls() {
        assert_eq!(sniff_call_id(r#"[2,"abc","DataTransfer",{"data":"xxxxxxxx"#).as_deref(), Some("abc"));
        assert_eq!(sniff_call_id(r#" [ 2 , "a-1" ,"X""#).as_deref(), Some("a-1"));
        assert_eq!(sniff_call_id(r#"[3,"abc",{}]"#), None);
        assert_eq!(sniff_call_id("garbage"), None);
    }
}
