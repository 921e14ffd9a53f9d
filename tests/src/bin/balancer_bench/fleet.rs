//! One benchmark site: a Modbus meter simulator over a [`SiteLoad`], the edge agent as its
//! own process with a `[balancer]`, one metered `grid` circuit and N chargers on it, and N
//! simulated charge points whose EVs draw through that meter.

use super::Options;
use super::stats::Samples;
use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};
use shared_model::ocpp::v16::RegistrationStatus;
use simulators::chargepoint::{ChargePoint, ChargePointConfig, EvModel, ReceivedCall};
use simulators::load::process::Server;
use simulators::meter::{LoadProfile, MeterServer, Phase, SimClock, SiteLoad, Wiring};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// The id tag every simulated driver presents (in the agent's local list).
pub const TAG: &str = "BENCH-TAG";

/// One charger of the site: its identity, how it is wired and what its EV charges on.
#[derive(Debug, Clone)]
pub struct ChargerSpec {
    pub id: String,
    pub wiring: Wiring,
    pub ev_phases: u8,
}

/// The chargers of an N-charger site: three-phase ones rotated L1-L2-L3, L2-L3-L1,
/// L3-L1-L2, and every `single_every`-th a single-phase charger on L1, L2, L3 in turn.
pub fn chargers(n: usize, single_every: usize) -> Vec<ChargerSpec> {
    let rotations = [Wiring::L1_L2_L3, Wiring::L2_L3_L1, Wiring::L3_L1_L2];
    let singles = [Phase::L1, Phase::L2, Phase::L3];
    let (mut three, mut one) = (0usize, 0usize);
    (0..n)
        .map(|i| {
            let id = format!("BENCH-{i:04}");
            if single_every > 0 && i % single_every == single_every - 1 {
                one += 1;
                ChargerSpec { id, wiring: Wiring::single(singles[(one - 1) % 3]), ev_phases: 1 }
            } else {
                three += 1;
                ChargerSpec { id, wiring: rotations[(three - 1) % 3], ev_phases: 3 }
            }
        })
        .collect()
}

/// Cars per site phase.
pub fn cars_per_phase(specs: &[ChargerSpec]) -> [usize; 3] {
    let mut n = [0usize; 3];
    for s in specs {
        let used = if s.ev_phases == 1 { &s.wiring.phases()[..1] } else { s.wiring.phases() };
        for p in used {
            n[p.index()] += 1;
        }
    }
    n
}

/// The grid limit (A per phase): the base load plus `per_car_a` for every car on the most
/// loaded phase, so before a step every car is held by the fuse at about `per_car_a`.
pub fn grid_limit(specs: &[ChargerSpec], opts: &Options) -> f64 {
    let most = cars_per_phase(specs).into_iter().max().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let raw = opts.base_a + opts.per_car_a * most as f64;
    raw.ceil()
}

/// The agent's configuration for the site.
pub fn agent_config(dir: &std::path::Path, specs: &[ChargerSpec], meter: &str, limit_a: f64, opts: &Options) -> String {
    let mut text = format!(
        r#"[site]
id = "balancer-bench"

[ocpp]
listen = "127.0.0.1:0"
# The benchmark measures balancing, not authentication: no Basic auth (lab setting).
security_profile = 0
call_timeout_s = 30
heartbeat_interval_s = 600

[store]
path = "{db}"
synchronous = "normal"

[api]
listen = "127.0.0.1:0"

[authorization]
unknown_id_tags = "reject"
allow_concurrent_tx = true

[[authorization.tags]]
id_tag = "{TAG}"
status = "Accepted"

[balancer]
"#,
        db = dir.join("edge.db").display(),
    );
    for line in &opts.balancer_set {
        let _ = writeln!(text, "{line}");
    }
    let _ = write!(
        text,
        r#"
[[circuits]]
id = "grid"
limit_a = {limit_a}
voltage_v = 230

[[meters]]
id = "grid"
map = "eastron-sdm630"
tcp = "{meter}"
circuit = "grid"
period_ms = {period}
timeout_ms = 500
stale_after_periods = {stale}
max_backoff_ms = {period}
"#,
        period = opts.meter_period_ms,
        stale = opts.stale_after_periods,
    );
    for s in specs {
        let _ = write!(
            text,
            "\n[[chargers]]\nid = \"{}\"\ncircuit = \"grid\"\nwiring = \"{}\"\nmax_current_a = 32\nmin_current_a = 6\n",
            s.id, s.wiring
        );
    }
    text
}

