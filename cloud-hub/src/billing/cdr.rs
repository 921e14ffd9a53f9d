//! CDRs: a finished session priced by its site's tariff, stored once and never changed.
//!
//! The session's timeline comes from what ingest stored: the start (`meter_start_wh` at
//! `started_at`), every `Energy.Active.Import.Register` sample of the transaction between
//! (in Wh), and the stop (`meter_stop_wh` at `stopped_at`); `Power.Active.Import` samples,
//! when the charger sent them, for power restrictions. A register sample that goes back
//! below an earlier one, or beyond the stop value, is left out (and counted in the CDR's
//! `dropped_samples`): a charger's glitch must not make a session unbillable.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use shared_model::tariff::{
    ChargingPeriod, CompiledTariff, MeterReading, Price, PricedSession, Pricer, Sample, Session, Tariff, TariffError,
};

use super::{BillingError, parse_decimal, parse_decimal_opt};
use crate::db::{DbError, Row, Store, Tx, Ty, Val};
use crate::fleet::params::Page;

/// The measurand of the energy register.
pub const ENERGY_REGISTER: &str = "Energy.Active.Import.Register";
/// The measurand of active power.
pub const POWER: &str = "Power.Active.Import";

/// A finished session as the billing worker reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSession {
    pub site_id: String,
    pub transaction_uid: String,
    pub station: String,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub id_tag: Option<String>,
    pub started_at: DateTime<Utc>,
    pub stopped_at: DateTime<Utc>,
    pub meter_start_wh: i64,
    pub meter_stop_wh: i64,
}

/// One VAT line of a CDR or an invoice: the net amount at a rate and its VAT. `rate` is
/// in percent, `None` when the tariff gave no price including VAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VatLine {
    pub rate: Option<Decimal>,
    pub net: Decimal,
    pub vat: Decimal,
}

/// A CDR as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cdr {
    pub id: String,
    pub site_id: String,
    pub transaction_uid: String,
    /// `debit` (a session priced) or `credit` (cancels the debit `credits`).
    pub kind: String,
    pub revision: i64,
    pub credits: Option<String>,
    pub reason: Option<String>,
    pub customer_id: Option<String>,
    pub id_tag: Option<String>,
    pub station: String,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub tariff_id: String,
    pub time_zone: String,
    pub currency: String,
    pub start_date_time: DateTime<Utc>,
    pub end_date_time: DateTime<Utc>,
    pub meter_start_wh: i64,
    pub meter_stop_wh: i64,
    pub total_energy_kwh: Decimal,
    pub total_time_h: Decimal,
    pub total_parking_time_h: Decimal,
    pub total_cost_excl_vat: Decimal,
    pub total_cost_incl_vat: Option<Decimal>,
    /// Totals per dimension, charging periods, VAT lines, the tariff as it was.
    pub detail: Value,
    pub created_at: DateTime<Utc>,
    /// The invoice it is on, if any.
    pub invoice_id: Option<String>,
}

fn price_json(p: &Price) -> Value {
    json!({
        "excl_vat": p.excl_vat.normalize().to_string(),
        "incl_vat": p.incl_vat.map(|v| v.normalize().to_string()),
    })
}

/// VAT lines of a priced session: each dimension's cost at the rate its amounts imply,
/// and what `min_price` / `max_price` added or took away at the rate of that difference.
pub fn vat_lines(priced: &PricedSession) -> Vec<VatLine> {
    let t = &priced.totals;
    let parts =
        [t.total_fixed_cost, t.total_energy_cost, t.total_time_cost, t.total_parking_cost, t.total_reservation_cost];
    let mut lines: Vec<VatLine> = Vec::new();
    let mut add = |p: Price| {
        if p.excl_vat.is_zero() && p.incl_vat.is_none_or(|v| v.is_zero()) {
            return;
        }
        let (rate, vat) = match p.incl_vat {
            Some(incl) if !p.excl_vat.is_zero() => {
                let vat = incl - p.excl_vat;
                (Some((vat / p.excl_vat * Decimal::ONE_HUNDRED).round_dp(2).normalize()), vat)
            }
            Some(incl) => (None, incl),
            None => (None, Decimal::ZERO),
        };
        match lines.iter_mut().find(|l| l.rate == rate) {
            Some(line) => {
                line.net += p.excl_vat;
                line.vat += vat;
            }
            None => lines.push(VatLine { rate, net: p.excl_vat, vat }),
        }
    };
    let mut sum_excl = Decimal::ZERO;
    let mut sum_incl = Some(Decimal::ZERO);
    for p in parts {
        sum_excl += p.excl_vat;
        sum_incl = match (sum_incl, p.incl_vat) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        add(p);
    }
    let adjust_excl = t.total_cost.excl_vat - sum_excl;
    let adjust_incl = match (t.total_cost.incl_vat, sum_incl) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    if !adjust_excl.is_zero() || adjust_incl.is_some_and(|v| !v.is_zero()) {
        add(Price { excl_vat: adjust_excl, incl_vat: adjust_incl });
    }
    lines.sort_by_key(|a| a.rate);
    lines
}

