//! The embedded MQTT broker (rumqttd 0.20) for the single-machine default, with
//! per-site authentication and a topic ACL.
//!
//! What rumqttd 0.20 itself offers, and what this module adds:
//!
//! - **Authentication**: a static user → password map or an async handler
//!   `(client_id, username, password) -> bool` per listener. We use the handler; it asks
//!   the hub ([`AuthRequest`]), which checks the site's argon2id hash in the database, or
//!   the hub's own password. A refused client is disconnected without a CONNACK.
//! - **Topic ACLs**: none. The only topic restriction rumqttd has is a tenant prefix
//!   (`/tenants/{id}/...`, taken from a TLS client certificate's organisation, features
//!   `verify-client-cert` + `validate-tenant-prefix`), which fits neither our topic
//!   layout nor password logins. So the ACL is ours: rumqttd lets a listener run with a
//!   custom [`Protocol`] (the MQTT codec, one instance per connection), and [`SiteAcl`]
//!   wraps the v4 codec: it remembers the user name of the CONNECT and refuses, by
//!   failing the decode (rumqttd then drops the connection), a PUBLISH outside
//!   `sitepilot/v1/{user}/up/...`, a SUBSCRIBE outside `sitepilot/v1/{user}/down/...` and
//!   a last will outside `sitepilot/v1/{user}/up/...`. The hub's own user may do
//!   anything. It also makes the client id the user name (Mosquitto's
//!   `use_username_as_clientid`), so that one site cannot take over another's session by
//!   connecting with its client id.
//!
//! Only MQTT 3.1.1 over plain TCP is served (no v5 listener, no websocket, no TLS yet).
//! Like rumqttd in general, it keeps messages in memory only.

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{self, Packet, Protocol};
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, SegmentConfig, Server, ServerSettings};
use shared_model::sync::{TOPIC_ROOT, is_valid_site_id};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Asks the hub whether a login is valid (answered on `reply`).
#[derive(Debug)]
pub struct AuthRequest {
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub reply: oneshot::Sender<bool>,
}

/// How to run the broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Port 0: a free port is picked (see [`EmbeddedBroker::start`]).
    pub listen: SocketAddr,
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    /// How much of the sites' uploads the broker keeps for the hub's filters (the hub
    /// reads them as fast as its database applies them).
    pub hub_buffer_bytes: u64,
    /// The hub's own user name: allowed on every topic.
    pub hub_user: String,
    /// The hub's own password (used to check that the broker is up and logins work).
    pub hub_password: String,
}

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded MQTT broker: cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("embedded MQTT broker: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// A running embedded broker. Dropping it (or [`EmbeddedBroker::stop`]) closes its
/// listener and every connection.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why a client was refused (the `broker_refused{reason}` label).
fn refuse(metrics: &Metrics, reason: &'static str, user: Option<&str>, what: &str) -> protocol::Error {
    metrics.broker_refused.get_or_create(&crate::metrics::ReasonLabels { reason }).inc();
    tracing::warn!(user = user.unwrap_or("(none)"), reason, "embedded broker: refused {what}; disconnecting");
    // rumqttd has no "not authorized" decode error; any error drops the connection.
    protocol::Error::InvalidProtocol
}

/// Whether `user` may publish to `topic`: a site only under `sitepilot/v1/{site}/up/`.
pub fn may_publish(user: &str, hub_user: &str, topic: &str) -> bool {
    if user == hub_user {
        return true;
    }
    is_valid_site_id(user)
        && topic
            .strip_prefix(TOPIC_ROOT)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(user))
            .and_then(|t| t.strip_prefix("/up/"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['+', '#']))
}

/// Whether `user` may subscribe to `filter`: a site only under `sitepilot/v1/{site}/down/`
/// (wildcards below that are fine: they cannot reach another site).
pub fn may_subscribe(user: &str, hub_user: &str, filter: &str) -> bool {
    if user == hub_user {
        return true;
    }
    is_valid_site_id(user)
        && filter
            .strip_prefix(TOPIC_ROOT)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(user))
            .and_then(|t| t.strip_prefix("/down/"))
            .is_some_and(|rest| !rest.is_empty())
}

/// The MQTT 3.1.1 codec with the topic ACL (see the module docs). One instance per
/// connection: rumqttd clones the listener's instance for each new connection, and the
/// clone starts without a user.
pub struct SiteAcl {
    hub_user: Arc<str>,
    metrics: Arc<Metrics>,
    /// The CONNECT's user name (authenticated by the auth handler right after it is
    /// decoded; a failed login never gets to send anything else).
    user: Option<String>,
}

impl Clone for SiteAcl {
    fn clone(&self) -> Self {
        SiteAcl { hub_user: self.hub_user.clone(), metrics: self.metrics.clone(), user: None }
    }
}

impl SiteAcl {
    pub fn new(hub_user: &str, metrics: Arc<Metrics>) -> Self {
        SiteAcl { hub_user: hub_user.into(), metrics, user: None }
    }

