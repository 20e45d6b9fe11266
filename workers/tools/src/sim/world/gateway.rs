//! The gateway's two sides in the simulation: each session's upload (the client's frames turned into steps by
//! the gateway's own plan, `gateway::upload::Upload`, performed one at a time on the broker and on the upload
//! log, which lives on a simulated disk and says where a client resumes after a restart), its results (admitted
//! by the gateway's own result tracker), the purge of an abandoned session (recorded in the log before it
//! starts, finished by a restarted gateway), and the announcements that renew the replicas' leases.

use super::*;
use coffee_engine::gateway::progress::UploadLog;
use coffee_engine::gateway::upload::{Upload, UploadStep};

/// The gateway's state folder on its simulated disk.
pub(super) const GATEWAY_DIR: &str = "/sim/gateway";
/// Batches of a kind between two progress records. The real gateway records every 16; the simulated files
/// are a few dozen batches each, and a resume should land in the middle of a file.
pub(super) const PROGRESS_EVERY: u64 = 4;

/// One file of a session's upload, as its client sends it.
pub(super) struct ClientFile {
    pub(super) kind: FileKind,
    pub(super) batches: u64,
    /// The next batch the client sends (after a resume: the first one the gateway's log does not have).
    pub(super) next: u64,
    /// Its end sent.
    pub(super) ended: bool,
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
    pub(super) files: Vec<ClientFile>,
    /// The gateway's plan for the upload, and the steps of the client's last frame not yet performed.
    pub(super) upload: Upload,
    pub(super) pending: VecDeque<UploadStep>,
    /// Frames the client sent (batches and ends of file, resent ones included).
    pub(super) frames_sent: usize,
    /// For a session whose client leaves: how many frames it sends before it does.
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

    /// The gateway performs the next step of the client's last frame, or the client sends its next frame.
    pub(super) fn step_upload(&mut self, s: usize) -> Result<(), String> {
        match self.sessions[s].purge {
            Purge::Due => {
                self.publish_purge(s);
                return Ok(());
            }
            Purge::Published => {
                // Confirmed: the purge is in every replica's queue; the results queue goes.
                self.broker.confirm("gateway");
                let (id, queue) = (self.sessions[s].id, self.sessions[s].results_queue.clone());
                self.broker.delete_queue(&queue);
                self.sessions[s].purge = Purge::Done;
                self.sessions[s].log = None;
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), id);
                note!(self, "the gateway purged {} and deleted its results queue", short(id));
                return Ok(());
            }
            Purge::No | Purge::Done => {}
        }
        let sent = self.sessions[s].frames_sent;
        if self.sessions[s].leaves_after.is_some_and(|n| sent >= n) {
            let session = &mut self.sessions[s];
            session.pending.clear();
            if session.forgotten {
                // The gateway vanishes with its folder: no purge, no announcement, no consumer any more.
                session.purge = Purge::Done;
                session.log = None;
                let (id, queue) = (session.id, session.results_queue.clone());
                self.broker.detach(&queue, self.step);
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), id);
                note!(
                    self,
                    "the client of {} left after {sent} frames; its gateway vanished with its folder",
                    short(id)
                );
            } else {
                // The client is gone; the gateway, past its grace, purges the session everywhere.
                session.purge = Purge::Due;
                let id = session.id;
                note!(self, "the client of {} left after {sent} frames", short(id));
            }
            return Ok(());
        }
        if let Some(step) = self.sessions[s].pending.pop_front() {
            self.perform(s, step);
            return Ok(());
        }
        // The client sends its next frame, of a file picked at random: a batch, or the file's end.
        let open: Vec<usize> =
            (0..self.sessions[s].files.len()).filter(|&f| !self.sessions[s].files[f].ended).collect();
        let Some(&f) = open.choose(&mut self.rng) else { return Ok(()) };
        let topology = &self.topology;
        let session = &mut self.sessions[s];
        let file = &mut session.files[f];
        let steps = if file.next < file.batches {
            let batch = self.datasets[session.dataset].batches[f].1[file.next as usize].clone();
            file.next += 1;
            session.upload.rows(topology, file.kind, file.next - 1, batch)
        } else {
            file.ended = true;
            session.upload.end_of_file(topology, file.kind, file.batches)
        };
        let steps = steps.map_err(|e| format!("the gateway refused the client of {}: {e}", short(session.id)))?;
        session.pending.extend(steps);
        session.frames_sent += 1;
        Ok(())
    }

    /// One step of an upload, as the gateway's connection loop performs it. A confirm may come while the gateway
    /// throttles, and surely comes when it waits for all of them.
    fn perform(&mut self, s: usize, step: UploadStep) {
        match step {
            UploadStep::Publish { queue, envelope, .. } => self.broker.publish("gateway", &queue, envelope.encode()),
            UploadStep::Throttle => {
                if self.rng.gen_bool(0.2) {
                    self.broker.confirm("gateway");
                }
            }
            UploadStep::ConfirmAll => self.broker.confirm("gateway"),
            UploadStep::Record { kind, batches } => {
                if let Some(log) = &mut self.sessions[s].log {
                    log.record(kind, batches).expect("the gateway's simulated disk does not fail");
                }
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
            session.pending.clear();
            session.upload = Upload::new(session.id, recovered.done.clone(), PROGRESS_EVERY);
            for file in &mut session.files {
                let done = recovered.done.get(&file.kind).copied().unwrap_or(0);
                marks.push(format!("{} {}: {done} of {}", short(session.id), file.kind, file.next));
                (file.next, file.ended) = (done, false);
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
