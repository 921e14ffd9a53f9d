//! Starting and stopping a hub: database, embedded broker (when configured), the MQTT
//! ingest and the HTTP server. The binary and the tests start it the same way.

use anyhow::Context as _;
use shared_model::sync::is_valid_site_id;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::broker::{self, AuthRequest, BrokerSettings, EmbeddedBroker};
use crate::config::{BrokerPlan, Config};
use crate::db::Store;
use crate::metrics::{Metrics, ReasonLabels};
use crate::sync::{self, SyncHandle, SyncSettings};
use crate::{billing, fleet, http, sites};

/// A running hub.
pub struct Running {
    /// Where `/health`, `/metrics` and the fleet API are served (with the port it got).
    pub http_addr: SocketAddr,
    /// The broker as a local client reaches it, `mqtt://HOST:PORT`.
    pub broker_url: String,
    /// The embedded broker's listen address (with the port it got), if it runs one.
    pub embedded_broker: Option<SocketAddr>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// OCPI, when `[ocpi] enabled`.
    pub ocpi: Option<crate::ocpi::Service>,
    sync: SyncHandle,
    broker: Option<EmbeddedBroker>,
    http_stop: oneshot::Sender<()>,
    http_task: JoinHandle<()>,
    auth_task: Option<JoinHandle<()>>,
    billing_task: Option<JoinHandle<()>>,
}

/// Starts a hub. With the embedded broker it returns once the hub's own client is
/// connected and subscribed; with an external broker it keeps trying in the background
/// (see [`Running::wait_ready`]).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, Extras::default()).await
}

/// What a caller adds to a hub's HTTP routes (benchmarks: a baseline served by the same
/// stack). The binary adds nothing.
#[derive(Default)]
pub struct Extras {
    /// Routes under the OCPI router, behind its authentication and headers (with
    /// `[ocpi] enabled`).
    pub ocpi_routes: Option<axum::Router<crate::ocpi::OcpiState>>,
}

/// [`start`] with `extras` mounted.
pub async fn start_with(config: Config, extras: Extras) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::connect(&config.db, config.database.max_connections).await?;
    tracing::info!(database = %config.db, "database ready");

    let (broker, auth_task, host, port, password) = match &config.broker {
        BrokerPlan::Embedded { listen } => {
            // Only the hub itself uses its password on the embedded broker: a fresh
            // random one per start unless configured.
            let password = config.mqtt.password.clone().unwrap_or_else(sites::generate_password);
            let (auth_tx, auth_rx) = mpsc::unbounded_channel();
            let auth_task = tokio::spawn(serve_auth(
                auth_rx,
                store.clone(),
                config.mqtt.username.clone(),
                password.clone(),
                metrics.clone(),
            ));
            let settings = BrokerSettings {
                listen: *listen,
                max_payload_bytes: config.mqtt.max_payload_bytes,
                max_connections: config.mqtt.max_connections,
                hub_buffer_bytes: config.mqtt.inflight_budget_bytes.saturating_mul(2),
                hub_user: config.mqtt.username.clone(),
                hub_password: password.clone(),
            };
            let broker = EmbeddedBroker::start(&settings, auth_tx, metrics.clone()).await?;
            let local = broker::connect_addr(broker.local_addr());
            tracing::info!(listen = %broker.local_addr(), "embedded MQTT broker ready");
            (Some(broker), Some(auth_task), local.ip().to_string(), local.port(), Some(password))
        }
        BrokerPlan::External { host, port } => (None, None, host.clone(), *port, config.mqtt.password.clone()),
    };
    let embedded = broker.is_some();
    let embedded_broker = broker.as_ref().map(EmbeddedBroker::local_addr);
    let username = if embedded || config.mqtt.password.is_some() { Some(config.mqtt.username.clone()) } else { None };
    let settings = SyncSettings {
        host: host.clone(),
        port,
        client_id: config
            .mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("sitepilot-hub-{:08x}", rand::random::<u32>())),
        username,
        password,
        keep_alive: Duration::from_secs(u64::from(config.mqtt.keep_alive_s)),
        max_payload_bytes: config.mqtt.max_payload_bytes,
        share_group: if embedded { None } else { Some(config.mqtt.share_group.clone()) },
        workers: config.ingest.workers,
        inflight_budget_bytes: config.mqtt.inflight_budget_bytes,
        inflight_budget_batches: config.mqtt.inflight_budget_batches,
    };
    let sync = sync::start(&settings, store.clone(), metrics.clone());
    let broker_url =
        if host.contains(':') { format!("mqtt://[{host}]:{port}") } else { format!("mqtt://{host}:{port}") };
    if embedded && !sync.wait_ready(Duration::from_secs(10)).await {
        sync.stop().await;
        anyhow::bail!("the hub's MQTT client could not connect and subscribe to its embedded broker at {broker_url}");
    }

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http_addr = listener.local_addr().context("HTTP listener address")?;
    let (billing, billing_task) = if config.billing.enabled {
        let handle = billing::worker::BillingHandle::default();
        let interval = Duration::from_secs(config.billing.interval_s);
        let task = tokio::spawn(billing::worker::run(store.clone(), handle.clone(), interval));
        (Some(handle), Some(task))
    } else {
        (None, None)
    };
    let api = fleet::ApiState::new(
        store.clone(),
        metrics.clone(),
        sync.client(),
        fleet::ApiSettings { command_expiry_s: config.api.command_expiry_s },
    )
    .with_billing(billing, &config.billing.issuer);
    let mut app = http::router(
        http::HttpState { store: store.clone(), metrics: metrics.clone(), mqtt_ready: sync.ready_watch() },
        api,
    );
    let dashboard = crate::dashboard::DashSettings {
        mqtt: sync.client(),
        metrics: metrics.clone(),
        command_expiry_s: config.api.command_expiry_s,
        issuer: config.billing.issuer.clone(),
    };
    app = app.merge(crate::dashboard::router(store.clone(), dashboard));
    let ocpi = if config.ocpi.enabled {
        let service = crate::ocpi::Service::start(&config.ocpi, store.clone(), http_addr, Some(sync.client())).await?;
        app = crate::ocpi::mount_with(app, service.state.clone(), extras.ocpi_routes.unwrap_or_default());
        sync.set_ocpi(service.state.clone());
        Some(service)
    } else {
        None
    };
    let (http_stop, stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%http_addr, "HTTP ready");
    Ok(Running {
        http_addr,
        broker_url,
        embedded_broker,
        store,
        metrics,
        ocpi,
        sync,
        broker,
        http_stop,
        http_task,
        auth_task,
        billing_task,
    })
}

