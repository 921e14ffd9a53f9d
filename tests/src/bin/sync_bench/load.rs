//! Many sites at once: the hub's ingest (each site publishes its `EventBatch`es on its
//! own `up/events`, with its own credentials, as fast as the hub's acks allow), and the
//! raw broker baselines on the same embedded broker with the same payloads (the same
//! sites publishing on `up/bench`, which the hub does not subscribe to, to one
//! subscriber logged in as the hub; and one publisher to one subscriber).

use super::batches::Batch;
use super::flow::{self, Conn, SendOutcome, SendPlan};
use super::hub::Hub;
use anyhow::{Context as _, Result};
use shared_model::sync::{Ack, TOPIC_ROOT, Topic, Window};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// A provisioned site with its batches and its connection (subscribed to its acks).
pub struct Site {
    pub id: String,
    pub batches: Arc<Vec<Batch>>,
    pub conn: Conn,
    acks: Option<mpsc::UnboundedReceiver<(usize, Option<Window>)>>,
}

/// The topic the baselines publish on (a site may publish under its `up/`; the hub only
/// subscribes to `up/events`, `up/hello` and `up/status`).
pub fn bench_topic(site: &str) -> String {
    format!("{TOPIC_ROOT}/{site}/up/bench")
}

/// Connects every site with its own credentials, subscribed to its acks.
pub async fn connect_sites(hub: &Hub, creds: &[(String, String)], batches: &[Arc<Vec<Batch>>]) -> Result<Vec<Site>> {
    let mut set = JoinSet::new();
    for (i, ((id, password), batches)) in creds.iter().zip(batches).enumerate() {
        let (id, password, batches, broker) = (id.clone(), password.clone(), batches.clone(), hub.broker);
        set.spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let lasts: Vec<u64> = batches.iter().map(|b| b.last_seq).collect();
            let on_ack = move |p: rumqttc::Publish| {
                if let Ok(ack) = serde_json::from_slice::<Ack>(&p.payload) {
                    // Batches fully covered by the cumulative ack.
                    let _ = tx.send((lasts.partition_point(|last| *last <= ack.applied_through), ack.window));
                }
            };
            let conn = flow::connect(broker, &id, &id, &password, Some(Topic::Acks.of(&id)), on_ack).await?;
            anyhow::Ok((i, Site { id, batches, conn, acks: Some(rx) }))
        });
    }
    let mut sites: Vec<Option<Site>> = (0..creds.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, site) = joined.context("connecting task")??;
        if let Some(slot) = sites.get_mut(i) {
            *slot = Some(site);
        }
    }
    Ok(sites.into_iter().flatten().collect())
}

/// The figures of one run of many senders.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub senders: usize,
    /// Batches and events in the streams (first sends, not resends).
    pub batches: u64,
    pub events: u64,
    pub bytes: u64,
    /// From the start signal to the last answer; `None` when it did not finish in time.
    pub seconds: Option<f64>,
    pub published: u64,
    pub go_backs: u64,
    pub answered: u64,
}

impl Run {
    pub fn per_second(&self, n: u64) -> Option<f64> {
        self.seconds.filter(|s| *s > 0.0).map(|s| n as f64 / s)
    }
}

struct Job {
    client: rumqttc::AsyncClient,
    topic: String,
    batches: Arc<Vec<Batch>>,
    answered: mpsc::UnboundedReceiver<(usize, Option<Window>)>,
}