/// A SetChargingProfile a simulator received.
#[derive(Debug, Clone)]
pub struct ProfileEvent {
    pub charger: usize,
    pub at: DateTime<Utc>,
    pub connector: u64,
    pub purpose: String,
    pub limit: Option<f64>,
    /// The limit differs from the last one this charger got for this connector and
    /// purpose (otherwise it is a renewal or a no-op).
    pub changed: bool,
    /// The limit went down (up) from the last one this charger got for this connector and
    /// purpose.
    pub lowered: bool,
    pub raised: bool,
}

fn profile_event(charger: usize, call: &ReceivedCall) -> ProfileEvent {
    let p = &call.payload;
    let profile = &p["csChargingProfiles"];
    ProfileEvent {
        charger,
        at: call.at,
        connector: p["connectorId"].as_u64().unwrap_or(0),
        purpose: profile["chargingProfilePurpose"].as_str().unwrap_or("?").to_string(),
        limit: profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"].as_f64(),
        changed: true,
        lowered: false,
        raised: false,
    }
}

/// A running benchmark site.
pub struct Fleet {
    pub specs: Vec<ChargerSpec>,
    pub limit_a: f64,
    pub site: SiteLoad,
    pub cps: Vec<ChargePoint>,
    pub api: String,
    pub http: reqwest::Client,
    agent: Option<Server>,
    _meter: MeterServer,
    profiles: mpsc::UnboundedReceiver<ProfileEvent>,
    profile_tx: mpsc::UnboundedSender<ProfileEvent>,
    /// Last limit per (charger, connector, purpose).
    last_limit: HashMap<(usize, u64, String), Option<f64>>,
    /// Calls lost by a lagging subscription (should stay 0).
    pub lagged: Arc<AtomicU64>,
    dir: Option<tempfile::TempDir>,
}

impl Fleet {
    /// Starts the meter, the agent and the chargers; boots them (no transactions yet).
    pub async fn start(n: usize, opts: &Options) -> Result<Fleet> {
        let specs = chargers(n, opts.single_phase_every);
        let limit_a = grid_limit(&specs, opts);
        let noon = chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap_or(chrono::NaiveTime::MIN);
        let site = SiteLoad::new(LoadProfile::constant([opts.base_a; 3]), SimClock::real_time(noon));
        let meter = MeterServer::bind("127.0.0.1:0".parse()?, site.clone()).await.context("binding the meter")?;

        let dir = tempfile::tempdir().context("temporary directory")?;
        let config_path = dir.path().join("edge-agent.toml");
        let config = agent_config(dir.path(), &specs, &meter.local_addr().to_string(), limit_a, opts);
        std::fs::write(&config_path, &config).context("writing the agent config")?;
        let config_arg = config_path.to_string_lossy().into_owned();
        let agent = Server::spawn(
            &opts.agent_bin,
            &["run", "--config", &config_arg],
            "SITEPILOT_READY",
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| anyhow!("starting the edge agent ({}): {e}", config_path.display()))?;
        let ready: Value = serde_json::from_str(&agent.ready)
            .with_context(|| format!("SITEPILOT_READY is followed by invalid JSON: {}", agent.ready))?;
        let ocpp = ready["ocpp"].as_str().context("SITEPILOT_READY has no \"ocpp\" address")?.to_string();
        let api = format!("http://{}", ready["api"].as_str().context("SITEPILOT_READY has no \"api\" address")?);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build()
            .context("HTTP client")?;
        let (profile_tx, profiles) = mpsc::unbounded_channel();
        let mut fleet = Fleet {
            specs,
            limit_a,
            site,
            cps: Vec::new(),
            api,
            http,
            agent: Some(agent),
            _meter: meter,
            profiles,
            profile_tx,
            last_limit: HashMap::new(),
            lagged: Arc::new(AtomicU64::new(0)),
            dir: Some(dir),
        };
        fleet.wait_meter_fresh(Duration::from_secs(30)).await?;
        fleet.connect_all(&format!("ws://{ocpp}/ocpp"), opts).await?;
        Ok(fleet)
    }

