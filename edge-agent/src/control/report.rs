//! Site energy reports to the hub ([`SiteEvent::SiteEnergy`]): every circuit's meter
//! reading per phase, every limit that applies to it (fuse, power limit, the grid
//! operator's caps or their safe values, active schedule periods), what the balancer
//! allocated, and the fail-safe state.
//!
//! Sent every `[sync] site_energy_interval_ms` (default 15 s; 0: never) and at once when
//! the set of fail-safe conditions changes. It is telemetry, so while reports wait in the
//! outbox (the link is down) a new one replaces the newest row when that row is a report
//! with the same fail-safe conditions that was not sent yet ([`emit`]): days offline add
//! one report per fail-safe change, or per other event in between, instead of 5760 a day.

use super::{ControlView, reason_label, to_time};
use crate::app::Shared;
use crate::balancer::{ExternalLimits, MeterState};
use crate::config::EnergyPlan;
use crate::meters::MeterSnapshot;
use crate::store::{StoreError, ts};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use shared_model::energy::{CircuitEnergy, EnergyLimit, FailSafeReason, FailSafeState, LimitSource, SiteEnergyReport};
use shared_model::events::SiteEvent;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn meter_state(s: MeterState) -> &'static str {
    match s {
        MeterState::Unmetered => "unmetered",
        MeterState::Fresh => "fresh",
        MeterState::Stale => "stale",
        MeterState::Missing => "missing",
        MeterState::Invalid => "invalid",
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The fail-safe state as the loop reports it.
pub fn fail_safe_state(view: &ControlView) -> FailSafeState {
    let reasons: Vec<FailSafeReason> = view
        .fail_safe
        .iter()
        .map(|f| FailSafeReason {
            subject: f.fail_safe.subject.id().to_owned(),
            kind: reason_label(&f.fail_safe).to_owned(),
            since: Some(f.since),
        })
        .collect();
    FailSafeState { active: !reasons.is_empty(), reasons }
}

/// The report as of `now` (pure: everything it reads is passed in).
pub fn build(
    plan: &EnergyPlan,
    meters: &MeterSnapshot,
    view: &ControlView,
    external: &ExternalLimits,
    now: DateTime<Utc>,
) -> SiteEnergyReport {
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let tree = plan.site.tree();
    let mut circuits = Vec::with_capacity(tree.nodes().len());
    for (pos, node) in tree.nodes().iter().enumerate() {
        let meter = meters.meters.iter().find(|m| m.info.node.as_ref() == Some(&node.id));
        let usage = view.allocation.as_ref().and_then(|a| a.nodes.iter().find(|u| u.node == node.id));
        let state = match (usage, meter) {
            (Some(u), _) => meter_state(u.meter),
            (None, _) if !node.metered => "unmetered",
            (None, Some(m)) if m.reading.is_none() => "missing",
            (None, Some(m)) if m.stale => "stale",
            (None, Some(_)) => "fresh",
            (None, None) => "missing",
        };
        let reading = meter.and_then(|m| m.reading);
        let mut limits = Vec::new();
        if let Some(a) = node.limit_a {
            limits.push(EnergyLimit { source: LimitSource::Fuse, current_a: Some(a), power_w: None, until: None });
        }
        if let Some(w) = node.power_limit_w {
            limits.push(EnergyLimit {
                source: LimitSource::PowerLimit,
                current_a: None,
                power_w: Some(w),
                until: None,
            });
        }
        if tree.parent(pos).is_none() {
            let expired = external.valid_until_ms.is_some_and(|u| now_ms >= u);
            let until = external.valid_until_ms.map(to_time);
            if expired {
                let a = external.safe_import_limit_a.or(external.import_limit_a);
                let w = external.safe_import_limit_w.or(external.import_limit_w);
                if a.is_some() || w.is_some() {
                    limits.push(EnergyLimit {
                        source: LimitSource::GridOperatorSafe,
                        current_a: a,
                        power_w: w,
                        until: None,
                    });
                }
            } else if external.import_limit_a.is_some() || external.import_limit_w.is_some() {
                limits.push(EnergyLimit {
                    source: LimitSource::GridOperator,
                    current_a: external.import_limit_a,
                    power_w: external.import_limit_w,
                    until,
                });
            }
            for p in external.schedule.iter().filter(|p| p.start_ms <= now_ms && now_ms < p.end_ms) {
                if p.limit_a.is_none() && p.limit_w.is_none() {
                    continue;
                }
                limits.push(EnergyLimit {
                    source: LimitSource::Schedule,
                    current_a: p.limit_a.map(|a| [a; 3]),
                    power_w: p.limit_w,
                    until: Some(to_time(p.end_ms)),
                });
            }
        }
        circuits.push(CircuitEnergy {
            circuit: node.id.to_string(),
            parent: tree.parent(pos).map(|p| tree.nodes()[p].id.to_string()),
            meter: meter.map(|m| m.info.id.clone()),
            state: state.to_owned(),
            stale: meter.is_some_and(|m| m.stale),
            read_at: meter.and_then(|m| m.read_at),
            current_a: reading.map_or([None; 3], |r| r.currents_a.map(|v| v.and_then(finite))),
            power_w: reading.map_or([None; 3], |r| r.powers_w.map(|v| v.and_then(finite))),
            total_power_w: reading.and_then(|r| r.power_w).and_then(finite),
            allocated_a: usage.map_or([0.0; 3], |u| u.ev_a.map(|v| finite(v).unwrap_or(0.0))),
            limits,
        });
    }
    let mut allocated_a = [0.0; 3];
    if let Some(a) = &view.allocation {
        for sp in &a.setpoints {
            let c = sp.site_currents();
            for k in 0..3 {
                allocated_a[k] += finite(c[k]).unwrap_or(0.0);
            }
        }
    }
    SiteEnergyReport { at: now, circuits, allocated_a, fail_safe: fail_safe_state(view) }
}

/// Writes `report` into the outbox, or replaces the newest row with it when that row is a
/// report with the same fail-safe conditions that was not sent yet (`sent_through`: the
/// highest seq the sync task has sent in its current connection, `None` when it is not
/// connected; a row sent on a link that then dropped is sent again, so it may be replaced
/// too). True when it replaced a row.
pub fn emit(
    conn: &Connection,
    report: &SiteEnergyReport,
    sent_through: Option<u64>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let event = SiteEvent::SiteEnergy(report.clone());
    let newest: Option<(i64, String, String)> = conn
        .prepare_cached("SELECT seq, kind, payload FROM outbox ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((seq, kind, payload)) = newest
        && kind == event.kind()
        && sent_through.is_none_or(|s| u64::try_from(seq).is_ok_and(|seq| seq > s))
        && let Ok(SiteEvent::SiteEnergy(old)) = serde_json::from_str::<SiteEvent>(&payload)
        && old.fail_safe.active == report.fail_safe.active
        && old.fail_safe.key() == report.fail_safe.key()
    {
        conn.prepare_cached("UPDATE outbox SET event_id = ?2, created_at = ?3, payload = ?4 WHERE seq = ?1")?
            .execute(params![seq, uuid::Uuid::new_v4().to_string(), ts(now), serde_json::to_string(&event)?])?;
        return Ok(true);
    }
    crate::chargers::emit(conn, &event, now)?;
    Ok(false)
}

/// Reports until shutdown. Does nothing without circuits, without `[sync]` or with
/// `site_energy_interval_ms = 0`.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let Some(plan) = shared.config.energy.clone() else { return };
    let Some(interval_ms) = shared.config.sync.as_ref().map(|s| s.site_energy_interval_ms) else { return };
    if interval_ms == 0 {
        return;
    }
    let mut view = shared.control.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once, before the first meter read: wait one interval (or a
    // fail-safe change) instead.
    tick.reset();
    let mut last_key: Option<(bool, Vec<(String, String)>)> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            r = view.changed() => {
                if r.is_err() {
                    return;
                }
                let v = view.borrow_and_update().clone();
                // Before the loop's first run there is nothing to report.
                if v.runs == 0 {
                    continue;
                }
                let f = fail_safe_state(&v);
                if last_key.as_ref() == Some(&(f.active, f.key())) {
                    continue;
                }
            }
        }
        let v = shared.control.view();
        if v.runs == 0 {
            continue;
        }
        let now = Utc::now();
        let report = build(&plan, &shared.meters.snapshot(), &v, &shared.control.limits(), now);
        let key = (report.fail_safe.active, report.fail_safe.key());
        let link = shared.sync.state();
        let sent_through = if link.connected { Some(link.sent_through.unwrap_or(0)) } else { None };
        match shared.store.write(move |c| emit(c, &report, sent_through, now)).await {
            Ok(replaced) => {
                tracing::debug!(replaced, fail_safe = key.0, "site energy reported");
                last_key = Some(key);
            }
            Err(e) => tracing::warn!(error = %e, "site energy: writing the report failed; next interval"),
        }
        tick.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::{Allocation, FailSafe, FailSafeReason as Reason, NodeId, NodeUsage, SchedulePeriod, Subject};
    use crate::config::{Config, StoreConfig};
    use crate::control::FailSafeView;
    use crate::meters::{MeterInfo, MeterStatus, Reading};
    use crate::store::Store;
    use chrono::TimeZone;
    use std::path::Path;

    struct NoObs;
    impl crate::store::WriteObserver for NoObs {
        fn commit(&self, _: f64, _: usize) {}
    }

    fn plan() -> EnergyPlan {
        let text = "[site]\nid = \"s\"\n[ocpp]\nsecurity_profile = 0\n\
             [[circuits]]\nid = \"grid\"\nlimit_a = 32\npower_limit_w = 22000\n\
             [[circuits]]\nid = \"garage\"\nparent = \"grid\"\nlimit_a = [16, 16, 20]\n\
             [[chargers]]\nid = \"CP-1\"\ncircuit = \"garage\"\n";
        Config::parse(Path::new("t.toml"), text).expect("config").energy.expect("a plan")
    }

    fn node(id: &str) -> NodeId {
        NodeId::try_new(id).expect("id")
    }

    fn meter(stale: bool, now: DateTime<Utc>) -> MeterSnapshot {
        let reading = Reading {
            currents_a: [Some(10.0), Some(20.0), Some(f64::NAN)],
            powers_w: [Some(2300.0), Some(4600.0), None],
            power_w: Some(6900.0),
            ..Reading::default()
        };
        MeterSnapshot {
            meters: vec![MeterStatus {
                info: MeterInfo {
                    id: "grid-meter".into(),
                    map: "eastron-sdm630".into(),
                    transport: "tcp 127.0.0.1:502".into(),
                    unit_id: 1,
                    node: Some(node("grid")),
                    period_ms: 1000,
                    stale_after_periods: 3,
                    phases_mapped: [true; 3],
                },
                reading: Some(reading),
                read_at: Some(now),
                stale,
                stale_since: None,
                last_error: None,
                consecutive_failures: 0,
                poll_interval_ms: 1000,
                reads_ok: 1,
                reads_failed: 0,
                stale_entries: 0,
            }],
        }
    }

    fn view(now: DateTime<Utc>, stale: bool) -> ControlView {
        let now_ms = u64::try_from(now.timestamp_millis()).expect("ms");
        let usage = |id: &str, meter: MeterState| NodeUsage {
            node: node(id),
            meter,
            non_ev_a: [0.0; 3],
            ev_a: [6.0, 6.0, 6.0],
            predicted_a: [0.0; 3],
            limit_a: [None; 3],
            predicted_w: 0.0,
            limit_w: None,
        };
        let fail_safe = if stale {
            vec![FailSafeView {
                fail_safe: FailSafe {
                    subject: Subject::Node(node("grid")),
                    reason: Reason::MeterStale { last_ms: now_ms },
                },
                since: now,
            }]
        } else {
            Vec::new()
        };
        ControlView {
            enabled: true,
            runs: 3,
            allocation: Some(Allocation {
                computed_at_ms: now_ms,
                setpoints: Vec::new(),
                nodes: vec![
                    usage("grid", if stale { MeterState::Stale } else { MeterState::Fresh }),
                    usage("garage", MeterState::Unmetered),
                ],
                fail_safe: fail_safe.iter().map(|f| f.fail_safe.clone()).collect(),
                warnings: Vec::new(),
            }),
            refused: None,
            points: Vec::new(),
            fail_safe,
        }
    }

    #[test]
    fn every_limit_of_every_circuit_with_the_readings() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).single().expect("time");
        let now_ms = u64::try_from(now.timestamp_millis()).expect("ms");
        let external = ExternalLimits {
            import_limit_a: Some([40.0, 25.0, 40.0]),
            valid_until_ms: Some(now_ms + 60_000),
            schedule: vec![
                SchedulePeriod { start_ms: now_ms - 1, end_ms: now_ms + 1000, limit_w: Some(11_000.0), limit_a: None },
                // Not yet active: not a limit now.
                SchedulePeriod { start_ms: now_ms + 1000, end_ms: now_ms + 2000, limit_w: None, limit_a: Some(1.0) },
            ],
            ..ExternalLimits::default()
        };
        let r = build(&plan(), &meter(false, now), &view(now, false), &external, now);
        assert_eq!(r.circuits.len(), 2);
        let grid = &r.circuits[0];
        assert_eq!(
            (grid.circuit.as_str(), grid.parent.as_deref(), grid.meter.as_deref()),
            ("grid", None, Some("grid-meter"))
        );
        assert_eq!(grid.state, "fresh");
        assert_eq!(grid.current_a, [Some(10.0), Some(20.0), None], "a reading that is not a number is none");
        assert_eq!(grid.total_power_w, Some(6900.0));
        assert_eq!(grid.allocated_a, [6.0; 3]);
        let sources: Vec<LimitSource> = grid.limits.iter().map(|l| l.source).collect();
        assert_eq!(
            sources,
            [LimitSource::Fuse, LimitSource::PowerLimit, LimitSource::GridOperator, LimitSource::Schedule]
        );
        assert_eq!(grid.tightest_a(1).map(|t| t.1), Some(25.0));
        assert_eq!(grid.tightest_w().map(|t| t.1), Some(11_000.0));
        let garage = &r.circuits[1];
        assert_eq!(
            (garage.parent.as_deref(), garage.meter.as_deref(), garage.state.as_str()),
            (Some("grid"), None, "unmetered")
        );
        assert_eq!(garage.limits.len(), 1, "external limits apply at the grid connection only");
        assert_eq!(garage.tightest_a(2).map(|t| t.1), Some(20.0));
        assert!(!r.fail_safe.active);

        // The operator's limits expired: its safe values, and the fail-safe with its reason.
        let expired = ExternalLimits {
            import_limit_a: Some([40.0; 3]),
            safe_import_limit_a: Some([10.0; 3]),
            valid_until_ms: Some(now_ms - 1),
            ..ExternalLimits::default()
        };
        let r = build(&plan(), &meter(true, now), &view(now, true), &expired, now);
        let safe = r.circuits[0].limits.iter().find(|l| l.source == LimitSource::GridOperatorSafe).expect("safe");
        assert_eq!(safe.current_a, Some([10.0; 3]));
        assert!(r.circuits[0].stale && r.circuits[0].state == "stale");
        assert!(r.fail_safe.active);
        assert_eq!(r.fail_safe.summary(), "meter_stale at grid");
    }

    #[tokio::test]
    async fn waiting_reports_are_coalesced_but_fail_safe_changes_and_sent_rows_are_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let store =
            Store::open(&StoreConfig { path: dir.path().join("o.db"), ..StoreConfig::default() }, Arc::new(NoObs))
                .expect("open");
        let now = Utc::now();
        let ext = ExternalLimits::default();
        let fine = build(&plan(), &meter(false, now), &view(now, false), &ext, now);
        let failing = build(&plan(), &meter(true, now), &view(now, true), &ext, now);
        let emit_one = |r: &SiteEnergyReport, sent: Option<u64>| {
            let r = r.clone();
            let store = store.clone();
            async move { store.write(move |c| emit(c, &r, sent, Utc::now())).await.expect("emit") }
        };
        let rows = || {
            let store = store.clone();
            async move {
                store
                    .read(|c| crate::sync::outbox::read_from(c, 0, 100, 1 << 20))
                    .await
                    .expect("read")
                    .into_iter()
                    .map(|e| (e.seq, e.kind))
                    .collect::<Vec<_>>()
            }
        };
        // Offline: ten reports are one row.
        assert!(!emit_one(&fine, None).await);
        for _ in 0..9 {
            assert!(emit_one(&fine, None).await, "replaced");
        }
        assert_eq!(rows().await, vec![(1, "site_energy".to_owned())]);
        // A fail-safe change is a row of its own, and so is the way back.
        assert!(!emit_one(&failing, None).await);
        assert!(emit_one(&failing, None).await);
        assert!(!emit_one(&fine, None).await);
        assert_eq!(rows().await.len(), 3);
        // Another event in between: the next report is a new row.
        store
            .write(|c| {
                crate::chargers::emit(
                    c,
                    &SiteEvent::StationConnection { station: "CP-1".into(), connected: true, at: Utc::now() },
                    Utc::now(),
                )
            })
            .await
            .expect("event");
        assert!(!emit_one(&fine, None).await);
        assert_eq!(rows().await.len(), 5);
        // Connected and the newest row already sent: never replaced.
        assert!(!emit_one(&fine, Some(5)).await);
        // Connected, newest row (6) not sent yet: replaced.
        assert!(emit_one(&fine, Some(5)).await);
        let all = rows().await;
        assert_eq!(all.len(), 6);
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6], "gapless");
        let newest = store.read(|c| crate::sync::outbox::read_from(c, 6, 1, 1 << 20)).await.expect("read");
        match newest[0].event().expect("typed") {
            SiteEvent::SiteEnergy(r) => assert!(!r.fail_safe.active && r.circuits.len() == 2),
            other => panic!("{other:?}"),
        }
    }
}