async fn run_jobs(label: &str, jobs: Vec<Job>, plan: SendPlan) -> Result<Run> {
    let mut run = Run { senders: jobs.len(), ..Run::default() };
    for job in &jobs {
        run.batches += job.batches.len() as u64;
        run.events += job.batches.iter().map(|b| b.events).sum::<u64>();
        run.bytes += job.batches.iter().map(|b| b.bytes() as u64).sum::<u64>();
    }
    let (go_tx, go) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for job in jobs {
        set.spawn(flow::send(job.client, job.topic, job.batches, plan, job.answered, go.clone(), progress.clone()));
    }
    let ticker = {
        let (progress, label, total) = (progress.clone(), label.to_owned(), run.batches);
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let n = progress.load(Ordering::Relaxed);
                eprintln!("  {label}: {n}/{total} batches answered after {:.0} s", started.elapsed().as_secs_f64());
            }
        })
    };
    let t0 = Instant::now();
    let _ = go_tx.send(true);
    let mut last: Option<Instant> = Some(t0);
    while let Some(joined) = set.join_next().await {
        let out: SendOutcome = joined.context("sender task")??;
        run.published += out.published;
        run.go_backs += out.go_backs;
        run.answered += out.answered as u64;
        last = match (last, out.done_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    ticker.abort();
    run.seconds = last.map(|t| t.duration_since(t0).as_secs_f64());
    Ok(run)
}

/// Every site publishes its batches on `up/events`; answered by the hub's acks.
pub async fn ingest(sites: &mut [Site], plan: SendPlan) -> Result<Run> {
    let mut jobs = Vec::new();
    for site in sites.iter_mut() {
        let answered = site.acks.take().context("a site's acks are consumed once")?;
        jobs.push(Job {
            client: site.conn.client.clone(),
            topic: Topic::Events.of(&site.id),
            batches: site.batches.clone(),
            answered,
        });
    }
    run_jobs("ingest", jobs, plan).await
}

/// A subscriber logged in as the hub, counting what arrives per topic.
async fn subscriber(
    hub: &Hub,
    filter: String,
    topics: Vec<String>,
) -> Result<(Conn, Vec<mpsc::UnboundedReceiver<(usize, Option<Window>)>>)> {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in &topics {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        receivers.push(rx);
    }
    let index: HashMap<String, usize> = topics.into_iter().enumerate().map(|(i, t)| (t, i)).collect();
    let mut counts = vec![0usize; senders.len()];
    let on_publish = move |p: rumqttc::Publish| {
        if let Some(&i) = index.get(&p.topic)
            && let (Some(count), Some(tx)) = (counts.get_mut(i), senders.get(i))
        {
            *count += 1;
            let _ = tx.send((*count, None));
        }
    };
    let client_id = format!("syncbench-sub-{}", super::batches::unique_id());
    let conn =
        flow::connect(hub.broker, &client_id, &hub.hub_user, &hub.hub_password, Some(filter), on_publish).await?;
    Ok((conn, receivers))
}

/// Baseline: every site publishes its batches (`rounds` times over) on its `up/bench`;
/// one subscriber.
pub async fn raw_fan_in(hub: &Hub, sites: &[Site], rounds: usize, plan: SendPlan) -> Result<Run> {
    let topics: Vec<String> = sites.iter().map(|s| bench_topic(&s.id)).collect();
    let (_sub, receivers) = subscriber(hub, format!("{TOPIC_ROOT}/+/up/bench"), topics.clone()).await?;
    let jobs = sites
        .iter()
        .zip(topics)
        .zip(receivers)
        .map(|((site, topic), answered)| Job {
            client: site.conn.client.clone(),
            topic,
            batches: Arc::new(site.batches.iter().cloned().cycle().take(site.batches.len() * rounds).collect()),
            answered,
        })
        .collect();
    run_jobs("raw, sites -> 1", jobs, plan).await
}

/// Baseline: one publisher (a site's credentials) sends `batches` on its `up/bench`;
/// one subscriber.
pub async fn raw_one_to_one(
    hub: &Hub,
    creds: &(String, String),
    batches: Arc<Vec<Batch>>,
    plan: SendPlan,
) -> Result<Run> {
    let (site, password) = creds;
    let topic = bench_topic(site);
    let (_sub, mut receivers) = subscriber(hub, topic.clone(), vec![topic.clone()]).await?;
    let answered = receivers.pop().context("the subscriber's counter")?;
    let publisher = flow::connect(hub.broker, site, site, password, None, |_| {}).await?;
    let job = Job { client: publisher.client.clone(), topic, batches, answered };
    run_jobs("raw, 1 -> 1", vec![job], plan).await
}
