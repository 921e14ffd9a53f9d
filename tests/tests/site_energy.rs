//! Site energy scenarios: the balancer loop against simulated chargers (whose EVs follow
//! their charging profiles) and a simulated Modbus meter (whose reading is the building's
//! load plus what those EVs draw), all over real sockets. Names follow the issue's
//! scenario list; every scenario also checks the frames on the wire against the schemas.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use shared_model::site::Wiring;
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel, ReceivedCall};
use simulators::meter::{LoadProfile, MeterServer, SimClock, SiteLoad};
use std::time::Duration;
use tests::{TAG_OK, TestAgent, assert_log_schema_valid, energy_config_text, eventually, password};

async fn sim(agent: &TestAgent, id: &str, ev: EvModel) -> ChargePoint {
    let cfg = ChargePointConfig::new(id, agent.ocpp_url())
        .with_password(password(id))
        .with_connectors(1)
        .fast()
        .with_ev(ev)
        .with_meter_interval(Duration::from_millis(500));
    let cp = ChargePoint::connect(cfg).await.unwrap();
    cp.boot().await.unwrap();
    cp
}

/// Plugs a car in and starts charging with the charger's own tag (see [`TUNING`]).
async fn charge(cp: &ChargePoint) -> i32 {
    cp.plug_in(1).await.unwrap();
    let tag = if cp.id() == "CP-1" { TAG_OK.to_owned() } else { format!("TAG-{}", cp.id()) };
    cp.start_transaction(1, &tag).await.unwrap()
}

/// The limit (A) of the last profile of `purpose` the charger was sent.
fn last_limit(cp: &ChargePoint, purpose: &str) -> Option<f64> {
    cp.received_calls()
        .iter()
        .rev()
        .filter(|c| c.action == "SetChargingProfile")
        .find(|c| c.payload["csChargingProfiles"]["chargingProfilePurpose"] == purpose)
        .and_then(|c| {
            c.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"].as_f64()
        })
}

fn profiles(cp: &ChargePoint) -> Vec<ReceivedCall> {
    cp.received_calls().into_iter().filter(|c| c.action == "SetChargingProfile").collect()
}

async fn offered(cp: &ChargePoint) -> f64 {
    cp.state().await.unwrap().connector(1).map_or(f64::NAN, |c| c.offered_a)
}

async fn balancer(agent: &TestAgent) -> Value {
    let (status, v) = agent.get("/api/v1/balancer").await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn schema_check(agent: &TestAgent) {
    let log = agent.message_log().await;
    let checked = assert_log_schema_valid(&log, &[]);
    if tests::schema_dir().is_some() {
        assert!(checked > 0, "no frames were schema-checked");
    }
}

/// Fast loop timings, and a tag per car (one tag cannot run two transactions).
const TUNING: &str = "[[authorization.tags]]\nid_tag = \"TAG-CP-2\"\nstatus = \"Accepted\"\n\n\
    [[authorization.tags]]\nid_tag = \"TAG-CP-3\"\nstatus = \"Accepted\"\n\n\
    [balancer]\ntick_ms = 200\nmin_pause_s = 2\nmin_run_s = 2\nsettle_ms = 1500\n\n";

/// Scenario 01: two chargers on one 32 A fuse share it equally; when one session ends the
/// other gets the whole fuse. Every charger gets its safe profiles at boot (a hard cap
/// and a safe fallback underneath), and setpoints as expiring TxProfiles above them.
#[tokio::test]
async fn two_chargers_on_one_fuse() {
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\"\nmax_current_a = 32"), ("CP-2", "circuit = \"grid\"\nmax_current_a = 32")],
            &format!("{TUNING}[[circuits]]\nid = \"grid\"\nlimit_a = 32\n"),
        )
    })
    .await;
    let ev = EvModel::instant().with_max_current(32.0);
    let cp1 = sim(&agent, "CP-1", ev.clone()).await;
    let cp2 = sim(&agent, "CP-2", ev).await;
    // At boot: the hard cap (the fuse) and the safe fallback (an equal share of the fuse).
    for cp in [&cp1, &cp2] {
        eventually(10, || async { last_limit(cp, "TxDefaultProfile").map(|_| ()) }).await.expect("safe profile");
        assert_eq!(last_limit(cp, "ChargePointMaxProfile"), Some(32.0));
        assert_eq!(last_limit(cp, "TxDefaultProfile"), Some(16.0));
    }
    let tx1 = charge(&cp1).await;
    let tx2 = charge(&cp2).await;
    for cp in [&cp1, &cp2] {
        eventually(10, || async { (offered(cp).await == 16.0).then_some(()) }).await.expect("16 A each");
        let p = profiles(cp).into_iter().last().unwrap();
        let profile = &p.payload["csChargingProfiles"];
        assert_eq!(profile["chargingProfilePurpose"], "TxProfile");
        assert_eq!(profile["stackLevel"], 1);
        assert!(profile["validTo"].is_string(), "{profile}");
    }
    assert_eq!(profiles(&cp1).last().unwrap().payload["csChargingProfiles"]["transactionId"], tx1);
    assert_eq!(profiles(&cp2).last().unwrap().payload["csChargingProfiles"]["transactionId"], tx2);

    cp2.stop_transaction(1, shared_model::ocpp::v16::Reason::EVDisconnected).await.unwrap();
    eventually(10, || async { (offered(&cp1).await == 32.0).then_some(()) }).await.expect("CP-1 gets the whole fuse");
    let b = balancer(&agent).await;
    assert_eq!(b["enabled"], true);
    assert_eq!(b["allocation"]["setpoints"][0]["current_a"], 32.0, "{b}");
    let (_, metrics) = tests::http_json(agent.http.get(agent.api("/metrics"))).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(metrics.contains("sitepilot_edge_balancer_setpoint_amperes{charger=\"CP-1:1\"} 32"), "{metrics}");
    schema_check(&agent).await;
}

