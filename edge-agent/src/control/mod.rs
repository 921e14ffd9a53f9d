//! The balancer loop: keeps the site inside its limits in real time.
//!
//! It runs the pure [`balancer`](crate::balancer) on every meter reading, every station
//! change (connection, boot, status, transaction start or stop, meter values), every change
//! of the external limits and at least every `tick_ms`, then sends what changed as OCPP 1.6
//! charging profiles (see [`profiles`] for their layering and the quirks). An allocation
//! that fails [`verify`](crate::balancer::verify) is logged and refused: the chargers keep
//! their limits, which expire into their safe currents.
//!
//! What it tells the balancer about each charger:
//! - its session (an open transaction on that connector) and, from its MeterValues, its
//!   draw, demand and phases (see [`estimate`]), as of the time of the meter reading it
//!   is subtracted from;
//! - whether it answers: a charger that is not connected, or whose last profile was not
//!   accepted, keeps its last accepted limit reserved until that limit's `validTo`, then
//!   its safe current. A charger not seen since the agent started is assumed to run on a
//!   limit of ours from before the restart until one validity has passed.
//!
//! And about each metered circuit: the reading as the [`observer`] sees it, so that EVs
//! still following a new limit are neither taken for building load (the loop would chase
//! its own tail) nor hide a building load step (which is seen at once).
//!
//! Fail-safe entries and exits (stale meters, chargers not answering, expired external
//! limits) are logged, counted in `/metrics` and listed by `GET /api/v1/balancer`.

pub mod estimate;
pub mod observer;
pub mod profiles;
pub mod report;

use crate::app::{LiveEvent, LiveKind, Shared};
use crate::balancer::{
    Allocation, BalancerInput, ChargerState, ExternalLimits, FailSafe, Link, Refused, Session, balance_verified,
};
use crate::config::{EnergyPlan, Quirk};
use crate::ocpp::registry::CommandError;
use chrono::{DateTime, TimeZone, Utc};
use estimate::{Accepted, Sample};
use profiles::{Command, Unit};
use serde::Serialize;
use shared_model::ocpp::v16::{AvailabilityStatus, ChargingProfileStatus};
use shared_model::sync::{RateUnit, SessionLimit};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};

/// Retry a limit the charger did not take after this long (ms).
const RETRY_MS: u64 = 2000;

/// Shared between the loop and the API.
pub struct ControlHandle {
    view: watch::Sender<Arc<ControlView>>,
    limits: watch::Sender<ExternalLimits>,
    session_limits: watch::Sender<SessionLimits>,
}

/// Caps on single sessions (a roaming partner's charging profile), by (station,
/// transaction id), with when each was set.
pub type SessionLimits = BTreeMap<(String, i64), (SessionLimit, DateTime<Utc>)>;

/// A session cap is forgotten this long after it was set (its session has long ended).
const SESSION_LIMIT_KEEP: chrono::Duration = chrono::Duration::days(7);

impl Default for ControlHandle {
    fn default() -> Self {
        ControlHandle {
            view: watch::channel(Arc::new(ControlView::default())).0,
            limits: watch::channel(ExternalLimits::default()).0,
            session_limits: watch::channel(SessionLimits::new()).0,
        }
    }
}

impl ControlHandle {
    /// The loop's latest state.
    pub fn view(&self) -> Arc<ControlView> {
        self.view.borrow().clone()
    }

    /// Follows the loop's state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ControlView>> {
        self.view.subscribe()
    }

    /// The external limits in force.
    pub fn limits(&self) -> ExternalLimits {
        self.limits.borrow().clone()
    }

    /// Replaces the external limits (grid operator caps, a planned schedule); the loop
    /// re-runs at once.
    pub fn set_limits(&self, limits: ExternalLimits) {
        self.limits.send_replace(limits);
    }

    /// Sets (`Some`) or removes (`None`) the cap on one session; the loop re-runs at
    /// once. Whether the session had a cap before.
    pub fn set_session_limit(&self, station: &str, transaction_id: i64, limit: Option<SessionLimit>) -> bool {
        let now = Utc::now();
        let mut had = false;
        self.session_limits.send_modify(|caps| {
            caps.retain(|_, (_, set_at)| now - *set_at < SESSION_LIMIT_KEEP);
            let key = (station.to_owned(), transaction_id);
            had = match limit {
                Some(l) => caps.insert(key, (l, now)).is_some(),
                None => caps.remove(&key).is_some(),
            };
        });
        had
    }

    /// The session caps in force.
    pub fn session_limits(&self) -> SessionLimits {
        self.session_limits.borrow().clone()
    }
}

