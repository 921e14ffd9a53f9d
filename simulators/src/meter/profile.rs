//! The building's base load over a day: [`LoadProfile`], read from a small CSV file.
//!
//! Format: one point per line, `time,l1_a,l2_a,l3_a`, with `time` as `HH:MM` (or
//! `HH:MM:SS`) in `00:00..=23:59:59` and the current per phase in A (negative means the
//! building exports on that phase, e.g. PV). The header line `time,l1_a,l2_a,l3_a` is
//! optional; `#` starts a comment; blank lines are ignored. Times must be strictly
//! increasing. Between points the current is interpolated linearly, and after the last
//! point it runs towards the first point of the next day, so a profile wraps around
//! midnight. A single point is a constant load.
//!
//! ```text
//! # office building
//! time,l1_a,l2_a,l3_a
//! 00:00,10,9,11
//! 12:00,40,34,37
//! 22:30,11,10,12
//! ```

use std::path::Path;

use chrono::{NaiveTime, Timelike};

/// Seconds in a day.
pub(crate) const DAY_S: f64 = 86_400.0;

/// The built-in profile's CSV text: an office building, 10–40 A per phase.
pub const OFFICE_PROFILE_CSV: &str = include_str!("office.csv");

/// A profile file (or text) that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ProfileError {
    /// The file, or the origin name given to [`LoadProfile::from_csv`].
    pub origin: String,
    /// 1-based line, when the error is about one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

/// Base load per phase over a day: time of day → [L1, L2, L3] in A, interpolated
/// linearly and wrapping around midnight.
///
/// File format (CSV): one point per line, `time,l1_a,l2_a,l3_a`, with `time` as `HH:MM`
/// (or `HH:MM:SS`) in `00:00..=23:59:59` and the current per phase in A (negative means
/// the building exports on that phase, e.g. PV). The header line `time,l1_a,l2_a,l3_a` is
/// optional; `#` starts a comment; blank lines are ignored. Times must be strictly
/// increasing. After the last point the current runs towards the first point of the next
/// day. A single point is a constant load.
///
/// ```text
/// # office building
/// time,l1_a,l2_a,l3_a
/// 00:00,10,9,11
/// 12:00,40,34,37
/// 22:30,11,10,12
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProfile {
    /// (seconds since midnight, amps per phase), strictly increasing, never empty.
    points: Vec<(f64, [f64; 3])>,
}

impl LoadProfile {
    /// The built-in office building: about 10 A per phase at night, 35–40 A around noon.
    pub fn office() -> LoadProfile {
        // The text is checked by a unit test; the fallback only keeps this infallible.
        LoadProfile::from_csv(OFFICE_PROFILE_CSV, "built-in office profile")
            .unwrap_or_else(|_| LoadProfile::constant([10.0, 9.0, 11.0]))
    }

    /// The same current on each phase all day.
    pub fn constant(amps: [f64; 3]) -> LoadProfile {
        LoadProfile { points: vec![(0.0, amps)] }
    }

    /// A profile from points (time of day, [L1, L2, L3] A). Fails on no points, repeated
    /// times or non-finite currents; the points may come in any order.
    pub fn try_from_points(points: impl IntoIterator<Item = (NaiveTime, [f64; 3])>) -> Result<Self, ProfileError> {
        let error = |reason: String| ProfileError { origin: "profile points".into(), line: None, reason };
        let mut points: Vec<(f64, [f64; 3])> = points.into_iter().map(|(t, a)| (seconds_of(t), a)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.is_empty() {
            return Err(error("no points".into()));
        }
        if let Some(w) = points.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(error(format!("time {} appears twice", format_seconds(w[0].0))));
        }
        if let Some((t, _)) = points.iter().find(|(_, a)| a.iter().any(|x| !x.is_finite())) {
            return Err(error(format!("the currents at {} are not finite numbers", format_seconds(*t))));
        }
        Ok(LoadProfile { points })
    }

