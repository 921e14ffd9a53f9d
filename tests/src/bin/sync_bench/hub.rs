//! A cloud hub for one backend, started the way `cloud-hub run` starts it
//! (`cloud_hub::app::start` from a config file): its embedded broker on a free port of
//! 127.0.0.1, its database a SQLite file in a temporary directory or a PostgreSQL
//! database created for this run and dropped afterwards.

use anyhow::{Context as _, Result, anyhow};
use cloud_hub::app::Running;
use cloud_hub::db::Ty;
use std::net::SocketAddr;
use std::path::Path;
pub use tests::hubdb::Backend;

/// Hub settings the bench may change (left out: the hub's own defaults).
#[derive(Debug, Clone, Default)]
pub struct HubTuning {
    pub workers: Option<usize>,
    pub db_connections: Option<u32>,
    /// `[mqtt] inflight_budget_bytes` / `inflight_budget_batches`.
    pub inflight_budget_bytes: u64,
    pub inflight_budget_batches: u32,
}

/// A PostgreSQL database of this run; dropped by [`PgDatabase::drop_now`], or at the
/// latest when the value is dropped.
pub struct PgDatabase {
    admin_url: String,
    name: Option<String>,
}

impl PgDatabase {
    /// Creates a fresh database; `Ok(None)` when PostgreSQL does not answer (said why).
    pub async fn create(admin_url: &str) -> Result<Option<(PgDatabase, String)>> {
        use sqlx::Connection as _;
        let mut conn = match sqlx::PgConnection::connect(admin_url).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("PostgreSQL is not reachable at {admin_url}: {e}; skipping it");
                return Ok(None);
            }
        };
        let name = format!("syncbench_{}", super::batches::unique_id().replace('-', "_"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the database {name}"))?;
        let _ = conn.close().await;
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        let url = format!("{base}/{name}");
        Ok(Some((PgDatabase { admin_url: admin_url.to_owned(), name: Some(name) }, url)))
    }

    pub async fn drop_now(mut self) {
        if let Some(name) = self.name.take() {
            drop_database(&self.admin_url, &name).await;
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    use sqlx::Connection as _;
    match sqlx::PgConnection::connect(admin_url).await {
        Ok(mut conn) => {
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await;
            if let Err(e) = dropped {
                eprintln!("could not drop the database {name}: {e}");
            }
            let _ = conn.close().await;
        }
        Err(e) => eprintln!("could not drop the database {name}: {e}"),
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        // An error path: no runtime to count on here, so a thread with its own.
        let admin = self.admin_url.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(drop_database(&admin, &name));
            }
        })
        .join();
    }
}

/// A running hub.
pub struct Hub {
    pub backend: Backend,
    pub running: Running,
    /// The hub's own MQTT user and password (set in its config, so that the baseline's
    /// subscriber can log in as the hub does).
    pub hub_user: String,
    pub hub_password: String,
    pub broker: SocketAddr,
    pg: Option<PgDatabase>,
}

impl Hub {
    /// Starts a hub in `dir`; `Ok(None)` when the backend is not available here.
    pub async fn start(backend: Backend, dir: &Path, pg_admin_url: &str, tuning: &HubTuning) -> Result<Option<Hub>> {
        let (url, pg) = match backend {
            Backend::Sqlite => ("sqlite://hub.db".to_owned(), None),
            Backend::Postgres => match PgDatabase::create(pg_admin_url).await? {
                Some((db, url)) => (url, Some(db)),
                None => return Ok(None),
            },
        };
        let hub_password = cloud_hub::sites::generate_password();
        let mut text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[mqtt]\nlisten = \"127.0.0.1:0\"\npassword = \"{hub_password}\"\n\
             inflight_budget_bytes = {}\ninflight_budget_batches = {}\n\n[database]\nurl = \"{url}\"\n",
            tuning.inflight_budget_bytes, tuning.inflight_budget_batches
        );
        if let Some(n) = tuning.db_connections {
            text.push_str(&format!("max_connections = {n}\n"));
        }
        text.push_str("\n[ingest]\n");
        if let Some(n) = tuning.workers {
            text.push_str(&format!("workers = {n}\n"));
        }
        let path = dir.join("cloud-hub.toml");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let config = cloud_hub::config::Config::load(&path).map_err(|e| anyhow!("the bench's hub config: {e}"))?;
        let hub_user = config.mqtt.username.clone();
        let running = cloud_hub::app::start(config).await.context("starting the hub")?;
        let broker = running
            .embedded_broker
            .map(cloud_hub::broker::connect_addr)
            .ok_or_else(|| anyhow!("the hub runs no embedded broker"))?;
        Ok(Some(Hub { backend, running, hub_user, hub_password, broker, pg }))
    }

    /// `mqtt://HOST:PORT` of the embedded broker.
    pub fn broker_url(&self) -> String {
        format!("mqtt://{}", self.broker)
    }

    /// Provisions sites (as `cloud-hub site add` does); their ids and MQTT passwords.
    pub async fn add_sites(&self, prefix: &str, n: usize) -> Result<Vec<(String, String)>> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (store, user) = (self.running.store.clone(), self.hub_user.clone());
            let id = format!("{prefix}-{i:03}");
            set.spawn(async move { cloud_hub::sites::add_site(&store, &id, Some(&id), &user).await.map(|c| (i, c)) });
        }
        let mut out = vec![(String::new(), String::new()); n];
        while let Some(joined) = set.join_next().await {
            let (i, creds) = joined.context("provisioning task")?.context("provisioning a site")?;
            if let Some(slot) = out.get_mut(i) {
                *slot = (creds.site_id, creds.mqtt_password);
            }
        }
        Ok(out)
    }

    /// Where the hub stands for a site.
    pub async fn applied_through(&self, site: &str) -> Result<u64> {
        let row = self
            .running
            .store
            .fetch_opt("SELECT applied_through FROM sites WHERE id = $1", &[site.into()], &[Ty::Int])
            .await?;
        Ok(row.and_then(|r| r.int(0)).and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// Events stored for sites whose id starts with `prefix`: (count, of them with their
    /// effects applied).
    pub async fn stored_events(&self, prefix: &str) -> Result<(u64, u64)> {
        let row = self
            .running
            .store
            .fetch_opt(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN effects_applied THEN 1 ELSE 0 END), 0) FROM events \
                 WHERE site_id LIKE $1",
                &[format!("{prefix}%").into()],
                &[Ty::Int, Ty::Int],
            )
            .await?;
        let get = |i| row.as_ref().and_then(|r| r.int(i)).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        Ok((get(0), get(1)))
    }

    /// Rows in a table (a sanity figure for the report).
    pub async fn count(&self, sql: &'static str) -> Result<u64> {
        let row = self.running.store.fetch_opt(sql, &[], &[Ty::Int]).await?;
        Ok(row.and_then(|r| r.int(0)).and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// Batches the hub handled by outcome: (applied, duplicate, gap).
    pub fn batch_outcomes(&self) -> (u64, u64, u64) {
        let m = &self.running.metrics;
        let get = |result| m.batches.get_or_create(&cloud_hub::metrics::ResultLabels { result }).get();
        (get("applied"), get("duplicate"), get("gap"))
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
        if let Some(pg) = self.pg {
            pg.drop_now().await;
        }
    }
}
