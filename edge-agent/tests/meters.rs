//! A meter polled over real Modbus TCP: a tokio-modbus server on 127.0.0.1:0 serves an
//! Eastron SDM630 register image, an agent started in-process polls it every 100 ms. The
//! API and `/metrics` show its readings; when the server goes away the meter turns stale
//! (safe limits), and when it comes back on the same port the meter is fresh again.

#![allow(clippy::unwrap_used)]

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent::config::Config;
use hardware::meter::{MeterReading, RegisterImage, RegisterMap};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

const UNIT: u8 = 1;

/// An SDM630 at unit 1: input registers (0x04) from an image; anything else is refused
/// the way a meter does.
#[derive(Clone)]
struct Sdm630 {
    image: Arc<Mutex<RegisterImage>>,
}

impl Service for Sdm630 {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: SlaveRequest<'static>) -> Self::Future {
        if request.slave != UNIT {
            return ready(Err(ExceptionCode::GatewayTargetDevice));
        }
        let image = self.image.lock().unwrap();
        ready(match request.request {
            Request::ReadInputRegisters(address, count) if image.get_range(address, count).is_some() => {
                Ok(Response::ReadInputRegisters(image.read(address, count)))
            }
            Request::ReadInputRegisters(..) => Err(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

fn sdm630_image(reading: &MeterReading) -> RegisterImage {
    let map = RegisterMap::builtin("eastron-sdm630").unwrap();
    let mut image = map.encode(reading).unwrap();
    // The meter has every register of its one grouped read (0x0000..0x004C), mapped or not.
    for address in 0..0x004C {
        if image.get(address).is_none() {
            image.insert(address, &[0]);
        }
    }
    image
}

/// Serves `reading` on `listener`. Aborting the task closes the listener and every
/// connection (the server cancels its connection tasks when dropped).
fn serve(listener: TcpListener, reading: &MeterReading) -> JoinHandle<()> {
    let device = Sdm630 { image: Arc::new(Mutex::new(sdm630_image(reading))) };
    let server = Server::new(listener);
    tokio::spawn(async move {
        let on_connected = move |stream: TcpStream, socket_addr: SocketAddr| {
            let device = device.clone();
            async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(device.clone()))) }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    })
}

fn reading(l1: f64) -> MeterReading {
    MeterReading {
        currents_a: [Some(l1), Some(l1 + 0.85), Some(l1 + 1.3)],
        voltages_v: [Some(229.4), Some(231.2), Some(230.1)],
        powers_w: [Some(3_511.0), Some(3_702.5), Some(3_807.5)],
        power_w: Some(11_021.0),
        energy_import_wh: Some(1_234_567.0),
        energy_export_wh: Some(89_012.0),
        frequency_hz: Some(49.98),
        ..MeterReading::default()
    }
}

fn config_text(dir: &Path, meter: SocketAddr) -> String {
    format!(
        "[site]\nid = \"meter-test\"\n\n\
         [ocpp]\nlisten = \"127.0.0.1:0\"\nsecurity_profile = 0\n\n\
         [store]\npath = \"{}\"\nsynchronous = \"normal\"\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n\
         [[circuits]]\nid = \"main\"\nlimit_a = 63\n\n\
         [[meters]]\nid = \"grid\"\nmap = \"eastron-sdm630\"\ntcp = \"{meter}\"\nnode = \"main\"\n\
         period_ms = 100\ntimeout_ms = 200\nretries = 1\nmax_backoff_ms = 400\nstale_after_periods = 3\n",
        dir.join("edge.db").display()
    )
}

async fn get(http: &reqwest::Client, url: &str) -> (reqwest::StatusCode, String, Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, response.json().await.unwrap())
}

/// Polls the meter's API view until `done` holds (10 s at most: a hung test, not a timing check).
async fn wait_for(http: &reqwest::Client, url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, meter) = get(http, url).await;
        if done(&meter) {
            return meter;
        }
        assert!(tokio::time::Instant::now() < deadline, "meter never became {what}: {meter:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_currents(meter: &Value, expected: [f64; 3]) {
    let currents = meter["reading"]["currents_a"].as_array().unwrap();
    for (got, want) in currents.iter().zip(expected) {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() < 1e-3, "current {got} A, expected {want} A: {meter:#}");
    }
}

