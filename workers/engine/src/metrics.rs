//! What a process counts about itself: messages and bytes in and out, sessions open, peak memory. The runtime,
//! the gateway and the publisher bump the counters; heartbeats report them; the console and the benchmark read
//! them back from the beats.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a node's runtime bumps and its heartbeat reports.
#[derive(Debug, Default)]
pub struct Counters {
    pub consumed_messages: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Rows of the data batches consumed (a stage replica's input).
    pub consumed_rows: AtomicU64,
    pub published_messages: AtomicU64,
    pub published_bytes: AtomicU64,
    /// Rows of the data batches published (a stage's output; the gateway's: the clients' input).
    pub published_rows: AtomicU64,
    /// Time spent handling input, from a group's first delivery to its ack, in microseconds.
    pub busy_micros: AtomicU64,
    pub open_sessions: AtomicU64,
    /// When this process consumed its first message (ms since the epoch; 0 until then).
    pub first_input_ms: AtomicU64,
    /// The waits on the broker under way (a publish, confirms, an ack), each with when it began (on the
    /// monotonic clock). Such a wait takes milliseconds, unless the broker blocks publishers (an alarm, which the
    /// heartbeat does not count) or never answers (a confirm lapin never settles, say): then the process beats
    /// on while its work stands still, and its heartbeat says for how long. A replica waits once at a time; the
    /// gateway, once per session.
    waits: std::sync::Mutex<BrokerWaits>,
}

#[derive(Debug, Default)]
struct BrokerWaits {
    next: u64,
    /// When each wait began, on the monotonic clock: a wall clock that jumps (NTP, a hand) must not make a wait
    /// look an hour long, or the monitors restart a node that merely publishes.
    since: std::collections::BTreeMap<u64, std::time::Instant>,
}

/// A wait on the broker, timed until it is dropped (see [`Counters::waiting_on_broker`]).
pub struct BrokerWait<'a> {
    counters: &'a Counters,
    id: u64,
}

impl Drop for BrokerWait<'_> {
    fn drop(&mut self) {
        self.counters.waits.lock().expect("waits lock").since.remove(&self.id);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Counters {
    pub fn consumed(&self, bytes: usize) {
        if self.consumed_messages.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_input_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.consumed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn published(&self, bytes: usize) {
        self.published_messages.fetch_add(1, Ordering::Relaxed);
        self.published_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A wait on the broker begins, until the returned guard is dropped.
    pub fn waiting_on_broker(&self) -> BrokerWait<'_> {
        let mut waits = self.waits.lock().expect("waits lock");
        let id = waits.next;
        waits.next += 1;
        waits.since.insert(id, std::time::Instant::now());
        BrokerWait { counters: self, id }
    }

    /// How long the oldest wait on the broker under way has lasted, if one is; `blocked` (the broker blocks this
    /// connection's publishers: an alarm) starts every wait's clock again, since that time is the broker's, not
    /// the node's.
    pub fn stuck_for(&self, blocked: bool) -> Option<std::time::Duration> {
        let mut waits = self.waits.lock().expect("waits lock");
        let now = std::time::Instant::now();
        if blocked {
            waits.since.values_mut().for_each(|since| *since = now);
        }
        let oldest = waits.since.values().min()?;
        Some(now.duration_since(*oldest))
    }

    pub fn busy(&self, spent: std::time::Duration) {
        self.busy_micros.fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn consumed_rows(&self, rows: usize) {
        self.consumed_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn published_rows(&self, rows: usize) {
        self.published_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// The totals so far, and the peak memory of process `pid`.
    pub fn work(&self, pid: u32) -> Work {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Work {
            consumed_messages: load(&self.consumed_messages),
            consumed_bytes: load(&self.consumed_bytes),
            consumed_rows: load(&self.consumed_rows),
            published_messages: load(&self.published_messages),
            published_bytes: load(&self.published_bytes),
            published_rows: load(&self.published_rows),
            busy_micros: load(&self.busy_micros),
            open_sessions: load(&self.open_sessions),
            peak_rss_kib: peak_rss_kib(pid),
        }
    }
}

/// What a node has done since its process started, as its heartbeat reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    pub consumed_messages: u64,
    pub consumed_bytes: u64,
    #[serde(default)]
    pub consumed_rows: u64,
    pub published_messages: u64,
    pub published_bytes: u64,
    #[serde(default)]
    pub published_rows: u64,
    /// Time spent handling input, in microseconds (stage replicas).
    #[serde(default)]
    pub busy_micros: u64,
    pub open_sessions: u64,
    /// Peak resident memory of the process, in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

/// The peak resident memory of a process in KiB, from `/proc/<pid>/status` (0 where unavailable).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_of_this_process_is_known() {
        assert!(peak_rss_kib(std::process::id()) > 0);
        assert_eq!(peak_rss_kib(u32::MAX), 0);
    }
}
