//! The gateway's two sides in the simulation: each session's upload (published from the gateway's own routing,
//! its progress recorded in the gateway's own upload log on a simulated disk, and resumed from what that log
//! says after a restart), its results (admitted by the gateway's own result tracker), the purge of an abandoned
//! session (recorded in the log before it starts, finished by a restarted gateway), and the announcements that
//! renew the replicas' leases.

use super::*;
use coffee_engine::gateway::progress::UploadLog;

/// The gateway's state folder on its simulated disk.
pub(super) const GATEWAY_DIR: &str = "/sim/gateway";
/// Batches of a kind between two progress records. The real gateway records every 128; the simulated files
/// are a few dozen batches each, and a resume should land in the middle of a file.
const PROGRESS_EVERY: u64 = 4;

/// One session's upload, as the gateway publishes it.
pub(in crate::sim) struct Feed {
    pub(in crate::sim) kind: FileKind,
    /// (queue, bytes) of each message.
    pub(in crate::sim) messages: Vec<(String, Vec<u8>)>,
    /// Where each batch's messages end (a batch may be routed to several replicas).
    pub(in crate::sim) batch_ends: Vec<usize>,
    /// Where the EOFs begin: they go out only once every data message before them is confirmed.
    pub(in crate::sim) eofs_from: usize,
    pub(in crate::sim) sent: usize,
    pub(in crate::sim) confirmed: usize,
    /// The last progress recorded in the upload log: batches, and whether the file's EOFs were in.
    pub(in crate::sim) recorded: Option<(u64, bool)>,
}

impl Feed {
    /// Batches whose every message is `upto` or before.
    fn batches_before(&self, upto: usize) -> u64 {
        self.batch_ends.partition_point(|&end| end <= upto) as u64
    }

    /// Where a client resumes that the gateway's log says has `done` batches in: after them, or, with all of
    /// them in, at the EOFs (the client ends the file again; duplicate EOFs are dropped downstream).
    fn resume_at(&self, done: u64) -> usize {
        match done as usize {
            0 => 0,
            n if n >= self.batch_ends.len() => self.eofs_from,
            n => self.batch_ends[n - 1],
        }
    }
}

/// Where an abandoned session's purge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purge {
    /// Not abandoned, or its client still uploading.
    No,
    /// The client left: the gateway publishes a purge to every replica next.
    Due,
    /// Published: confirmed (and the results queue deleted) next.
    Published,
    Done,
}

/// One session: its upload, and its results as the gateway forwards them and the client keeps them.
pub(super) struct SimSession {
    pub(super) id: SessionId,
    pub(super) dataset: usize,
    pub(super) feeds: Vec<Feed>,
    /// For a session whose client leaves: how many messages it publishes before it does.
    pub(super) leaves_after: Option<usize>,
    /// The gateway vanishes with its folder when that client leaves: nobody purges the session or deletes its
    /// results queue; the stages' leases and the queue's expiry must clean up.
    pub(super) forgotten: bool,
    pub(super) purge: Purge,
    pub(super) results_queue: String,
    pub(super) tracker: InputTracker,
    pub(super) lines: Vec<String>,
    /// Results delivered to the gateway and not yet acked (the client has them).
    pub(super) holding: bool,
    /// The session's upload log, while the gateway has it open.
    pub(super) log: Option<UploadLog>,
    /// Its client had every result, and the gateway removed its log.
    pub(super) ended: bool,
}