/// The sum of the cars' simulated draws may pass the setpoints by float noise (~1 mA).
const METER_RESOLUTION_A: f64 = 0.01;

/// Scenario 03 over real sockets: the building load steps up by 40 A under a metered
/// 63 A grid connection; the measured site current is back under the limit and stays
/// there, and the cars get the room back when the load goes away.
#[tokio::test]
async fn building_load_step_is_back_under_the_limit() {
    let load = SiteLoad::new(LoadProfile::constant([10.0; 3]), SimClock::real_time(chrono::NaiveTime::MIN));
    let meter = MeterServer::bind("127.0.0.1:0".parse().unwrap(), load.clone()).await.unwrap();
    let addr = meter.local_addr();
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\""), ("CP-2", "circuit = \"grid\"")],
            &format!(
                "{TUNING}[[circuits]]\nid = \"grid\"\nlimit_a = 63\nsafe_current_a = 12\n\n\
                 [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"{addr}\"\ncircuit = \"grid\"\nperiod_ms = 200\n"
            ),
        )
    })
    .await;
    // Cars that take 1 s to follow a new limit, ramping over 0.5 s.
    let ev =
        EvModel::default().with_max_current(32.0).with_dynamics(Duration::from_millis(300), Duration::from_millis(500));
    let cp1 = sim(&agent, "CP-1", ev.clone()).await;
    let cp2 = sim(&agent, "CP-2", ev).await;
    load.attach(&cp1, Wiring::THREE_PHASE);
    load.attach(&cp2, Wiring::THREE_PHASE);
    charge(&cp1).await;
    charge(&cp2).await;
    let trace = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let tracer = {
        let (trace, url, http, load) = (trace.clone(), agent.api("/api/v1/balancer"), agent.http.clone(), load.clone());
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            loop {
                let (_, b) = tests::http_json(http.get(&url)).await;
                let n = &b["allocation"]["nodes"][0];
                let p: Vec<String> = b["points"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|p| format!("{}/{}/{}", p["limit_a"], p["assumed_a"][0], p["settling"]))
                    .collect();
                let t = load.currents(std::time::Instant::now()).total;
                trace.lock().unwrap().push(format!(
                    "{:>5} total {:.1} non_ev {} sp {} {} pts {:?} NODE {} PTS {}",
                    t0.elapsed().as_millis(),
                    t[0],
                    n["non_ev_a"][0],
                    b["allocation"]["setpoints"][0]["current_a"],
                    b["allocation"]["setpoints"][1]["current_a"],
                    p,
                    n,
                    b["points"]
                ));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    let total = |load: &SiteLoad| load.currents(std::time::Instant::now()).total;
    // Settled: 63 - 10 = 53 A for the cars, 26.5 A each (rounded down to 0.1 A).
    eventually(20, || async {
        let (a, b) = (offered(&cp1).await, offered(&cp2).await);
        let drawn = |cp: &ChargePoint| cp.snapshot().connector(1).map_or(0.0, |c| c.current_a);
        ((26.0..=26.5).contains(&a) && (26.0..=26.5).contains(&b) && drawn(&cp1) > 26.0 && drawn(&cp2) > 26.0)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("never settled: {:?}", total(&load)));

    let step_at = chrono::Utc::now();
    load.set_extra_load([40.0; 3]);
    // 53 - 40 = 13 A for two cars: 6.5 A each.
    eventually(20, || async {
        let t = total(&load);
        (t.iter().all(|x| *x <= 63.0 + METER_RESOLUTION_A) && offered(&cp1).await <= 6.5 && offered(&cp2).await <= 6.5)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("not back under the limit: {:?}", total(&load)));
    // And it stays there (the loop does not mistake the cars' own changes for load), with
    // no new profiles once settled.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let sent = profiles(&cp1).len() + profiles(&cp2).len();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = total(&load);
        assert!(t.iter().all(|x| *x <= 63.0 + METER_RESOLUTION_A), "over the limit again: {t:?}");
    }
    let more = profiles(&cp1).len() + profiles(&cp2).len() - sent;
    eprintln!(
        "profiles before/after settled: {sent}/{more}; {:?}",
        profiles(&cp1)
            .iter()
            .map(|c| (
                (c.at - step_at).num_milliseconds(),
                c.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"].clone()
            ))
            .collect::<Vec<_>>()
    );
    tracer.abort();
    if more != 0 {
        eprintln!("{}", trace.lock().unwrap().join("\n"));
    }
    assert_eq!(more, 0, "profiles kept coming while nothing changed");
    load.set_extra_load([0.0; 3]);
    eventually(20, || async { (offered(&cp1).await > 25.0 && offered(&cp2).await > 25.0).then_some(()) })
        .await
        .expect("the cars get the room back");
    let b = balancer(&agent).await;
    assert!(b["fail_safe"].as_array().is_some_and(|f| f.is_empty()), "{b}");
    schema_check(&agent).await;
    meter.shutdown();
}

async fn metrics_text(agent: &TestAgent) -> String {
    let (_, m) = tests::http_json(agent.http.get(agent.api("/metrics"))).await;
    m.as_str().unwrap_or_default().to_owned()
}

/// The value of one sample line of the metrics text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

const NOT_ANSWERING_ENTER: &str =
    "sitepilot_edge_balancer_fail_safe_transitions_total{reason=\"charger_not_answering\",direction=\"enter\"}";
const NOT_ANSWERING_EXIT: &str =
    "sitepilot_edge_balancer_fail_safe_transitions_total{reason=\"charger_not_answering\",direction=\"exit\"}";

fn fail_safe_reasons(b: &Value) -> Vec<String> {
    b["fail_safe"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    format!(
                        "{}:{}",
                        f["subject"]["id"].as_str().unwrap_or("?"),
                        f["reason"]["kind"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Two cars charging at 16 A each on one 32 A fuse (no meter); `cp2_extra` goes into
/// CP-2's `[[chargers]]` entry, `balancer_extra` into `[balancer]`.
async fn two_cars_on_a_32_a_fuse(cp2_extra: &str, balancer_extra: &str) -> (TestAgent, ChargePoint, ChargePoint) {
    let cp2 = format!("circuit = \"grid\"\n{cp2_extra}");
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\""), ("CP-2", &cp2)],
            &format!("{TUNING}{balancer_extra}\n[[circuits]]\nid = \"grid\"\nlimit_a = 32\n"),
        )
    })
    .await;
    let ev = EvModel::instant().with_max_current(32.0);
    let cp1 = sim(&agent, "CP-1", ev.clone()).await;
    let cp2 = sim(&agent, "CP-2", ev).await;
    charge(&cp1).await;
    charge(&cp2).await;
    for cp in [&cp1, &cp2] {
        eventually(10, || async { (offered(cp).await == 16.0).then_some(()) }).await.expect("16 A each");
    }
    (agent, cp1, cp2)
}

/// Scenario 05: a charger that stops answering keeps its share reserved until its last
/// profile's validity ends, then its safe current; nobody else gets it meanwhile. Entry
/// and exit are in the API and the metrics.
#[tokio::test]
async fn charger_loss_keeps_its_share_reserved() {
    let (agent, cp1, cp2) = two_cars_on_a_32_a_fuse("safe_current_a = 6", "profile_validity_s = 10\n").await;
    let before = metrics_text(&agent).await;
    cp2.power_loss().await.unwrap();
    let b = eventually(10, || async {
        let b = balancer(&agent).await;
        fail_safe_reasons(&b).contains(&"CP-2:1:charger_not_answering".to_owned()).then_some(b)
    })
    .await
    .expect("CP-2 listed in fail-safe");
    assert_eq!(b["allocation"]["setpoints"][1]["reason"]["kind"], "last_limit", "{b}");
    assert_eq!(b["allocation"]["setpoints"][1]["current_a"], 16.0, "{b}");
    // Its 16 A stay reserved while its profile is valid...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(offered(&cp1).await, 16.0);
    // ...then only its safe current: CP-1 gets 32 - 6.
    eventually(20, || async { (offered(&cp1).await == 26.0).then_some(()) }).await.expect("CP-1 gets 26 A");
    let after = metrics_text(&agent).await;
    assert_eq!(metric(&after, NOT_ANSWERING_ENTER), metric(&before, NOT_ANSWERING_ENTER) + 1.0, "{after}");
    cp2.reconnect().await.unwrap();
    eventually(10, || async { (offered(&cp2).await == 16.0 && offered(&cp1).await == 16.0).then_some(()) })
        .await
        .expect("back to 16 A each");
    let b = balancer(&agent).await;
    assert!(fail_safe_reasons(&b).is_empty(), "{b}");
    let back = metrics_text(&agent).await;
    assert_eq!(metric(&back, NOT_ANSWERING_EXIT), metric(&after, NOT_ANSWERING_EXIT) + 1.0, "{back}");
    assert_eq!(metric(&back, "sitepilot_edge_balancer_fail_safe_active"), 0.0, "{back}");
    schema_check(&agent).await;
}

/// Scenario 04: the grid meter stops answering; after its stale time the EVs below get
/// the circuit's safe current (12 A in total: 6 A each), and full room again when it is back.
#[tokio::test]
async fn meter_loss_falls_back_to_the_safe_current() {
    let load = SiteLoad::new(LoadProfile::constant([10.0; 3]), SimClock::real_time(chrono::NaiveTime::MIN));
    let meter = MeterServer::bind("127.0.0.1:0".parse().unwrap(), load.clone()).await.unwrap();
    let addr = meter.local_addr();
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\""), ("CP-2", "circuit = \"grid\"")],
            &format!(
                "{TUNING}[[circuits]]\nid = \"grid\"\nlimit_a = 63\nsafe_current_a = 12\n\n\
                 [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"{addr}\"\ncircuit = \"grid\"\n\
                 period_ms = 200\ntimeout_ms = 100\nretries = 0\nmax_backoff_ms = 400\nstale_after_periods = 3\n"
            ),
        )
    })
    .await;
    let ev = EvModel::instant().with_max_current(32.0);
    let cp1 = sim(&agent, "CP-1", ev.clone()).await;
    let cp2 = sim(&agent, "CP-2", ev).await;
    load.attach(&cp1, Wiring::THREE_PHASE);
    load.attach(&cp2, Wiring::THREE_PHASE);
    charge(&cp1).await;
    charge(&cp2).await;
    for cp in [&cp1, &cp2] {
        eventually(20, || async { (offered(cp).await > 25.0).then_some(()) }).await.expect("room for both");
    }
    meter.set_offline(true);
    for cp in [&cp1, &cp2] {
        eventually(20, || async { (offered(cp).await == 6.0).then_some(()) })
            .await
            .expect("6 A each on the safe current");
    }
    let b = balancer(&agent).await;
    assert_eq!(fail_safe_reasons(&b), vec!["grid:meter_stale".to_owned()], "{b}");
    assert!(metrics_text(&agent).await.contains("sitepilot_edge_balancer_fail_safe_active 1"));
    meter.set_offline(false);
    for cp in [&cp1, &cp2] {
        eventually(20, || async { (offered(cp).await > 25.0).then_some(()) }).await.expect("room again");
    }
    assert!(fail_safe_reasons(&balancer(&agent).await).is_empty());
    schema_check(&agent).await;
    meter.shutdown();
}