    /// Parses the CSV format described on [`LoadProfile`]. `origin` names the source in errors.
    pub fn from_csv(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let error = |line: usize, reason: String| ProfileError { origin: origin.to_owned(), line: Some(line), reason };
        let mut points: Vec<(f64, [f64; 3])> = Vec::new();
        let mut seen_data = false;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split(',').map(str::trim).collect();
            if !seen_data && fields.first().is_some_and(|f| f.eq_ignore_ascii_case("time")) {
                let header: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
                if header != ["time", "l1_a", "l2_a", "l3_a"] {
                    return Err(error(line, format!("header must be \"time,l1_a,l2_a,l3_a\", found \"{content}\"")));
                }
                seen_data = true;
                continue;
            }
            seen_data = true;
            let [time, l1, l2, l3] = fields.as_slice() else {
                return Err(error(line, format!("expected 4 fields time,l1_a,l2_a,l3_a, found {}", fields.len())));
            };
            let seconds = parse_time(time).ok_or_else(|| {
                error(line, format!("time \"{time}\" is not HH:MM or HH:MM:SS between 00:00 and 23:59:59"))
            })?;
            let mut amps = [0.0; 3];
            for ((slot, field), name) in amps.iter_mut().zip([l1, l2, l3]).zip(["l1_a", "l2_a", "l3_a"]) {
                *slot = field
                    .parse::<f64>()
                    .ok()
                    .filter(|a| a.is_finite())
                    .ok_or_else(|| error(line, format!("{name} \"{field}\" is not a number of amperes")))?;
            }
            if let Some((previous, _)) = points.last()
                && seconds <= *previous
            {
                return Err(error(
                    line,
                    format!("time {time} is not after the previous point ({})", format_seconds(*previous)),
                ));
            }
            points.push((seconds, amps));
        }
        if points.is_empty() {
            return Err(ProfileError { origin: origin.to_owned(), line: None, reason: "no data lines".into() });
        }
        Ok(LoadProfile { points })
    }

    /// Reads and parses a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ProfileError {
            origin: origin.clone(),
            line: None,
            reason: format!("cannot read: {err}"),
        })?;
        LoadProfile::from_csv(&text, &origin)
    }

    /// The points as (time of day, [L1, L2, L3] A), in time order.
    pub fn points(&self) -> Vec<(NaiveTime, [f64; 3])> {
        self.points.iter().map(|(s, a)| (time_of(*s), *a)).collect()
    }

    /// The current per phase at `time` of day (A).
    pub fn at(&self, time: NaiveTime) -> [f64; 3] {
        self.at_seconds(seconds_of(time))
    }

    /// The current per phase `seconds` after midnight (A). Any value is taken modulo one
    /// day, so a running clock can be passed without wrapping it first.
    pub fn at_seconds(&self, seconds: f64) -> [f64; 3] {
        let s = if seconds.is_finite() { seconds.rem_euclid(DAY_S) } else { 0.0 };
        let (first, last) = match (self.points.first(), self.points.last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => return [0.0; 3],
        };
        // Index of the first point after `s`.
        let next = self.points.partition_point(|(t, _)| *t <= s);
        let ((t0, a0), (t1, a1)) = if next == 0 || next == self.points.len() {
            // Before the first or after the last point: the segment across midnight.
            (last, (first.0 + DAY_S, first.1))
        } else {
            (self.points[next - 1], self.points[next])
        };
        let span = t1 - t0;
        if span <= 0.0 {
            // A single point: constant.
            return a0;
        }
        let frac = ((s - t0).rem_euclid(DAY_S) / span).clamp(0.0, 1.0);
        [0, 1, 2].map(|p| a0[p] + (a1[p] - a0[p]) * frac)
    }
}

impl Default for LoadProfile {
    /// [`LoadProfile::office`].
    fn default() -> Self {
        LoadProfile::office()
    }
}

/// Seconds since midnight of a time of day.
pub(crate) fn seconds_of(time: NaiveTime) -> f64 {
    f64::from(time.num_seconds_from_midnight()) + f64::from(time.nanosecond().min(999_999_999)) * 1e-9
}

/// The time of day `seconds` after midnight (taken modulo one day).
pub(crate) fn time_of(seconds: f64) -> NaiveTime {
    let s = if seconds.is_finite() { seconds.rem_euclid(DAY_S) } else { 0.0 };
    // 0 <= s < 86400: the casts cannot truncate meaningfully.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (whole, nanos) = (s.floor() as u32, ((s - s.floor()) * 1e9) as u32);
    NaiveTime::from_num_seconds_from_midnight_opt(whole.min(86_399), nanos.min(999_999_999)).unwrap_or(NaiveTime::MIN)
}

fn format_seconds(seconds: f64) -> String {
    time_of(seconds).format("%H:%M:%S").to_string()
}

