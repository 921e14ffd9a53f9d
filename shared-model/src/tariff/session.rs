//! What the engine prices: a session as a timeline of measurements.

use super::TariffError;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

/// A cumulative energy register reading (OCPP `Energy.Active.Import.Register`), in Wh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterReading {
    pub at: DateTime<Utc>,
    pub energy_wh: Decimal,
}

/// A measured value that holds from `at` until the next sample (power in W, or current in A
/// summed over all phases, as OCPI's `min_current`/`max_current` are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub value: Decimal,
}

/// A reservation that preceded the session (or expired without one).
///
/// OCPI: "A reservation starts when the reservation is made, and ends when the drivers starts
/// charging on the reserved EVSE/Location, or when the reservation expires."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The reservation expired without a charging session following it; tariff elements
    /// restricted to `RESERVATION_EXPIRES` then apply.
    pub expired: bool,
}

/// One charging session as the engine sees it.
///
/// Energy between two meter readings is taken to flow at a constant rate; a stretch where the
/// register does not move is not charging, so `PARKING_TIME` applies to it and `TIME` does
/// not (OCPI: `TIME` is "time charging", `PARKING_TIME` "time not charging").
///
/// Restriction evaluation uses `time_zone`, the location's IANA zone (OCPI Location
/// `time_zone`), so time-of-day windows, dates and days of the week follow local clocks
/// through daylight-saving changes. Times are used at millisecond precision.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub time_zone: Tz,
    /// Sorted by time; the first at `start` and the last at `end` (OCPP meterStart/meterStop).
    pub meter: Vec<MeterReading>,
    /// Optional power samples in W; without them, power is the average of each meter interval.
    pub power_w: Vec<Sample>,
    /// Optional current samples in A summed over phases; without them, current restrictions
    /// never match (the engine cannot tell whether they hold).
    pub current_a: Vec<Sample>,
    pub reservation: Option<Reservation>,
    /// The currency the CDR is to be billed in, if the caller wants it checked against the tariff.
    pub currency: Option<String>,
}

/// Resolves an IANA zone name such as `Europe/Amsterdam`.
pub fn parse_time_zone(name: &str) -> Result<Tz, TariffError> {
    name.parse::<Tz>().map_err(|_| TariffError::UnknownTimeZone(name.to_owned()))
}

impl Session {
    /// A session from `start` to `end` at a location in the IANA zone `time_zone`, with its
    /// meter readings. Checks the zone name; [`Session::validate`] checks the rest.
    pub fn try_new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        time_zone: &str,
        meter: Vec<MeterReading>,
    ) -> Result<Self, TariffError> {
        let session = Session {
            start,
            end,
            time_zone: parse_time_zone(time_zone)?,
            meter,
            power_w: Vec::new(),
            current_a: Vec::new(),
            reservation: None,
            currency: None,
        };
        session.validate()?;
        Ok(session)
    }

    /// Adds power samples (W).
    pub fn with_power(mut self, samples: Vec<Sample>) -> Self {
        self.power_w = samples;
        self
    }

    /// Adds current samples (A, summed over phases).
    pub fn with_current(mut self, samples: Vec<Sample>) -> Self {
        self.current_a = samples;
        self
    }

    /// Adds the reservation that preceded the session.
    pub fn with_reservation(mut self, reservation: Reservation) -> Self {
        self.reservation = Some(reservation);
        self
    }

    /// Asks the engine to check the tariff's currency.
    pub fn with_currency(mut self, currency: &str) -> Self {
        self.currency = Some(currency.to_owned());
        self
    }

    /// Checks the timeline: end not before start, meter readings in order, covering the
    /// session and never going backwards, samples in order, reservation before the session.
    pub fn validate(&self) -> Result<(), TariffError> {
        if self.end < self.start {
            return Err(TariffError::EndBeforeStart { start: self.start, end: self.end });
        }
        let (Some(first), Some(last)) = (self.meter.first(), self.meter.last()) else {
            return Err(TariffError::MeterDoesNotCoverSession { start: self.start, end: self.end });
        };
        if first.at != self.start || last.at != self.end {
            return Err(TariffError::MeterDoesNotCoverSession { start: self.start, end: self.end });
        }
        for pair in self.meter.windows(2) {
            if pair[1].at < pair[0].at {
                return Err(TariffError::OutOfOrder { what: "meter readings", at: pair[1].at });
            }
            if pair[1].at == pair[0].at && pair[1].energy_wh != pair[0].energy_wh {
                return Err(TariffError::MeterJump { at: pair[1].at });
            }
            if pair[1].energy_wh < pair[0].energy_wh {
                return Err(TariffError::MeterWentBackwards {
                    at: pair[1].at,
                    from_wh: pair[0].energy_wh,
                    to_wh: pair[1].energy_wh,
                });
            }
        }
        for (what, samples) in [("power samples", &self.power_w), ("current samples", &self.current_a)] {
            for pair in samples.windows(2) {
                if pair[1].at < pair[0].at {
                    return Err(TariffError::OutOfOrder { what, at: pair[1].at });
                }
            }
            if let Some(s) = samples.iter().find(|s| s.value.is_sign_negative() && !s.value.is_zero()) {
                return Err(TariffError::NegativeSample { what, at: s.at });
            }
        }
        if let Some(r) = &self.reservation {
            if r.end < r.start {
                return Err(TariffError::EndBeforeStart { start: r.start, end: r.end });
            }
            if r.expired {
                if self.end > self.start || last.energy_wh > first.energy_wh {
                    return Err(TariffError::ExpiredReservationWithCharging);
                }
            } else if r.end > self.start {
                return Err(TariffError::ReservationOverlapsSession {
                    reservation_end: r.end,
                    session_start: self.start,
                });
            }
        }
        Ok(())
    }
}
