//! MQTT clients over the hub's embedded broker (rumqttc, as the edge agent uses it) and
//! the sender loop both the ingest and the raw baseline run: publish a stream of encoded
//! batches, QoS 1, keeping at most `window` of them unanswered, where "answered" is the
//! hub's cumulative ack (ingest) or the subscriber's receipt (raw). When nothing is
//! answered for `ack_timeout` the sender goes back to the first unanswered batch and
//! sends again from there (the edge agent's go-back-N), and counts it. Like the agent,
//! a sender keeps within the hub's flow-control grant (the `window` of its acks; for the
//! raw baseline a fixed grant, the fair share the hub would give): at most
//! `min(window, grant.batches)` batches and `grant.bytes` bytes in flight, one batch
//! always.

use super::batches::Batch;
use anyhow::{Context as _, Result, bail};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS};
use shared_model::sync::Window;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Large enough for any batch the bench makes (the broker enforces its own limit).
const MAX_PACKET: usize = 64 * 1024 * 1024;

/// A connected client; its event loop runs in its own task until the value is dropped.
pub struct Conn {
    pub client: AsyncClient,
    task: JoinHandle<()>,
    /// Why the connection last failed, if it did.
    pub last_error: watch::Receiver<Option<String>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects as `user` and subscribes to `filter` (again after every reconnect); every
/// PUBLISH that arrives goes to `on_publish`. Returns once the subscription is granted.
pub async fn connect(
    broker: SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
    filter: Option<String>,
    mut on_publish: impl FnMut(Publish) + Send + 'static,
) -> Result<Conn> {
    let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_credentials(user, password);
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (ready_tx, mut ready) = watch::channel(false);
    let (error_tx, last_error) = watch::channel(None);
    let sub = client.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => match &filter {
                    Some(f) => {
                        if let Err(e) = sub.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            let _ = error_tx.send(Some(format!("subscribe: {e}")));
                        }
                    }
                    None => {
                        let _ = ready_tx.send(true);
                    }
                },
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        let _ = error_tx.send(Some("the broker refused the subscription".to_owned()));
                    } else {
                        let _ = ready_tx.send(true);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => on_publish(p),
                Ok(_) => {}
                Err(e) => {
                    let _ = ready_tx.send(false);
                    let _ = error_tx.send(Some(e.to_string()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let conn = Conn { client, task, last_error };
    let ok = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok());
    if !ok {
        bail!("{client_id} did not connect to {broker} (last error: {:?})", conn.last_error.borrow().clone());
    }
    Ok(conn)
}

/// What one sender did.
#[derive(Debug, Clone, Default)]
pub struct SendOutcome {
    /// When the last batch was answered (`None`: not within the deadline).
    pub done_at: Option<Instant>,
    /// Batches published, resends included.
    pub published: u64,
    /// Go-backs after `ack_timeout` without an answer.
    pub go_backs: u64,
    /// Batches answered.
    pub answered: usize,
}

/// How a sender runs.
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    pub window: usize,
    /// The grant until an answer brings one.
    pub grant: Option<Window>,
    pub ack_timeout: Duration,
    pub deadline: Instant,
}

/// Publishes `batches[i]` on `topic` in order once `go` turns true. `answered` says how
/// many batches from the start are answered (cumulative, never less than before), and
/// the grant that came with the answer, if any.
/// `progress` counts answered batches over all senders (for the progress line).
pub async fn send(
    client: AsyncClient,
    topic: String,
    batches: Arc<Vec<Batch>>,
    plan: SendPlan,
    mut answered: mpsc::UnboundedReceiver<(usize, Option<Window>)>,
    mut go: watch::Receiver<bool>,
    progress: Arc<AtomicU64>,
) -> Result<SendOutcome> {
    let mut out = SendOutcome::default();
    go.wait_for(|g| *g).await.context("the start signal")?;
    let total = batches.len();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut last_progress = Instant::now();
    let mut silent = 0u32;
    let mut grant = plan.grant;
    loop {
        while next < total {
            let Some(batch) = batches.get(next) else { break };
            if next > done {
                let most = grant.map_or(plan.window, |g| plan.window.min(g.batches as usize));
                let bytes: u64 = batches.get(done..next).map_or(0, |b| b.iter().map(|b| b.bytes() as u64).sum());
                if next - done >= most || grant.is_some_and(|g| bytes + batch.bytes() as u64 > g.bytes) {
                    break;
                }
            }
            client
                .publish_bytes(topic.clone(), QoS::AtLeastOnce, false, batch.message.payload.clone())
                .await
                .context("queueing a publish")?;
            out.published += 1;
            next += 1;
        }
        if done >= total {
            out.done_at = Some(Instant::now());
            break;
        }
        // The edge agent's wait: doubled while nothing is answered, up to 8 times.
        let wait = plan.ack_timeout * (1u32 << silent.min(3));
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std((last_progress + wait).min(plan.deadline)));
        tokio::select! {
            n = answered.recv() => {
                let Some((n, window)) = n else { break };
                if window.is_some() {
                    grant = window;
                }
                if n > done {
                    progress.fetch_add((n - done) as u64, Ordering::Relaxed);
                    done = n.min(total);
                    next = next.max(done);
                    last_progress = Instant::now();
                    silent = 0;
                }
            }
            _ = timer => {
                if Instant::now() >= plan.deadline {
                    break;
                }
                out.go_backs += 1;
                silent += 1;
                next = done;
                last_progress = Instant::now();
            }
        }
    }
    out.answered = done;
    Ok(out)
}