/// A session cap at `now` in A per phase (a cap in W is spread over the charger's
/// phases at its voltage), for a session that started at `started_ms`.
fn cap_a(limit: &SessionLimit, started_ms: u64, now: u64, voltage_v: f64, phases: usize) -> Option<f64> {
    let value = limit.limit_at(to_time(started_ms), to_time(now))?;
    Some(match limit.unit {
        RateUnit::A => value,
        RateUnit::W => value / (voltage_v.max(1.0) * phases.max(1) as f64),
    })
}

/// What `GET /api/v1/balancer` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ControlView {
    /// Whether circuits are configured (and the loop runs).
    pub enabled: bool,
    pub runs: u64,
    /// The last allocation that passed verification and was applied.
    pub allocation: Option<Allocation>,
    /// Why the last run was refused, if it was.
    pub refused: Option<String>,
    pub points: Vec<PointView>,
    /// Everything in fail-safe, with when it entered.
    pub fail_safe: Vec<FailSafeView>,
}

/// One connector as the loop drives it.
#[derive(Debug, Clone, Serialize)]
pub struct PointView {
    pub id: String,
    pub station: String,
    pub connector: u32,
    pub connected: bool,
    pub transaction_id: Option<i64>,
    /// The limit the charger accepted last (A), and when it ends.
    pub limit_a: Option<f64>,
    pub limit_valid_until: Option<DateTime<Utc>>,
    /// The draw the balancer assumed (A per charger phase) and whether it was settling.
    pub assumed_a: [f64; 3],
    pub settling: bool,
    pub safe_current_a: f64,
    pub quirks: Vec<Quirk>,
    /// Why the last attempt to send it a limit failed, if it did.
    pub last_error: Option<String>,
}

/// One fail-safe condition.
#[derive(Debug, Clone, Serialize)]
pub struct FailSafeView {
    #[serde(flatten)]
    pub fail_safe: FailSafe,
    pub since: DateTime<Utc>,
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

fn to_time(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(i64::try_from(ms).unwrap_or(i64::MAX)).single().unwrap_or_default()
}

/// A limit in flight or accepted.
#[derive(Debug, Clone, Copy)]
struct Sent {
    limit_a: f64,
    at_ms: u64,
    valid_until_ms: u64,
    tx: i64,
    /// Bounds of what the EV may still draw from before this limit (see [`Accepted`]).
    previous_a: Option<f64>,
    previous_low_a: Option<f64>,
}

#[derive(Debug, Default)]
struct PointState {
    /// Open transaction: (station transaction id, started ms).
    session: Option<(i64, u64)>,
    sample: Option<Sample>,
    accepted: Option<Sent>,
    in_flight: bool,
    failing_since: Option<u64>,
    retry_at: u64,
    last_error: Option<String>,
    assumed: Option<estimate::Estimate>,
}

#[derive(Debug, Default)]
struct StationState {
    points: Vec<usize>,
    connected: bool,
    /// Since when it is not connected (the agent's start when never seen).
    away_since_ms: u64,
    seen: bool,
    model_quirks: Vec<Quirk>,
    /// When the boot profiles last went out.
    boot_sent_ms: Option<u64>,
}

/// Results of the send tasks.
enum Outcome {
    Setpoint { point: usize, sent: Sent, result: Result<(), String> },
    Boot { station: String, result: Result<(), String> },
}

struct Controller {
    shared: Arc<Shared>,
    plan: EnergyPlan,
    points: Vec<PointState>,
    stations: BTreeMap<String, StationState>,
    started_ms: u64,
    last: Option<Allocation>,
    /// Per circuit (tree position): the non-EV load tracker of metered circuits.
    observers: Vec<observer::Observer>,
    fail_safe_since: HashMap<String, (FailSafe, u64)>,
    runs: u64,
    refused: Option<String>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

/// Runs the loop until shutdown. Does nothing without circuits.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let Some(plan) = shared.config.energy.clone() else { return };
    let mut live = shared.live.subscribe();
    let mut meters = shared.meters.subscribe();
    let mut limits = shared.control.limits.subscribe();
    let mut session_limits = shared.control.session_limits.subscribe();
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let tick_ms = plan.section.tick_ms;
    let mut ctl = Controller::new(shared.clone(), plan, outcome_tx);
    ctl.reload_all().await;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(chargers = ctl.points.len(), "balancer loop started");
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            r = meters.changed() => if r.is_err() { return },
            r = limits.changed() => if r.is_err() { return },
            r = session_limits.changed() => if r.is_err() { return },
            r = live.recv() => match r {
                Ok(ev) => ctl.on_live(ev).await,
                Err(broadcast::error::RecvError::Lagged(_)) => ctl.reload_all().await,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(o) = outcomes.recv() => ctl.on_outcome(o),
        }
        // Take everything else that is already waiting, then run once.
        loop {
            match live.try_recv() {
                Ok(ev) => ctl.on_live(ev).await,
                Err(broadcast::error::TryRecvError::Lagged(_)) => ctl.reload_all().await,
                Err(_) => break,
            }
        }
        while let Ok(o) = outcomes.try_recv() {
            ctl.on_outcome(o);
        }
        ctl.run_once();
    }
}

