//! Finding each charger's setpoint in the previous allocation: by position when the
//! charger list is unchanged (the common case, O(1)), by id otherwise.

use super::allocation::{Allocation, MeterState, NodeUsage, Setpoint};
use super::model::Site;
use std::collections::BTreeMap;

pub(crate) struct Previous<'a> {
    allocation: Option<&'a Allocation>,
    setpoints: &'a [Setpoint],
    /// `Some(map)` when the positions differ from the site's.
    by_id: Option<BTreeMap<&'a str, usize>>,
}

impl<'a> Previous<'a> {
    pub(crate) fn new(previous: Option<&'a Allocation>, site: &Site) -> Previous<'a> {
        let setpoints = previous.map_or(&[][..], |a| &a.setpoints[..]);
        let aligned = setpoints.len() == site.chargers().len()
            && setpoints.iter().zip(site.chargers()).all(|(s, c)| s.charger == c.id);
        let by_id = (!aligned).then(|| setpoints.iter().enumerate().map(|(i, s)| (s.charger.as_str(), i)).collect());
        Previous { allocation: previous, setpoints, by_id }
    }

    /// The previous setpoint of the site's charger `i`.
    pub(crate) fn get(&self, i: usize, id: &str) -> Option<&'a Setpoint> {
        match &self.by_id {
            None => self.setpoints.get(i),
            Some(map) => map.get(id).and_then(|&j| self.setpoints.get(j)),
        }
    }

    /// The non-EV load the previous run measured at node `i` (tree position) if it had a
    /// fresh meter reading there and no newer reading than `reading_at_ms` has come since:
    /// the meter reading was then paired with the EV draws of its own time, while the EV
    /// draws now may be newer than the reading (and subtracting them would hide load).
    pub(crate) fn held_non_ev(&self, i: usize, id: &str, reading_at_ms: u64) -> Option<[f64; 3]> {
        let a = self.allocation?;
        if reading_at_ms > a.computed_at_ms {
            return None;
        }
        self.non_ev(i, id)
    }

    /// The non-EV load the previous run measured at node `i` if its meter was fresh then.
    pub(crate) fn non_ev(&self, i: usize, id: &str) -> Option<[f64; 3]> {
        let a = self.allocation?;
        let usage: &NodeUsage = match a.nodes.get(i) {
            Some(n) if n.node.as_str() == id => n,
            _ => a.nodes.iter().find(|n| n.node.as_str() == id)?,
        };
        (usage.meter == MeterState::Fresh).then_some(usage.non_ev_a)
    }
}