/// Scenario 02: a 1-phase car on a 3-phase charger, beside a 1-phase charger on L2, under
/// a 20 A fuse. Until the car's samples show it on one phase its charger is counted on all
/// three and shares L2 (10 A each); then each has a phase of its own (evcc #29532 stopped
/// such a car for over-current on another phase).
#[tokio::test]
async fn one_phase_car_on_a_three_phase_site() {
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[
                ("CP-1", "circuit = \"grid\"\nwiring = \"L2\"\nmax_current_a = 32\nsafe_current_a = 6"),
                ("CP-2", "circuit = \"grid\"\nmax_current_a = 32\nsafe_current_a = 6"),
            ],
            &format!("{TUNING}[[circuits]]\nid = \"grid\"\nlimit_a = 20\n"),
        )
    })
    .await;
    let cp1 = sim(&agent, "CP-1", EvModel::instant().with_max_current(32.0).with_phases(1)).await;
    let cp2 = sim(&agent, "CP-2", EvModel::instant().with_max_current(32.0).with_phases(1)).await;
    charge(&cp1).await;
    charge(&cp2).await;
    for cp in [&cp1, &cp2] {
        eventually(20, || async { (offered(cp).await == 20.0).then_some(()) })
            .await
            .unwrap_or_else(|| panic!("{} never got the whole of its phase", cp.id()));
    }
    let b = balancer(&agent).await;
    let phases = &b["allocation"]["setpoints"][1]["phases"];
    assert_eq!(phases, &serde_json::json!([true, false, false]), "{b}");
    schema_check(&agent).await;
}

