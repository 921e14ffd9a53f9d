//! Issue 6 end to end: a real edge agent reads a simulated Modbus grid meter and reports
//! the site's power per phase against its limits to a real hub (embedded MQTT broker,
//! SQLite), whose dashboard site page shows it. Stopping the meter simulator puts the
//! edge's balancer in fail-safe (stale meter) and the hub opens the `fail_safe` alert;
//! starting it again clears the alert.

#![allow(clippy::unwrap_used)]

use cloud_hub::db::{Store, Ty};
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel};
use simulators::meter::{LoadProfile, MeterServer, SimClock, SiteLoad};
use tests::{TestAgent, energy_config_text, eventually, free_port, grid_meter_site_tail, password, start_sqlite_hub};

/// Percent-encodes a form value.
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A logged-in dashboard client.
struct Dashboard {
    base: String,
    client: reqwest::Client,
    cookie: String,
}

impl Dashboard {
    async fn login(hub: &cloud_hub::app::Running, user: &str, password: &str) -> Dashboard {
        let base = format!("http://{}", hub.http_addr);
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let res = client
            .post(format!("{base}/login"))
            .header("origin", &base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username={user}&password={}", encode(password)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303, "log-in");
        let cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        Dashboard { base, client, cookie }
    }

    async fn page(&self, path: &str) -> String {
        let res = self.client.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        res.text().await.unwrap()
    }
}

/// The site page's power section.
fn energy_section(page: &str) -> String {
    page.split("id=\"site-energy\"").nth(1).and_then(|s| s.split("</section>").next()).unwrap_or_default().to_owned()
}

/// (open, cleared) `fail_safe` alerts of the site, with the open one's detail.
async fn fail_safe_alerts(store: &Store) -> (i64, i64, Option<String>) {
    let rows = store
        .fetch(
            "SELECT cleared_at IS NULL, detail FROM dashboard_alerts WHERE site_id = 'test-site' AND kind = 'fail_safe'",
            &[],
            &[Ty::Bool, Ty::Text],
        )
        .await
        .unwrap();
    let open: Vec<_> = rows.iter().filter(|r| r.bool(0) == Some(true)).collect();
    (open.len() as i64, (rows.len() - open.len()) as i64, open.first().and_then(|r| r.text(1).map(str::to_owned)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_power_and_fail_safe_reach_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = start_sqlite_hub(dir.path(), port).await;
    let creds = cloud_hub::sites::add_site(&hub.store, "Test site", Some("test-site"), "sitepilot-hub").await.unwrap();
    let op_pw = cloud_hub::dashboard::cli::add_user(&hub.store, "op", cloud_hub::dashboard::Role::CpoOperator, None)
        .await
        .unwrap();

    // The building draws 10 / 11 / 12 A; the meter is polled every 200 ms and stale after 3.
    let load = SiteLoad::new(LoadProfile::constant([10.0, 11.0, 12.0]), SimClock::real_time(chrono::NaiveTime::MIN));
    let meter = MeterServer::bind("127.0.0.1:0".parse().unwrap(), load.clone()).await.unwrap();
    let addr = meter.local_addr();
    let tail = grid_meter_site_tail(addr, port, &creds.mqtt_username, &creds.mqtt_password);
    let agent = TestAgent::start_text(|d| energy_config_text(d, &[("CP-1", "circuit = \"grid\"")], &tail)).await;
    // The charger answers (a charger never seen is itself a fail-safe condition).
    let cp = ChargePoint::connect(
        ChargePointConfig::new("CP-1", agent.ocpp_url())
            .with_password(password("CP-1"))
            .fast()
            .with_ev(EvModel::instant().with_max_current(16.0)),
    )
    .await
    .unwrap();
    cp.boot().await.unwrap();

    // The meter's per-phase readings reach the hub and its site page; nothing is in fail-safe.
    let dash = Dashboard::login(&hub, "op", &op_pw).await;
    let section = eventually(30, || async {
        let s = energy_section(&dash.page("/sites/test-site").await);
        (s.contains("data-circuit=\"grid\"") && s.contains("12.0 A") && !s.contains("id=\"fail-safe\"")).then_some(s)
    })
    .await;
    let Some(section) = section else {
        panic!("the site's power reaches the page: {}", dash.page("/sites/test-site").await);
    };
    for needle in ["10.0 A", "11.0 A", "meter grid-meter", "(grid connection)", "63.0 A <small>tightest</small>"] {
        assert!(section.contains(needle), "{needle} in {section}");
    }
    let report = cloud_hub::dashboard::energy::latest(&hub.store, "test-site").await.unwrap().unwrap().0;
    assert_eq!(report.circuits[0].current_a, [Some(10.0), Some(11.0), Some(12.0)], "{report:?}");
    assert_eq!(report.circuits[0].meter.as_deref(), Some("grid-meter"));
    assert!(!report.fail_safe.active, "{report:?}");
    assert_eq!(fail_safe_alerts(&hub.store).await.0, 0, "no fail-safe alert open");

    // The meter simulator stops: the edge's balancer enters fail-safe, the hub opens the alert.
    meter.shutdown();
    let detail = eventually(30, || async {
        let (open, _, detail) = fail_safe_alerts(&hub.store).await;
        (open == 1).then_some(detail)
    })
    .await
    .expect("the fail-safe alert opens");
    assert_eq!(detail.as_deref(), Some("meter_stale at grid"));
    let page = dash.page("/sites/test-site").await;
    assert!(page.contains("id=\"fail-safe\"") && page.contains("meter stale at <code>grid</code>"), "{page}");
    assert!(page.contains("data-kind=\"fail_safe\""), "in the site's open alerts: {page}");
    assert!(dash.page("/alerts").await.contains("Fail-safe active"));

    // It starts again on the same address: the alert clears.
    let meter = eventually(10, || async { MeterServer::bind(addr, load.clone()).await.ok() })
        .await
        .expect("the meter simulator binds its address again");
    eventually(30, || async {
        let (open, cleared, _) = fail_safe_alerts(&hub.store).await;
        (open == 0 && cleared >= 1).then_some(())
    })
    .await
    .expect("the fail-safe alert clears");
    let section = energy_section(&dash.page("/sites/test-site").await);
    assert!(!section.contains("id=\"fail-safe\"") && section.contains("12.0 A"), "{section}");

    meter.shutdown();
    let _ = cp.disconnect().await;
    agent.running.shutdown().await;
    hub.shutdown().await;
}
