//! Which sites just changed, for the dashboard's server-sent events: the sync worker
//! calls [`changed`] after it commits a batch, every open `/events` stream listens.
//!
//! One channel per process: a notice only says "look again at this site", so a stream
//! that hears of a site it does not show (or of a site of another hub in the same test
//! process) re-reads nothing.

use std::sync::OnceLock;
use tokio::sync::broadcast;

fn channel() -> &'static broadcast::Sender<String> {
    static CHANNEL: OnceLock<broadcast::Sender<String>> = OnceLock::new();
    CHANNEL.get_or_init(|| broadcast::channel(1024).0)
}

/// Tells the open streams that `site`'s data changed (no-op without listeners).
pub fn changed(site: &str) {
    let _ = channel().send(site.to_owned());
}

/// A receiver of the site ids that change from now on.
pub fn subscribe() -> broadcast::Receiver<String> {
    channel().subscribe()
}
