//! The fleet dashboard in a real headless Chromium at phone width, against a real hub
//! (SQLite, embedded MQTT broker), a real edge agent syncing to it and a simulated
//! charger on the agent: a CPO operator logs in, watches the charger come online and a
//! session appear on the site page without reloading, presses the session's stop button
//! and watches the session end (the command goes hub -> MQTT -> edge -> OCPP
//! RemoteStopTransaction, the stop comes back through the outbox); then a fleet manager
//! sees only their customer's sessions, no command buttons, and is refused another
//! customer's site. Every page: no horizontal scroll at 375 px, no console errors, and
//! the event streams of pages left behind are closed.
//!
//! A second scenario adds a simulated Modbus grid meter the edge agent reads: a CPO
//! operator watches the site page's "Power per phase" show the meter's currents against the
//! fuse and follow the building's load as it changes, then sees the fail-safe banner (and
//! the alert) appear when the meter simulator stops and go when it comes back, all pushed
//! to the open page over its event stream.
//!
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
use simulators::meter::{LoadProfile, MeterServer, SimClock, SiteLoad};
use std::time::Duration;
use tests::browser::Browser;
use tests::{
    TAG_OK, TestAgent, energy_config_text, eventually, free_port, grid_meter_site_tail, password, start_sqlite_hub,
};

const SITE: &str = "test-site";
const OTHER_SITE: &str = "yard";

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
    let hub = start_sqlite_hub(dir.path(), port).await;
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

/// The grid circuit on the site page's "Power per phase" as the browser shows it: its
/// meter's state badge, then per phase L1..L3 the measured current, its bar (value / max),
/// the tightest limit's cell (label, value) and whether the row is marked over it.
const GRID_PHASES: &str = "\
    const c = document.querySelector('#site-energy [data-circuit=\"grid\"]');\
    if (!c) return null;\
    const badge = c.querySelector('h3 .badge');\
    return [badge ? badge.textContent : null].concat(['L1', 'L2', 'L3'].map((p) => {\
      const r = c.querySelector('tr[data-phase=\"' + p + '\"]');\
      if (!r) return null;\
      const m = r.querySelector('meter');\
      const t = r.querySelector('td.tightest');\
      return [r.querySelector('.measured').textContent, m ? m.value + ' / ' + m.max : null,\
              t ? t.dataset.label + ' ' + t.textContent : null, r.classList.contains('over')];\
    }));";

/// The fail-safe banner's text, `null` without one.
const FAIL_SAFE_BANNER: &str = "const b = document.getElementById('fail-safe'); return b ? b.innerText : null;";

/// Waits for the grid circuit's rows to show the meter `fresh` with `amps` per phase
/// against the 63 A fuse (a `<meter>` holds its value at its max: a row above the fuse has
/// a full bar and is marked over).
async fn wait_grid_phases(browser: &Browser, what: &str, amps: [u32; 3]) {
    let mut expected = vec![json!("fresh")];
    for a in amps {
        expected.push(json!([format!("{a}.0 A"), format!("{} / 63", a.min(63)), "Fuse 63.0 A tightest", a > 63]));
    }
    browser.wait_value(what, GRID_PHASES, json!([]), &serde_json::Value::Array(expected)).await.unwrap();
}

/// The page's open-alert count in the navigation.
async fn wait_alert_count(browser: &Browser, n: u32) {
    let what = format!("the navigation counts {n} open alert(s)");
    let script = "const b = document.getElementById('alert-count'); return b ? b.textContent : null;";
    browser.wait_value(&what, script, json!([]), &json!(n.to_string())).await.unwrap();
}

