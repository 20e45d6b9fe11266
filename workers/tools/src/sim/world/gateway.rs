//! The gateway's two sides in the simulation: each session's upload (published from the gateway's own routing,
//! resumed from earlier marks after a restart), its results (admitted by the gateway's own result tracker), the
//! purge of an abandoned session, and the announcements that renew the replicas' leases.

use super::*;

/// One session's upload, as the gateway publishes it.
pub(in crate::sim) struct Feed {
    pub(in crate::sim) kind: FileKind,
    /// (queue, bytes) of each message.
    pub(in crate::sim) messages: Vec<(String, Vec<u8>)>,
    /// Where the EOFs begin: they go out only once every data message before them is confirmed.
    pub(in crate::sim) eofs_from: usize,
    pub(in crate::sim) sent: usize,
    pub(in crate::sim) confirmed: usize,
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
                let (id, queue) = (session.id, session.results_queue.clone());
                self.broker.detach(&queue, self.step);
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
            return;
        }
        let k = publishable[self.rng.gen_range(0..publishable.len())];
        let feed = &mut self.sessions[s].feeds[k];
        let (queue, bytes) = feed.messages[feed.sent].clone();
        feed.sent += 1;
        self.broker.publish("gateway", &queue, bytes);
    }

    /// The gateway tells every replica of every stage to drop an abandoned session.
    pub(super) fn publish_purge(&mut self, s: usize) {
        let id = self.sessions[s].id;
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