impl World<'_> {
    /// The gateway announces the sessions it knows; every replica that runs hears it.
    pub(super) fn announce(&mut self) {
        let known: Vec<SessionId> =
            self.sessions.iter().filter(|s| s.purge == Purge::No && !s.tracker.is_complete()).map(|s| s.id).collect();
        let now = self.now();
        for r in self.replicas.iter_mut().filter(|r| !matches!(r.phase, Phase::Down)) {
            r.leases.announced(&known, now);
        }
    }

    /// The gateway publishes the next message of one of the session's files, or has what it published
    /// confirmed.
    pub(super) fn step_upload(&mut self, s: usize) {
        match self.sessions[s].purge {
            Purge::Due => return self.publish_purge(s),
            Purge::Published => {
                // Confirmed: the purge is in every replica's queue; the results queue goes.
                self.broker.confirm("gateway");
                let (id, queue) = (self.sessions[s].id, self.sessions[s].results_queue.clone());
                self.broker.delete_queue(&queue);
                self.sessions[s].purge = Purge::Done;
                self.sessions[s].log = None;
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), id);
                note!(self, "the gateway purged {} and deleted its results queue", short(id));
                return;
            }
            Purge::No | Purge::Done => {}
        }
        let sent: usize = self.sessions[s].feeds.iter().map(|f| f.sent).sum();
        if self.sessions[s].leaves_after.is_some_and(|n| sent >= n) {
            let session = &mut self.sessions[s];
            if session.forgotten {
                // The gateway vanishes with its folder: no purge, no announcement, no consumer any more.
                session.purge = Purge::Done;
                session.log = None;
                let (id, queue) = (session.id, session.results_queue.clone());
                self.broker.detach(&queue, self.step);
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), id);
                note!(
                    self,
                    "the client of {} left after {sent} messages; its gateway vanished with its folder",
                    short(id)
                );
            } else {
                // The client is gone; the gateway, past its grace, purges the session everywhere.
                session.purge = Purge::Due;
                let id = session.id;
                note!(self, "the client of {} left after {sent} messages", short(id));
            }
            return;
        }
        let publishable: Vec<usize> = self.sessions[s]
            .feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.sent < f.messages.len() && (f.sent < f.eofs_from || f.confirmed >= f.eofs_from))
            .map(|(k, _)| k)
            .collect();
        let unconfirmed = self.sessions[s].feeds.iter().any(|f| f.confirmed < f.sent);
        let confirm = publishable.is_empty() || (unconfirmed && self.rng.gen_bool(0.2));
        if confirm {
            self.broker.confirm("gateway");
            self.sessions[s].feeds.iter_mut().for_each(|f| f.confirmed = f.sent);
            return self.record_progress(s, false);
        }
        let k = publishable[self.rng.gen_range(0..publishable.len())];
        let feed = &mut self.sessions[s].feeds[k];
        let (queue, bytes) = feed.messages[feed.sent].clone();
        feed.sent += 1;
        self.broker.publish("gateway", &queue, bytes);
        if self.options.bug == Some(Bug::ProgressBeforeConfirm) {
            self.record_progress(s, true);
        }
    }

    /// Records in the session's upload log, as the gateway does once they are confirmed, every
    /// [`PROGRESS_EVERY`] batches of a kind and each kind's end (its EOFs in). `published` counts what is only
    /// published as in ([`Bug::ProgressBeforeConfirm`]).
    fn record_progress(&mut self, s: usize, published: bool) {
        let session = &mut self.sessions[s];
        let Some(log) = &mut session.log else { return };
        for feed in &mut session.feeds {
            let upto = if published { feed.sent } else { feed.confirmed };
            let ended = upto == feed.messages.len();
            let batches = if ended {
                feed.batch_ends.len() as u64
            } else {
                let before = feed.batches_before(upto.min(feed.eofs_from));
                before - before % PROGRESS_EVERY
            };
            if batches > 0 && feed.recorded.is_none_or(|(b, e)| batches > b || (ended && !e)) {
                log.record(feed.kind, batches).expect("the gateway's simulated disk does not fail");
                feed.recorded = Some((batches, ended));
            }
        }
    }

    /// The gateway restarts (its machine cut off or not): every session's log is opened again, a purge it
    /// records is finished, and each client resumes each file after what the log says is in.
    pub(super) fn restart_gateway(&mut self, power_cut: bool) -> Result<(), String> {
        let dir = Path::new(GATEWAY_DIR);
        self.sessions.iter_mut().for_each(|session| session.log = None);
        if power_cut {
            let rng = &mut self.rng;
            self.gateway_disk.crash(|_| match rng.gen_range(0..3) {
                0 => Tear::Nothing,
                1 => Tear::Everything,
                _ => Tear::Prefix(rng.gen_range(0..64)),
            });
        }
        let purging: Vec<SessionId> =
            UploadLog::sessions_on(&self.gateway_disk, dir).into_iter().filter(|(_, p)| *p).map(|(id, _)| id).collect();
        let mut marks = Vec::new();
        for (s, session) in self.sessions.iter_mut().enumerate() {
            session.holding = false;
            self.broker.consumer_lost(&format!("gateway-results-{s}"), &mut self.rng);
            if session.purge == Purge::Done || session.ended {
                continue;
            }
            let resumed = UploadLog::resume_on(&self.gateway_disk, dir, session.id)
                .map_err(|e| format!("the gateway cannot read {}'s upload log: {e}", short(session.id)))?;
            let Some((log, recovered)) = resumed else {
                return Err(format!("the gateway lost the upload log of {}, a live session", short(session.id)));
            };
            session.log = Some(log);
            if purging.contains(&session.id) || session.purge == Purge::Published {
                // A purge recorded before it began is finished at once.
                session.purge = Purge::Due;
                continue;
            }
            if session.purge != Purge::No {
                continue;
            }
            for feed in &mut session.feeds {
                let done = recovered.done.get(&feed.kind).copied().unwrap_or(0);
                let mark = feed.resume_at(done);
                marks.push(format!("{} {}: {} of {}", short(session.id), feed.kind, mark, feed.sent));
                (feed.sent, feed.confirmed) = (mark, mark);
                feed.recorded = (done > 0).then_some((done, false));
            }
        }
        let how = if power_cut { " (its machine cut off)" } else { "" };
        note!(self, "the gateway restarts{how}; uploads resume from: {}", marks.join(", "));
        Ok(())
    }

    /// The gateway tells every replica of every stage to drop an abandoned session.
    pub(super) fn publish_purge(&mut self, s: usize) {
        let id = self.sessions[s].id;
        // Recorded before it begins, so that a gateway restarted halfway finishes it.
        if let Some(log) = &mut self.sessions[s].log {
            log.record_purging().expect("the gateway's simulated disk does not fail");
        }
        for r in 0..self.replicas.len() {
            let envelope = Envelope {
                session: id,
                sender: coffee_engine::gateway::GATEWAY,
                stream: Stream::Session,
                seq: 0,
                body: Body::Purge,
            };
            let queue = self.replicas[r].queue.clone();
            self.broker.publish("gateway", &queue, envelope.encode());
        }
        self.sessions[s].purge = Purge::Published;
    }

    /// The gateway forwards a few results to the client, or acks what the client has written.
    pub(super) fn step_results(&mut self, s: usize) -> Result<(), String> {
        let consumer = format!("gateway-results-{s}");
        if self.sessions[s].holding {
            self.broker.ack_all(&consumer);
            self.sessions[s].holding = false;
            if self.sessions[s].tracker.is_complete() && !self.sessions[s].ended {
                // The client has every result: the session is over, and its log goes.
                self.sessions[s].log = None;
                self.sessions[s].ended = true;
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), self.sessions[s].id);
            }
            return Ok(());
        }
        let queue = self.sessions[s].results_queue.clone();
        let max = self.rng.gen_range(1..=GROUP_MAX);
        let delivered = self.broker.deliver(&consumer, &queue, max, &mut self.rng);
        for message in &delivered {
            let envelope =
                Envelope::decode(&message.bytes).map_err(|e| format!("a result that does not decode: {e}"))?;
            let session = &mut self.sessions[s];
            let Stream::Results(_) = envelope.stream else {
                return Err(format!("a {:?} message on the results queue of {}", envelope.stream, short(session.id)));
            };
            let admission = match &envelope.body {
                Body::Eof { count } => session.tracker.admit_eof(envelope.stream, envelope.sender, *count),
                Body::Data(_) => session.tracker.admit_data(envelope.stream, envelope.sender, envelope.seq),
                Body::Purge => return Err("a purge on a results queue".to_owned()),
            };
            match (admission, envelope.body) {
                (Admission::Apply, Body::Data(Batch::Results(rows))) => {
                    session.lines.extend(rows.iter().map(|r| r.to_ndjson()));
                }
                (Admission::Apply | Admission::Duplicate, _) => {}
                (other, _) => {
                    return Err(format!(
                        "result {:?} #{} from {} of {} admitted as {other:?}",
                        envelope.stream,
                        envelope.seq,
                        envelope.sender,
                        short(session.id)
                    ))
                }
            }
        }
        self.sessions[s].holding = !delivered.is_empty();
        Ok(())
    }
}