/// Per-model quirks from `[[charger_models]]`: setpoints as TxDefaultProfile on the
/// connector, in W; and a charger that takes no profiles is paused and resumed with
/// ChangeAvailability.
#[tokio::test]
async fn charger_model_quirks() {
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\""), ("CP-2", "circuit = \"grid\"\nquirks = [\"no_profiles\"]\nmax_current_a = 16")],
            &format!(
                "{TUNING}[[circuits]]\nid = \"grid\"\nlimit_a = 32\n\n\
                 [[charger_models]]\nvendor = \"sitepilot\"\nmodel = \"Sim*\"\nquirks = [\"tx_default_profile\", \"watts\"]\n"
            ),
        )
    })
    .await;
    let ev = EvModel::instant().with_max_current(32.0);
    let cp1 = sim(&agent, "CP-1", ev.clone()).await;
    let cp2 = sim(&agent, "CP-2", ev).await;
    charge(&cp1).await;
    eventually(10, || async { (offered(&cp1).await == 32.0).then_some(()) }).await.expect("CP-1 alone: 32 A");
    let last = profiles(&cp1).into_iter().last().unwrap();
    let p = &last.payload["csChargingProfiles"];
    assert_eq!(p["chargingProfilePurpose"], "TxDefaultProfile", "{p}");
    assert_eq!(last.payload["connectorId"], 1);
    assert_eq!(p["chargingSchedule"]["chargingRateUnit"], "W", "{p}");
    assert_eq!(p["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"], 22080.0, "{p}");
    // CP-2 takes no profiles: none at boot, and it runs on/off at its 16 A.
    charge(&cp2).await;
    eventually(10, || async { (offered(&cp1).await == 16.0).then_some(()) }).await.expect("CP-1 makes room");
    assert!(profiles(&cp2).is_empty());
    let b = balancer(&agent).await;
    assert_eq!(b["allocation"]["setpoints"][1]["current_a"], 16.0, "{b}");
    assert_eq!(b["points"][1]["quirks"], serde_json::json!(["tx_default_profile", "watts", "no_profiles"]), "{b}");
    assert!(cp2.received_calls().iter().any(|c| c.action == "ChangeAvailability" && c.payload["type"] == "Operative"));
    schema_check(&agent).await;
}

