//! One live process per node, enforced by the node itself, whoever started it.
//!
//! A node's folder holds two files:
//! - `node.lock`: the live incarnation holds an exclusive `flock` on it for its whole life (the kernel drops it
//!   when the process dies, however it dies) and writes its pid in it;
//! - `incarnation`: a counter that every starting process increments first, announcing itself as the newest.
//!
//! A starting process announces itself, then waits for the lock. An older process that still runs (stopped and
//! resumed, or started by an orchestrator that could not reach it) sees the counter pass its own number and
//! stops at once, before writing or acking anything more; only then does the newer one get the lock and read
//! the folder. So two processes of one node never both write its state, and the old one steps aside rather than
//! starving the new one.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// The name of the lock file in a node's folder.
pub const LOCK_FILE: &str = "node.lock";
/// The name of the incarnation counter in a node's folder.
pub const COUNTER_FILE: &str = "incarnation";

/// How often a live incarnation looks for a newer one.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// This process's claim on a node's folder.
#[derive(Debug)]
pub struct Incarnation {
    dir: PathBuf,
    number: u64,
    _lock: Flock<File>,
}

fn lock_error(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Increments the folder's counter (under a lock of its own) and returns the new value.
fn announce(dir: &Path) -> io::Result<u64> {
    let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join(COUNTER_FILE))?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| lock_error(e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let number = bytes.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) + 1;
    file.write_all_at(&number.to_le_bytes(), 0)?;
    Ok(number)
}

fn read_counter(dir: &Path) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    File::open(dir.join(COUNTER_FILE))?.read_exact_at(&mut bytes, 0)?;
    Ok(u64::from_le_bytes(bytes))
}

/// The pid the holder of a node's lock wrote, if it is there.
pub fn lock_holder_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(LOCK_FILE)).ok()?.trim().parse().ok()
}

/// Whether a live process holds the lock of the node folder `dir` (then its pid, as it wrote it).
pub fn held(dir: &Path) -> Option<Option<u32>> {
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err(_) => Some(lock_holder_pid(dir)),
    }
}

impl Incarnation {
    /// Claims the node folder `dir` (created if missing): announces this process as its newest incarnation, then
    /// waits until no older one holds the folder.
    pub async fn claim(dir: &Path) -> io::Result<Incarnation> {
        std::fs::create_dir_all(dir)?;
        let number = announce(dir)?;
        let mut waiting_since = None;
        let lock = loop {
            let file =
                OpenOptions::new().create(true).truncate(false).read(true).write(true).open(dir.join(LOCK_FILE))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if waiting_since.is_none() {
                        let holder = lock_holder_pid(dir);
                        warn!(dir = %dir.display(), ?holder, "an older incarnation of this node still runs: waiting for it to stop");
                        waiting_since = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((_, e)) => return Err(lock_error(e)),
            }
        };
        let mut lock = lock;
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        if let Some(since) = waiting_since {
            info!(dir = %dir.display(), waited = ?since.elapsed(), "the older incarnation stopped: this one takes over");
        }
        Ok(Incarnation { dir: dir.to_owned(), number, _lock: lock })
    }

    /// Whether a newer incarnation of this node has announced itself (it waits for this one to stop).
    pub fn replaced(&self) -> bool {
        read_counter(&self.dir).is_ok_and(|newest| newest > self.number)
    }

    /// Exits the process at once if a newer incarnation has announced itself: what a node calls before each
    /// step that writes its state or acks its input.
    pub fn step_aside_if_replaced(&self) {
        if self.replaced() {
            error!(dir = %self.dir.display(), "a newer incarnation of this node started: stopping without touching anything");
            std::process::exit(0);
        }
    }

    /// Checks every 250 ms, in the background, whether a newer incarnation announced itself, and exits the
    /// process at once if so (a node woken from a long pause finds out within one tick).
    pub fn watch(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            loop {
                tick.tick().await;
                me.step_aside_if_replaced();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_claim_waits_and_the_older_learns_it_was_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = Incarnation::claim(dir.path()).await.unwrap();
        assert!(!first.replaced());
        assert_eq!(held(dir.path()), Some(Some(std::process::id())));
        let second = tokio::spawn({
            let dir = dir.path().to_owned();
            async move { Incarnation::claim(&dir).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the newer one waits while the older holds the folder");
        assert!(first.replaced(), "the older one sees the newer one's announcement");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(2), second).await.unwrap().unwrap();
        assert!(!second.replaced());
        drop(second);
        assert_eq!(held(dir.path()), None, "nobody holds it once both are gone");
    }
}
