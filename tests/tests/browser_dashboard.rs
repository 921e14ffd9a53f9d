//! The fleet dashboard in a real headless Chromium at phone width, against a real hub
//! (SQLite, embedded MQTT broker), a real edge agent syncing to it and a simulated
//! charger on the agent: a CPO operator logs in, watches the charger come online and a
//! session appear on the site page without reloading, presses the session's stop button
//! and watches the session end (the command goes hub -> MQTT -> edge -> OCPP
//! RemoteStopTransaction, the stop comes back through the outbox); then a fleet manager
//! sees only their customer's sessions, no command buttons, and is refused another
//! customer's site. Every page: no horizontal scroll at 375 px, no console errors, and
//! the event streams of pages left behind are closed.
//! Screenshots of every step land in `target/screenshots/`.
//!
//! Skipped (with a message) without `/usr/bin/chromium` and `/usr/bin/chromedriver`,
//! unless `CI=true`; see [`tests::browser`].

#![allow(clippy::unwrap_used)]

use chrono::Utc;
use cloud_hub::dashboard::Role;
use serde_json::json;
use shared_model::events::SiteEvent;
use shared_model::model::{ConnectorRef, TransactionOrigin};
use shared_model::sync::{EventBatch, EventEnvelope, PROTOCOL_VERSION};
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use std::time::Duration;
use tests::browser::Browser;
use tests::{TAG_OK, TestAgent, energy_config_text, eventually, password};

const SITE: &str = "test-site";
const OTHER_SITE: &str = "yard";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_hub(dir: &std::path::Path, mqtt_port: u16) -> cloud_hub::app::Running {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
         [database]\nurl = \"sqlite://{}\"\nmax_connections = 4\n[ingest]\nworkers = 2\n",
        dir.join("hub.db").display()
    );
    let path = dir.join("cloud-hub.toml");
    std::fs::write(&path, text).unwrap();
    let config = cloud_hub::config::Config::load(&path).map_err(|e| e.to_string()).unwrap();
    let running = cloud_hub::app::start(config).await.map_err(|e| format!("{e:#}")).unwrap();
    assert!(running.wait_ready(Duration::from_secs(15)).await, "the hub subscribes");
    running
}

/// Another customer's session at another site, applied the way ingest applies a batch.
async fn other_customers_session(store: &cloud_hub::db::Store) {
    let event = SiteEvent::TransactionStarted {
        station: "Y-1".into(),
        transaction_uid: "tx-globex".into(),
        station_transaction_id: "5".into(),
        connector: ConnectorRef { evse: 1, connector: 1 },
        id_tag: Some("TAG-GLOBEX".into()),
        meter_start_wh: Some(0),
        started_at: Some(Utc::now()),
        origin: TransactionOrigin::Online,
    };
    let batch = EventBatch {
        v: PROTOCOL_VERSION,
        site_id: OTHER_SITE.into(),
        events: vec![EventEnvelope::new(1, "globex-1".into(), Utc::now(), &event).unwrap()],
    };
    cloud_hub::ingest::apply_batch(store, &batch, Utc::now()).await.unwrap();
}

async fn log_in(browser: &mut Browser, base: &str, user: &str, pw: &str) {
    browser.open(&format!("{base}/login")).await.unwrap();
    browser.type_into("input[name=\"username\"]", user).await.unwrap();
    browser.type_into("input[name=\"password\"]", pw).await.unwrap();
    browser.click("form.login button[type=\"submit\"]").await.unwrap();
    browser.wait_text("nav .who", user).await.unwrap();
}

