//! The edge agent and the cloud hub together, over the hub's embedded MQTT broker, on
//! SQLite and on PostgreSQL: every event a site records reaches the hub exactly once, in
//! order, across a long broker outage while sessions run (invariant 3). Simulated
//! chargers drive the edge over real sockets.
//!
//! PostgreSQL is used where it runs (`SITEPILOT_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`); when it is absent the PostgreSQL variant
//! says why and returns, except with `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used)]

use cloud_hub::db::{Store, Ty};
use futures_util::StreamExt;
use serde_json::Value;
use shared_model::ocpp::v16::Reason;
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use std::time::Duration;
use tests::hubdb::{Backend, database, drop_database};
use tests::{TAG_OK, TestAgent, energy_config_text, eventually, free_port, password, start_hub};

async fn sim(agent: &TestAgent, id: &str) -> ChargePoint {
    let cfg = ChargePointConfig::new(id, agent.ocpp_url())
        .with_password(password(id))
        .fast()
        .with_ev(EvModel::instant().with_max_current(16.0))
        .with_meter_interval(Duration::from_millis(200));
    let cp = ChargePoint::connect(cfg).await.unwrap();
    cp.boot().await.unwrap();
    cp
}

/// One session: plug in, charge a moment (MeterValues every 200 ms), stop, unplug.
async fn session(cp: &ChargePoint, tag: &str, ms: u64) {
    cp.plug_in(1).await.unwrap();
    cp.start_transaction(1, tag).await.unwrap();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    cp.stop_transaction(1, Reason::EVDisconnected).await.unwrap();
    cp.unplug(1).await.unwrap();
}

