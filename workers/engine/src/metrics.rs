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
    /// Since when its main loop waits on the broker in one step (a publish, confirms, an ack), in ms since the
    /// epoch; 0 while it does not. Such a wait takes milliseconds, unless the broker blocks publishers (an
    /// alarm, which the heartbeat does not count) or never answers (a confirm lapin never settles, say): then
    /// the process beats on while its work stands still, and its heartbeat says for how long.
    pub waiting_since_ms: AtomicU64,
}

/// A wait on the broker, timed by [`Counters::waiting_since_ms`] until it is dropped.
pub struct BrokerWait<'a>(&'a Counters);

impl Drop for BrokerWait<'_> {
    fn drop(&mut self) {
        self.0.waiting_since_ms.store(0, Ordering::Relaxed);
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

    /// The main loop starts waiting on the broker, until the returned guard is dropped.
    pub fn waiting_on_broker(&self) -> BrokerWait<'_> {
        self.waiting_since_ms.store(now_ms().max(1), Ordering::Relaxed);
        BrokerWait(self)
    }

    /// How long the main loop has waited on the broker in its current step, if it is waiting; `blocked` (the
    /// broker blocks this connection's publishers: an alarm) starts the clock again, since that wait is the
    /// broker's, not the node's.
    pub fn stuck_for(&self, blocked: bool) -> Option<std::time::Duration> {
        let since = self.waiting_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let now = now_ms();
        if blocked {
            // Only if it still waits in the same step.
            let _ = self.waiting_since_ms.compare_exchange(since, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
            return Some(std::time::Duration::ZERO);
        }
        Some(std::time::Duration::from_millis(now.saturating_sub(since)))
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
