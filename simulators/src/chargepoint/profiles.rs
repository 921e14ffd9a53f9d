//! Smart-charging profiles as a charge point keeps them (OCPP 1.6 §3.13): storage with the
//! replacement rules of SetChargingProfile, ClearChargingProfile's filters, and the limit
//! in force on a connector at a given time. Pure: time is a parameter.
//!
//! The limit on a connector is the one of the valid TxProfile with the highest stack
//! level (only during a transaction, §3.13.2), else of the TxDefaultProfile with the
//! highest stack level (one installed on the connector overrides one on connector 0),
//! capped by the ChargePointMaxProfile with the highest stack level and by the connector's
//! hardware limit. A profile whose schedule has no period at that time (before its start,
//! after its duration, outside validFrom..validTo) does not count, so a lower stack level
//! shows through. The simulator applies the ChargePointMaxProfile as a cap on each
//! connector (a simplification: a real charger shares it between its connectors).

use chrono::{DateTime, Duration as ChronoDuration, Utc};

/// ChargingProfilePurposeType (OCPP 1.6 §7.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ChargePointMax,
    TxDefault,
    Tx,
}

/// ChargingProfileKindType (OCPP 1.6 §7.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Absolute,
    Recurring,
    Relative,
}

/// RecurrencyKindType (OCPP 1.6 §7.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrency {
    Daily,
    Weekly,
}

/// ChargingRateUnitType (OCPP 1.6 §7.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Amps,
    Watts,
}

/// One ChargingSchedulePeriod.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// Seconds from the start of the schedule.
    pub start_s: i64,
    /// Limit in the schedule's unit.
    pub limit: f64,
    pub number_phases: Option<u8>,
}

/// One ChargingProfile as stored (the wire type converted, see `handlers`).
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: i32,
    /// Connector it was installed on (0 = the whole charge point).
    pub connector_id: u32,
    pub transaction_id: Option<i32>,
    pub stack_level: u32,
    pub purpose: Purpose,
    pub kind: Kind,
    pub recurrency: Option<Recurrency>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_to: Option<DateTime<Utc>>,
    pub duration_s: Option<i64>,
    pub start_schedule: Option<DateTime<Utc>>,
    pub unit: RateUnit,
    /// Periods sorted by `start_s`.
    pub periods: Vec<Period>,
    pub min_rate: Option<f64>,
}

/// The transaction running on a connector, as far as profiles care.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TxContext {
    /// Transaction id the central system knows, once known.
    pub transaction_id: Option<i32>,
    pub started: DateTime<Utc>,
}

/// Why SetChargingProfile is refused (answered with status Rejected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRejection {
    #[error("connector {0} does not exist")]
    NoSuchConnector(u32),
    #[error("a ChargePointMaxProfile must be set on connector 0")]
    MaxProfileNotOnConnectorZero,
    #[error("a TxProfile must be set on a connector > 0")]
    TxProfileOnConnectorZero,
    #[error("no transaction is running on connector {0}")]
    NoTransaction(u32),
    #[error("transaction {0} is not the one running on the connector")]
    WrongTransaction(i32),
    #[error("the schedule has no periods")]
    NoPeriods,
    #[error("stack level {0} exceeds the maximum {1}")]
    StackLevelTooHigh(u32, u32),
}

/// Highest stack level accepted (configuration key `ChargeProfileMaxStackLevel`).
pub const MAX_STACK_LEVEL: u32 = 10;
/// Most profiles kept (configuration key `MaxChargingProfilesInstalled`).
pub const MAX_PROFILES: usize = 32;
/// Most periods in one schedule (configuration key `ChargingScheduleMaxPeriods`).
pub const MAX_PERIODS: usize = 48;

/// The profiles installed on one charge point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileStore {
    profiles: Vec<Profile>,
}

/// Converts a limit to A per phase for an EV on `phases` at `voltage_v`.
pub fn limit_to_amps(limit: f64, unit: RateUnit, voltage_v: f64, phases: f64) -> f64 {
    match unit {
        RateUnit::Amps => limit,
        RateUnit::Watts => {
            let volts = voltage_v * phases;
            if volts > 0.0 { limit / volts } else { 0.0 }
        }
    }
}