async fn sync_view(agent: &TestAgent) -> Value {
    let (status, v) = agent.get("/api/v1/sync").await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn hub_counts(store: &Store, site: &str) -> (i64, i64, i64, i64) {
    let row = store
        .fetch_opt(
            "SELECT COUNT(*), MIN(seq), MAX(seq), (SELECT applied_through FROM sites WHERE id = $1) FROM events WHERE site_id = $1",
            &[site.into()],
            &[Ty::Int, Ty::Int, Ty::Int, Ty::Int],
        )
        .await
        .unwrap()
        .unwrap();
    (row.int(0).unwrap_or(0), row.int(1).unwrap_or(0), row.int(2).unwrap_or(0), row.int(3).unwrap_or(0))
}

/// Waits until the edge's outbox is empty and the hub stands at the edge's newest seq.
async fn drained(agent: &TestAgent, store: &Store, site: &str) -> i64 {
    eventually(60, || async {
        let v = sync_view(agent).await;
        let newest = v["outbox"]["newest_seq"].as_i64()?;
        let (_, _, _, applied) = hub_counts(store, site).await;
        (v["outbox"]["pending"] == 0 && applied == newest).then_some(newest)
    })
    .await
    .unwrap_or_else(|| panic!("never drained"))
}

async fn broker_outage_while_sessions_run(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((db_url, pg_name)) = database(backend, dir.path()).await else { return };
    let port = free_port();
    let hub = start_hub(dir.path(), &db_url, port).await;
    let creds = cloud_hub::sites::add_site(&hub.store, "Test site", Some("test-site"), "sitepilot-hub").await.unwrap();
    let tail = format!(
        "[[authorization.tags]]\nid_tag = \"TAG-CP-2\"\nstatus = \"Accepted\"\n\n\
         [sync]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"{}\"\npassword = \"{}\"\n\
         batch_size = 50\npoll_interval_ms = 100\nack_timeout_s = 2\nreconnect_min_ms = 100\nreconnect_max_s = 1\n",
        creds.mqtt_username, creds.mqtt_password
    );
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", ""), ("CP-2", "")], &tail)).await;
    let cp1 = sim(&agent, "CP-1").await;
    let cp2 = sim(&agent, "CP-2").await;
    session(&cp1, TAG_OK, 600).await;
    let first = drained(&agent, &hub.store, "test-site").await;
    assert!(first > 5, "boots, statuses and a session: {first} events");

    // The broker goes away (with the hub) for a long stretch while sessions run.
    hub.shutdown().await;
    eventually(10, || async { (sync_view(&agent).await["connected"] == false).then_some(()) })
        .await
        .expect("the edge sees the broker gone");
    let (a, b) = tokio::join!(session(&cp1, TAG_OK, 800), session(&cp2, "TAG-CP-2", 800));
    let _ = (a, b);
    session(&cp1, TAG_OK, 400).await;
    let during = sync_view(&agent).await;
    assert!(during["outbox"]["pending"].as_u64().unwrap_or(0) > 10, "{during}");
    // Everything local kept working meanwhile.
    let (status, txs) = agent.get("/api/v1/transactions").await;
    assert_eq!(status, 200);
    assert_eq!(txs.as_array().map(Vec::len), Some(4), "{txs}");

    let hub = start_hub(dir.path(), &db_url, port).await;
    let newest = drained(&agent, &hub.store, "test-site").await;
    let (count, min, max, applied) = hub_counts(&hub.store, "test-site").await;
    assert_eq!((count, min, max, applied), (newest, 1, newest, newest), "every seq applied exactly once");
    let sessions = hub
        .store
        .fetch(
            "SELECT station, energy_wh, stopped_at FROM sessions WHERE site_id = $1 ORDER BY started_at",
            &["test-site".into()],
            &[Ty::Text, Ty::Int, Ty::Time],
        )
        .await
        .unwrap();
    assert_eq!(sessions.len(), 4, "every session at the hub once");
    for s in &sessions {
        assert!(s.time(2).is_some(), "stopped");
        assert!(s.int(1).is_some_and(|wh| wh >= 0), "with its energy");
    }
    hub.shutdown().await;
    agent.running.shutdown().await;
    drop_database(pg_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_while_sessions_run_sqlite() {
    broker_outage_while_sessions_run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_while_sessions_run_postgres() {
    broker_outage_while_sessions_run(Backend::Postgres).await;
}

/// Writes `n` outbox events at the edge (local id-tag list edits, 8 at a time).
async fn backlog(api: &str, n: usize) {
    let http = reqwest::Client::new();
    let mut pending = futures_util::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let url = format!("{api}/api/v1/id-tags/BULK-{i:05}");
            async move {
                let resp = http.put(url).json(&serde_json::json!({ "status": "Accepted" })).send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        })
        .buffer_unordered(8);
    while pending.next().await.is_some() {}
}

fn hub_config(dir: &std::path::Path, db_url: &str, mqtt_port: u16) -> std::path::PathBuf {
    let path = dir.join("cloud-hub.toml");
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
         [database]\nurl = \"{db_url}\"\nmax_connections = 4\n[ingest]\nworkers = 2\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The hub's database, opened beside the hub (process or not), with the site provisioned.
async fn provisioned(config: &std::path::Path) -> (Store, cloud_hub::sites::SiteCredentials) {
    let config = cloud_hub::config::Config::load(config).map_err(|e| e.to_string()).unwrap();
    let store = Store::connect(&config.db, 2).await.unwrap();
    let creds = cloud_hub::sites::add_site(&store, "Test site", Some("test-site"), "sitepilot-hub").await.unwrap();
    (store, creds)
}

/// A slow drain (batches of 5, one in flight), so that a kill lands in its middle.
fn slow_sync(port: u16, creds: &cloud_hub::sites::SiteCredentials) -> String {
    format!(
        "[sync]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"{}\"\npassword = \"{}\"\nbatch_size = 5\n\
         max_inflight_batches = 1\npoll_interval_ms = 50\nack_timeout_s = 2\nreconnect_min_ms = 100\nreconnect_max_s = 1\n",
        creds.mqtt_username, creds.mqtt_password
    )
}

/// Waits until the hub has applied some but not all of `newest`; `None` if it never is
/// caught in between.
async fn mid_drain(store: &Store, newest: i64) -> Option<i64> {
    eventually(30, || async {
        let (_, _, _, applied) = hub_counts(store, "test-site").await;
        (applied > 0 && applied < newest).then_some(applied)
    })
    .await
}

async fn assert_exactly_once(store: &Store, newest: i64, tags: i64) {
    let (count, min, max, applied) = hub_counts(store, "test-site").await;
    assert_eq!((count, min, max, applied), (newest, 1, newest, newest), "every seq applied exactly once");
    let row = store
        .fetch_opt("SELECT COUNT(*) FROM id_tags WHERE site_id = $1", &["test-site".into()], &[Ty::Int])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.int(0), Some(tags), "every id tag edit at the hub");
}

async fn edge_sigkill_mid_drain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((db_url, pg_name)) = database(backend, dir.path()).await else { return };
    let port = free_port();
    let hub_cfg = hub_config(dir.path(), &db_url, port);
    let (store, creds) = provisioned(&hub_cfg).await;
    // The edge as a process, its broker not there yet: the backlog builds up.
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();
    let edge_cfg = edge_dir.join("edge.toml");
    std::fs::write(&edge_cfg, energy_config_text(&edge_dir, &[], &slow_sync(port, &creds))).unwrap();
    let bin = tests::workspace_binary("edge-agent", "SITEPILOT_EDGE_AGENT_BIN");
    let edge = tests::Spawned::run(&bin, &edge_cfg).await;
    let api = format!("http://{}", edge.ready["api"].as_str().unwrap());
    backlog(&api, 600).await;
    let newest = 600;

    let config = cloud_hub::config::Config::load(&hub_cfg).map_err(|e| e.to_string()).unwrap();
    let hub = cloud_hub::app::start(config).await.unwrap();
    let at = mid_drain(&store, newest).await.expect("the kill lands mid-drain");
    edge.kill().await; // SIGKILL
    let (_, _, _, after_kill) = hub_counts(&store, "test-site").await;
    assert!(after_kill < newest, "killed at {at}, the hub at {after_kill} of {newest}");

    // The agent comes back on the same database and finishes where it stopped.
    let edge = tests::Spawned::run(&bin, &edge_cfg).await;
    eventually(60, || async { (hub_counts(&store, "test-site").await.3 == newest).then_some(()) })
        .await
        .expect("drained after the restart");
    assert_exactly_once(&store, newest, 600).await;
    edge.kill().await;
    hub.shutdown().await;
    store.close().await;
    drop_database(pg_name).await;
}

async fn hub_sigkill_mid_drain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((db_url, pg_name)) = database(backend, dir.path()).await else { return };
    let port = free_port();
    let hub_cfg = hub_config(dir.path(), &db_url, port);
    let (store, creds) = provisioned(&hub_cfg).await;
    let tail = slow_sync(port, &creds);
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[], &tail)).await;
    backlog(&agent.running.api_url(), 600).await;
    let newest = 600;

    let bin = tests::workspace_binary("cloud-hub", "SITEPILOT_CLOUD_HUB_BIN");
    let hub = tests::Spawned::run(&bin, &hub_cfg).await;
    let at = mid_drain(&store, newest).await.expect("the kill lands mid-drain");
    hub.kill().await; // SIGKILL, the embedded broker with it
    let (_, _, _, after_kill) = hub_counts(&store, "test-site").await;
    assert!(after_kill < newest, "killed at {at}, the hub at {after_kill} of {newest}");

    let hub = tests::Spawned::run(&bin, &hub_cfg).await;
    eventually(60, || async { (hub_counts(&store, "test-site").await.3 == newest).then_some(()) })
        .await
        .expect("drained after the hub's restart");
    assert_exactly_once(&store, newest, 600).await;
    eventually(10, || async { (sync_view(&agent).await["outbox"]["pending"] == 0).then_some(()) })
        .await
        .expect("the edge's outbox empties");
    hub.kill().await;
    agent.running.shutdown().await;
    store.close().await;
    drop_database(pg_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigkill_mid_drain_sqlite() {
    edge_sigkill_mid_drain(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigkill_mid_drain_postgres() {
    edge_sigkill_mid_drain(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sigkill_mid_drain_sqlite() {
    hub_sigkill_mid_drain(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sigkill_mid_drain_postgres() {
    hub_sigkill_mid_drain(Backend::Postgres).await;
}

/// Whether the Mosquitto on this machine answers (`SITEPILOT_TEST_MQTT`, default
/// 127.0.0.1:1883); its absence is a failure with `CI=true`.
async fn mosquitto() -> Option<String> {
    let addr = std::env::var("SITEPILOT_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".to_owned());
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Some(addr),
        _ => {
            let reason = format!("no MQTT broker (Mosquitto) at {addr}");
            assert!(std::env::var("CI").map_or(true, |v| v != "true"), "CI=true and {reason}");
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

/// Scale-out: two hub processes' worth of hubs against one PostgreSQL and one Mosquitto,
/// sharing the sites through a shared subscription. Every event of every site is applied
/// exactly once and in order, and both hubs take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_share_the_sites_without_loss_or_duplicate() {
    let Some(mqtt) = mosquitto().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some((db_url, pg_name)) = database(Backend::Postgres, dir.path()).await else { return };
    let run = tests::hubdb::unique_suffix();
    let mut hubs = Vec::new();
    for i in 0..2 {
        let path = dir.path().join(format!("hub-{i}.toml"));
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nurl = \"mqtt://{mqtt}\"\nclient_id = \"hub-{run}-{i}\"\n\
             share_group = \"e2e-{run}\"\n[database]\nurl = \"{db_url}\"\nmax_connections = 4\n[ingest]\nworkers = 2\n"
        );
        std::fs::write(&path, text).unwrap();
        let config = cloud_hub::config::Config::load(&path).map_err(|e| e.to_string()).unwrap();
        let hub = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).unwrap();
        assert!(hub.wait_ready(Duration::from_secs(15)).await, "hub {i} subscribes");
        hubs.push(hub);
    }
    let store = &hubs[0].store;
    const SITES: usize = 6;
    const EVENTS: usize = 80;
    let mut agents = Vec::new();
    let mut sites = Vec::new();
    for s in 0..SITES {
        let site = format!("site-{run}-{s}");
        let creds = cloud_hub::sites::add_site(store, &site, Some(&site), "sitepilot-hub").await.unwrap();
        let tail = format!(
            "[sync]\nbroker = \"mqtt://{mqtt}\"\nusername = \"{}\"\npassword = \"{}\"\nbatch_size = 10\n\
             poll_interval_ms = 50\nack_timeout_s = 2\nreconnect_min_ms = 100\nreconnect_max_s = 1\n",
            creds.mqtt_username, creds.mqtt_password
        );
        let site_id = site.clone();
        let agent = TestAgent::start_text(move |d| {
            energy_config_text(d, &[], &tail).replacen("id = \"test-site\"", &format!("id = \"{site_id}\""), 1)
        })
        .await;
        sites.push(site);
        agents.push(agent);
    }
    for agent in &agents {
        backlog(&agent.running.api_url(), EVENTS).await;
    }
    for (site, agent) in sites.iter().zip(&agents) {
        let drained =
            eventually(60, || async { (hub_counts(store, site).await.3 == EVENTS as i64).then_some(()) }).await;
        if drained.is_none() {
            eprintln!("edge: {}\nhub: {:?}", sync_view(agent).await, hub_counts(store, site).await);
        }
        drained.unwrap_or_else(|| {
            panic!("{site} never drained: {:?}", futures_util::FutureExt::now_or_never(hub_counts(store, site)))
        });
        let (count, min, max, applied) = hub_counts(store, site).await;
        assert_eq!((count, min, max, applied), (EVENTS as i64, 1, EVENTS as i64, EVENTS as i64), "{site}");
    }
    let applied: Vec<u64> = hubs.iter().map(|h| h.metrics.events_applied.get()).collect();
    assert_eq!(applied.iter().sum::<u64>(), (SITES * EVENTS) as u64, "applied once in total: {applied:?}");
    assert!(applied.iter().all(|&n| n > 0), "both hubs took part: {applied:?}");
    for agent in agents {
        agent.running.shutdown().await;
    }
    for hub in hubs {
        hub.shutdown().await;
    }
    drop_database(pg_name).await;
}

/// A fleet manager stops a session from the hub: fleet API → hub → MQTT → edge → OCPP
/// RemoteStopTransaction → the simulated charger stops → the result comes back to the hub,
/// and the stopped session reaches the hub through the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_stop_from_the_fleet_api_reaches_the_charger() {
    let dir = tempfile::tempdir().unwrap();
    let (db_url, _) = database(Backend::Sqlite, dir.path()).await.unwrap();
    let port = free_port();
    let hub = start_hub(dir.path(), &db_url, port).await;
    let creds = cloud_hub::sites::add_site(&hub.store, "Test site", Some("test-site"), "sitepilot-hub").await.unwrap();
    let key = cloud_hub::auth::add_key(&hub.store, "ops", cloud_hub::auth::Role::FleetManager).await.unwrap();
    let tail = format!(
        "[sync]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"{}\"\npassword = \"{}\"\npoll_interval_ms = 100\n",
        creds.mqtt_username, creds.mqtt_password
    );
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", "")], &tail)).await;
    let cp = sim(&agent, "CP-1").await;
    cp.plug_in(1).await.unwrap();
    let tx = cp.start_transaction(1, TAG_OK).await.unwrap();
    drained(&agent, &hub.store, "test-site").await;

    let http = reqwest::Client::new();
    let api = format!("http://{}/api/v1", hub.http_addr);
    let (status, sent) = tests::http_json(
        http.post(format!("{api}/sites/test-site/commands"))
            .bearer_auth(&key.token)
            .json(&serde_json::json!({ "type": "remote_stop", "station": "CP-1", "transaction_id": tx })),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["command_id"].as_str().unwrap().to_owned();
    let answered = eventually(20, || async {
        let (_, c) = tests::http_json(http.get(format!("{api}/commands/{id}")).bearer_auth(&key.token)).await;
        (c["status"] == "answered").then_some(c)
    })
    .await
    .expect("the site answers");
    assert_eq!(answered["result"]["outcome"], "accepted", "{answered}");
    assert!(
        cp.received_calls().iter().any(|c| c.action == "RemoteStopTransaction" && c.payload["transactionId"] == tx)
    );
    eventually(20, || async {
        let (_, s) = tests::http_json(http.get(format!("{api}/sessions?site=test-site")).bearer_auth(&key.token)).await;
        let stopped =
            s["items"].as_array().or(s.as_array()).is_some_and(|l| l.iter().any(|x| !x["stopped_at"].is_null()));
        stopped.then_some(())
    })
    .await
    .expect("the stopped session reaches the hub");
    hub.shutdown().await;
    agent.running.shutdown().await;
}
