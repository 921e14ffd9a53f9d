//! The hub's decoding alone, on one core, with no broker and no database: what
//! `cloud_hub::ingest::parse_batch` and the typed event of every envelope cost. It bounds
//! what any ingest into any database can reach with these payloads on one core.

use super::batches::Batch;
use anyhow::{Context as _, Result, bail};
use std::sync::Arc;
use std::time::Instant;

/// Events and seconds of decoding every batch `rounds` times.
pub struct Decoded {
    pub events: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Decoded {
    pub fn per_second(&self, n: u64) -> Option<f64> {
        (self.seconds > 0.0).then(|| n as f64 / self.seconds)
    }
}

/// Decodes each site's batches as the hub does, on the calling thread.
pub fn decode(site_ids: &[String], site_batches: &[Arc<Vec<Batch>>], rounds: usize) -> Result<Decoded> {
    let (mut events, mut bytes) = (0u64, 0u64);
    let t = Instant::now();
    for _ in 0..rounds.max(1) {
        for (site, batches) in site_ids.iter().zip(site_batches) {
            for b in batches.iter() {
                let batch = cloud_hub::ingest::parse_batch(site, &b.message.payload)
                    .with_context(|| format!("a batch of {site}"))?;
                for envelope in &batch.events {
                    if envelope.event().is_err() {
                        bail!("event {} of {site} does not decode", envelope.seq);
                    }
                }
                events += batch.events.len() as u64;
                bytes += b.bytes() as u64;
            }
        }
    }
    Ok(Decoded { events, bytes, seconds: t.elapsed().as_secs_f64() })
}