    /// Waits until the agent's meter is not stale any more.
    async fn wait_meter_fresh(&self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let meters = self.get("/api/v1/meters").await?;
            let fresh = meters.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|m| m["stale"] == false));
            if fresh {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent's meter is still stale after {wait:?}: {meters}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET a JSON document from the agent's API.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.api)).send().await.with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("GET {path}: body"))?;
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON: {text}"))
    }

    async fn connect_all(&mut self, ocpp_url: &str, opts: &Options) -> Result<()> {
        let ev_base = EvModel::default()
            .with_max_current(opts.ev_max_a)
            .with_dynamics(opts.ev_delay, opts.ev_ramp)
            // A battery that never fills during the run: the EV keeps drawing what it is offered.
            .with_battery(10_000_000.0, 10.0);
        let configs: Vec<ChargePointConfig> = self
            .specs
            .iter()
            .map(|s| {
                let mut c = ChargePointConfig::new(s.id.clone(), ocpp_url)
                    .with_ev(ev_base.clone().with_phases(s.ev_phases))
                    .with_meter_interval(opts.meter_values)
                    .with_heartbeat_interval(Duration::from_secs(600))
                    .with_call_timeout(Duration::from_secs(30));
                c.tick = opts.sim_tick;
                c
            })
            .collect();
        let mut connected: Vec<(usize, ChargePoint)> =
            futures_util::stream::iter(configs.into_iter().enumerate().map(|(i, cfg)| async move {
                let id = cfg.id.clone();
                let cp = ChargePoint::connect(cfg).await.with_context(|| format!("{id}: connect"))?;
                let boot = cp.boot().await.with_context(|| format!("{id}: BootNotification"))?;
                if boot.status != RegistrationStatus::Accepted {
                    bail!("{id}: BootNotification answered {:?}", boot.status);
                }
                Ok::<_, anyhow::Error>((i, cp))
            }))
            .buffer_unordered(opts.connect_concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        connected.sort_by_key(|(i, _)| *i);
        for (i, cp) in connected {
            self.forward_profiles(i, cp.subscribe_calls());
            let spec = &self.specs[i];
            self.site.attach(&cp, spec.wiring);
            // What arrived before the subscription (the boot profiles) seeds the last limits.
            for call in cp.received_calls().iter().filter(|c| c.action == "SetChargingProfile") {
                let e = profile_event(i, call);
                self.last_limit.insert((i, e.connector, e.purpose), e.limit);
            }
            self.cps.push(cp);
        }
        Ok(())
    }

    fn forward_profiles(&self, charger: usize, mut rx: broadcast::Receiver<ReceivedCall>) {
        let tx = self.profile_tx.clone();
        let lagged = self.lagged.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(call) if call.action == "SetChargingProfile" => {
                        if tx.send(profile_event(charger, &call)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// The SetChargingProfile calls received since the last call, each marked changed or not.
    pub fn drain_profiles(&mut self) -> Vec<ProfileEvent> {
        let mut out = Vec::new();
        while let Ok(mut e) = self.profiles.try_recv() {
            let key = (e.charger, e.connector, e.purpose.clone());
            let before = self.last_limit.insert(key, e.limit);
            e.changed = match (before.flatten(), e.limit) {
                (Some(a), Some(b)) => (a - b).abs() > 1e-9,
                _ => true,
            };
            if let (Some(a), Some(b)) = (before.flatten(), e.limit) {
                e.lowered = b < a - 1e-9;
                e.raised = b > a + 1e-9;
            }
            out.push(e);
        }
        out
    }

    /// The sum of the TxProfile limits the chargers hold now (A), as far as received.
    pub fn tx_limit_sum(&self) -> f64 {
        self.last_limit.iter().filter(|((_, _, purpose), _)| purpose == "TxProfile").filter_map(|(_, l)| *l).sum()
    }

    /// Plugs in and starts a transaction on every charger.
    pub async fn start_transactions(&self, concurrency: usize) -> Result<()> {
        let results: Vec<Result<()>> = futures_util::stream::iter(self.cps.iter().map(|cp| async move {
            cp.plug_in(1).await.with_context(|| format!("{}: plug in", cp.id()))?;
            cp.start_transaction(1, TAG).await.with_context(|| format!("{}: StartTransaction", cp.id()))?;
            Ok(())
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
        results.into_iter().collect()
    }

    /// The simulated grid current now (A per phase) and whether it is over the limit.
    pub fn grid(&self) -> ([f64; 3], bool) {
        let total = self.site.currents(Instant::now()).total;
        let over = total.iter().any(|&a| a > self.limit_a + 1e-6);
        (total, over)
    }

    /// The EV currents now: (min, max) over the chargers.
    pub fn ev_range(&self) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi: f64 = 0.0;
        for cp in &self.cps {
            let a: f64 = cp.snapshot().connectors.iter().map(|c| c.current_a).sum();
            lo = lo.min(a);
            hi = hi.max(a);
        }
        (if lo.is_finite() { lo } else { 0.0 }, hi)
    }

    /// Baseline: `runs` times, one SetChargingProfile per charger issued at once through
    /// the agent's generic OCPP API, timed from the first request to the last simulator
    /// receiving its call. The profile is the ChargePointMaxProfile the charger already has
    /// (a no-op), so the loop's own state is untouched. Returns (last receipt, all HTTP
    /// answers) samples in ms.
    pub async fn fanout_baseline(&mut self, runs: usize) -> Result<(Samples, Samples)> {
        let payloads: Vec<Value> = self
            .cps
            .iter()
            .map(|cp| {
                cp.received_calls()
                    .into_iter()
                    .find(|c| {
                        c.action == "SetChargingProfile"
                            && c.payload["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
                    })
                    .map_or_else(
                        || {
                            json!({
                                "connectorId": 0,
                                "csChargingProfiles": {
                                    "chargingProfileId": 1,
                                    "stackLevel": 0,
                                    "chargingProfilePurpose": "ChargePointMaxProfile",
                                    "chargingProfileKind": "Relative",
                                    "chargingSchedule": {
                                        "chargingRateUnit": "A",
                                        "chargingSchedulePeriod": [{ "startPeriod": 0, "limit": 32.0 }]
                                    }
                                }
                            })
                        },
                        |c| c.payload,
                    )
            })
            .collect();
        let mut receipt = Samples::default();
        let mut answered = Samples::default();
        for _ in 0..runs {
            self.drain_profiles();
            let t0w = Utc::now();
            let t0 = Instant::now();
            let requests = self.cps.iter().zip(&payloads).map(|(cp, body)| {
                let url = format!("{}/api/v1/chargers/{}/ocpp/SetChargingProfile", self.api, cp.id());
                let req = self.http.post(url).json(body);
                async move {
                    let resp = req.send().await.context("POST SetChargingProfile")?;
                    let status = resp.status();
                    if !status.is_success() {
                        bail!("POST SetChargingProfile: HTTP {status}: {}", resp.text().await.unwrap_or_default());
                    }
                    Ok(())
                }
            });
            let results = futures_util::future::join_all(requests).await;
            answered.push_duration(t0.elapsed());
            results.into_iter().collect::<Result<Vec<()>>>()?;
            let mut seen = vec![None::<DateTime<Utc>>; self.cps.len()];
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.iter().any(Option::is_none) {
                for e in self.drain_profiles() {
                    if e.purpose == "ChargePointMaxProfile" && e.at >= t0w {
                        seen[e.charger] = Some(seen[e.charger].map_or(e.at, |s: DateTime<Utc>| s.max(e.at)));
                    }
                }
                if Instant::now() > deadline {
                    bail!("fan-out baseline: not every simulator got its profile within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let last = seen.iter().flatten().max().copied().unwrap_or(t0w);
            receipt.push(ms_between(t0w, last));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.drain_profiles();
        Ok((receipt, answered))
    }

    /// The latest allocation as the agent shows it (`GET /api/v1/balancer`), summarised.
    pub async fn allocation_summary(&self) -> String {
        match self.get("/api/v1/balancer").await {
            Ok(v) => {
                let setpoints = v["allocation"]["setpoints"].as_array().cloned().unwrap_or_default();
                let currents: Vec<f64> = setpoints.iter().filter_map(|s| s["current_a"].as_f64()).collect();
                let paused = setpoints.iter().filter(|s| s["paused"] == true).count();
                let lo = currents.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = currents.iter().copied().fold(0.0, f64::max);
                let fail_safe = v["fail_safe"].as_array().map_or(0, Vec::len);
                format!(
                    "{} setpoints {:.1}..{:.1} A, {paused} paused, {fail_safe} fail-safe entries",
                    currents.len(),
                    if lo.is_finite() { lo } else { 0.0 },
                    hi
                )
            }
            Err(e) => format!("(no allocation: {e:#})"),
        }
    }

    /// The agent's last output lines.
    pub fn agent_tail(&self) -> String {
        self.agent.as_ref().map(Server::tail).unwrap_or_default()
    }

    /// Whether the agent process still runs.
    pub fn agent_running(&mut self) -> bool {
        self.agent.as_mut().is_some_and(Server::is_running)
    }

    /// Stops the chargers and the agent; keeps the directory if asked (and says where).
    pub async fn stop(mut self, keep_dir: bool) {
        for cp in &self.cps {
            let _ = tokio::time::timeout(Duration::from_secs(2), cp.disconnect()).await;
        }
        self.cps.clear();
        if let Some(agent) = self.agent.take() {
            agent.stop(Duration::from_secs(10)).await;
        }
        if keep_dir && let Some(dir) = self.dir.take() {
            eprintln!("kept the agent's directory: {}", dir.keep().display());
        }
    }
}

/// Milliseconds from `a` to `b` (negative when `b` is earlier).
pub fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let us = (b - a).num_microseconds().unwrap_or(i64::MAX) as f64;
    us / 1e3
}