/// The CDR's `detail`: every total, the charging periods, the VAT lines and the tariff.
pub fn detail_json(priced: &PricedSession, tariff: &Tariff, dropped_samples: usize) -> Value {
    let t = &priced.totals;
    json!({
        "totals": {
            "total_cost": price_json(&t.total_cost),
            "total_fixed_cost": price_json(&t.total_fixed_cost),
            "total_energy": t.total_energy.normalize().to_string(),
            "total_energy_cost": price_json(&t.total_energy_cost),
            "total_time": t.total_time.normalize().to_string(),
            "total_time_cost": price_json(&t.total_time_cost),
            "total_parking_time": t.total_parking_time.normalize().to_string(),
            "total_parking_cost": price_json(&t.total_parking_cost),
            "total_reservation_time": t.total_reservation_time.normalize().to_string(),
            "total_reservation_cost": price_json(&t.total_reservation_cost),
            "min_price_applied": t.min_price_applied,
            "max_price_applied": t.max_price_applied,
        },
        "charging_periods": periods_json(&priced.charging_periods),
        "vat": vat_json(&vat_lines(priced)),
        "tariff": serde_json::to_value(tariff).unwrap_or(Value::Null),
        "dropped_samples": dropped_samples,
    })
}

fn periods_json(periods: &[ChargingPeriod]) -> Value {
    Value::Array(
        periods
            .iter()
            .map(|p| {
                json!({
                    "start_date_time": p.start_date_time,
                    "tariff_id": p.tariff_id,
                    "dimensions": p.dimensions.iter().map(|d| json!({
                        "type": d.dimension,
                        "volume": d.volume.normalize().to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn vat_json(lines: &[VatLine]) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|l| {
                json!({
                    "rate": l.rate.map(|r| r.normalize().to_string()),
                    "net": l.net.normalize().to_string(),
                    "vat": l.vat.normalize().to_string(),
                })
            })
            .collect(),
    )
}

/// The VAT lines stored in a CDR's detail.
pub fn stored_vat_lines(detail: &Value) -> Result<Vec<VatLine>, DbError> {
    let bad = |what: &str| DbError::Data(format!("a CDR's detail.vat: {what}"));
    let Some(lines) = detail.get("vat").and_then(Value::as_array) else { return Err(bad("missing")) };
    lines
        .iter()
        .map(|l| {
            let dec = |k: &str| -> Result<Option<Decimal>, DbError> {
                match l.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad(k)),
                    Some(_) => Err(bad(k)),
                }
            };
            Ok(VatLine {
                rate: dec("rate")?,
                net: dec("net")?.ok_or_else(|| bad("net"))?,
                vat: dec("vat")?.ok_or_else(|| bad("vat"))?,
            })
        })
        .collect()
}

fn wh(value: f64) -> Option<Decimal> {
    Decimal::try_from(value).ok().map(|d| d.round_dp(3))
}

/// The engine's session from a finished session and its samples `(ts, measurand,
/// value_num)`, oldest first; and how many register samples were left out.
pub fn build_session(
    s: &FinishedSession,
    time_zone: &str,
    samples: &[(DateTime<Utc>, String, f64)],
) -> Result<(Session, usize), TariffError> {
    let start_wh = Decimal::from(s.meter_start_wh);
    let stop_wh = Decimal::from(s.meter_stop_wh);
    let mut meter = vec![MeterReading { at: s.started_at, energy_wh: start_wh }];
    let mut power = Vec::new();
    let mut dropped = 0;
    for (ts, measurand, value) in samples {
        if *ts <= s.started_at || *ts >= s.stopped_at {
            continue;
        }
        if measurand == ENERGY_REGISTER {
            let last = meter.last().map_or(start_wh, |m| m.energy_wh);
            match wh(*value) {
                Some(v) if v >= last && v <= stop_wh && meter.last().is_some_and(|m| m.at < *ts) => {
                    meter.push(MeterReading { at: *ts, energy_wh: v })
                }
                _ => dropped += 1,
            }
        } else if measurand == POWER
            && let Some(v) = wh(*value).filter(|v| !v.is_sign_negative())
            && power.last().is_none_or(|p: &Sample| p.at < *ts)
        {
            power.push(Sample { at: *ts, value: v });
        }
    }
    meter.push(MeterReading { at: s.stopped_at, energy_wh: stop_wh });
    let mut session = Session::try_new(s.started_at, s.stopped_at, time_zone, meter)?;
    if !power.is_empty() {
        session = session.with_power(power);
    }
    Ok((session, dropped))
}

/// Prices a finished session.
pub fn price(pricer: &mut Pricer, tariff: &Tariff, session: &Session) -> Result<PricedSession, TariffError> {
    let compiled = CompiledTariff::try_new(tariff)?;
    pricer.price(&compiled, session)
}

/// A new debit CDR for a priced session, in `tx`. `Ok(false)` when another hub replica
/// stored this revision first.
#[allow(clippy::too_many_arguments)]
pub async fn insert_debit(
    tx: &mut Tx,
    s: &FinishedSession,
    revision: i64,
    customer_id: Option<&str>,
    tariff: &Tariff,
    time_zone: &str,
    priced: &PricedSession,
    detail: &Value,
    now: DateTime<Utc>,
) -> Result<Option<String>, DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    let t = &priced.totals;
    let n = tx
        .exec(
            "INSERT INTO cdrs (id, site_id, transaction_uid, kind, revision, credits, reason, customer_id, id_tag, \
                 station, evse, connector, tariff_id, time_zone, currency, start_date_time, end_date_time, \
                 meter_start_wh, meter_stop_wh, total_energy_kwh, total_time_h, total_parking_time_h, \
                 total_cost_excl_vat, total_cost_incl_vat, detail, created_at) \
             VALUES ($1, $2, $3, 'debit', $4, NULL, NULL, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19, $20, $21, $22, $23) \
             ON CONFLICT DO NOTHING",
            &[
                id.as_str().into(),
                s.site_id.as_str().into(),
                s.transaction_uid.as_str().into(),
                revision.into(),
                customer_id.into(),
                s.id_tag.as_deref().into(),
                s.station.as_str().into(),
                s.evse.into(),
                s.connector.into(),
                tariff.id.as_str().into(),
                time_zone.into(),
                priced.currency.as_str().into(),
                s.started_at.into(),
                s.stopped_at.into(),
                s.meter_start_wh.into(),
                s.meter_stop_wh.into(),
                t.total_energy.normalize().to_string().into(),
                t.total_time.normalize().to_string().into(),
                t.total_parking_time.normalize().to_string().into(),
                t.total_cost.excl_vat.normalize().to_string().into(),
                Val::from(t.total_cost.incl_vat.map(|v| v.normalize().to_string())),
                detail.to_string().into(),
                now.into(),
            ],
        )
        .await?;
    Ok((n == 1).then_some(id))
}

fn negate_price(v: &Value) -> Value {
    let neg = |x: &Value| match x.as_str().and_then(|s| s.parse::<Decimal>().ok()) {
        Some(d) => Value::String((-d).to_string()),
        None => x.clone(),
    };
    json!({"excl_vat": neg(&v["excl_vat"]), "incl_vat": neg(&v["incl_vat"])})
}

/// A credit CDR cancelling `debit`, in `tx`. `Ok(None)` when the debit already has one.
pub async fn insert_credit(
    tx: &mut Tx,
    debit: &Cdr,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, DbError> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut detail = debit.detail.clone();
    if let Some(totals) = detail.get_mut("totals").and_then(Value::as_object_mut) {
        for (key, value) in totals.iter_mut() {
            if key.ends_with("_cost") {
                *value = negate_price(value);
            }
        }
    }
    let vat: Vec<VatLine> = stored_vat_lines(&debit.detail)?
        .into_iter()
        .map(|l| VatLine { rate: l.rate, net: -l.net, vat: -l.vat })
        .collect();
    detail["vat"] = vat_json(&vat);
    detail["credited_cdr"] = Value::String(debit.id.clone());
    let n = tx
        .exec(
            "INSERT INTO cdrs (id, site_id, transaction_uid, kind, revision, credits, reason, customer_id, id_tag, \
                 station, evse, connector, tariff_id, time_zone, currency, start_date_time, end_date_time, \
                 meter_start_wh, meter_stop_wh, total_energy_kwh, total_time_h, total_parking_time_h, \
                 total_cost_excl_vat, total_cost_incl_vat, detail, created_at) \
             VALUES ($1, $2, $3, 'credit', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                 $19, $20, $21, $22, $23, $24, $25) \
             ON CONFLICT DO NOTHING",
            &[
                id.as_str().into(),
                debit.site_id.as_str().into(),
                debit.transaction_uid.as_str().into(),
                debit.revision.into(),
                debit.id.as_str().into(),
                reason.into(),
                debit.customer_id.as_deref().into(),
                debit.id_tag.as_deref().into(),
                debit.station.as_str().into(),
                debit.evse.into(),
                debit.connector.into(),
                debit.tariff_id.as_str().into(),
                debit.time_zone.as_str().into(),
                debit.currency.as_str().into(),
                debit.start_date_time.into(),
                debit.end_date_time.into(),
                debit.meter_start_wh.into(),
                debit.meter_stop_wh.into(),
                (-debit.total_energy_kwh).to_string().into(),
                (-debit.total_time_h).to_string().into(),
                (-debit.total_parking_time_h).to_string().into(),
                (-debit.total_cost_excl_vat).to_string().into(),
                Val::from(debit.total_cost_incl_vat.map(|v| (-v).to_string())),
                detail.to_string().into(),
                now.into(),
            ],
        )
        .await?;
    Ok((n == 1).then_some(id))
}

/// The CDR query with `$tail` (WHERE, ORDER, LIMIT) appended.
macro_rules! concat_select {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.site_id, c.transaction_uid, c.kind, c.revision, c.credits, c.reason, \
             c.customer_id, c.id_tag, c.station, c.evse, c.connector, c.tariff_id, c.time_zone, c.currency, \
             c.start_date_time, c.end_date_time, c.meter_start_wh, c.meter_stop_wh, c.total_energy_kwh, \
             c.total_time_h, c.total_parking_time_h, c.total_cost_excl_vat, c.total_cost_incl_vat, c.detail, \
             c.created_at, i.invoice_id FROM cdrs c LEFT JOIN invoice_cdrs i ON i.cdr_id = c.id ",
            $tail
        )
    };
}

const CDR_COLUMNS: [Ty; 27] = [
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Int,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Int,
    Ty::Int,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Time,
    Ty::Time,
    Ty::Int,
    Ty::Int,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Time,
    Ty::Text,
];

fn cdr_from_row(r: &Row) -> Result<Cdr, DbError> {
    let text = |i: usize, what: &str| {
        r.text(i).map(str::to_owned).ok_or_else(|| DbError::Data(format!("cdrs.{what} is NULL")))
    };
    let time = |i: usize, what: &str| r.time(i).ok_or_else(|| DbError::Data(format!("cdrs.{what} is NULL")));
    let int = |i: usize, what: &str| r.int(i).ok_or_else(|| DbError::Data(format!("cdrs.{what} is NULL")));
    let detail_text = text(24, "detail")?;
    let detail: Value =
        serde_json::from_str(&detail_text).map_err(|e| DbError::Data(format!("a CDR's detail is not JSON: {e}")))?;
    Ok(Cdr {
        id: text(0, "id")?,
        site_id: text(1, "site_id")?,
        transaction_uid: text(2, "transaction_uid")?,
        kind: text(3, "kind")?,
        revision: int(4, "revision")?,
        credits: r.text(5).map(str::to_owned),
        reason: r.text(6).map(str::to_owned),
        customer_id: r.text(7).map(str::to_owned),
        id_tag: r.text(8).map(str::to_owned),
        station: text(9, "station")?,
        evse: r.int(10),
        connector: r.int(11),
        tariff_id: text(12, "tariff_id")?,
        time_zone: text(13, "time_zone")?,
        currency: text(14, "currency")?,
        start_date_time: time(15, "start_date_time")?,
        end_date_time: time(16, "end_date_time")?,
        meter_start_wh: int(17, "meter_start_wh")?,
        meter_stop_wh: int(18, "meter_stop_wh")?,
        total_energy_kwh: parse_decimal(r.text(19), "cdrs.total_energy_kwh")?,
        total_time_h: parse_decimal(r.text(20), "cdrs.total_time_h")?,
        total_parking_time_h: parse_decimal(r.text(21), "cdrs.total_parking_time_h")?,
        total_cost_excl_vat: parse_decimal(r.text(22), "cdrs.total_cost_excl_vat")?,
        total_cost_incl_vat: parse_decimal_opt(r.text(23), "cdrs.total_cost_incl_vat")?,
        detail,
        created_at: time(25, "created_at")?,
        invoice_id: r.text(26).map(str::to_owned),
    })
}

/// One CDR.
pub async fn get(store: &Store, id: &str) -> Result<Option<Cdr>, DbError> {
    const SQL: &str = concat_select!("WHERE c.id = $1");
    store.fetch_opt(SQL, &[id.into()], &CDR_COLUMNS).await?.map(|r| cdr_from_row(&r)).transpose()
}

/// A CDR in a transaction (to credit it).
pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<Cdr>, DbError> {
    const SQL: &str = concat_select!("WHERE c.id = $1");
    tx.fetch_opt(SQL, &[id.into()], &CDR_COLUMNS).await?.map(|r| cdr_from_row(&r)).transpose()
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct CdrFilter {
    pub site: Option<String>,
    pub customer: Option<String>,
    pub transaction_uid: Option<String>,
    /// Sessions that ended at or after.
    pub from: Option<DateTime<Utc>>,
    /// ... and before.
    pub to: Option<DateTime<Utc>>,
}

/// CDRs by end time, newest first (`limit + 1` rows).
pub async fn list(store: &Store, f: &CdrFilter, page: Page) -> Result<Vec<Cdr>, DbError> {
    const SQL: &str = concat_select!(
        "WHERE ($1 IS NULL OR c.site_id = $1) AND ($2 IS NULL OR c.customer_id = $2) \
         AND ($3 IS NULL OR c.transaction_uid = $3) \
         AND ($4 IS NULL OR c.end_date_time >= $4) AND ($5 IS NULL OR c.end_date_time < $5) \
         ORDER BY c.end_date_time DESC, c.id LIMIT $6 OFFSET $7"
    );
    let args: Vec<Val> = vec![
        f.site.as_deref().into(),
        f.customer.as_deref().into(),
        f.transaction_uid.as_deref().into(),
        f.from.into(),
        f.to.into(),
        (page.limit + 1).into(),
        page.offset.into(),
    ];
    store.fetch(SQL, &args, &CDR_COLUMNS).await?.iter().map(cdr_from_row).collect()
}

/// Credits a debit CDR by hand (a refund, a goodwill gesture): a credit CDR with the
/// reason. The session is not priced again.
pub async fn credit(store: &Store, id: &str, reason: &str, now: DateTime<Utc>) -> Result<Cdr, BillingError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(BillingError::Invalid("reason must not be empty: say why the CDR is credited".into()));
    }
    let mut tx = store.begin().await?;
    let Some(debit) = get_in(&mut tx, id).await? else {
        tx.rollback().await?;
        return Err(BillingError::NotFound(format!("no CDR {id:?}")));
    };
    if debit.kind != "debit" {
        tx.rollback().await?;
        return Err(BillingError::Conflict(format!("CDR {id:?} is a credit; only a debit can be credited")));
    }
    let Some(credit_id) = insert_credit(&mut tx, &debit, reason, now).await? else {
        tx.rollback().await?;
        return Err(BillingError::Conflict(format!("CDR {id:?} is already credited")));
    };
    tx.commit().await?;
    get(store, &credit_id).await?.ok_or_else(|| BillingError::NotFound(format!("no CDR {credit_id:?}")))
}