impl Controller {
    fn new(shared: Arc<Shared>, plan: EnergyPlan, outcomes: mpsc::UnboundedSender<Outcome>) -> Controller {
        let started_ms = now_ms();
        let mut stations: BTreeMap<String, StationState> = BTreeMap::new();
        for (i, p) in plan.points.iter().enumerate() {
            let s = stations.entry(p.station.clone()).or_default();
            s.points.push(i);
            s.away_since_ms = started_ms;
        }
        let points = plan.points.iter().map(|_| PointState::default()).collect();
        let observers = vec![observer::Observer::default(); plan.site.tree().nodes().len()];
        Controller {
            observers,
            shared,
            plan,
            points,
            stations,
            started_ms,
            last: None,
            fail_safe_since: HashMap::new(),
            runs: 0,
            refused: None,
            outcomes,
        }
    }

    async fn reload_all(&mut self) {
        let ids: Vec<String> = self.stations.keys().cloned().collect();
        for id in ids {
            if self.shared.registry.info(&id).is_some() {
                self.set_connected(&id, true);
            }
            self.reload(&id).await;
        }
    }

    fn set_connected(&mut self, station: &str, connected: bool) {
        let Some(s) = self.stations.get_mut(station) else { return };
        if s.connected && !connected {
            s.away_since_ms = now_ms();
        }
        if connected && !s.seen {
            s.seen = true;
        }
        s.connected = connected;
    }

    async fn on_live(&mut self, ev: LiveEvent) {
        if !self.stations.contains_key(&ev.station) {
            return;
        }
        match ev.kind {
            LiveKind::Connected => {
                let first = self.stations.get(&ev.station).is_some_and(|s| !s.seen);
                self.set_connected(&ev.station, true);
                self.reload(&ev.station).await;
                if first {
                    // The agent restarted under a connected fleet: lay the safe profiles
                    // again (the config may have changed).
                    self.send_boot_profiles(&ev.station);
                }
            }
            LiveKind::Disconnected => {
                self.set_connected(&ev.station, false);
                for &p in self.stations.get(&ev.station).map(|s| s.points.as_slice()).unwrap_or(&[]) {
                    self.points[p].in_flight = false;
                }
            }
            LiveKind::Booted => {
                self.set_connected(&ev.station, true);
                self.reload(&ev.station).await;
                // A reboot loses the profiles a charger held: everything goes out again.
                for &p in self.stations.get(&ev.station).map(|s| s.points.as_slice()).unwrap_or(&[]) {
                    self.points[p].accepted = None;
                }
                self.send_boot_profiles(&ev.station);
            }
            LiveKind::StatusChanged
            | LiveKind::TransactionStarted
            | LiveKind::TransactionStopped
            | LiveKind::MeterValues => self.reload(&ev.station).await,
        }
    }

