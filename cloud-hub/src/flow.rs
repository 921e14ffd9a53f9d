//! Flow control of the sites' uploads: how much each site may have in flight (batches it
//! sent that no ack covers yet), given with every ack as a [`Window`].
//!
//! Why: a site's batch waits in the broker until the hub has applied it. If every site
//! kept its own full window in flight, a hub behind its database would make the broker
//! hold `sites x window x batch` bytes; past what the broker keeps (rumqttd drops the
//! oldest part of its log, Mosquitto its queue beyond `max_queued_messages`) batches are
//! lost, and every site that lost one waits an ack timeout before it resends. With
//! grants, all sites together keep within one budget, the broker never overflows, and
//! a busy hub slows the sites down instead.
//!
//! - The budget (`[mqtt] inflight_budget_bytes` / `inflight_budget_batches`) is shared
//!   evenly among the sites *sending*: those that sent a hello or a batch within the last
//!   [`ACTIVE_FOR`].
//! - The ack of a hello grants one batch of at most [`SLOW_START_BYTES`] (a slow start:
//!   when many sites reconnect at once, none of them is given the whole budget before
//!   the others are counted). The acks of batches grant the fair share.
//! - Replicas count the sites they see; with `n` replicas behind one broker give each
//!   `1/n` of what the broker can hold.

use shared_model::sync::Window;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A site counts as sending for this long after its last hello or batch.
pub const ACTIVE_FOR: Duration = Duration::from_secs(10);
/// The most the ack of a hello grants.
pub const SLOW_START_BYTES: u64 = 64 * 1024;
/// The least a share is, in bytes (a batch of a few events).
pub const MIN_SHARE_BYTES: u64 = 8 * 1024;

/// The budget and who shares it.
#[derive(Debug)]
pub struct Flow {
    budget_bytes: u64,
    budget_batches: u32,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Flow {
    pub fn new(budget_bytes: u64, budget_batches: u32) -> Flow {
        Flow { budget_bytes, budget_batches: budget_batches.max(1), seen: Mutex::new(HashMap::new()) }
    }

    /// The grant for `site`'s next ack (after a hello: the slow start); notes that the
    /// site is sending.
    pub fn grant(&self, site: &str, after_hello: bool, now: Instant) -> Window {
        let sending = self.note(site, now);
        let share = Window {
            batches: (self.budget_batches / sending).max(1),
            bytes: (self.budget_bytes / u64::from(sending)).max(MIN_SHARE_BYTES),
        };
        if after_hello { Window { batches: 1, bytes: share.bytes.min(SLOW_START_BYTES) } } else { share }
    }

    /// Records `site` as sending at `now`; returns how many sites are (at least 1).
    fn note(&self, site: &str, now: Instant) -> u32 {
        let Ok(mut seen) = self.seen.lock() else {
            return 1;
        };
        match seen.get_mut(site) {
            Some(at) => *at = now,
            None => {
                seen.insert(site.to_owned(), now);
            }
        }
        seen.retain(|_, at| now.saturating_duration_since(*at) < ACTIVE_FOR);
        u32::try_from(seen.len()).unwrap_or(u32::MAX).max(1)
    }

    /// How many sites are sending now.
    pub fn sending(&self, now: Instant) -> usize {
        self.seen
            .lock()
            .map(|s| s.values().filter(|at| now.saturating_duration_since(**at) < ACTIVE_FOR).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_site_gets_the_budget_after_its_slow_start() {
        let f = Flow::new(32 * 1024 * 1024, 800);
        let now = Instant::now();
        assert_eq!(f.grant("a", true, now), Window { batches: 1, bytes: SLOW_START_BYTES });
        assert_eq!(f.grant("a", false, now), Window { batches: 800, bytes: 32 * 1024 * 1024 });
    }

    #[test]
    fn sites_share_and_idle_ones_drop_out() {
        let f = Flow::new(1_000_000, 100);
        let t0 = Instant::now();
        for s in ["a", "b", "c", "d"] {
            f.grant(s, false, t0);
        }
        assert_eq!(f.grant("a", false, t0), Window { batches: 25, bytes: 250_000 });
        assert_eq!(f.sending(t0), 4);
        // b, c and d stop sending; a goes on.
        let later = t0 + ACTIVE_FOR + Duration::from_secs(1);
        assert_eq!(f.grant("a", false, later), Window { batches: 100, bytes: 1_000_000 });
        assert_eq!(f.sending(later), 1);
    }

    #[test]
    fn a_share_never_falls_below_one_batch_of_a_few_events() {
        let f = Flow::new(10_000, 5);
        let now = Instant::now();
        for i in 0..100 {
            f.grant(&format!("s{i}"), false, now);
        }
        assert_eq!(f.grant("s0", false, now), Window { batches: 1, bytes: MIN_SHARE_BYTES });
    }

    proptest! {
        /// What the sites sending together are granted never exceeds the budget (when
        /// the budget allows every site its minimum share).
        #[test]
        fn grants_together_stay_within_the_budget(
            sites in 1usize..300,
            budget_kib in 8u64 * 300..100_000,
            batches in 300u32..5000,
            hello_mask in proptest::collection::vec(any::<bool>(), 300),
        ) {
            let budget = budget_kib * 1024;
            let f = Flow::new(budget, batches);
            let now = Instant::now();
            let names: Vec<String> = (0..sites).map(|i| format!("site-{i}")).collect();
            for n in &names {
                f.grant(n, true, now);
            }
            let mut bytes = 0u64;
            let mut count = 0u64;
            for (i, n) in names.iter().enumerate() {
                let w = f.grant(n, hello_mask[i], now);
                bytes += w.bytes;
                count += u64::from(w.batches);
            }
            prop_assert!(bytes <= budget, "{bytes} > {budget}");
            prop_assert!(count <= u64::from(batches), "{count} > {batches}");
        }
    }
}