/// Scenario 10 over the API: a grid operator's import cap (PUT /api/v1/balancer/limits)
/// takes effect at once; when its validity ends the safe import limit applies; bad limits
/// are refused with a reason and change nothing.
#[tokio::test]
async fn grid_operator_import_cap_over_the_api() {
    let (agent, cp1, cp2) = two_cars_on_a_32_a_fuse("", "").await;
    let put = |body: Value| {
        let req = agent.http.put(agent.api("/api/v1/balancer/limits")).json(&body);
        tests::http_json(req)
    };
    let (status, _) = put(serde_json::json!({ "import_limit_a": [20.0, 20.0, 20.0] })).await;
    assert_eq!(status, 200);
    for cp in [&cp1, &cp2] {
        eventually(10, || async { (offered(cp).await == 10.0).then_some(()) }).await.expect("10 A each under the cap");
    }
    // Bad input: refused with a reason, the cap in force stays.
    let (status, body) = put(serde_json::json!({ "import_limit_a": [20.0, -1.0, 20.0] })).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("import_limit_a")), "{body}");
    let (status, body) = put(serde_json::json!({ "import_limit": 20 })).await;
    assert_eq!(status, 422, "{body}");
    let (_, limits) = agent.get("/api/v1/balancer/limits").await;
    assert_eq!(limits["import_limit_a"], serde_json::json!([20.0, 20.0, 20.0]));
    // A cap whose validity has ended falls back to its safe value, and says so.
    let (status, _) = put(serde_json::json!({
        "import_limit_a": [30.0, 30.0, 30.0], "valid_until_ms": 1, "safe_import_limit_a": [12.0, 12.0, 12.0]
    }))
    .await;
    assert_eq!(status, 200);
    for cp in [&cp1, &cp2] {
        eventually(10, || async { (offered(cp).await == 6.0).then_some(()) }).await.expect("6 A each on the safe cap");
    }
    let b = balancer(&agent).await;
    assert!(fail_safe_reasons(&b).iter().any(|r| r.ends_with(":external_limits_expired")), "{b}");
    schema_check(&agent).await;
}

