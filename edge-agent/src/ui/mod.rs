//! The installer page, served at `/` next to the JSON API: a commissioning checklist,
//! live meter readings against the circuit limits, the balancer's allocation, the chargers
//! with buttons for the common commands, and the tail of the OCPP message log.
//!
//! Rendering is server-side string building with [`render::esc`] on every value (no
//! template crate: the page is five sections and a few loops, and one renderer serves
//! both the first paint and the live updates). A small script (`/ui/app.js`) opens
//! `/ui/events`, a server-sent event stream that pushes the sections whose HTML changed
//! (as JSON `{"sections": {name: html}}`), at most four times a second, and sends the
//! command buttons' requests to the JSON API. Nothing is loaded from elsewhere, and the
//! `Content-Security-Policy` says so.
//!
//! Updates are triggered by committed station changes ([`crate::app::LiveEvent`]), meter
//! readings, the balancer loop's view, and a one-second check for what has no
//! notification of its own (message log entries such as heartbeats, the cloud link).

pub mod checklist;
pub mod render;
pub mod view;

use crate::app::Shared;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::Stream;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// At most four updates a second per client.
const MIN_GAP: Duration = Duration::from_millis(250);
/// How often to look for changes nothing notifies about.
const RECHECK: Duration = Duration::from_secs(1);

/// Scripts and styles only from this server; the event stream and the API are same-origin.
const CSP: &str = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A short hash of the assets, appended to their URLs so a new build is fetched at once
/// while the browser may cache them for a day.
fn asset_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in APP_JS.bytes().chain(APP_CSS.bytes()).chain(ICON_SVG.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{:08x}", h >> 32)
    })
}

/// The page's routes, merged into the API router.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(page))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/ui/icon.svg", get(|| async { asset("image/svg+xml", ICON_SVG) }))
        .route("/ui/events", get(events))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    match view::gather(&s).await {
        Ok(v) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            ],
            render::page(&s.config, &v, asset_version()),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "ui: reading the page's state failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the store failed; see the agent log",
            )
                .into_response()
        }
    }
}

/// The agent's shutdown signal, for the event streams (added by [`crate::api::serve`]).
#[derive(Clone)]
pub struct Shutdown(pub watch::Receiver<bool>);

/// The live stream: a full set of sections first, then the sections that changed. It
/// ends when the agent shuts down.
async fn events(
    State(s): State<Arc<Shared>>,
    shutdown: Option<Extension<Shutdown>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed::new(s, shutdown.map(|Extension(Shutdown(rx))| rx));
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<_, Infallible>(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One client's position in the stream: what it was sent last, and what wakes it.
struct Feed {
    shared: Arc<Shared>,
    live: Option<broadcast::Receiver<crate::app::LiveEvent>>,
    meters: Option<watch::Receiver<crate::meters::MeterSnapshot>>,
    control: Option<watch::Receiver<Arc<crate::control::ControlView>>>,
    sent: HashMap<&'static str, String>,
    last_sent: Option<Instant>,
    recheck: tokio::time::Interval,
    shutdown: Option<watch::Receiver<bool>>,
    closing: bool,
}

impl Feed {
    fn new(shared: Arc<Shared>, shutdown: Option<watch::Receiver<bool>>) -> Feed {
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Feed {
            live: Some(shared.live.subscribe()),
            meters: Some(shared.meters.subscribe()),
            control: Some(shared.control.subscribe()),
            shared,
            sent: HashMap::new(),
            last_sent: None,
            recheck,
            closing: shutdown.as_ref().is_some_and(|rx| *rx.borrow()),
            shutdown,
        }
    }

    /// Waits for something that may have changed the page. A source whose sender is gone
    /// is dropped (the one-second check still runs).
    async fn changed(&mut self) {
        let Feed { live, meters, control, recheck, shutdown, closing, .. } = self;
        let (has_live, has_meters, has_control) = (live.is_some(), meters.is_some(), control.is_some());
        let has_shutdown = shutdown.is_some();
        tokio::select! {
            // A dropped sender means the agent is gone too.
            _ = async { shutdown.as_mut()?.changed().await.ok() }, if has_shutdown => *closing = true,
            r = async { live.as_mut()?.recv().await.err() }, if has_live => {
                if let Some(broadcast::error::RecvError::Closed) = r {
                    *live = None;
                }
            }
            r = async { meters.as_mut()?.changed().await.ok() }, if has_meters => {
                if r.is_none() {
                    *meters = None;
                }
            }
            r = async { control.as_mut()?.changed().await.ok() }, if has_control => {
                if r.is_none() {
                    *control = None;
                }
            }
            _ = recheck.tick() => {}
        }
    }

    /// The next event: the sections that differ from what this client has; `None` once
    /// the agent shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.last_sent.is_some() {
                self.changed().await;
            }
            if self.closing {
                return None;
            }
            // Debounce: a burst of changes becomes one update.
            if let Some(at) = self.last_sent {
                tokio::time::sleep_until(at + MIN_GAP).await;
            }
            if let Some(meters) = self.meters.as_mut() {
                meters.mark_unchanged();
            }
            if let Some(control) = self.control.as_mut() {
                control.mark_unchanged();
            }
            if let Some(live) = self.live.as_mut() {
                *live = live.resubscribe();
            }
            let view = match view::gather(&self.shared).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "ui: reading the page's state failed");
                    self.last_sent = Some(Instant::now());
                    continue;
                }
            };
            let mut changed = serde_json::Map::new();
            for name in render::SECTIONS {
                let html = render::section(name, &self.shared.config, &view);
                if self.sent.get(name) != Some(&html) {
                    changed.insert(name.to_owned(), serde_json::Value::String(html.clone()));
                    self.sent.insert(name, html);
                }
            }
            let first = self.last_sent.is_none();
            self.last_sent = Some(Instant::now());
            if !changed.is_empty() || first {
                let data = serde_json::json!({ "sections": changed }).to_string();
                return Some(Event::default().event("snapshot").data(data));
            }
        }
    }
}