/// Scrolls the power section into the phone's viewport for a screenshot.
async fn show_power_section(browser: &Browser) {
    let script = "const s = document.getElementById('site-energy'); if (s) s.scrollIntoView(); return !!s;";
    assert_eq!(browser.execute(script, json!([])).await.unwrap(), true, "the site page has its power section");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_power_per_phase_and_the_fail_safe() {
    let Some(mut browser) = Browser::start("site-power-phone").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = start_sqlite_hub(dir.path(), port).await;
    let store = hub.store.clone();
    let base = format!("http://{}", hub.http_addr);
    let creds = cloud_hub::sites::add_site(&store, "Depot North", Some(SITE), "sitepilot-hub").await.unwrap();
    let op_pw = cloud_hub::dashboard::cli::add_user(&store, "op", Role::CpoOperator, None).await.unwrap();

    // The building draws 10 / 11 / 12 A behind a 63 A fuse. The meter is polled every 200 ms
    // and stale after 3 periods; the edge reports the site's power every 300 ms (and at once
    // when fail-safe changes), so the page follows within a second.
    let load = SiteLoad::new(LoadProfile::constant([10.0, 11.0, 12.0]), SimClock::real_time(chrono::NaiveTime::MIN));
    let meter = MeterServer::bind("127.0.0.1:0".parse().unwrap(), load.clone()).await.unwrap();
    let addr = meter.local_addr();
    let tail = grid_meter_site_tail(addr, port, &creds.mqtt_username, &creds.mqtt_password);
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", "circuit = \"grid\"")], &tail)).await;

    // The charger answers (one never seen is itself a fail-safe condition).
    let cp = ChargePoint::connect(
        ChargePointConfig::new("CP-1", agent.ocpp_url())
            .with_password(password("CP-1"))
            .with_connectors(1)
            .fast()
            .with_ev(EvModel::instant().with_max_current(16.0)),
    )
    .await
    .unwrap();
    cp.boot().await.unwrap();

    // ---- the operator opens the site on a phone: the building's load per phase -----------
    browser.phone().await.unwrap();
    log_in(&mut browser, &base, "op", &op_pw).await;
    browser.open(&format!("{base}/sites/{SITE}")).await.unwrap();
    // Marks this page load: still there later means nothing was reloaded.
    browser.execute("window.sitepilotLoad = 'first'; return true;", json!([])).await.unwrap();
    browser.wait_text("#live-state", "live").await.unwrap();
    wait_grid_phases(&browser, "the meter's currents against the fuse", [10, 11, 12]).await;
    let heading = browser.wait_text("#site-energy [data-circuit=\"grid\"] h3", "meter grid-meter").await.unwrap();
    assert!(heading.contains("grid (grid connection)"), "{heading}");
    let banner = browser.execute(FAIL_SAFE_BANNER, json!([])).await.unwrap();
    assert_eq!(banner, serde_json::Value::Null, "no fail-safe banner while the meter answers");
    wait_alert_count(&browser, 0).await;
    show_power_section(&browser).await;
    browser.screenshot("power-per-phase").await.unwrap();
    assert_fits_the_phone(&browser, "the site page's power per phase").await;

    // The building switches on a big load on L1 and L3: the rows follow without a reload, L3
    // now above the fuse and marked so.
    load.set_extra_load([5.0, 0.0, 52.0]);
    wait_grid_phases(&browser, "the rows follow the building's new load", [15, 11, 64]).await;
    show_power_section(&browser).await;
    browser.screenshot("power-per-phase-over-the-fuse").await.unwrap();
    load.set_extra_load([0.0; 3]);
    wait_grid_phases(&browser, "the rows follow the load switched off", [10, 11, 12]).await;

    // ---- the meter stops answering: the banner and the alert appear by themselves ---------
    meter.shutdown();
    let banner = browser.wait_text("#fail-safe", "Fail-safe active").await.unwrap();
    assert!(banner.contains("the site runs on safe limits"), "{banner}");
    browser.wait_text("#fail-safe li[data-kind=\"meter_stale\"]", "meter stale at grid").await.unwrap();
    browser.wait_text("#site-energy [data-circuit=\"grid\"] h3 .badge.bad", "stale").await.unwrap();
    wait_alert_count(&browser, 1).await;
    let marker = browser.execute("return window.sitepilotLoad;", json!([])).await.unwrap();
    assert_eq!(marker, "first", "the page was reloaded: the fail-safe was not pushed");
    browser.execute("window.scrollTo(0, 0); return true;", json!([])).await.unwrap();
    browser.screenshot("fail-safe").await.unwrap();
    assert_fits_the_phone(&browser, "the site page in fail-safe").await;
    browser.assert_no_console_errors().await;

    browser.open(&format!("{base}/alerts")).await.unwrap();
    let alert = browser
        .wait_text("#open-alerts tr.alert[data-kind=\"fail_safe\"][data-site=\"test-site\"]", "Fail-safe active")
        .await
        .unwrap();
    assert!(alert.contains("meter_stale at grid") && alert.contains("Depot North"), "{alert}");
    browser.screenshot("fail-safe-alert").await.unwrap();
    assert_fits_the_phone(&browser, "the alerts page in fail-safe").await;

    // ---- the meter answers again: the banner goes, fresh readings come back ---------------
    browser.open(&format!("{base}/sites/{SITE}")).await.unwrap();
    browser.execute("window.sitepilotLoad = 'second'; return true;", json!([])).await.unwrap();
    browser.wait_text("#live-state", "live").await.unwrap();
    browser.wait_for("#fail-safe").await.unwrap();
    let meter = eventually(10, || async { MeterServer::bind(addr, load.clone()).await.ok() })
        .await
        .expect("the meter simulator binds its address again");
    let none = serde_json::Value::Null;
    browser.wait_value("the fail-safe banner goes", FAIL_SAFE_BANNER, json!([]), &none).await.unwrap();
    wait_grid_phases(&browser, "fresh readings after the meter's return", [10, 11, 12]).await;
    wait_alert_count(&browser, 0).await;
    let marker = browser.execute("return window.sitepilotLoad;", json!([])).await.unwrap();
    assert_eq!(marker, "second", "the page was reloaded: the end of the fail-safe was not pushed");
    show_power_section(&browser).await;
    browser.screenshot("fail-safe-over").await.unwrap();
    browser.assert_no_console_errors().await;

    browser.open(&format!("{base}/alerts")).await.unwrap();
    browser.wait_for("#open-alerts-empty").await.unwrap();
    browser.wait_text("#cleared-alerts tr.alert[data-kind=\"fail_safe\"]", "Fail-safe active").await.unwrap();
    browser.assert_no_console_errors().await;

    browser.close().await;
    meter.shutdown();
    cp.disconnect().await.ok();
    agent.running.shutdown().await;
    hub.shutdown().await;
}
