//! The MQTT connection: rumqttc's event loop runs in its own task (so that nothing the
//! sync logic does can cancel it half-way through a packet) and reports what matters.
//! It reconnects by itself, waiting `reconnect_min_ms` after a failure and twice as long
//! after each further one (up to `reconnect_max_s`, with ±20 % jitter so a fleet does
//! not reconnect in step after a broker restart).

use super::SyncConfig;
use chrono::Utc;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use shared_model::sync::{PROTOCOL_VERSION, Status, Topic};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the connection task reports.
#[derive(Debug)]
pub enum NetEvent {
    /// The broker accepted the connection (a new session: subscribe again).
    Connected,
    /// The connection failed or was lost; the task retries by itself.
    Disconnected(String),
    /// A message on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
    /// The broker refused a subscription (its ACL does not let this site read there).
    SubscribeRefused,
}

/// Capacity of the client's request channel (publishes waiting for the event loop).
pub const REQUEST_CAPACITY: usize = 256;

/// The status payload (`online`), as JSON.
pub fn status(site: &str, online: bool) -> Vec<u8> {
    let s = Status { v: PROTOCOL_VERSION, site_id: site.to_owned(), online, at: Utc::now() };
    serde_json::to_vec(&s).unwrap_or_default()
}

/// The client and its event loop for `cfg`. A new session on every connect (clean
/// session): nothing stale is replayed by the client, the agent resends from the hub's ack.
pub fn client(site: &str, cfg: &SyncConfig) -> Result<(AsyncClient, EventLoop), String> {
    let addr = cfg.broker_addr()?;
    let mut opts = MqttOptions::new(site, addr.host, addr.port);
    opts.set_keep_alive(Duration::from_secs(cfg.keepalive_s.max(1)));
    opts.set_clean_session(true);
    opts.set_credentials(
        cfg.username.clone().unwrap_or_else(|| site.to_owned()),
        cfg.password.clone().unwrap_or_default(),
    );
    // Batches are bounded by max_batch_bytes, but one event may be larger: never let the
    // client refuse to send an outbox row (the stream would stall on it).
    opts.set_max_packet_size(16 * 1024 * 1024, 256 * 1024 * 1024);
    opts.set_request_channel_capacity(REQUEST_CAPACITY);
    opts.set_last_will(LastWill::new(Topic::Status.of(site), status(site, false), QoS::AtLeastOnce, true));
    Ok(AsyncClient::new(opts, REQUEST_CAPACITY))
}

/// Drives the event loop forever (the caller aborts it), reporting to `tx`.
pub async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<NetEvent>,
    site: String,
    min: Duration,
    max: Duration,
) {
    let mut delay = min;
    let mut connected = false;
    loop {
        if !connected {
            // The will's time is when this connection was made.
            eventloop.mqtt_options.set_last_will(LastWill::new(
                Topic::Status.of(&site),
                status(&site, false),
                QoS::AtLeastOnce,
                true,
            ));
        }
        let event = eventloop.poll().await;
        let report = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                delay = min;
                Some(NetEvent::Connected)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                Some(NetEvent::Message { topic: p.topic.clone(), payload: p.payload.to_vec() })
            }
            Ok(Event::Incoming(Packet::SubAck(s)))
                if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                Some(NetEvent::SubscribeRefused)
            }
            Ok(_) => None,
            Err(e) => {
                connected = false;
                let text = describe(&e);
                if tx.send(NetEvent::Disconnected(text)).is_err() {
                    return;
                }
                let jitter = 0.8 + 0.4 * rand::random::<f64>();
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay = (delay * 2).min(max);
                None
            }
        };
        if let Some(report) = report
            && tx.send(report).is_err()
        {
            return;
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?}): check sync.username and sync.password")
        }
        ConnectionError::Io(io) => format!("network: {io}"),
        other => other.to_string(),
    }
}