impl Profile {
    /// The start of the schedule that applies at `now`, if any.
    fn schedule_start(&self, now: DateTime<Utc>, tx: Option<TxContext>) -> Option<DateTime<Utc>> {
        match self.kind {
            Kind::Absolute => Some(self.start_schedule.unwrap_or_else(|| {
                // Without startSchedule an absolute schedule starts at the transaction (for
                // TxProfile) or at the time it was set; we use the valid-from or epoch.
                tx.map(|t| t.started).or(self.valid_from).unwrap_or(DateTime::<Utc>::MIN_UTC)
            })),
            Kind::Relative => Some(tx.map_or(now, |t| t.started)),
            Kind::Recurring => {
                let base = self.start_schedule.or(self.valid_from)?;
                let period = match self.recurrency.unwrap_or(Recurrency::Daily) {
                    Recurrency::Daily => ChronoDuration::days(1),
                    Recurrency::Weekly => ChronoDuration::weeks(1),
                };
                if now < base {
                    return Some(base);
                }
                let elapsed = now - base;
                let n = elapsed.num_seconds().div_euclid(period.num_seconds());
                Some(base + period * n as i32)
            }
        }
    }

    /// The limit this profile sets at `now` (in its own unit), if it is in force.
    pub fn limit_at(&self, now: DateTime<Utc>, tx: Option<TxContext>) -> Option<f64> {
        if self.valid_from.is_some_and(|f| now < f) || self.valid_to.is_some_and(|t| now >= t) {
            return None;
        }
        let start = self.schedule_start(now, tx)?;
        if now < start {
            return None;
        }
        let offset = (now - start).num_milliseconds() as f64 / 1000.0;
        if let Some(d) = self.duration_s
            && offset >= d as f64
        {
            return None;
        }
        self.periods.iter().take_while(|p| (p.start_s as f64) <= offset).last().map(|p| p.limit)
    }

    /// Times in `(from, to)` at which this profile's limit may change.
    fn breakpoints(&self, from: DateTime<Utc>, to: DateTime<Utc>, tx: Option<TxContext>, out: &mut Vec<DateTime<Utc>>) {
        for t in [self.valid_from, self.valid_to].into_iter().flatten() {
            out.push(t);
        }
        // Schedule starts within the window (several for a recurring profile).
        let mut starts = Vec::new();
        let mut probe = from;
        for _ in 0..16 {
            let Some(s) = self.schedule_start(probe, tx) else { break };
            if starts.last() == Some(&s) {
                break;
            }
            starts.push(s);
            let next = match (self.kind, self.recurrency) {
                (Kind::Recurring, Some(Recurrency::Weekly)) => s + ChronoDuration::weeks(1),
                (Kind::Recurring, _) => s + ChronoDuration::days(1),
                _ => break,
            };
            if next >= to {
                break;
            }
            probe = next;
        }
        for s in starts {
            for p in &self.periods {
                out.push(s + ChronoDuration::seconds(p.start_s));
            }
            if let Some(d) = self.duration_s {
                out.push(s + ChronoDuration::seconds(d));
            }
        }
    }
}

impl ProfileStore {
    /// An empty store.
    pub fn new() -> Self {
        ProfileStore::default()
    }

    /// All profiles, in installation order.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// SetChargingProfile (OCPP 1.6 §5.16): checks the profile and installs it, replacing
    /// one with the same id, or with the same stack level and purpose on the same connector.
    /// `connectors` is the number of connectors, `tx` the transaction on the target connector.
    pub fn install(
        &mut self,
        mut profile: Profile,
        connectors: u32,
        tx: Option<TxContext>,
    ) -> Result<(), ProfileRejection> {
        let c = profile.connector_id;
        if c > connectors {
            return Err(ProfileRejection::NoSuchConnector(c));
        }
        if profile.periods.is_empty() {
            return Err(ProfileRejection::NoPeriods);
        }
        if profile.stack_level > MAX_STACK_LEVEL {
            return Err(ProfileRejection::StackLevelTooHigh(profile.stack_level, MAX_STACK_LEVEL));
        }
        match profile.purpose {
            Purpose::ChargePointMax if c != 0 => return Err(ProfileRejection::MaxProfileNotOnConnectorZero),
            Purpose::Tx if c == 0 => return Err(ProfileRejection::TxProfileOnConnectorZero),
            Purpose::Tx => {
                // §3.13.4: a TxProfile without a transaction on the connector is discarded.
                let Some(tx) = tx else { return Err(ProfileRejection::NoTransaction(c)) };
                if let (Some(wanted), Some(running)) = (profile.transaction_id, tx.transaction_id)
                    && wanted != running
                {
                    return Err(ProfileRejection::WrongTransaction(wanted));
                }
            }
            _ => {}
        }
        profile.periods.sort_by_key(|p| p.start_s);
        profile.periods.truncate(MAX_PERIODS);
        self.profiles.retain(|p| {
            !(p.id == profile.id
                || (p.connector_id == profile.connector_id
                    && p.stack_level == profile.stack_level
                    && p.purpose == profile.purpose))
        });
        if self.profiles.len() >= MAX_PROFILES {
            self.profiles.remove(0);
        }
        self.profiles.push(profile);
        Ok(())
    }

