//! The installer page in a real headless Chromium at phone width: a real agent, a
//! simulated charger whose EV draws current, and a simulated Modbus meter that sees that
//! draw. The installer watches the charger come up, starts a session with an id tag and
//! stops it again, all without reloading the page (the changes are pushed). Screenshots
//! of every step land in `target/screenshots/`.
//!
//! Skipped (with a message) without `/usr/bin/chromium` and `/usr/bin/chromedriver`,
//! unless `CI=true`; see [`tests::browser`].

#![allow(clippy::unwrap_used)]

use shared_model::site::Wiring;
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use simulators::meter::{LoadProfile, MeterServer, SimClock, SiteLoad};
use std::time::Duration;
use tests::browser::Browser;
use tests::{TAG_OK, TestAgent, energy_config_text, password};

const CP: &str = "[data-charger=\"CP-1\"]";
const CONNECTOR: &str = "[data-charger=\"CP-1\"] [data-connector=\"1\"]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installer_commissions_a_charger_from_a_phone() {
    let Some(mut browser) = Browser::start("installer-phone").await else { return };
    let load = SiteLoad::new(LoadProfile::constant([8.0; 3]), SimClock::real_time(chrono::NaiveTime::MIN));
    let meter = MeterServer::bind("127.0.0.1:0".parse().unwrap(), load.clone()).await.unwrap();
    let addr = meter.local_addr();
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "name = \"Bay 1\"\ncircuit = \"grid\"\nmax_current_a = 16")],
            &format!(
                "[balancer]\ntick_ms = 500\n\n[[circuits]]\nid = \"grid\"\nlimit_a = 40\nsafe_current_a = 10\n\n\
                 [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"{addr}\"\ncircuit = \"grid\"\n\
                 period_ms = 500\n"
            ),
        )
    })
    .await;

    browser.phone().await.unwrap();
    browser.open(&agent.api("/")).await.unwrap();
    // Marks this page load: still there at the end means nothing was reloaded.
    browser.execute("window.sitepilotLoad = 'first'; return true;", serde_json::json!([])).await.unwrap();
    browser.wait_text("#h-checklist", "Commissioning checklist").await.unwrap();
    browser.wait_text("#live", "live").await.unwrap();
    // The charger has not connected yet: its item waits and says why.
    browser.wait_for("[data-check=\"charger:CP-1\"][data-state=\"pending\"]").await.unwrap();
    browser.wait_text("[data-check=\"charger:CP-1\"]", "never connected").await.unwrap();
    // The meter answers: its item passes and its phases are shown against the 40 A fuse.
    browser.wait_for("[data-check=\"meter:grid-meter\"][data-state=\"pass\"]").await.unwrap();
    browser.wait_text("[data-meter=\"grid-meter\"] .phases", "8.0 / 40 A").await.unwrap();
    browser.screenshot("checklist").await.unwrap();

    // The charger connects and boots: the page follows by itself.
    let cfg = ChargePointConfig::new("CP-1", agent.ocpp_url())
        .with_password(password("CP-1"))
        .with_connectors(1)
        .fast()
        .with_ev(EvModel::instant().with_max_current(16.0))
        .with_meter_interval(Duration::from_millis(500));
    let cp = ChargePoint::connect(cfg).await.unwrap();
    load.attach(&cp, Wiring::THREE_PHASE);
    cp.boot().await.unwrap();
    browser.wait_for(&format!("{CP}[data-connected=\"true\"]")).await.unwrap();
    browser.wait_for(&format!("{CONNECTOR} [data-status=\"Available\"]")).await.unwrap();
    browser.wait_for("[data-check=\"charger:CP-1\"][data-state=\"pass\"]").await.unwrap();
    browser.screenshot("charger-available").await.unwrap();

    // Remote start with an id tag: the answer shows inline, the session appears live.
    browser.type_into("#id-tag", TAG_OK).await.unwrap();
    browser.click(&format!("{CONNECTOR} button[data-cmd=\"remote-start\"]")).await.unwrap();
    browser.wait_text(&format!("{CONNECTOR} output"), "Start: Accepted").await.unwrap();
    browser.wait_for(&format!("{CONNECTOR} [data-status=\"Charging\"]")).await.unwrap();
    let session = browser.wait_text(&format!("{CONNECTOR} .session"), "tag TAG-OK").await.unwrap();
    assert!(session.starts_with("Session "), "{session}");
    // The balancer gives it a setpoint, and the meter sees the car draw.
    browser.wait_for("[data-point=\"CP-1:1\"]").await.unwrap();
    browser.wait_text("[data-meter=\"grid-meter\"] .phases", "24.0 / 40 A").await.unwrap();
    browser.screenshot("charging").await.unwrap();

    // Remote stop: the session ends on the page.
    browser.click(&format!("{CONNECTOR} button[data-cmd=\"remote-stop\"]")).await.unwrap();
    browser.wait_text(&format!("{CONNECTOR} output"), "Stop: Accepted").await.unwrap();
    browser.wait_text(&format!("{CONNECTOR} .session"), "No session.").await.unwrap();
    browser
        .wait_until(
            "the connector leaves Charging",
            "const s = document.querySelector('[data-charger=\"CP-1\"] [data-connector=\"1\"] [data-status]');\
             return !!s && s.dataset.status !== 'Charging';",
        )
        .await
        .unwrap();
    browser.wait_text("#messages", "StopTransaction").await.unwrap();
    browser.screenshot("stopped").await.unwrap();

    // Phone manners: exactly 375 px wide, nothing wider than the screen.
    let widths = browser
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth, document.body.scrollWidth];",
            serde_json::json!([]),
        )
        .await
        .unwrap();
    assert_eq!(widths[0], 375, "{widths}");
    assert!(widths[1].as_i64() <= widths[0].as_i64() && widths[2].as_i64() <= widths[0].as_i64(), "overflow: {widths}");
    let load_marker = browser.execute("return window.sitepilotLoad;", serde_json::json!([])).await.unwrap();
    assert_eq!(load_marker, "first", "the page was reloaded: the updates were not pushed");
    browser.assert_no_console_errors().await;

    // The same page on a laptop.
    browser.desktop().await.unwrap();
    browser.open(&agent.api("/")).await.unwrap();
    browser.wait_text("#live", "live").await.unwrap();
    browser.screenshot("desktop").await.unwrap();
    browser.assert_no_console_errors().await;

    browser.close().await;
    cp.disconnect().await.ok();
    agent.running.shutdown().await;
}