/// Invariant 1 on a busy site: cars arrive and leave while the building load steps up
/// and down. Whenever nothing has changed for longer than the hardware needs to react
/// (meter poll, car response and ramp: well under the quiet time used here), the measured
/// site current is within its limit on every phase.
#[tokio::test]
async fn busy_site_is_within_its_limit_once_the_hardware_had_time() {
    const LIMIT: f64 = 63.0;
    const QUIET: Duration = Duration::from_millis(2000);
    let load = SiteLoad::new(LoadProfile::constant([20.0; 3]), SimClock::real_time(chrono::NaiveTime::MIN));
    let meter = MeterServer::bind("127.0.0.1:0".parse().unwrap(), load.clone()).await.unwrap();
    let addr = meter.local_addr();
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\""), ("CP-2", "circuit = \"grid\""), ("CP-3", "circuit = \"grid\"")],
            &format!(
                "{TUNING}[[circuits]]\nid = \"grid\"\nlimit_a = {LIMIT}\nsafe_current_a = 12\n\n\
                 [[meters]]\nid = \"grid-meter\"\nmap = \"eastron-sdm630\"\ntcp = \"{addr}\"\ncircuit = \"grid\"\nperiod_ms = 200\n"
            ),
        )
    })
    .await;
    let ev =
        EvModel::default().with_max_current(32.0).with_dynamics(Duration::from_millis(200), Duration::from_millis(300));
    let cps =
        [sim(&agent, "CP-1", ev.clone()).await, sim(&agent, "CP-2", ev.clone()).await, sim(&agent, "CP-3", ev).await];
    for cp in &cps {
        load.attach(cp, Wiring::THREE_PHASE);
    }
    // Watch the site current and when anything last changed.
    let changed = std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(f64, bool)>::new()));
    let watcher = {
        let (load, changed, samples) = (load.clone(), changed.clone(), samples.clone());
        let mut calls: Vec<_> = cps.iter().map(|cp| cp.subscribe_calls()).collect();
        tokio::spawn(async move {
            loop {
                for rx in calls.iter_mut() {
                    while let Ok(c) = rx.try_recv() {
                        if c.action == "SetChargingProfile" {
                            *changed.lock().unwrap() = std::time::Instant::now();
                        }
                    }
                }
                let quiet = changed.lock().unwrap().elapsed() > QUIET;
                let total = load.currents(std::time::Instant::now()).total;
                samples.lock().unwrap().push((total.into_iter().fold(0.0, f64::max), quiet));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mark = || *changed.lock().unwrap() = std::time::Instant::now();
    let wait = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    mark();
    charge(&cps[0]).await;
    charge(&cps[1]).await;
    wait(3000).await;
    mark();
    charge(&cps[2]).await;
    wait(3000).await;
    mark();
    load.set_extra_load([20.0, 25.0, 15.0]);
    wait(3000).await;
    mark();
    cps[0].stop_transaction(1, shared_model::ocpp::v16::Reason::EVDisconnected).await.unwrap();
    wait(3000).await;
    mark();
    load.set_extra_load([5.0; 3]);
    wait(3000).await;
    mark();
    load.set_extra_load([30.0; 3]);
    wait(3000).await;
    watcher.abort();
    let samples = samples.lock().unwrap().clone();
    let quiet: Vec<f64> = samples.iter().filter(|(_, q)| *q).map(|(t, _)| *t).collect();
    let worst_quiet = quiet.iter().copied().fold(0.0, f64::max);
    let worst = samples.iter().map(|(t, _)| *t).fold(0.0, f64::max);
    eprintln!(
        "{} samples, {} quiet; worst site current {worst:.1} A, once quiet {worst_quiet:.1} A",
        samples.len(),
        quiet.len()
    );
    assert!(quiet.len() > 50, "the scenario never went quiet: the check would be empty");
    assert!(
        worst_quiet <= LIMIT + METER_RESOLUTION_A,
        "site at {worst_quiet:.2} A > {LIMIT} A after the hardware had time"
    );
    schema_check(&agent).await;
    meter.shutdown();
}

const LIMITS_FAILED: &str = "sitepilot_edge_balancer_limits_sent_total{result=\"failed\"}";

/// A car plugged in and out again at once: the balancer's limit for that session reaches
/// the charger after the session ended and is refused. That says nothing about the charger
/// (it answers, and has no session to limit): the site must not stay in fail-safe with the
/// charger "not answering" until its next session, as it once did.
#[tokio::test]
async fn a_limit_refused_for_a_session_just_ended_leaves_no_fail_safe() {
    let agent = TestAgent::start_text(|dir| {
        energy_config_text(
            dir,
            &[("CP-1", "circuit = \"grid\"")],
            &format!("{TUNING}\n[[circuits]]\nid = \"grid\"\nlimit_a = 32\n"),
        )
    })
    .await;
    let cp = sim(&agent, "CP-1", EvModel::instant().with_max_current(32.0)).await;
    // Each try races the balancer's next tick (200 ms) against the unplug; a few tries
    // make sure at least one limit arrives late and is refused.
    let mut refused = false;
    for _ in 0..10 {
        let before = metric(&metrics_text(&agent).await, LIMITS_FAILED);
        charge(&cp).await;
        cp.unplug(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        if metric(&metrics_text(&agent).await, LIMITS_FAILED) > before {
            refused = true;
            break;
        }
    }
    assert!(refused, "no limit was ever refused: the case this test is about did not happen");
    // Within a few balancer ticks nothing is in fail-safe, and it stays so.
    eventually(5, || async { fail_safe_reasons(&balancer(&agent).await).is_empty().then_some(()) })
        .await
        .expect("no fail-safe once the session is over");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = balancer(&agent).await;
    assert!(fail_safe_reasons(&b).is_empty(), "{b}");
    let m = metrics_text(&agent).await;
    assert_eq!(metric(&m, "sitepilot_edge_balancer_fail_safe_active"), 0.0, "{m}");
    // A refusal can arrive before the agent has seen the StopTransaction's effect on its
    // sessions: then the charger is briefly "not answering", but every entry has its exit.
    assert_eq!(metric(&m, NOT_ANSWERING_ENTER), metric(&m, NOT_ANSWERING_EXIT), "{m}");
    // The charger still takes a limit for its next session.
    charge(&cp).await;
    eventually(10, || async { (offered(&cp).await == 32.0).then_some(()) }).await.expect("32 A for the next car");
    schema_check(&agent).await;
}