/// Phone manners on the page as it is: 375 px wide, nothing wider.
async fn assert_fits_the_phone(browser: &Browser, page: &str) {
    let widths = browser
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth, document.body.scrollWidth];",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(widths[0], 375, "{page}: {widths}");
    assert!(
        widths[1].as_i64() <= widths[0].as_i64() && widths[2].as_i64() <= widths[0].as_i64(),
        "{page} scrolls sideways: {widths}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stops_a_session_and_a_fleet_manager_sees_only_their_own() {
    let Some(mut browser) = Browser::start("dashboard-phone").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = start_hub(dir.path(), port).await;
    let store = hub.store.clone();
    let base = format!("http://{}", hub.http_addr);
    let creds = cloud_hub::sites::add_site(&store, "Depot North", Some(SITE), "sitepilot-hub").await.unwrap();
    cloud_hub::sites::add_site(&store, "Globex Yard", Some(OTHER_SITE), "sitepilot-hub").await.unwrap();
    let now = Utc::now();
    for (id, name, tag) in [("acme", "Acme Logistics", TAG_OK), ("globex", "Globex", "TAG-GLOBEX")] {
        cloud_hub::billing::invoice::add_customer(&store, Some(id), name, None, None, None, now).await.unwrap();
        cloud_hub::billing::invoice::add_token(&store, id, tag, now).await.unwrap();
    }
    other_customers_session(&store).await;
    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await.unwrap();
    let fm_pw = cloud_hub::dashboard::cli::add_user(&store, "fm", Role::FleetManager, Some("acme")).await.unwrap();

    let tail = format!(
        "[sync]\nbroker = \"mqtt://127.0.0.1:{port}\"\nusername = \"{}\"\npassword = \"{}\"\npoll_interval_ms = 100\n",
        creds.mqtt_username, creds.mqtt_password
    );
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", "")], &tail)).await;

    // ---- the CPO operator, on a phone -----------------------------------------------------
    browser.phone().await.unwrap();
    log_in(&mut browser, &base, "op", &op_pw).await;
    browser.screenshot("overview").await.unwrap();
    browser.open(&format!("{base}/sites/{SITE}")).await.unwrap();
    // Marks this page load: still there at the end means nothing was reloaded.
    browser.execute("window.sitepilotLoad = 'first'; return true;", json!([])).await.unwrap();
    browser.wait_text("#live-state", "live").await.unwrap();
    browser.wait_text("#live", "No charger has reported yet").await.unwrap();
    browser.screenshot("site-empty").await.unwrap();

    // The charger connects and boots: it appears, online.
    let cfg = ChargePointConfig::new("CP-1", agent.ocpp_url())
        .with_password(password("CP-1"))
        .with_connectors(1)
        .fast()
        .with_ev(EvModel::instant().with_max_current(16.0))
        .with_meter_interval(Duration::from_millis(300));
    let cp = ChargePoint::connect(cfg).await.unwrap();
    cp.boot().await.unwrap();
    browser.wait_text("#chargers tr[data-station=\"CP-1\"]", "online").await.unwrap();

    // A session starts at the charger: it appears on the page by itself.
    cp.plug_in(1).await.unwrap();
    let tx = cp.start_transaction(1, TAG_OK).await.unwrap();
    let row = browser.wait_text("#sessions tr.session", TAG_OK).await.unwrap();
    assert!(row.contains("CP-1"), "{row}");
    browser.wait_for(&format!("#sessions form.cmd input[name=\"transaction_id\"][value=\"{tx}\"]")).await.unwrap();
    browser.screenshot("session-live").await.unwrap();
    assert_fits_the_phone(&browser, "the site page with a session").await;

    // Remote stop: the hub's answer shows at once, the charger stops, the page follows.
    browser.click("#sessions button[data-cmd=\"remote-stop\"]").await.unwrap();
    browser.wait_text("#cmd-result", "sent; the site's answer shows under Recent commands").await.unwrap();
    browser.wait_for("#command-list tr.command[data-type=\"remote_stop\"] .badge.ok").await.unwrap();
    browser.wait_for("#no-sessions").await.unwrap();
    assert!(
        cp.received_calls().iter().any(|c| c.action == "RemoteStopTransaction" && c.payload["transactionId"] == tx),
        "the charger was asked to stop"
    );
    let ended = eventually(20, || async {
        let row = store
            .fetch_opt(
                "SELECT stopped_at FROM sessions WHERE site_id = $1 AND station_transaction_id = $2",
                &[SITE.into(), tx.to_string().into()],
                &[cloud_hub::db::Ty::Time],
            )
            .await
            .unwrap();
        row.and_then(|r| r.time(0))
    })
    .await;
    assert!(ended.is_some(), "the hub has the stop");
    browser.screenshot("session-stopped").await.unwrap();
    assert_fits_the_phone(&browser, "the site page after the stop").await;
    let marker = browser.execute("return window.sitepilotLoad;", json!([])).await.unwrap();
    assert_eq!(marker, "first", "the page was reloaded: the updates were not pushed");
    browser.assert_no_console_errors().await;

    // The other pages at phone width, the charts drawn by the vendored library.
    for (path, ready, shot) in [
        ("/sessions".to_owned(), "#session-list tr.session".to_owned(), "sessions"),
        ("/alerts".to_owned(), "#live-state".to_owned(), "alerts"),
        ("/invoices".to_owned(), "h1".to_owned(), "invoices"),
        (format!("/charts?site={SITE}&range=day"), "#chart-energy .uplot".to_owned(), "charts"),
    ] {
        browser.open(&format!("{base}{path}")).await.unwrap();
        browser.wait_for(&ready).await.unwrap();
        browser.screenshot(shot).await.unwrap();
        assert_fits_the_phone(&browser, &path).await;
    }
    browser.wait_for("#chart-utilisation .uplot").await.unwrap();
    browser.assert_no_console_errors().await;
    // Pages left behind close their event streams (a browser keeping them, say in its
    // back/forward cache, would use up its six connections to the hub after a few pages).
    let streams = eventually(30, || async {
        let open = hub.metrics.dashboard_streams.get();
        (open <= 1).then_some(open)
    })
    .await;
    assert_eq!(streams, Some(1), "only the charts page's stream is open: {}", hub.metrics.dashboard_streams.get());
    browser.open(&format!("{base}/sessions")).await.unwrap();
    let text = browser.wait_text("#session-list", "TAG-GLOBEX").await.unwrap();
    assert!(text.contains(TAG_OK), "the operator sees every customer's sessions: {text}");

    // ---- the fleet manager ---------------------------------------------------------------
    browser.click("nav form button[type=\"submit\"]").await.unwrap();
    browser.wait_for("form.login").await.unwrap();
    log_in(&mut browser, &base, "fm", &fm_pw).await;
    let overview = browser.wait_text("#live", "Depot North").await.unwrap();
    assert!(!overview.contains("Globex Yard"), "{overview}");
    browser.open(&format!("{base}/sessions")).await.unwrap();
    let text = browser.wait_text("#session-list", TAG_OK).await.unwrap();
    assert!(!text.contains("TAG-GLOBEX") && !text.contains("Globex Yard"), "{text}");
    browser.screenshot("fleet-manager-sessions").await.unwrap();
    assert_fits_the_phone(&browser, "the fleet manager's sessions").await;
    browser.open(&format!("{base}/sites/{SITE}")).await.unwrap();
    browser.wait_text("#live-state", "live").await.unwrap();
    let buttons = browser.execute("return document.querySelectorAll('form.cmd').length;", json!([])).await.unwrap();
    assert_eq!(buttons, 0, "no command buttons for a fleet manager");
    assert!(browser.find("#cmd-result").await.unwrap().is_none());
    browser.screenshot("fleet-manager-site").await.unwrap();
    browser.assert_no_console_errors().await;

    // Another customer's site by its URL: refused, and not even confirmed to exist.
    let other = format!("{base}/sites/{OTHER_SITE}");
    browser.open(&other).await.unwrap();
    browser.wait_text("main .error", "Not found (or not yours to see)").await.unwrap();
    browser.screenshot("fleet-manager-refused").await.unwrap();
    assert_fits_the_phone(&browser, "the refusal").await;
    // The browser logs the 404 itself; nothing else may be an error.
    let log = browser.console().await.unwrap().to_vec();
    let errors: Vec<_> = log.iter().filter(|e| e.level == "SEVERE").collect();
    assert!(
        errors.iter().all(|e| e.message.contains(&other) && e.message.contains("404")),
        "console errors besides the refused page's 404: {errors:#?}"
    );
    assert_eq!(errors.len(), 1, "the 404 is logged once: {errors:#?}");

    browser.close().await;
    cp.disconnect().await.ok();
    agent.running.shutdown().await;
    hub.shutdown().await;
}