impl Running {
    /// Waits until the hub's MQTT client is connected and subscribed; false on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.sync.wait_ready(timeout).await
    }

    /// Stops everything: MQTT client and workers, HTTP, the embedded broker, the pool.
    pub async fn shutdown(self) {
        if let Some(task) = self.billing_task {
            task.abort();
        }
        self.sync.stop().await;
        let _ = self.http_stop.send(());
        let _ = self.http_task.await;
        if let Some(ocpi) = self.ocpi {
            ocpi.stop().await;
        }
        if let Some(broker) = self.broker {
            broker.stop().await;
        }
        if let Some(task) = self.auth_task {
            task.abort();
        }
        self.store.close().await;
    }
}

/// Answers the embedded broker's login checks: the hub's own user by its password, a
/// site by the argon2id hash stored for it.
async fn serve_auth(
    mut requests: mpsc::UnboundedReceiver<AuthRequest>,
    store: Store,
    hub_user: String,
    hub_password: String,
    metrics: Arc<Metrics>,
) {
    let hub_user: Arc<str> = hub_user.into();
    let hub_password: Arc<str> = hub_password.into();
    while let Some(request) = requests.recv().await {
        let (store, hub_user, hub_password, metrics) =
            (store.clone(), hub_user.clone(), hub_password.clone(), metrics.clone());
        tokio::spawn(async move {
            let ok = check_login(&store, &hub_user, &hub_password, &request.username, &request.password).await;
            if !ok {
                metrics.broker_refused.get_or_create(&ReasonLabels { reason: "auth" }).inc();
                tracing::warn!(
                    user = request.username,
                    client_id = request.client_id,
                    "embedded broker: login refused"
                );
            }
            let _ = request.reply.send(ok);
        });
    }
}

async fn check_login(store: &Store, hub_user: &str, hub_password: &str, username: &str, password: &str) -> bool {
    if username == hub_user {
        return constant_time_eq(password.as_bytes(), hub_password.as_bytes());
    }
    if !is_valid_site_id(username) {
        return false;
    }
    let hash = match sites::password_hash(store, username).await {
        Ok(Some(hash)) => hash,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(error = %e, user = username, "embedded broker: cannot read the site's credentials");
            return false;
        }
    };
    let password = password.to_owned();
    // argon2 takes tens of milliseconds of CPU by design: keep it off the runtime threads.
    tokio::task::spawn_blocking(move || sites::verify_password(&password, &hash)).await.unwrap_or(false)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