    /// Re-reads a station's open transactions, latest current samples and model.
    async fn reload(&mut self, station: &str) {
        let id = station.to_owned();
        let read = self
            .shared
            .store
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    // OCPP 1.6's connectorId is the EVSE in our version-neutral model.
                    "SELECT evse, station_tx_id, started_at, pk FROM transactions
                     WHERE charger_id = ?1 AND stop_source IS NULL",
                )?;
                let txs = stmt
                    .query_map([&id], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut samples = Vec::new();
                for (connector, _, _, pk) in &txs {
                    let mut stmt = conn.prepare_cached(
                        "SELECT ts, phase, value, unit FROM meter_samples
                         WHERE tx_pk = ?1 AND evse = ?2 AND measurand = 'Current.Import'
                         ORDER BY id DESC LIMIT 6",
                    )?;
                    let rows = stmt
                        .query_map(rusqlite::params![pk, connector], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, Option<String>>(3)?,
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    samples.push((*connector, rows));
                }
                let model: Option<(Option<String>, Option<String>)> = conn
                    .prepare_cached("SELECT vendor, model FROM chargers WHERE id = ?1")?
                    .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .next()
                    .transpose()?;
                Ok((txs, samples, model))
            })
            .await;
        let (txs, samples, model) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(station, error = %e, "balancer: reading the station's state failed");
                return;
            }
        };
        let now = now_ms();
        let Some(st) = self.stations.get_mut(station) else { return };
        if let Some((Some(vendor), Some(model))) = model {
            st.model_quirks = self
                .plan
                .models
                .iter()
                .filter(|m| m.matches(&vendor, &model))
                .flat_map(|m| m.quirks.iter().copied())
                .collect();
        }
        for &p in &st.points {
            let connector = i64::from(self.plan.points[p].connector);
            let state = &mut self.points[p];
            let tx = txs.iter().find(|t| t.0 == connector);
            let session = tx.map(|t| {
                let started =
                    t.2.as_deref()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map_or(now, |d| u64::try_from(d.timestamp_millis()).unwrap_or(now));
                (t.1, started)
            });
            if state.session.map(|s| s.0) != session.map(|s| s.0) {
                state.sample = None;
                // A limit refused for the session that ended says nothing about the next
                // one: left set, the charger would stay "not answering" (its share
                // reserved, the site in fail-safe) with no session to send a limit for.
                state.failing_since = None;
                state.last_error = None;
            }
            state.session = session;
            if let Some((_, rows)) = samples.iter().find(|s| s.0 == connector)
                && let Some(sample) = parse_sample(rows, now, state.sample)
            {
                state.sample = Some(sample);
            }
        }
    }

    fn quirks(&self, p: usize) -> Vec<Quirk> {
        let point = &self.plan.points[p];
        let mut q = point.quirks.clone();
        if let Some(s) = self.stations.get(&point.station) {
            q.extend(s.model_quirks.iter().copied());
        }
        q.sort_unstable();
        q.dedup();
        q
    }

    fn unit(&self, p: usize, quirks: &[Quirk]) -> Unit {
        let point = &self.plan.points[p];
        let phases = match self.points[p].assumed.and_then(|e| e.ev_phases) {
            Some(n) => usize::from(n),
            None => point.phases,
        };
        Unit { watts: quirks.contains(&Quirk::Watts), phases, voltage_v: point.voltage_v }
    }

    fn send_boot_profiles(&mut self, station: &str) {
        let now = now_ms();
        let Some(st) = self.stations.get_mut(station) else { return };
        // A charger that connects and boots at once gets them once.
        if st.boot_sent_ms.is_some_and(|t| now < t.saturating_add(5_000)) {
            return;
        }
        st.boot_sent_ms = Some(now);
        let Some(st) = self.stations.get(station) else { return };
        let Some(&p) = st.points.first() else { return };
        let quirks = self.quirks(p);
        let point = &self.plan.points[p];
        let unit = Unit { watts: quirks.contains(&Quirk::Watts), phases: point.phases, voltage_v: point.voltage_v };
        let requests = profiles::boot_profiles(&quirks, unit, point.hard_cap_a, point.safe_current_a, Utc::now());
        if requests.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let outcomes = self.outcomes.clone();
        let station = station.to_owned();
        tokio::spawn(async move {
            let mut result = Ok(());
            for r in requests {
                match shared.registry.call(&station, &r).await {
                    Ok(resp) if resp.status == ChargingProfileStatus::Accepted => {}
                    Ok(resp) => {
                        result = Err(format!(
                            "{:?} answered {:?}",
                            r.cs_charging_profiles.charging_profile_purpose, resp.status
                        ))
                    }
                    Err(e) => result = Err(e.to_string()),
                }
            }
            let _ = outcomes.send(Outcome::Boot { station, result });
        });
    }

    fn on_outcome(&mut self, o: Outcome) {
        let now = now_ms();
        match o {
            Outcome::Boot { station, result } => match result {
                Ok(()) => tracing::info!(%station, "balancer: safe profiles in place"),
                Err(e) => tracing::warn!(%station, error = %e, "balancer: the safe profiles were not all accepted"),
            },
            Outcome::Setpoint { point, sent, result } => {
                let metrics = &self.shared.metrics;
                let state = &mut self.points[point];
                state.in_flight = false;
                match result {
                    Ok(()) => {
                        metrics
                            .charging_profiles
                            .get_or_create(&crate::metrics::ResultLabels { result: "accepted" })
                            .inc();
                        if state.failing_since.take().is_some() {
                            tracing::info!(charger = %self.plan.points[point].id, "balancer: charger takes limits again");
                        }
                        let from = match state.assumed {
                            Some(e) if !e.settling => e.measured_a.iter().copied().fold(0.0, f64::max),
                            _ => state.accepted.map_or(0.0, |a| a.limit_a),
                        };
                        let mask = self.plan.site.chargers()[point]
                            .wiring
                            .site_phases(state.assumed.and_then(|e| e.ev_phases));
                        state.accepted = Some(Sent { at_ms: now, ..sent });
                        state.last_error = None;
                        let tree = self.plan.site.tree();
                        let until = now.saturating_add(self.plan.section.settle_ms);
                        for n in tree.path(self.plan.site.charger_node(point)) {
                            if tree.nodes()[n].metered {
                                self.observers[n].expect_change(mask, from, sent.limit_a, until);
                            }
                        }
                    }
                    Err(e) => {
                        metrics
                            .charging_profiles
                            .get_or_create(&crate::metrics::ResultLabels { result: "failed" })
                            .inc();
                        if state.session.map(|s| s.0) != Some(sent.tx) {
                            // Its session ended while the limit was on its way (a charger
                            // refuses a TxProfile for a finished transaction).
                            tracing::debug!(charger = %self.plan.points[point].id, error = %e,
                                "balancer: a limit for a session that has ended was refused");
                            return;
                        }
                        if state.failing_since.is_none() {
                            tracing::warn!(charger = %self.plan.points[point].id, error = %e,
                                "balancer: charger did not take its limit; its share stays reserved");
                            state.failing_since = Some(now);
                        }
                        state.retry_at = now + RETRY_MS;
                        state.last_error = Some(e);
                    }
                }
            }
        }
    }

    fn states(&mut self, now: u64, measurements: &crate::balancer::Measurements) -> Vec<ChargerState> {
        let settle = self.plan.section.settle_ms;
        let tree = self.plan.site.tree();
        let validity_ms = self.plan.section.profile_validity_s.saturating_mul(1000);
        let caps = self.shared.control.session_limits();
        let mut out = Vec::with_capacity(self.points.len());
        for (i, point) in self.plan.points.iter().enumerate() {
            let station = self.stations.get(&point.station);
            let connected = station.is_some_and(|s| s.connected);
            let st = &mut self.points[i];
            let accepted = st.accepted.filter(|a| st.session.is_some_and(|s| s.0 == a.tx));
            // The draw is subtracted from meter readings: estimate it as of the oldest
            // reading above the charger, from what was known then (a sample taken after
            // the reading says nothing about the draw the reading saw).
            let as_of = tree
                .path(self.plan.site.charger_node(i))
                .filter_map(|n| measurements.meters.get(&tree.nodes()[n].id))
                .filter(|r| !r.stale)
                .map(|r| r.at_ms)
                .min()
                .unwrap_or(now)
                .min(now);
            let est = estimate::estimate(
                st.sample.filter(|s| s.at_ms <= as_of),
                accepted.map(|a| Accepted {
                    limit_a: a.limit_a,
                    at_ms: a.at_ms,
                    previous_a: a.previous_a,
                    previous_low_a: a.previous_low_a,
                }),
                point.phases,
                as_of,
                settle,
            );
            st.assumed = Some(est);
            let link = if !connected || st.failing_since.is_some() {
                let since_ms = match st.failing_since {
                    Some(f) if connected => f,
                    _ => station.map_or(self.started_ms, |s| s.away_since_ms),
                };
                let (last, until) = match st.accepted {
                    Some(a) => (Some(a.limit_a), a.valid_until_ms),
                    // Never told anything by this run of the agent: a limit from before a
                    // restart may hold for up to one validity.
                    None => (None, self.started_ms.saturating_add(validity_ms)),
                };
                Link::NotAnswering {
                    since_ms,
                    last_limit_a: last,
                    limit_valid_until_ms: until,
                    safe_current_a: point.safe_current_a,
                }
            } else {
                Link::Answering
            };
            // A roaming partner's cap on this session bounds what it is offered, like the
            // EV's own demand; a cap below the charger's minimum current pauses it (the
            // balancer sees no session to give current to).
            let cap = st.session.and_then(|(tx, started_ms)| {
                let (limit, _) = caps.get(&(point.station.clone(), tx))?;
                cap_a(limit, started_ms, now, point.voltage_v, point.phases)
            });
            let min_a = self.plan.site.chargers().get(i).map_or(6.0, |c| c.min_current_a);
            let demand_a = match (est.demand_a, cap) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => c.or(d),
            };
            out.push(ChargerState {
                session: st.session.filter(|_| !cap.is_some_and(|c| c < min_a)).map(|(_, started_ms)| Session {
                    started_ms,
                    demand_a,
                    ev_phases: est.ev_phases,
                }),
                measured_a: est.measured_a,
                link,
                // Transitions are handled by the observers (see `observed`).
                settling: false,
            });
        }
        out
    }

    fn run_once(&mut self) {
        let now = now_ms();
        let raw = self.shared.meters.measurements();
        let states = self.states(now, &raw);
        let measurements = self.observed(raw, &states);
        let external = self.shared.control.limits();
        let started = std::time::Instant::now();
        let input = BalancerInput {
            site: &self.plan.site,
            states: &states,
            measurements: &measurements,
            external: &external,
            previous: self.last.as_ref(),
            now_ms: now,
            config: &self.plan.balancer,
        };
        let result = balance_verified(&input);
        let metrics = self.shared.metrics.clone();
        metrics.balancer_run_seconds.observe(started.elapsed().as_secs_f64());
        self.runs += 1;
        match result {
            Ok(allocation) => {
                self.refused = None;
                self.track_fail_safe(&allocation, now);
                self.apply(&allocation, now);
                for sp in &allocation.setpoints {
                    metrics
                        .balancer_setpoint
                        .get_or_create(&crate::metrics::ChargerLabels { charger: sp.charger.to_string() })
                        .set(sp.current_a);
                }
                self.last = Some(allocation);
            }
            Err(Refused::Violations(v, _)) => {
                metrics.balancer_refused.inc();
                let msg = Refused::Violations(
                    v,
                    Box::new(Allocation {
                        computed_at_ms: now,
                        setpoints: Vec::new(),
                        nodes: Vec::new(),
                        fail_safe: Vec::new(),
                        warnings: Vec::new(),
                    }),
                )
                .to_string();
                tracing::error!(error = %msg, "balancer: BUG: allocation over a limit refused; chargers keep their limits");
                self.refused = Some(msg);
            }
            Err(Refused::Input(e)) => {
                metrics.balancer_refused.inc();
                tracing::error!(error = %e, "balancer: BUG: inconsistent input");
                self.refused = Some(e.to_string());
            }
        }
        self.publish();
    }

    /// The meter readings as the balancer takes them: at every metered circuit, the
    /// observer's non-EV load plus the draws the balancer will subtract, so that EVs
    /// following new limits are neither mistaken for building load nor hide it.
    fn observed(
        &mut self,
        mut measurements: crate::balancer::Measurements,
        states: &[ChargerState],
    ) -> crate::balancer::Measurements {
        let site = &self.plan.site;
        let tree = site.tree();
        let n = tree.nodes().len();
        let mut below = vec![observer::EvBelow::default(); n];
        let mut subtracted = vec![[0.0f64; 3]; n];
        for (i, (charger, state)) in site.chargers().iter().zip(states).enumerate() {
            if !matches!(state.link, Link::Answering) {
                continue;
            }
            let Some(est) = self.points[i].assumed else { continue };
            for n in tree.path(site.charger_node(i)) {
                let b = &mut below[n];
                b.settling |= est.settling;
                for cp in 0..3 {
                    let Some(p) = charger.wiring.site_phase(cp) else { continue };
                    let k = p.index();
                    let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
                    b.estimate[k] += clean(est.measured_a[cp]);
                    b.low[k] += clean(est.low_a[cp]);
                    b.high[k] += clean(est.high_a[cp]);
                    subtracted[n][k] += clean(state.measured_a[cp]);
                }
            }
        }
        for (pos, node) in tree.nodes().iter().enumerate() {
            if !node.metered {
                continue;
            }
            match measurements.meters.get_mut(&node.id) {
                Some(r) if !r.stale && r.current_a.iter().all(|v| v.is_finite()) => {
                    let non_ev = self.observers[pos].update(r.current_a, r.at_ms, below[pos]);
                    tracing::trace!(node = %node.id, reading = ?r.current_a, at_ms = r.at_ms, ev = ?below[pos], ?non_ev,
                        "balancer: non-EV load observed");
                    r.current_a = [0, 1, 2].map(|k| non_ev[k] + subtracted[pos][k]);
                }
                _ => self.observers[pos].reset(),
            }
        }
        measurements
    }

    fn track_fail_safe(&mut self, allocation: &Allocation, now: u64) {
        let metrics = &self.shared.metrics;
        let key = |f: &FailSafe| format!("{}|{}", f.subject.id(), reason_label(f));
        let current: HashMap<String, &FailSafe> = allocation.fail_safe.iter().map(|f| (key(f), f)).collect();
        for (k, f) in &current {
            if !self.fail_safe_since.contains_key(k) {
                tracing::warn!(subject = %f.subject.id(), reason = reason_label(f), "balancer: fail-safe entered");
                metrics
                    .fail_safe_transitions
                    .get_or_create(&crate::metrics::FailSafeLabels { reason: reason_label(f), direction: "enter" })
                    .inc();
                self.fail_safe_since.insert(k.clone(), ((*f).clone(), now));
            }
        }
        let gone: Vec<String> = self.fail_safe_since.keys().filter(|k| !current.contains_key(*k)).cloned().collect();
        for k in gone {
            if let Some((f, since)) = self.fail_safe_since.remove(&k) {
                tracing::info!(subject = %f.subject.id(), reason = reason_label(&f), after_ms = now.saturating_sub(since),
                    "balancer: fail-safe left");
                metrics
                    .fail_safe_transitions
                    .get_or_create(&crate::metrics::FailSafeLabels { reason: reason_label(&f), direction: "exit" })
                    .inc();
            }
        }
        metrics.fail_safe_active.set(i64::try_from(self.fail_safe_since.len()).unwrap_or(i64::MAX));
    }

    /// Sends what changed.
    fn apply(&mut self, allocation: &Allocation, now: u64) {
        let threshold = self.plan.section.change_threshold_a;
        let validity_ms = self.plan.section.profile_validity_s.saturating_mul(1000);
        for (i, sp) in allocation.setpoints.iter().enumerate() {
            if !sp.is_controlled() {
                continue;
            }
            let point = &self.plan.points[i];
            let connected = self.stations.get(&point.station).is_some_and(|s| s.connected);
            let st = &self.points[i];
            let Some((tx, _)) = st.session else { continue };
            if !connected || st.in_flight || (st.failing_since.is_some() && now < st.retry_at) {
                continue;
            }
            let want = if sp.paused { 0.0 } else { sp.current_a };
            let need = match st.accepted.filter(|a| a.tx == tx) {
                None => true,
                Some(a) => {
                    want < a.limit_a - 1e-6
                        || want >= a.limit_a + threshold
                        || (want == 0.0) != (a.limit_a == 0.0)
                        || now >= a.valid_until_ms.saturating_sub(validity_ms / 2)
                        || st.failing_since.is_some()
                }
            };
            if !need {
                continue;
            }
            let quirks = self.quirks(i);
            let unit = self.unit(i, &quirks);
            let valid_until_ms = now.saturating_add(validity_ms);
            let command = profiles::setpoint(
                &quirks,
                unit,
                point.connector,
                i32::try_from(tx).ok(),
                want,
                to_time(valid_until_ms),
                Utc::now(),
            );
            // What the EV may still draw when this limit reaches it: its steady draw, or
            // while it is still following earlier changes, anything between the lowest and
            // the highest of their limits (so a run of changes never narrows the bounds
            // before the EV could follow).
            let (previous_a, previous_low_a) = match (st.accepted.filter(|a| a.tx == tx), st.assumed) {
                (Some(a), Some(e)) if e.settling => (
                    Some(a.limit_a.max(a.previous_a.unwrap_or(0.0))),
                    Some(a.limit_a.min(a.previous_low_a.unwrap_or(0.0))),
                ),
                (_, Some(e)) => {
                    let m = e.measured_a.iter().copied().fold(0.0, f64::max);
                    (Some(m), Some(m))
                }
                (Some(a), None) => (Some(a.limit_a), Some(a.limit_a)),
                (None, None) => (None, None),
            };
            let sent = Sent { limit_a: want, at_ms: now, valid_until_ms, tx, previous_a, previous_low_a };
            self.points[i].in_flight = true;
            let shared = self.shared.clone();
            let outcomes = self.outcomes.clone();
            let station = point.station.clone();
            tokio::spawn(async move {
                let result = send(&shared, &station, command).await;
                let _ = outcomes.send(Outcome::Setpoint { point: i, sent, result });
            });
        }
    }

    fn publish(&self) {
        let points = self
            .plan
            .points
            .iter()
            .zip(&self.points)
            .map(|(p, st)| PointView {
                id: p.id.to_string(),
                station: p.station.clone(),
                connector: p.connector,
                connected: self.stations.get(&p.station).is_some_and(|s| s.connected),
                transaction_id: st.session.map(|s| s.0),
                limit_a: st.accepted.map(|a| a.limit_a),
                limit_valid_until: st.accepted.map(|a| to_time(a.valid_until_ms)),
                assumed_a: st.assumed.map_or([0.0; 3], |e| e.measured_a),
                settling: st.assumed.is_some_and(|e| e.settling),
                safe_current_a: p.safe_current_a,
                quirks: self.quirks_of(p),
                last_error: st.last_error.clone(),
            })
            .collect();
        let mut fail_safe: Vec<FailSafeView> = self
            .fail_safe_since
            .values()
            .map(|(f, since)| FailSafeView { fail_safe: f.clone(), since: to_time(*since) })
            .collect();
        fail_safe
            .sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.fail_safe.subject.id().cmp(b.fail_safe.subject.id())));
        let view = ControlView {
            enabled: true,
            runs: self.runs,
            allocation: self.last.clone(),
            refused: self.refused.clone(),
            points,
            fail_safe,
        };
        self.shared.control.view.send_replace(Arc::new(view));
    }

    fn quirks_of(&self, p: &crate::config::PointPlan) -> Vec<Quirk> {
        let mut q = p.quirks.clone();
        if let Some(s) = self.stations.get(&p.station) {
            q.extend(s.model_quirks.iter().copied());
        }
        q.sort_unstable();
        q.dedup();
        q
    }
}