fn parse_time(text: &str) -> Option<f64> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |s: &str| (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok())?;
    let (h, m, s) = match parts.as_slice() {
        [h, m] => (number(h)?, number(m)?, 0),
        [h, m, s] => (number(h)?, number(m)?, number(s)?),
        _ => return None,
    };
    (h < 24 && m < 60 && s < 60).then(|| f64::from(h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
    }

    fn close(a: [f64; 3], b: [f64; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    fn profile(text: &str) -> LoadProfile {
        match LoadProfile::from_csv(text, "test.csv") {
            Ok(p) => p,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn the_office_profile_parses_and_stays_between_10_and_40_a() {
        let office = match LoadProfile::from_csv(OFFICE_PROFILE_CSV, "office.csv") {
            Ok(p) => p,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(office, LoadProfile::office());
        for minute in 0..(24 * 60) {
            let amps = office.at_seconds(f64::from(minute) * 60.0);
            assert!(amps.iter().all(|a| (9.0..=40.0).contains(a)), "{minute}: {amps:?}");
        }
        assert!(office.at(t(3, 0))[0] < 11.0);
        assert!(office.at(t(12, 0))[0] >= 39.9);
    }

    #[test]
    fn interpolates_linearly_between_points() {
        let p = profile("time,l1_a,l2_a,l3_a\n06:00,10,20,30\n08:00,30,20,10\n20:00,10,10,10\n");
        assert!(close(p.at(t(6, 0)), [10.0, 20.0, 30.0]));
        assert!(close(p.at(t(7, 0)), [20.0, 20.0, 20.0]));
        assert!(close(p.at(t(7, 30)), [25.0, 20.0, 15.0]));
        assert!(close(p.at(t(8, 0)), [30.0, 20.0, 10.0]));
        assert!(close(p.at(t(14, 0)), [20.0, 15.0, 10.0]));
    }

    #[test]
    fn wraps_around_midnight() {
        // 20:00 -> 06:00 next day is 10 h: 10 A -> 0 A, with 00:00 at 4/10 of the way.
        let p = profile("06:00,0,0,0\n12:00,50,50,50\n20:00,10,20,30\n");
        assert!(close(p.at(t(20, 0)), [10.0, 20.0, 30.0]));
        assert!(close(p.at(t(0, 0)), [6.0, 12.0, 18.0]));
        assert!(close(p.at(t(1, 0)), [5.0, 10.0, 15.0]));
        assert!(close(p.at(t(23, 0)), [7.0, 14.0, 21.0]));
        assert!(close(p.at_seconds(5.0 * 3600.0), [1.0, 2.0, 3.0]));
        // A running clock need not be wrapped by the caller.
        assert!(close(p.at_seconds(DAY_S + 3600.0), p.at(t(1, 0))));
        assert!(close(p.at_seconds(-DAY_S + 3600.0), p.at(t(1, 0))));
    }

    #[test]
    fn one_point_is_constant() {
        let p = profile("12:00,7,8,9");
        assert!(close(p.at(t(0, 0)), [7.0, 8.0, 9.0]));
        assert!(close(p.at(t(18, 45)), [7.0, 8.0, 9.0]));
        assert!(close(LoadProfile::constant([1.0, 2.0, 3.0]).at(t(9, 9)), [1.0, 2.0, 3.0]));
    }

    #[test]
    fn comments_blank_lines_and_seconds_are_accepted() {
        let p = profile("# site A\n\n time , l1_a , l2_a , l3_a \n00:00:30, 1, 2, 3 # night\n\n12:00,-5,0,0\n");
        assert_eq!(p.points().len(), 2);
        assert_eq!(p.points()[0].0, NaiveTime::from_hms_opt(0, 0, 30).unwrap_or(NaiveTime::MIN));
        assert!(close(p.at(t(12, 0)), [-5.0, 0.0, 0.0]));
    }

    #[test]
    fn bad_files_say_where_and_why() {
        let err = |text: &str| LoadProfile::from_csv(text, "p.csv").err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err("time,a,b,c\n"), "p.csv:1: header must be \"time,l1_a,l2_a,l3_a\", found \"time,a,b,c\"");
        assert_eq!(err("00:00,1,2\n"), "p.csv:1: expected 4 fields time,l1_a,l2_a,l3_a, found 3");
        assert_eq!(
            err("00:00,1,2,3\n24:00,1,2,3\n"),
            "p.csv:2: time \"24:00\" is not HH:MM or HH:MM:SS between 00:00 and 23:59:59"
        );
        assert_eq!(err("7:00,1,2,3\n"), "p.csv:1: time \"7:00\" is not HH:MM or HH:MM:SS between 00:00 and 23:59:59");
        assert_eq!(err("\n\n08:00,1,x,3\n"), "p.csv:3: l2_a \"x\" is not a number of amperes");
        assert_eq!(err("08:00,1,2,NaN\n"), "p.csv:1: l3_a \"NaN\" is not a number of amperes");
        assert_eq!(err("08:00,1,2,3\n08:00,1,2,3\n"), "p.csv:2: time 08:00 is not after the previous point (08:00:00)");
        assert_eq!(err("# nothing\ntime,l1_a,l2_a,l3_a\n"), "p.csv: no data lines");
        let missing = LoadProfile::load(Path::new("/does/not/exist.csv")).err().map(|e| e.to_string());
        assert!(missing.is_some_and(|m| m.starts_with("/does/not/exist.csv: cannot read:")));
    }

    #[test]
    fn points_can_be_given_in_any_order_but_not_twice() {
        let p = LoadProfile::try_from_points([(t(12, 0), [2.0; 3]), (t(0, 0), [1.0; 3])]);
        assert_eq!(p.map(|p| p.points()), Ok(vec![(t(0, 0), [1.0; 3]), (t(12, 0), [2.0; 3])]));
        let twice = LoadProfile::try_from_points([(t(1, 0), [2.0; 3]), (t(1, 0), [1.0; 3])]);
        assert_eq!(twice.err().map(|e| e.reason), Some("time 01:00:00 appears twice".into()));
        assert!(LoadProfile::try_from_points([]).is_err());
    }
}