    fn check(&mut self, packet: &mut Packet) -> Result<(), protocol::Error> {
        match packet {
            Packet::Connect(connect, _, will, _, login) => {
                let user = login.as_ref().map(|l| l.username.clone());
                if let Some(user) = &user
                    && *user != *self.hub_user
                {
                    if !is_valid_site_id(user) {
                        return Err(refuse(&self.metrics, "auth", Some(user), "a user name that is no site id"));
                    }
                    if let Some(will) = will {
                        let topic = String::from_utf8_lossy(&will.topic);
                        if !may_publish(user, &self.hub_user, &topic) {
                            return Err(refuse(
                                &self.metrics,
                                "will_acl",
                                Some(user),
                                &format!("last will on {topic}"),
                            ));
                        }
                    }
                    connect.client_id = user.clone();
                }
                self.user = user;
            }
            Packet::Publish(publish, _) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                let allowed = self.user.as_deref().is_some_and(|u| may_publish(u, &self.hub_user, &topic));
                if !allowed {
                    return Err(refuse(
                        &self.metrics,
                        "publish_acl",
                        self.user.as_deref(),
                        &format!("publish to {topic}"),
                    ));
                }
            }
            Packet::Subscribe(subscribe, _) => {
                for filter in &subscribe.filters {
                    let allowed = self.user.as_deref().is_some_and(|u| may_subscribe(u, &self.hub_user, &filter.path));
                    if !allowed {
                        return Err(refuse(
                            &self.metrics,
                            "subscribe_acl",
                            self.user.as_deref(),
                            &format!("subscription to {}", filter.path),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Protocol for SiteAcl {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, protocol::Error> {
        let mut packet = V4.read_mut(stream, max_size)?;
        self.check(&mut packet)?;
        Ok(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, protocol::Error> {
        V4.write(packet, write)
    }
}

/// Picks a free port on `ip` (rumqttd binds its listener itself and does not tell which
/// port it got, so port 0 is resolved here; another process could take the port in
/// between, which start-up then reports).
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let listener = TcpListener::bind(addr).map_err(|e| BrokerError::Listen { addr, reason: e.to_string() })?;
    listener.local_addr().map_err(|e| BrokerError::Listen { addr, reason: e.to_string() })
}

/// Logs in as `user` over MQTT 3.1.1 and disconnects: `Ok(true)` when the broker
/// accepted (CONNACK success), `Ok(false)` when it refused, `Err` when nothing answers
/// (yet). A whole login rather than a bare TCP connect, which rumqttd logs as an error.
async fn login_probe(addr: SocketAddr, user: &str, password: &str) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io_err = |e: protocol::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let connect = protocol::Connect {
        keep_alive: 10,
        client_id: format!("{user}-probe-{}", uuid::Uuid::new_v4().simple()),
        clean_session: true,
    };
    let login = protocol::Login { username: user.to_owned(), password: password.to_owned() };
    let mut out = BytesMut::new();
    V4.write(Packet::Connect(connect, None, None, None, Some(login)), &mut out).map_err(io_err)?;
    stream.write_all(&out).await?;
    let mut incoming = BytesMut::new();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match V4.read_mut(&mut incoming, 1024) {
                Ok(packet) => return Ok(Some(packet)),
                Err(protocol::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(io_err(e)),
            }
            if stream.read_buf(&mut incoming).await? == 0 {
                // Closed without a CONNACK: how rumqttd refuses a login.
                return Ok(None);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no CONNACK within 5 s"))??;
    Ok(matches!(answer, Some(Packet::ConnAck(protocol::ConnAck { code: protocol::ConnectReturnCode::Success, .. }, _))))
}

/// Where a local client reaches a listener on `addr` (0.0.0.0 -> 127.0.0.1).
pub fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

impl EmbeddedBroker {
    /// Starts the broker on its own thread and waits until it accepts connections.
    /// Logins are checked by sending [`AuthRequest`]s on `auth`.
    pub async fn start(
        settings: &BrokerSettings,
        auth: mpsc::UnboundedSender<AuthRequest>,
        metrics: Arc<Metrics>,
    ) -> Result<EmbeddedBroker, BrokerError> {
        let addr = resolve_port(settings.listen)?;
        let mut connections = ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: settings.max_payload_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            // Without it rumqttd disconnects a client that publishes to a topic nobody
            // subscribes to yet (an ack to a site that is offline).
            dynamic_filters: true,
        };
        connections.set_auth_handler(move |client_id: String, username: String, password: String| {
            let auth = auth.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                if auth.send(AuthRequest { client_id, username, password, reply }).is_err() {
                    return false;
                }
                answer.await.unwrap_or(false)
            }
        });
        let server_settings = ServerSettings {
            name: "sitepilot-v4".to_owned(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        };
        // rumqttd keeps, per subscription filter, a commit log in memory: up to
        // max_segment_count segments of about max_segment_size bytes (delivered or not).
        // Sites' own filters (acks, commands) see little traffic: keep them small, as
        // there is one per site. The hub's `sitepilot/v1/+/up/...` filters carry every
        // batch of every site: a large window, so that a hub busy with its database does
        // not fall behind the log's end (it would miss batches, which the sites resend).
        // The hub's flow control keeps what all sites have in flight within half of
        // `hub_buffer_bytes`; the log holds it in 4 segments plus the one being filled.
        let segment = usize::try_from(settings.hub_buffer_bytes / 4).unwrap_or(usize::MAX).max(1024 * 1024);
        let hub_filters = SegmentConfig { max_segment_size: segment, max_segment_count: 5 };
        let router_config = RouterConfig {
            max_connections: settings.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: 64 * 1024,
            max_segment_count: 2,
            custom_segment: Some(HashMap::from([(format!("{TOPIC_ROOT}/+/up/#"), hub_filters)])),
            ..RouterConfig::default()
        };
        let acl = SiteAcl::new(&settings.hub_user, metrics);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (failed_tx, mut failed_rx) = oneshot::channel::<String>();
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = failed_tx.send(format!("cannot build its runtime: {e}"));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let router_tx = Router::new(0, router_config).spawn();
                    let mut server = Server::new(server_settings, router_tx, acl);
                    tokio::select! {
                        result = server.start(LinkType::Remote) => {
                            let reason = match result {
                                Ok(()) => "the listener stopped".to_owned(),
                                Err(e) => e.to_string(),
                            };
                            let _ = failed_tx.send(reason);
                        }
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task and their sockets.
            })
            .map_err(BrokerError::Thread)?;
        let broker = EmbeddedBroker { addr, stop: Some(stop_tx), thread: Some(thread) };
        // Ready when the hub can log in; failed when the broker's thread says so.
        let target = connect_addr(addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reason) = failed_rx.try_recv() {
                return Err(BrokerError::Listen { addr, reason });
            }
            match login_probe(target, &settings.hub_user, &settings.hub_password).await {
                Ok(true) => return Ok(broker),
                Ok(false) => {
                    return Err(BrokerError::Listen { addr, reason: "it refused the hub's own login".into() });
                }
                Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    return Err(BrokerError::Listen {
                        addr,
                        reason: format!("it did not accept a login within 10 s: {e}"),
                    });
                }
            }
        }
    }

    /// The address it listens on (with the port it got).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every connection, and waits for the broker's thread.
    pub async fn stop(mut self) {
        self.stop_now();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_model::sync::Topic;

    #[test]
    fn sites_publish_only_their_own_up_topics() {
        let hub = "sitepilot-hub";
        assert!(may_publish("s1", hub, "sitepilot/v1/s1/up/events"));
        assert!(may_publish("s1", hub, "sitepilot/v1/s1/up/status"));
        assert!(!may_publish("s1", hub, "sitepilot/v1/s2/up/events"));
        assert!(!may_publish("s1", hub, "sitepilot/v1/s1/down/acks"));
        assert!(!may_publish("s1", hub, "sitepilot/v1/s1x/up/events"));
        assert!(!may_publish("s1", hub, "sitepilot/v1/s1/up/"));
        assert!(!may_publish("s1", hub, "other/topic"));
        assert!(may_publish(hub, hub, "sitepilot/v1/s2/down/acks"));
    }

    #[test]
    fn the_hubs_filters_get_the_large_commit_log() {
        // rumqttd picks a filter's segment config with `matches(filter, key)`.
        for t in [Topic::Events, Topic::Hello, Topic::Status] {
            assert!(rumqttd::protocol::matches(&t.all_sites(), &format!("{TOPIC_ROOT}/+/up/#")), "{t:?}");
        }
        assert!(!rumqttd::protocol::matches("sitepilot/v1/s1/down/acks", &format!("{TOPIC_ROOT}/+/up/#")));
    }

    #[test]
    fn sites_subscribe_only_their_own_down_topics() {
        let hub = "sitepilot-hub";
        assert!(may_subscribe("s1", hub, "sitepilot/v1/s1/down/#"));
        assert!(may_subscribe("s1", hub, "sitepilot/v1/s1/down/acks"));
        assert!(!may_subscribe("s1", hub, "sitepilot/v1/+/down/#"));
        assert!(!may_subscribe("s1", hub, "sitepilot/v1/#"));
        assert!(!may_subscribe("s1", hub, "sitepilot/v1/s1/#"));
        assert!(!may_subscribe("s1", hub, "sitepilot/v1/s2/down/#"));
        assert!(!may_subscribe("s1", hub, "$share/g/sitepilot/v1/s1/down/#"));
        assert!(!may_subscribe("s1", hub, "#"));
        assert!(may_subscribe(hub, hub, "sitepilot/v1/+/up/events"));
    }
}
