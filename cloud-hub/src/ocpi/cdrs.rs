//! The CDRs module, Sender interface (OCPI 2.2.1 "CDRs module").
//!
//! Every CDR billing issues (table `cdrs`: debits, and credits that cancel them) for a
//! roaming session — its id tag is a partner's, see [`super::sessions::owner`] — at a
//! site published as a Location becomes one OCPI CDR (table `ocpi_cdrs`), built once and
//! never changed, like the CDR it carries: our price exactly as billing computed it
//! (`total_cost` with and without VAT, each cost dimension, `total_energy`, `total_time`,
//! `total_parking_time`, the charging periods, the tariff as it was), our country code
//! and party id on it and on the tariff. The OCPI CDR's id is billing's CDR id; a credit
//! CDR has `credit: true` and `credit_reference_id` = the CDR it cancels, its amounts as
//! billing negated them, and billing's reason as `remark`. `last_updated` is when billing
//! issued it.
//!
//! Each new OCPI CDR is POSTed to the owner's cdrs Receiver endpoint through the durable
//! outbox ([`super::push`]), queued in the same transaction that stores it; the
//! partner's `Location` answer header is kept (`ocpi_cdrs.partner_location`). `GET cdrs`
//! serves the calling partner's CDRs, paginated by `last_updated`.

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use shared_model::ocpi::{Cdr, CdrLocation, GeoLocation, parse_timestamp, timestamp};
use shared_model::tariff::{CdrDimension, CdrDimensionType, ChargingPeriod, Price, Tariff};

use super::locations::{Meta, evse_uid};
use super::push::{self, Push};
use super::sessions::{self, Owner, Table};
use super::transport::{OcpiError, OcpiResult, PageRequest};
use super::{CallerExt, OcpiState, Settings};
use crate::billing::{parse_decimal, parse_decimal_opt};
use crate::db::{DbError, Row, Store, Ty};

#[derive(Deserialize)]
struct PriceText {
    excl_vat: String,
    #[serde(default)]
    incl_vat: Option<String>,
}

#[derive(Deserialize)]
struct DimensionText {
    #[serde(rename = "type")]
    dimension: CdrDimensionType,
    volume: String,
}

#[derive(Deserialize)]
struct PeriodText {
    start_date_time: String,
    #[serde(default)]
    tariff_id: Option<String>,
    #[serde(default)]
    dimensions: Vec<DimensionText>,
}

#[derive(Deserialize, Default)]
struct TotalsText {
    #[serde(default)]
    total_fixed_cost: Option<PriceText>,
    #[serde(default)]
    total_energy_cost: Option<PriceText>,
    #[serde(default)]
    total_time_cost: Option<PriceText>,
    #[serde(default)]
    total_parking_cost: Option<PriceText>,
    #[serde(default)]
    total_reservation_cost: Option<PriceText>,
}

#[derive(Deserialize)]
struct DetailText {
    #[serde(default)]
    tariff: Option<Box<RawValue>>,
    #[serde(default)]
    charging_periods: Vec<PeriodText>,
    #[serde(default)]
    totals: TotalsText,
}

/// A CDR's `detail` (as billing stores it: decimals as text) read exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Detail {
    pub tariff: Option<Tariff>,
    pub periods: Vec<ChargingPeriod>,
    pub fixed: Option<Price>,
    pub energy: Option<Price>,
    pub time: Option<Price>,
    pub parking: Option<Price>,
    pub reservation: Option<Price>,
}

impl Detail {
    /// Parses billing's detail JSON text; what does not parse is a data error.
    pub fn parse(text: &str) -> Result<Detail, DbError> {
        let bad = |what: String| DbError::Data(format!("a CDR's detail: {what}"));
        let d: DetailText = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let dec = |s: &str, what: &str| s.parse::<Decimal>().map_err(|e| bad(format!("{what} {s:?}: {e}")));
        let price = |p: &Option<PriceText>, what: &str| -> Result<Option<Price>, DbError> {
            p.as_ref()
                .map(|p| {
                    Ok(Price {
                        excl_vat: dec(&p.excl_vat, what)?,
                        incl_vat: p.incl_vat.as_deref().map(|v| dec(v, what)).transpose()?,
                    })
                })
                .transpose()
        };
        let tariff = match &d.tariff {
            Some(raw) if raw.get().trim() != "null" => {
                Some(serde_json::from_str::<Tariff>(raw.get()).map_err(|e| bad(format!("tariff: {e}")))?)
            }
            _ => None,
        };
        let mut periods = Vec::with_capacity(d.charging_periods.len());
        for p in &d.charging_periods {
            let start = parse_timestamp(&p.start_date_time)
                .ok_or_else(|| bad(format!("start_date_time {:?}", p.start_date_time)))?;
            let dimensions = p
                .dimensions
                .iter()
                .map(|x| Ok(CdrDimension { dimension: x.dimension, volume: dec(&x.volume, "volume")? }))
                .collect::<Result<Vec<_>, DbError>>()?;
            periods.push(ChargingPeriod { start_date_time: start, dimensions, tariff_id: p.tariff_id.clone() });
        }
        let t = &d.totals;
        Ok(Detail {
            tariff,
            periods,
            fixed: price(&t.total_fixed_cost, "total_fixed_cost")?,
            energy: price(&t.total_energy_cost, "total_energy_cost")?,
            time: price(&t.total_time_cost, "total_time_cost")?,
            parking: price(&t.total_parking_cost, "total_parking_cost")?,
            reservation: price(&t.total_reservation_cost, "total_reservation_cost")?,
        })
    }
}