async fn send(shared: &Shared, station: &str, command: Command) -> Result<(), String> {
    match command {
        Command::Profile(r) => match shared.registry.call(station, &r).await {
            Ok(resp) if resp.status == ChargingProfileStatus::Accepted => Ok(()),
            Ok(resp) => Err(format!("SetChargingProfile answered {:?}", resp.status)),
            Err(e) => Err(command_error(e)),
        },
        Command::Availability(r) => match shared.registry.call(station, &r).await {
            Ok(resp) if resp.status == AvailabilityStatus::Accepted => Ok(()),
            // Scheduled: it takes effect only after the transaction, so the charger is not
            // under control now.
            Ok(resp) => Err(format!("ChangeAvailability answered {:?}", resp.status)),
            Err(e) => Err(command_error(e)),
        },
    }
}

fn command_error(e: CommandError) -> String {
    e.to_string()
}

fn reason_label(f: &FailSafe) -> &'static str {
    use crate::balancer::FailSafeReason as R;
    match f.reason {
        R::MeterStale { .. } => "meter_stale",
        R::MeterMissing => "meter_missing",
        R::MeterInvalid => "meter_invalid",
        R::ChargerNotAnswering { .. } => "charger_not_answering",
        R::ExternalLimitsExpired { .. } => "external_limits_expired",
    }
}