    /// ClearChargingProfile (OCPP 1.6 §5.5): removes the profiles matching every given
    /// filter (an id alone matches regardless of the others); returns how many.
    pub fn clear(
        &mut self,
        id: Option<i32>,
        connector_id: Option<u32>,
        purpose: Option<Purpose>,
        stack_level: Option<u32>,
    ) -> usize {
        let before = self.profiles.len();
        self.profiles.retain(|p| {
            let matches = if let Some(id) = id {
                p.id == id
            } else {
                connector_id.is_none_or(|c| p.connector_id == c)
                    && purpose.is_none_or(|u| p.purpose == u)
                    && stack_level.is_none_or(|s| p.stack_level == s)
            };
            !matches
        });
        before - self.profiles.len()
    }

    /// Removes the TxProfiles of a connector when its transaction ends (§3.13.4).
    pub fn end_transaction(&mut self, connector_id: u32) {
        self.profiles.retain(|p| !(p.purpose == Purpose::Tx && p.connector_id == connector_id));
    }

    /// Highest-stack-level limit in force among `candidates`, converted to A per phase.
    fn top_limit<'a>(
        candidates: impl Iterator<Item = &'a Profile>,
        now: DateTime<Utc>,
        tx: Option<TxContext>,
        voltage_v: f64,
        phases: f64,
    ) -> Option<f64> {
        candidates
            .filter_map(|p| p.limit_at(now, tx).map(|l| (p.stack_level, limit_to_amps(l, p.unit, voltage_v, phases))))
            .max_by_key(|(level, _)| *level)
            .map(|(_, a)| a)
    }

    /// The limit from profiles on connector `connector_id` at `now` in A per phase, `None`
    /// when no profile limits it. Connector 0 gives the ChargePointMaxProfile limit.
    pub fn limit_a(
        &self,
        connector_id: u32,
        now: DateTime<Utc>,
        tx: Option<TxContext>,
        voltage_v: f64,
        phases: f64,
    ) -> Option<f64> {
        let cp_max = Self::top_limit(
            self.profiles.iter().filter(|p| p.purpose == Purpose::ChargePointMax),
            now,
            None,
            voltage_v,
            phases,
        );
        if connector_id == 0 {
            return cp_max;
        }
        let tx_limit = tx.and_then(|t| {
            Self::top_limit(
                self.profiles.iter().filter(|p| {
                    p.purpose == Purpose::Tx
                        && p.connector_id == connector_id
                        && (p.transaction_id.is_none()
                            || t.transaction_id.is_none()
                            || p.transaction_id == t.transaction_id)
                }),
                now,
                Some(t),
                voltage_v,
                phases,
            )
        });
        let default_limit = || {
            Self::top_limit(
                self.profiles.iter().filter(|p| p.purpose == Purpose::TxDefault && p.connector_id == connector_id),
                now,
                tx,
                voltage_v,
                phases,
            )
            .or_else(|| {
                Self::top_limit(
                    self.profiles.iter().filter(|p| p.purpose == Purpose::TxDefault && p.connector_id == 0),
                    now,
                    tx,
                    voltage_v,
                    phases,
                )
            })
        };
        let limit = tx_limit.or_else(default_limit);
        match (limit, cp_max) {
            (Some(l), Some(m)) => Some(l.min(m)),
            (l, m) => l.or(m),
        }
    }

    /// GetCompositeSchedule (OCPP 1.6 §5.7): the limit on `connector_id` from `now` for
    /// `duration_s` seconds as (seconds from now, A per phase) steps, merged where equal;
    /// `None` in a step means "no profile limit" (the caller puts the hardware limit there).
    pub fn composite(
        &self,
        connector_id: u32,
        now: DateTime<Utc>,
        duration_s: i64,
        tx: Option<TxContext>,
        voltage_v: f64,
        phases: f64,
    ) -> Vec<(i64, Option<f64>)> {
        let end = now + ChronoDuration::seconds(duration_s.max(0));
        let mut points = vec![now];
        for p in &self.profiles {
            p.breakpoints(now, end, tx, &mut points);
        }
        points.retain(|t| *t >= now && *t < end);
        points.sort();
        points.dedup();
        let mut steps: Vec<(i64, Option<f64>)> = Vec::new();
        for t in points {
            let limit = self.limit_a(connector_id, t, tx, voltage_v, phases);
            if steps.last().is_some_and(|(_, l)| *l == limit) {
                continue;
            }
            steps.push(((t - now).num_seconds(), limit));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid timestamp")
    }

    fn profile(id: i32, connector_id: u32, purpose: Purpose, level: u32, amps: f64) -> Profile {
        Profile {
            id,
            connector_id,
            transaction_id: None,
            stack_level: level,
            purpose,
            kind: Kind::Absolute,
            recurrency: None,
            valid_from: None,
            valid_to: None,
            duration_s: None,
            start_schedule: Some(t(0)),
            unit: RateUnit::Amps,
            periods: vec![Period { start_s: 0, limit: amps, number_phases: None }],
            min_rate: None,
        }
    }

    fn tx() -> Option<TxContext> {
        Some(TxContext { transaction_id: Some(7), started: t(10) })
    }

    #[test]
    fn tx_profile_beats_default_and_is_capped_by_max() {
        let mut s = ProfileStore::new();
        s.install(profile(1, 0, Purpose::TxDefault, 0, 20.0), 2, None).expect("default");
        assert_eq!(s.limit_a(1, t(100), tx(), 230.0, 3.0), Some(20.0));
        assert_eq!(s.limit_a(2, t(100), None, 230.0, 3.0), Some(20.0));
        s.install(profile(2, 1, Purpose::Tx, 0, 10.0), 2, tx()).expect("tx");
        s.install(profile(3, 1, Purpose::Tx, 3, 12.0), 2, tx()).expect("tx level 3");
        assert_eq!(s.limit_a(1, t(100), tx(), 230.0, 3.0), Some(12.0));
        // The TxProfile needs the transaction.
        assert_eq!(s.limit_a(1, t(100), None, 230.0, 3.0), Some(20.0));
        s.install(profile(4, 0, Purpose::ChargePointMax, 0, 8.0), 2, None).expect("max");
        assert_eq!(s.limit_a(1, t(100), tx(), 230.0, 3.0), Some(8.0));
        assert_eq!(s.limit_a(0, t(100), None, 230.0, 3.0), Some(8.0));
    }

    #[test]
    fn connector_default_overrides_connector_zero_default() {
        let mut s = ProfileStore::new();
        s.install(profile(1, 0, Purpose::TxDefault, 5, 20.0), 2, None).expect("cp-wide");
        s.install(profile(2, 2, Purpose::TxDefault, 0, 11.0), 2, None).expect("connector 2");
        assert_eq!(s.limit_a(1, t(0), None, 230.0, 3.0), Some(20.0));
        assert_eq!(s.limit_a(2, t(0), None, 230.0, 3.0), Some(11.0));
    }

    #[test]
    fn watts_are_converted_with_voltage_and_phases() {
        let mut s = ProfileStore::new();
        let mut p = profile(1, 1, Purpose::TxDefault, 0, 11_040.0);
        p.unit = RateUnit::Watts;
        s.install(p, 1, None).expect("install");
        let three = s.limit_a(1, t(0), None, 230.0, 3.0).expect("limit");
        assert!((three - 16.0).abs() < 1e-9);
        let one = s.limit_a(1, t(0), None, 230.0, 1.0).expect("limit");
        assert!((one - 48.0).abs() < 1e-9);
    }

    #[test]
    fn same_level_and_purpose_replaces_and_higher_level_wins_only_while_in_force() {
        let mut s = ProfileStore::new();
        s.install(profile(1, 1, Purpose::TxDefault, 1, 20.0), 1, None).expect("a");
        s.install(profile(2, 1, Purpose::TxDefault, 1, 15.0), 1, None).expect("b replaces a");
        assert_eq!(s.profiles().len(), 1);
        assert_eq!(s.limit_a(1, t(0), None, 230.0, 3.0), Some(15.0));
        // Level 2, 10 A for the first 60 s only: level 1 shows through afterwards.
        let mut p = profile(3, 1, Purpose::TxDefault, 2, 10.0);
        p.duration_s = Some(60);
        s.install(p, 1, None).expect("c");
        assert_eq!(s.limit_a(1, t(30), None, 230.0, 3.0), Some(10.0));
        assert_eq!(s.limit_a(1, t(60), None, 230.0, 3.0), Some(15.0));
        assert_eq!(s.limit_a(1, t(-1), None, 230.0, 3.0), None);
    }

    #[test]
    fn periods_and_relative_and_recurring_schedules() {
        let mut s = ProfileStore::new();
        let mut p = profile(1, 1, Purpose::Tx, 0, 0.0);
        p.kind = Kind::Relative;
        p.start_schedule = None;
        p.periods = vec![
            Period { start_s: 0, limit: 16.0, number_phases: None },
            Period { start_s: 100, limit: 6.0, number_phases: None },
        ];
        s.install(p, 1, tx()).expect("relative");
        // Relative to the transaction start at t(10).
        assert_eq!(s.limit_a(1, t(109), tx(), 230.0, 3.0), Some(16.0));
        assert_eq!(s.limit_a(1, t(110), tx(), 230.0, 3.0), Some(6.0));

        let mut r = profile(2, 0, Purpose::ChargePointMax, 0, 0.0);
        r.kind = Kind::Recurring;
        r.recurrency = Some(Recurrency::Daily);
        r.periods = vec![
            Period { start_s: 0, limit: 32.0, number_phases: None },
            Period { start_s: 3600, limit: 10.0, number_phases: None },
        ];
        s.install(r, 1, None).expect("recurring");
        let day = 86_400;
        assert_eq!(s.limit_a(0, t(day * 3 + 10), None, 230.0, 3.0), Some(32.0));
        assert_eq!(s.limit_a(0, t(day * 3 + 3700), None, 230.0, 3.0), Some(10.0));
    }

    #[test]
    fn rejections() {
        let mut s = ProfileStore::new();
        assert_eq!(
            s.install(profile(1, 1, Purpose::ChargePointMax, 0, 1.0), 2, None),
            Err(ProfileRejection::MaxProfileNotOnConnectorZero)
        );
        assert_eq!(
            s.install(profile(1, 0, Purpose::Tx, 0, 1.0), 2, tx()),
            Err(ProfileRejection::TxProfileOnConnectorZero)
        );
        assert_eq!(s.install(profile(1, 1, Purpose::Tx, 0, 1.0), 2, None), Err(ProfileRejection::NoTransaction(1)));
        let mut wrong = profile(1, 1, Purpose::Tx, 0, 1.0);
        wrong.transaction_id = Some(8);
        assert_eq!(s.install(wrong, 2, tx()), Err(ProfileRejection::WrongTransaction(8)));
        assert_eq!(
            s.install(profile(1, 3, Purpose::TxDefault, 0, 1.0), 2, None),
            Err(ProfileRejection::NoSuchConnector(3))
        );
        assert!(s.profiles().is_empty());
    }

    #[test]
    fn clear_filters_and_end_of_transaction() {
        let mut s = ProfileStore::new();
        s.install(profile(1, 1, Purpose::TxDefault, 0, 10.0), 2, None).expect("1");
        s.install(profile(2, 2, Purpose::TxDefault, 0, 10.0), 2, None).expect("2");
        s.install(profile(3, 1, Purpose::Tx, 0, 10.0), 2, tx()).expect("3");
        assert_eq!(s.clear(Some(99), None, None, None), 0);
        assert_eq!(s.clear(None, Some(2), None, None), 1);
        s.end_transaction(1);
        assert_eq!(s.profiles().len(), 1);
        assert_eq!(s.clear(None, None, Some(Purpose::TxDefault), Some(0)), 1);
        assert!(s.profiles().is_empty());
    }

    #[test]
    fn composite_schedule_merges_steps() {
        let mut s = ProfileStore::new();
        let mut p = profile(1, 1, Purpose::TxDefault, 0, 0.0);
        p.periods = vec![
            Period { start_s: 0, limit: 16.0, number_phases: None },
            Period { start_s: 600, limit: 16.0, number_phases: None },
            Period { start_s: 1200, limit: 8.0, number_phases: None },
        ];
        p.duration_s = Some(1800);
        s.install(p, 1, None).expect("install");
        let steps = s.composite(1, t(0), 3600, None, 230.0, 3.0);
        assert_eq!(steps, vec![(0, Some(16.0)), (1200, Some(8.0)), (1800, None)]);
    }
}