/// A billing CDR as the OCPI CDR needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BilledCdr {
    pub id: String,
    pub site_id: String,
    pub transaction_uid: String,
    pub kind: String,
    pub credits: Option<String>,
    pub reason: Option<String>,
    pub id_tag: Option<String>,
    pub station: String,
    pub evse: Option<i64>,
    pub connector: Option<i64>,
    pub currency: String,
    pub start_date_time: DateTime<Utc>,
    pub end_date_time: DateTime<Utc>,
    pub total_energy_kwh: Decimal,
    pub total_time_h: Decimal,
    pub total_parking_time_h: Decimal,
    pub total_cost: Price,
    pub detail: Detail,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: [Ty; 20] = [
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Int,
    Ty::Int,
    Ty::Text,
    Ty::Time,
    Ty::Time,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Text,
    Ty::Time,
];

fn billed_from_row(r: &Row) -> Result<BilledCdr, DbError> {
    let text = |i: usize, what: &str| {
        r.text(i).map(str::to_owned).ok_or_else(|| DbError::Data(format!("cdrs.{what} is NULL")))
    };
    let time = |i: usize, what: &str| r.time(i).ok_or_else(|| DbError::Data(format!("cdrs.{what} is NULL")));
    Ok(BilledCdr {
        id: text(0, "id")?,
        site_id: text(1, "site_id")?,
        transaction_uid: text(2, "transaction_uid")?,
        kind: text(3, "kind")?,
        credits: r.text(4).map(str::to_owned),
        reason: r.text(5).map(str::to_owned),
        id_tag: r.text(6).map(str::to_owned),
        station: text(7, "station")?,
        evse: r.int(8),
        connector: r.int(9),
        currency: text(10, "currency")?,
        start_date_time: time(11, "start_date_time")?,
        end_date_time: time(12, "end_date_time")?,
        total_energy_kwh: parse_decimal(r.text(13), "cdrs.total_energy_kwh")?,
        total_time_h: parse_decimal(r.text(14), "cdrs.total_time_h")?,
        total_parking_time_h: parse_decimal(r.text(15), "cdrs.total_parking_time_h")?,
        total_cost: Price {
            excl_vat: parse_decimal(r.text(16), "cdrs.total_cost_excl_vat")?,
            incl_vat: parse_decimal_opt(r.text(17), "cdrs.total_cost_incl_vat")?,
        },
        detail: Detail::parse(r.text(18).unwrap_or("{}"))?,
        created_at: time(19, "created_at")?,
    })
}

async fn billed(store: &Store, id: &str) -> Result<Option<BilledCdr>, DbError> {
    store
        .fetch_opt(
            "SELECT id, site_id, transaction_uid, kind, credits, reason, id_tag, station, evse, connector, currency, \
             start_date_time, end_date_time, total_energy_kwh, total_time_h, total_parking_time_h, \
             total_cost_excl_vat, total_cost_incl_vat, detail, created_at FROM cdrs WHERE id = $1",
            &[id.into()],
            &COLUMNS,
        )
        .await?
        .map(|r| billed_from_row(&r))
        .transpose()
}

/// The eMI3 EVSE id of an EVSE uid (`{country_code}*{party_id}*E{...}`, at most 48
/// characters; the uid's letters, digits and `*`).
pub fn evse_id(s: &Settings, uid: &str) -> String {
    let suffix: String =
        uid.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '*').map(|c| c.to_ascii_uppercase()).collect();
    let mut id = format!("{}*{}*E{suffix}", s.country_code, s.party_id);
    id.truncate(48);
    id
}