/// The newest `Current.Import` reading among `rows` (newest first: ts, phase, value, unit),
/// one value per charger phase; samples the charger took more than 30 s before now (a
/// backlog sent after an outage) are not a reading of now. Kept when nothing newer came.
type SampleRow = (String, Option<String>, String, Option<String>);

fn parse_sample(rows: &[SampleRow], now: u64, old: Option<Sample>) -> Option<Sample> {
    let newest = rows.first()?;
    let ts = DateTime::parse_from_rfc3339(&newest.0).ok()?;
    let taken = u64::try_from(ts.timestamp_millis()).ok()?;
    if taken.saturating_add(30_000) < now {
        return None;
    }
    let mut current = [f64::NAN; 3];
    for (_, phase, value, unit) in rows.iter().filter(|r| r.0 == newest.0) {
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        let v = if unit.as_deref() == Some("kA") { v * 1000.0 } else { v };
        let k = match phase.as_deref().map(|p| p.trim_end_matches("-N")) {
            Some("L1") => Some(0),
            Some("L2") => Some(1),
            Some("L3") => Some(2),
            _ => None,
        };
        match k {
            Some(k) => current[k] = v,
            None => current = [v; 3],
        }
    }
    let current = current.map(|a| if a.is_finite() { a.max(0.0) } else { 0.0 });
    // The charger's own time of the reading (clocks are set by our Heartbeat answers),
    // never later than now.
    let at_ms = taken.min(now);
    match old {
        Some(o) if o.at_ms > at_ms => Some(o),
        _ => Some(Sample { current_a: current, at_ms }),
    }
}

