//! The process under test: spawning it, learning its ports from its ready line, keeping
//! its output drained, sampling its memory and CPU, stopping it; and the small HTTP GET
//! the persistence check needs.

use super::stats::{cpu_ticks, rss_kib};
use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Lines kept from the child's stdout and stderr, for error reports.
const KEPT_LINES: usize = 40;

/// A spawned server process whose output is drained in the background.
pub struct Server {
    child: Child,
    pid: u32,
    /// The JSON (or address) after the ready marker.
    pub ready: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// Keeps the last lines of a child's stream so it never blocks on a full pipe.
fn drain<R: AsyncRead + Unpin + Send + 'static>(stream: R, tail: Arc<Mutex<VecDeque<String>>>, name: &'static str) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if t.len() >= KEPT_LINES {
                t.pop_front();
            }
            t.push_back(format!("[{name}] {line}"));
        }
    });
}

impl Server {
    /// Spawns `program args…` and waits (at most `wait`) for a stdout line starting with
    /// `marker`; what follows the marker is [`Server::ready`].
    pub async fn spawn(program: &Path, args: &[&str], marker: &str, wait: Duration) -> Result<Server, String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("the child exited at once")?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, tail.clone(), "stderr");
        }
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + wait;
        let ready = loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    if let Some(rest) = line.trim().strip_prefix(marker) {
                        break rest.trim().to_string();
                    }
                    let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
                    if t.len() >= KEPT_LINES {
                        t.pop_front();
                    }
                    t.push_back(format!("[stdout] {line}"));
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = child.wait().await.map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "{} ended before {marker} ({status}):\n{}",
                        program.display(),
                        tail_text(&tail)
                    ));
                }
                Err(_) => {
                    let _ = child.start_kill();
                    return Err(format!("no {marker} line within {wait:?}:\n{}", tail_text(&tail)));
                }
            }
        };
        drain(lines.into_inner().into_inner(), tail.clone(), "stdout");
        Ok(Server { child, pid, ready, tail })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines of output.
    pub fn tail(&self) -> String {
        tail_text(&self.tail)
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (through `kill(1)`: this workspace forbids `unsafe`), then SIGKILL after
    /// `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await;
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    tail.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect::<Vec<_>>().join("\n")
}

/// One probe of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub rss_kib: u64,
    pub cpu_ticks: u64,
}

/// Samples a process's RSS and CPU every `period` until stopped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, period: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            // Bounded by the caller, who stops it; a day of samples at most regardless.
            for _ in 0..(86_400_000 / period.as_millis().max(1)) {
                tick.tick().await;
                let (Some(rss), Some(cpu)) = (rss_kib(pid), cpu_ticks(pid)) else { break };
                s.lock().unwrap_or_else(PoisonError::into_inner).push(Sample {
                    at: Instant::now(),
                    rss_kib: rss,
                    cpu_ticks: cpu,
                });
            }
        });
        Sampler { samples, task }
    }

    /// Stops and returns the samples.
    pub fn stop(self) -> Vec<Sample> {
        self.task.abort();
        self.samples.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Peak RSS, RSS at the end of the window, and CPU as % of one core over `[from, to]`.
pub fn summarize(samples: &[Sample], from: Instant, to: Instant, ticks_per_s: u64) -> (u64, u64, f64) {
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let nearest = |t: Instant| samples.iter().min_by_key(|s| if s.at > t { s.at - t } else { t - s.at }).copied();
    let (Some(a), Some(b)) = (nearest(from), nearest(to)) else { return (peak, 0, 0.0) };
    let secs = (b.at.max(a.at) - a.at).as_secs_f64();
    let cpu = if secs > 0.0 {
        (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / ticks_per_s as f64 / secs * 100.0
    } else {
        0.0
    };
    (peak, b.rss_kib, cpu)
}

/// `GET http://{addr}{path}` over a plain TCP socket (HTTP/1.1, `Connection: close`);
/// returns (status, body). Handles chunked bodies. At most `timeout` overall.
pub async fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.take(16 << 20).read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        parse_http_response(&buf)
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| format!("GET {path}: timeout"))?
}

fn parse_http_response(buf: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    // Bounded: each round consumes at least one line.
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(parse_http_response(plain), Ok((200, "{\"a\":1}".to_string())));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked), Ok((200, "{\"a\":1}".to_string())));
        assert!(parse_http_response(b"garbage").is_err());
    }

    #[test]
    fn summarizes_samples() {
        let t0 = Instant::now();
        let s =
            |ms: u64, rss: u64, cpu: u64| Sample { at: t0 + Duration::from_millis(ms), rss_kib: rss, cpu_ticks: cpu };
        let samples = [s(0, 100, 0), s(1000, 300, 50), s(2000, 200, 100)];
        let (peak, end, cpu) = summarize(&samples, t0, t0 + Duration::from_secs(2), 100);
        assert_eq!((peak, end), (300, 200));
        assert!((cpu - 50.0).abs() < 1e-9);
    }
}