/// The OCPI CDR of a billing CDR of `owner`'s token at the Location `meta`; `None` when
/// the CDR names no EVSE or connector (a session whose start the hub never saw).
pub fn build(s: &Settings, c: &BilledCdr, owner: &Owner, meta: &Meta) -> Option<Cdr> {
    let uid = evse_uid(&meta.location_id, &c.station, c.evse?);
    let mut tariffs = Vec::new();
    if let Some(t) = &c.detail.tariff {
        let mut t = t.clone();
        t.country_code.clone_from(&s.country_code);
        t.party_id.clone_from(&s.party_id);
        tariffs.push(t);
    }
    let mut periods = c.detail.periods.clone();
    if periods.is_empty() {
        // OCPI wants at least one period: the whole session as one.
        periods.push(ChargingPeriod {
            start_date_time: c.start_date_time,
            dimensions: vec![
                CdrDimension { dimension: CdrDimensionType::Energy, volume: c.total_energy_kwh },
                CdrDimension { dimension: CdrDimensionType::Time, volume: c.total_time_h },
            ],
            tariff_id: tariffs.first().map(|t| t.id.clone()),
        });
    }
    let credit = c.kind == "credit";
    Some(Cdr {
        country_code: s.country_code.clone(),
        party_id: s.party_id.clone(),
        id: c.id.clone(),
        start_date_time: timestamp(c.start_date_time),
        end_date_time: timestamp(c.end_date_time),
        session_id: Some(c.transaction_uid.clone()),
        cdr_token: owner.token.clone(),
        auth_method: owner.auth_method.clone(),
        authorization_reference: owner.authorization_reference.clone(),
        cdr_location: CdrLocation {
            id: meta.location_id.clone(),
            name: meta.name.clone(),
            address: meta.address.clone(),
            city: meta.city.clone(),
            postal_code: meta.postal_code.clone(),
            country: meta.country.clone(),
            coordinates: GeoLocation { latitude: meta.latitude.clone(), longitude: meta.longitude.clone() },
            evse_id: evse_id(s, &uid),
            evse_uid: uid,
            connector_id: c.connector?.to_string(),
            connector_standard: meta.connector_standard.clone(),
            connector_format: meta.connector_format.clone(),
            connector_power_type: meta.power_type.clone(),
        },
        meter_id: None,
        currency: c.currency.clone(),
        tariffs,
        charging_periods: periods,
        total_cost: c.total_cost,
        total_fixed_cost: c.detail.fixed,
        total_energy: c.total_energy_kwh,
        total_energy_cost: c.detail.energy,
        total_time: c.total_time_h,
        total_time_cost: c.detail.time,
        total_parking_time: Some(c.total_parking_time_h),
        total_parking_cost: c.detail.parking,
        total_reservation_cost: c.detail.reservation,
        remark: if credit { c.reason.clone() } else { None },
        credit: credit.then_some(true),
        credit_reference_id: if credit { c.credits.clone() } else { None },
        last_updated: timestamp(c.created_at),
    })
}

/// Turns the new CDRs of roaming sessions (issued at or after `since`, all when `None`)
/// into OCPI CDRs and queues their POSTs; the sessions they belong to, `(site, uid)`.
pub async fn scan(state: &OcpiState, since: Option<DateTime<Utc>>) -> Result<Vec<(String, String)>, DbError> {
    let store = &state.store;
    let rows = store
        .fetch(
            "SELECT c.id FROM cdrs c \
             WHERE ($1 IS NULL OR c.created_at >= $1) AND c.id_tag IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM ocpi_cdrs o WHERE o.cdr_id = c.id) \
                 AND (EXISTS (SELECT 1 FROM ocpi_tokens t WHERE t.uid = c.id_tag) \
                     OR EXISTS (SELECT 1 FROM ocpi_authorizations a WHERE a.id_tag = c.id_tag \
                         AND a.allowed = 'ALLOWED')) \
                 AND EXISTS (SELECT 1 FROM ocpi_locations l WHERE l.site_id = c.site_id) \
             ORDER BY c.created_at, c.id",
            &[since.into()],
            &[Ty::Text],
        )
        .await?;
    let mut touched = Vec::new();
    let mut queued = false;
    for r in &rows {
        let Some(id) = r.text(0) else { continue };
        let Some(c) = billed(store, id).await? else { continue };
        let Some(id_tag) = c.id_tag.as_deref() else { continue };
        let Some(owner) = sessions::owner(store, id_tag, c.start_date_time).await? else { continue };
        let Some(meta) = sessions::location_meta(store, &c.site_id).await? else { continue };
        let Some(cdr) = build(&state.settings, &c, &owner, &meta) else {
            tracing::debug!(cdr = id, "OCPI: a CDR without EVSE or connector is not served");
            continue;
        };
        let body = serde_json::to_string(&cdr).map_err(|e| DbError::Data(format!("a CDR does not serialise: {e}")))?;
        let receiver = push::receivers(store, "cdrs").await?.into_iter().any(|p| p.id == owner.partner_id);
        let mut tx = store.begin().await?;
        let inserted = tx
            .exec(
                "INSERT INTO ocpi_cdrs (cdr_id, partner_id, body, last_updated_ms, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cdr_id) DO NOTHING",
                &[
                    c.id.as_str().into(),
                    owner.partner_id.as_str().into(),
                    body.as_str().into(),
                    c.created_at.timestamp_millis().into(),
                    Utc::now().into(),
                ],
            )
            .await?;
        if inserted == 1 && state.settings.push && receiver {
            let post =
                Push { module: "cdrs", method: Method::POST, path: String::new(), body, cdr_id: Some(c.id.clone()) };
            push::enqueue_in(&mut tx, &owner.partner_id, &post).await?;
            queued = true;
        }
        tx.commit().await?;
        if inserted == 1 {
            tracing::info!(cdr = %c.id, partner = %owner.partner_id, kind = %c.kind, "OCPI: CDR issued to the partner");
        }
        touched.push((c.site_id, c.transaction_uid));
    }
    if queued {
        state.push.wake();
    }
    Ok(touched)
}

