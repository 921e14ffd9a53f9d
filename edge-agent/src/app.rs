//! Wiring: opens the store, seeds it from the config, binds the OCPP and HTTP listeners
//! and starts the background tasks. [`start`] is what `edge-agent run` and the
//! end-to-end tests call.

use crate::auth::Verifier;
use crate::chargers::{Registration, StationAuth};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ocpp::directory::Directory;
use crate::ocpp::registry::Registry;
use crate::store::{Store, StoreError};
use anyhow::Context;
use rusqlite::params;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Everything the agent's tasks share.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub directory: Directory,
    pub verifier: Verifier,
    /// Live meter states (API, metrics, and the balancer's measurements).
    pub meters: crate::meters::MeterHub,
    /// Live notifications of committed changes, for tasks that react to them (the
    /// balancer loop, live views). Lossy by design: a slow subscriber re-reads the store.
    pub live: tokio::sync::broadcast::Sender<LiveEvent>,
    /// When this agent started (shown on `/health`).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The balancer loop's state and the external limits it obeys.
    pub control: crate::control::ControlHandle,
    /// The link to the cloud hub (its state, for the API).
    pub sync: crate::sync::SyncHandle,
    /// Id tags the hub's remote starts and reservations vouch for.
    pub remote_auth: crate::remote_auth::RemoteAuth,
}

/// What changed at a station, sent after the change is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEvent {
    pub station: String,
    pub kind: LiveKind,
}

/// The kind of a [`LiveEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveKind {
    Connected,
    Disconnected,
    Booted,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
    MeterValues,
}

/// A running agent.
pub struct Running {
    pub shared: Arc<Shared>,
    pub ocpp_addr: SocketAddr,
    pub api_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The OCPP base URL chargers connect to (append `/{chargePointId}`).
    pub fn ocpp_url(&self) -> String {
        format!("ws://{}{}", self.ocpp_addr, self.shared.config.ocpp.path)
    }

    /// The HTTP base URL.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Stops accepting, closes connections and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Starts the agent with a validated config.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(&config.store, metrics.clone())
        .with_context(|| format!("opening the store at {}", config.store.path.display()))?;
    seed(&store, &config).await.context("seeding the store from the config")?;
    let directory = Directory::default();
    directory.replace_all(load_directory(&store).await?);

    // Maps are loaded and buses built now; meters are only contacted by their tasks.
    let meter_pollers = crate::meters::Pollers::from_config(&config.meters).context("preparing the meters")?;
    let meters = crate::meters::MeterHub::new(meter_pollers.infos(), metrics.clone());

    let ocpp_listener = TcpListener::bind(config.ocpp.listen).await.with_context(|| {
        format!("binding the OCPP listener on {} (ocpp.listen): is the port taken?", config.ocpp.listen)
    })?;
    let api_listener = TcpListener::bind(config.api.listen).await.with_context(|| {
        format!("binding the HTTP listener on {} (api.listen): is the port taken?", config.api.listen)
    })?;
    let ocpp_addr = ocpp_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;

    let shared = Arc::new(Shared {
        config,
        store,
        metrics,
        registry: Registry::default(),
        directory,
        verifier: Verifier::default(),
        meters,
        live: tokio::sync::broadcast::channel(1024).0,
        started_at: chrono::Utc::now(),
        control: crate::control::ControlHandle::default(),
        sync: crate::sync::SyncHandle::default(),
        remote_auth: crate::remote_auth::RemoteAuth::default(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let meter_tasks = meter_pollers.spawn(&shared.meters, shutdown_rx.clone());
    let mut tasks = vec![
        tokio::spawn(crate::ocpp::server::serve(shared.clone(), ocpp_listener, shutdown_rx.clone())),
        tokio::spawn(crate::api::serve(shared.clone(), api_listener, shutdown_rx.clone())),
        tokio::spawn(retention_loop(shared.clone(), shutdown_rx.clone())),
        // Returns at once without a [sync] section.
        tokio::spawn(crate::sync::run(shared.clone(), shutdown_rx.clone())),
        // Returns at once without circuits or without [sync].
        tokio::spawn(crate::control::report::run(shared.clone(), shutdown_rx.clone())),
        tokio::spawn(crate::control::run(shared.clone(), shutdown_rx)),
    ];
    tasks.extend(meter_tasks);
    tracing::info!(ocpp = %ocpp_addr, api = %api_addr, site = %shared.config.site.id, "edge agent started");
    Ok(Running { shared, ocpp_addr, api_addr, shutdown, tasks })
}

/// Config chargers and tags are the installer's truth: written on every start.
async fn seed(store: &Store, config: &Config) -> Result<(), StoreError> {
    let chargers: Vec<(String, Option<String>, Option<String>)> =
        config.chargers.iter().map(|c| (c.id.as_str().to_owned(), c.password_hash.clone(), c.name.clone())).collect();
    let tags = config.authorization.tags.clone();
    store
        .write(move |conn| {
            for (id, hash, name) in &chargers {
                conn.execute(
                    "INSERT INTO chargers (id, registration, password_hash, source, name) VALUES (?1, 'accepted', ?2, 'config', ?3)
                     ON CONFLICT (id) DO UPDATE SET registration = 'accepted', password_hash = excluded.password_hash,
                         source = 'config', name = excluded.name",
                    params![id, hash, name],
                )?;
            }
            conn.execute("DELETE FROM id_tags WHERE source = 'config'", [])?;
            for t in &tags {
                conn.execute(
                    "INSERT INTO id_tags (id_tag, status, expiry, parent_id_tag, source) VALUES (?1, ?2, ?3, ?4, 'config')
                     ON CONFLICT (id_tag) DO UPDATE SET status = excluded.status, expiry = excluded.expiry,
                         parent_id_tag = excluded.parent_id_tag, source = 'config'",
                    params![t.id_tag, t.status, t.expiry.map(crate::store::ts), t.parent_id_tag],
                )?;
            }
            Ok(())
        })
        .await
}

async fn load_directory(store: &Store) -> Result<HashMap<String, StationAuth>, StoreError> {
    store
        .read(|conn| {
            let mut stmt = conn.prepare("SELECT id, registration, password_hash FROM chargers")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StationAuth {
                        registration: Registration::parse(&r.get::<_, String>(1)?),
                        password_hash: r.get(2)?,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
        })
        .await
}

/// Prunes the message log hourly (and once at start).
async fn retention_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let days = i64::from(shared.config.store.message_log_retention_days);
    loop {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(days);
        match shared.store.write(move |conn| crate::message_log::prune(conn, cutoff)).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "message log: pruned entries older than {days} days"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "message log: pruning failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