fn current_l1(meter: &Value) -> Option<f64> {
    meter["reading"]["currents_a"][0].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_over_modbus_tcp_goes_stale_when_the_server_stops_and_recovers_when_it_returns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let meter_addr = listener.local_addr().unwrap();
    let server = serve(listener, &reading(15.25));

    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(Path::new("meters-test.toml"), &config_text(dir.path(), meter_addr)).unwrap();
    let running = edge_agent::app::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let api = running.api_url();
    let url = format!("{api}/api/v1/meters/grid");
    let metrics = || async { http.get(format!("{api}/metrics")).send().await.unwrap().text().await.unwrap() };

    // Fresh, with every quantity the meter gives.
    let meter = wait_for(&http, &url, "fresh", |m| m["stale"] == false).await;
    assert_currents(&meter, [15.25, 16.1, 16.55]);
    let r = &meter["reading"];
    assert!((r["power_w"].as_f64().unwrap() - 11_021.0).abs() < 0.1, "{meter:#}");
    assert!((r["voltages_v"][1].as_f64().unwrap() - 231.2).abs() < 1e-3, "{meter:#}");
    assert!((r["energy_import_wh"].as_f64().unwrap() - 1_234_567.0).abs() < 100.0, "{meter:#}");
    assert!((r["frequency_hz"].as_f64().unwrap() - 49.98).abs() < 1e-3, "{meter:#}");
    assert_eq!(meter["id"], "grid");
    assert_eq!(meter["map"], "eastron-sdm630");
    assert_eq!(meter["transport"], format!("tcp {meter_addr}"));
    assert_eq!(meter["node"], "main");
    assert!(meter["read_at"].is_string() && meter["age_ms"].is_u64(), "{meter:#}");
    assert!(meter["stale_since"].is_null(), "{meter:#}");

    // The list, and a meter that does not exist.
    let (status, _, list) = get(&http, &format!("{api}/api/v1/meters")).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(|l| l.len()), Some(1));
    assert_eq!(list[0]["id"], "grid");
    let (status, content_type, problem) = get(&http, &format!("{api}/api/v1/meters/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["detail"], "no meter nope");

    let text = metrics().await;
    for line in [
        r#"sitepilot_edge_meter_stale{meter="grid"} 0"#,
        r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="enter"} 1"#,
        r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="exit"} 1"#,
        r#"sitepilot_edge_meter_power_watts{meter="grid"} 11021.0"#,
        r#"sitepilot_edge_meter_current_amperes{meter="grid",phase="L1"} 15.25"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(text.contains(r#"sitepilot_edge_meter_read_seconds_bucket{"#), "{text}");
    // The balancer's input.
    let main: edge_agent::balancer::NodeId = "main".parse().unwrap();
    let measured = running.shared.meters.measurements();
    assert!((measured.meters[&main].current_a[0] - 15.25).abs() < 1e-3, "{measured:?}");

    // The meter goes away: stale, exactly `stale_after_periods` periods after the last good read.
    let updates = running.shared.meters.subscribe();
    server.abort();
    let _ = server.await;
    let meter = wait_for(&http, &url, "stale", |m| m["stale"] == true).await;
    let read_at: chrono::DateTime<chrono::Utc> = serde_json::from_value(meter["read_at"].clone()).unwrap();
    let stale_since: chrono::DateTime<chrono::Utc> = serde_json::from_value(meter["stale_since"].clone()).unwrap();
    let after = (stale_since - read_at).num_milliseconds();
    assert!((250..=350).contains(&after), "stale {after} ms after the last good read, expected 300: {meter:#}");
    assert!(
        ["offline", "timeout"].contains(&meter["last_error"]["kind"].as_str().unwrap()),
        "the last error says why: {meter:#}"
    );
    // The last good reading stays visible; the balancer gets it marked stale (so the
    // circuit goes to its safe current).
    assert_currents(&meter, [15.25, 16.1, 16.55]);
    let m = running.shared.meters.measurements();
    assert!(m.meters.values().all(|r| r.stale) && m.meters.len() == 1, "{m:?}");
    assert!(updates.has_changed().unwrap(), "the staleness change was published");
    let text = metrics().await;
    for line in [
        r#"sitepilot_edge_meter_stale{meter="grid"} 1"#,
        r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="enter"} 2"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.contains(r#"sitepilot_edge_meter_reads_total{meter="grid",result="offline"}"#)
            || text.contains(r#"sitepilot_edge_meter_reads_total{meter="grid",result="timeout"}"#),
        "{text}"
    );

    // Back on the same port, with a new load: fresh again.
    let listener = TcpListener::bind(meter_addr).await.unwrap();
    let server = serve(listener, &reading(20.0));
    let meter = wait_for(&http, &url, "fresh again", |m| m["stale"] == false && current_l1(m) == Some(20.0)).await;
    assert_currents(&meter, [20.0, 20.85, 21.3]);
    assert_eq!(meter["consecutive_failures"], 0);
    assert_eq!(meter["poll_interval_ms"], 100, "backoff ends with the first good read");
    assert_eq!(meter["stale_entries"], 2);
    let text = metrics().await;
    for line in [
        r#"sitepilot_edge_meter_stale{meter="grid"} 0"#,
        r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="enter"} 2"#,
        r#"sitepilot_edge_meter_stale_transitions_total{meter="grid",direction="exit"} 2"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let measured = running.shared.meters.measurements();
    assert!((measured.meters[&main].current_a[0] - 20.0).abs() < 1e-3, "{measured:?}");

    running.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn an_unreachable_meter_does_not_stop_the_agent_from_starting() {
    // Nothing listens there: the meter is stale from the start, and the agent runs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(Path::new("meters-test.toml"), &config_text(dir.path(), addr)).unwrap();
    let running = edge_agent::app::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/meters/grid", running.api_url());
    let meter = wait_for(&http, &url, "failing", |m| m["last_error"]["kind"] == "offline").await;
    assert_eq!(meter["stale"], true);
    assert!(meter["reading"].is_null() && meter["read_at"].is_null() && meter["age_ms"].is_null(), "{meter:#}");
    assert!(meter["stale_since"].is_string(), "{meter:#}");
    let (status, _, _) = get(&http, &format!("{}/health", running.api_url())).await;
    assert_eq!(status, 200);
    running.shutdown().await;
}