#[cfg(test)]
mod session_limit_tests {
    use super::*;
    use shared_model::sync::LimitPeriod;

    fn limit(unit: RateUnit, value: f64) -> SessionLimit {
        SessionLimit {
            start: None,
            duration_s: Some(600),
            unit,
            min_rate: None,
            periods: vec![LimitPeriod { start_s: 0, limit: value }],
        }
    }

    #[test]
    fn caps_are_amps_per_phase() {
        let started = 1_800_000_000_000;
        assert_eq!(cap_a(&limit(RateUnit::A, 10.0), started, started + 1000, 230.0, 3), Some(10.0));
        // 6900 W over three phases at 230 V: 10 A; over one phase: 30 A.
        let w = limit(RateUnit::W, 6900.0);
        assert!(cap_a(&w, started, started + 1000, 230.0, 3).is_some_and(|a| (a - 10.0).abs() < 1e-9));
        assert!(cap_a(&w, started, started + 1000, 230.0, 1).is_some_and(|a| (a - 30.0).abs() < 1e-9));
        assert_eq!(cap_a(&w, started, started + 600_000, 230.0, 3), None, "over after its duration");
    }

    #[test]
    fn session_limits_are_set_replaced_and_cleared() {
        let h = ControlHandle::default();
        assert!(!h.set_session_limit("CP-1", 7, Some(limit(RateUnit::A, 10.0))));
        assert!(h.set_session_limit("CP-1", 7, Some(limit(RateUnit::A, 8.0))), "replaced");
        assert_eq!(h.session_limits().get(&("CP-1".to_owned(), 7)).map(|(l, _)| l.periods[0].limit), Some(8.0));
        assert!(h.set_session_limit("CP-1", 7, None), "cleared");
        assert!(!h.set_session_limit("CP-1", 7, None), "nothing left to clear");
        assert!(h.session_limits().is_empty());
    }
}