/// `GET cdrs`: a page of the caller's CDRs by `last_updated` (`date_from` inclusive,
/// `date_to` exclusive, both optional).
pub async fn list(State(state): State<OcpiState>, caller: CallerExt, uri: Uri) -> Response {
    let inner = async {
        let page = PageRequest::parse(&uri, state.settings.max_page_limit)?;
        sessions::refresh(&state).await.map_err(|e| OcpiError::db("refreshing the CDRs", &e))?;
        sessions::page_of(&state, Table::Cdrs, &caller.partner.id, &page, "cdrs").await
    };
    let result: OcpiResult<Response> = inner.await;
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETAIL: &str = r#"{
        "totals": {
            "total_cost": {"excl_vat": "1.25", "incl_vat": "1.425"},
            "total_fixed_cost": {"excl_vat": "0.5", "incl_vat": "0.6"},
            "total_energy": "3",
            "total_energy_cost": {"excl_vat": "0.75", "incl_vat": "0.825"},
            "total_time_cost": {"excl_vat": "0", "incl_vat": null}
        },
        "charging_periods": [{"start_date_time": "2026-11-21T12:01:00Z", "tariff_id": "12",
            "dimensions": [{"type": "ENERGY", "volume": "3"}, {"type": "TIME", "volume": "0.4833"}]}],
        "vat": [],
        "tariff": {"country_code": "NL", "party_id": "XXX", "id": "12", "currency": "EUR",
            "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 1}]}],
            "last_updated": "2018-12-17T11:36:01Z"},
        "dropped_samples": 0
    }"#;

    #[test]
    fn detail_is_read_exactly() {
        let d = Detail::parse(DETAIL).expect("parses");
        assert_eq!(d.fixed.map(|p| p.excl_vat.to_string()), Some("0.5".to_owned()));
        assert_eq!(d.energy.and_then(|p| p.incl_vat).map(|v| v.to_string()), Some("0.825".to_owned()));
        assert_eq!(d.time.map(|p| p.incl_vat), Some(None));
        assert_eq!(d.periods.len(), 1);
        assert_eq!(d.periods[0].dimensions[1].volume.to_string(), "0.4833");
        let tariff = d.tariff.expect("tariff");
        assert_eq!(tariff.elements[0].price_components[0].price.to_string(), "0.25");
        assert!(Detail::parse(r#"{"charging_periods": [{"start_date_time": "soon"}]}"#).is_err());
    }

    #[test]
    fn evse_ids_are_emi3() {
        let s = Settings {
            country_code: "DE".into(),
            party_id: "SPL".into(),
            business_name: "x".into(),
            base_url: "http://h".into(),
            push: true,
            rotation_grace: chrono::Duration::seconds(1),
            max_page_limit: 10,
            command_timeout_s: 60,
            refresh_interval: std::time::Duration::from_millis(100),
            push_retry_min: std::time::Duration::from_millis(500),
            push_retry_max: std::time::Duration::from_secs(30),
            default_currency: "EUR".into(),
            realtime_auth_timeout: std::time::Duration::from_millis(1500),
            authorize_unknown_tokens: true,
            auth_rate_per_s: 5.0,
            auth_burst: 20,
        };
        assert_eq!(evse_id(&s, "depot*CP-1*1"), "DE*SPL*EDEPOT*CP1*1");
        assert_eq!(evse_id(&s, &"x".repeat(60)).len(), 48);
    }
}
