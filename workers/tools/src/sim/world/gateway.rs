//! The gateway's two sides in the simulation: each session's upload (the client's frames turned into steps by
//! the gateway's own plan, `gateway::upload::Upload`, performed one at a time on the broker and on the upload
//! log, which lives on a simulated disk and says where a client resumes after a restart), its results (the
//! gateway's own plan, `gateway::results::Forward`, sending numbered frames to the client, which keeps what it
//! writes with the client's own `ReceivedResults` and acks each frame; a delivery is acked once its frame is;
//! a restarted gateway forwards what the resumed client says it lacks), the purge of an abandoned session
//! (recorded in the log before it starts, finished by a restarted gateway), and the announcements that renew the
//! replicas' leases.

use super::*;
use coffee_engine::client::ReceivedResults;
use coffee_engine::gateway::progress::UploadLog;
use coffee_engine::gateway::purge::{self, PurgeStep};
use coffee_engine::gateway::results::{Forward, Handling};
use coffee_engine::gateway::upload::{Upload, UploadStep};
use coffee_engine::lease::{after_announce_failure, AfterFailure};
use coffee_engine::protocol::GatewayFrame;

/// The gateway's name on the broker: its connection, and the publisher of uploads and purges.
pub(super) const GATEWAY: &str = "gateway";
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

/// The kinds of step a session's results take.
enum ResultsStep {
    /// The gateway takes a few deliveries of the results queue and sends their frames.
    Forward,
    /// The client writes the next frame on its way, then acks it.
    ClientWrites,
    /// The gateway acks the deliveries of the frames the client acked.
    GatewayAcks,
}

/// Where an abandoned session's purge stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Purge {
    /// Not abandoned, or its client still uploading.
    No,
    /// The gateway purges the session from then on (again after each failure).
    Due {
        at: u64,
        failures: u32,
    },
    /// Under way: the steps of the gateway's own plan (`gateway::purge::steps`) left to perform.
    Running {
        steps: VecDeque<PurgeStep>,
        failures: u32,
    },
    /// The gateway gave up after a failure (the reverted fix): the session keeps its log.
    GaveUp,
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
    /// The gateway's forwarding of the results on the client's current connection; each delivery is its
    /// message's id on the broker.
    pub(super) forward: Forward<u64>,
    /// Frames on their way to the client, and the client's last ack on its way to the gateway: both lost with
    /// the connection when the gateway restarts.
    pub(super) to_client: VecDeque<GatewayFrame>,
    pub(super) client_ack: Option<u64>,
    /// What the client has written (its file) and its record of it, which a resume hands to the next gateway.
    pub(super) lines: Vec<String>,
    pub(super) received: ReceivedResults,
    /// The session's upload log, while the gateway has it open.
    pub(super) log: Option<UploadLog>,
    /// Its client had every result, and the gateway removed its log.
    pub(super) ended: bool,
}

/// The gateway's session announcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Announcer {
    Open,
    /// The broker closed its channel: its next announcement fails.
    Closed,
    /// It stopped announcing (the reverted fix).
    Stopped,
}

/// How long a gateway that could not start waits before it starts again.
const GATEWAY_RESTART: u64 = 50;

/// The publisher of session `s`'s purge, on the gateway's connection (its confirms are its own).
fn purge_publisher(s: usize) -> String {
    format!("gateway-purge-{s}")
}

/// The consumer of session `s`'s results queue, on the gateway's connection.
fn results_consumer(s: usize) -> String {
    format!("gateway-results-{s}")
}

impl SimSession {
    /// Whether its client is connected to the gateway (it has not left, and its session is not over).
    fn client_connected(&self) -> bool {
        let left = self.leaves_after.is_some_and(|n| self.frames_sent >= n);
        !left && !self.ended && matches!(self.purge, Purge::No)
    }
}

impl World<'_> {
    /// The gateway starts: it reaches a broker node (the one it picks first, else the next one up), declares
    /// every queue of the topology, and consumes the results queue of each session whose client is
    /// connected. A broker that refuses a declaration (a classic queue whose home node is down) makes it exit
    /// and start again a little later; meanwhile it serves nobody.
    pub(super) fn connect_gateway(&mut self) {
        self.broker.disconnect(GATEWAY, self.step, &mut self.rng);
        let first = self.rng.gen_range(0..self.broker.nodes());
        let node = self.broker.connect(GATEWAY, first).expect("a broker node is up");
        if node != first {
            self.coverage.reach(Reached::Failover, 1);
        }
        for queue in self.topology.all_queues().into_iter().chain(self.topology.dead_letter_queues()) {
            if let Err(refusal) = self.broker.declare(GATEWAY, &queue, QueueArgs::default(), self.step) {
                note!(self, "the gateway is refused declaring {queue}: {refusal:?}; it exits and starts again");
                self.coverage.reach(Reached::Refused, 1);
                self.gateway_down_until = Some(self.step + GATEWAY_RESTART);
                return;
            }
        }
        self.gateway_down_until = None;
        for s in 0..self.sessions.len() {
            if self.sessions[s].client_connected() && self.broker.exists(&self.sessions[s].results_queue) {
                self.consume_results(s);
            }
        }
    }

    /// The gateway consumes session `s`'s results queue (a classic queue whose home node is down refuses it:
    /// the gateway tries again at the session's next results step).
    pub(super) fn consume_results(&mut self, s: usize) {
        let (consumer, queue) = (results_consumer(s), self.sessions[s].results_queue.clone());
        if !self.broker.consuming(&consumer, &queue) {
            // A channel of the gateway's connection.
            let node = self.broker.connection(GATEWAY).expect("the gateway is connected");
            self.broker.connect(&consumer, node);
            if let Err(refusal) = self.broker.consume(&consumer, &queue, false) {
                note!(self, "the gateway cannot consume {queue}: {refusal:?}");
            }
        }
    }

    /// Whether the gateway is down (it could not start): it starts again when its time comes.
    fn gateway_down(&mut self) -> bool {
        match self.gateway_down_until {
            Some(at) if self.step >= at => {
                self.connect_gateway();
                self.gateway_down_until.is_some()
            }
            Some(_) => true,
            None => false,
        }
    }

    /// The gateway announces the sessions it knows; every replica that runs hears it. On a channel the broker
    /// closed, the announcement fails, and the announcer does what the real one does next
    /// (`lease::after_announce_failure`).
    pub(super) fn announce(&mut self) {
        match self.announcer {
            Announcer::Stopped => return,
            Announcer::Closed => {
                note!(self, "a session announcement fails: the announcer's channel was closed");
                match after_announce_failure() {
                    AfterFailure::Stop => {
                        self.announcer = Announcer::Stopped;
                        return;
                    }
                    AfterFailure::Reopen => {
                        self.announcer = Announcer::Open;
                        return;
                    }
                    // Made again at once, on a new channel.
                    AfterFailure::Retry => {
                        self.coverage.reach(Reached::AnnouncerReopened, 1);
                        self.announcer = Announcer::Open;
                    }
                }
            }
            Announcer::Open => {}
        }
        // Those with an upload log: open, waiting for a resume, or being purged.
        let known: Vec<SessionId> = self.sessions.iter().filter(|s| s.log.is_some()).map(|s| s.id).collect();
        let now = self.now();
        let running = self.replicas.iter_mut().flat_map(|r| &mut r.processes).filter(|p| p.phase == Phase::Running);
        running.for_each(|process| process.shell.announced(&known, now));
    }

    /// The gateway performs the next step of the client's last frame, or the client sends its next frame.
    pub(super) fn step_upload(&mut self, s: usize) -> Result<(), String> {
        if self.gateway_down() {
            return Ok(());
        }
        match &self.sessions[s].purge {
            Purge::Due { at, failures } if self.step >= *at => {
                // A flow of the gateway's connection: it goes with the gateway's node.
                let node = self.broker.connection(GATEWAY).expect("the gateway is connected");
                self.broker.connect(&purge_publisher(s), node);
                let steps = purge::steps(&self.topology, self.sessions[s].id).into();
                self.sessions[s].purge = Purge::Running { steps, failures: *failures };
                return Ok(());
            }
            Purge::Running { .. } => {
                self.step_purge(s);
                return Ok(());
            }
            Purge::Due { .. } | Purge::GaveUp => return Ok(()),
            Purge::No | Purge::Done => {}
        }
        let sent = self.sessions[s].frames_sent;
        if self.sessions[s].leaves_after.is_some_and(|n| sent >= n) {
            // The client's connection closes: so does the gateway's consumer of its results.
            let queue = self.sessions[s].results_queue.clone();
            self.broker.detach(&results_consumer(s), &queue, self.step);
            let session = &mut self.sessions[s];
            session.pending.clear();
            if session.forgotten {
                // The gateway vanishes with its folder: no purge, no announcement, no consumer any more.
                session.purge = Purge::Done;
                session.log = None;
                let id = session.id;
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), id);
                note!(
                    self,
                    "the client of {} left after {sent} frames; its gateway vanished with its folder",
                    short(id)
                );
            } else {
                // The client is gone; the gateway, past its grace, purges the session everywhere.
                session.purge = Purge::Due { at: self.step, failures: 0 };
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
            UploadStep::Publish { queue, envelope, .. } => {
                if !self.broker.publish(GATEWAY, &queue, envelope.encode()) {
                    // Confirmed all the same: RabbitMQ drops what routes to a queue that cannot take it.
                    self.coverage.reach(Reached::DroppedPublish, 1);
                    note!(self, "the broker drops a batch for {queue}, and confirms it");
                }
            }
            UploadStep::Throttle => {
                if self.rng.gen_bool(0.2) {
                    self.broker.confirm(GATEWAY);
                }
            }
            UploadStep::ConfirmAll => self.broker.confirm(GATEWAY),
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
        self.announcer = Announcer::Open;
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
            // The connection goes with the gateway: frames and acks on their way are lost, and the deliveries
            // not acked come back. The client resumes with what it has written.
            self.broker.disconnect(&results_consumer(s), self.step, &mut self.rng);
            session.to_client.clear();
            session.client_ack = None;
            session.forward = Forward::new(&self.topology, session.received.streams());
            self.coverage.reach(Reached::ResultsResumed, u64::from(!session.lines.is_empty() && !session.ended));
            if matches!(session.purge, Purge::Done) || session.ended {
                continue;
            }
            // The new connection's loop says first which queries the client already has whole.
            let ends = session.forward.query_ends();
            session.to_client.extend(ends);
            let resumed = UploadLog::resume_on(&self.gateway_disk, dir, session.id)
                .map_err(|e| format!("the gateway cannot read {}'s upload log: {e}", short(session.id)))?;
            let Some((log, recovered)) = resumed else {
                return Err(format!("the gateway lost the upload log of {}, a live session", short(session.id)));
            };
            session.log = Some(log);
            if purging.contains(&session.id) || matches!(session.purge, Purge::Running { .. } | Purge::GaveUp) {
                // A purge recorded before it began is finished at once.
                session.purge = Purge::Due { at: self.step, failures: 0 };
                continue;
            }
            if !matches!(session.purge, Purge::No) {
                continue;
            }
            session.pending.clear();
            self.coverage.reach(Reached::Resume, u64::from(recovered.done.values().any(|&done| done > 0)));
            session.upload = Upload::new(session.id, recovered.done.clone(), PROGRESS_EVERY);
            for file in &mut session.files {
                let done = recovered.done.get(&file.kind).copied().unwrap_or(0);
                marks.push(format!("{} {}: {done} of {}", short(session.id), file.kind, file.next));
                (file.next, file.ended) = (done, false);
            }
        }
        self.connect_gateway();
        let how = if power_cut { " (its machine cut off)" } else { "" };
        note!(self, "the gateway restarts{how}; uploads resume from: {}", marks.join(", "));
        Ok(())
    }

    /// One step of an abandoned session's purge, as the gateway performs it (`gateway::purge`): a purge whose
    /// confirms the broker nacked is tried again after the plan's wait, from its start.
    fn step_purge(&mut self, s: usize) {
        let Purge::Running { steps, failures } = &mut self.sessions[s].purge else { return };
        let failures = *failures;
        let Some(step) = steps.pop_front() else { return };
        let id = self.sessions[s].id;
        match step {
            PurgeStep::Record => {
                if let Some(log) = &mut self.sessions[s].log {
                    log.record_purging().expect("the gateway's simulated disk does not fail");
                }
            }
            // Its own confirms, as each publish on the gateway's channel has its own.
            PurgeStep::Publish { queue, envelope } => {
                self.broker.publish(&purge_publisher(s), &queue, envelope.encode());
            }
            PurgeStep::ConfirmAll if std::mem::take(&mut self.gateway_nacked) => {
                self.broker.nack(&purge_publisher(s), &mut self.rng);
                let failures = failures + 1;
                self.sessions[s].purge = match purge::retry_after(failures) {
                    Some(wait) => {
                        self.coverage.reach(Reached::PurgeRetried, 1);
                        let at = self.step + wait.as_millis() as u64 / replica::MS_PER_STEP;
                        Purge::Due { at, failures }
                    }
                    None => Purge::GaveUp,
                };
                note!(self, "the broker nacks the purge of {}: {:?}", short(id), self.sessions[s].purge);
            }
            PurgeStep::ConfirmAll => self.broker.confirm(&purge_publisher(s)),
            PurgeStep::DeleteResults { queue } => self.broker.delete_queue(&queue),
            PurgeStep::RemoveLog => {
                self.sessions[s].log = None;
                UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), id);
                self.sessions[s].purge = Purge::Done;
                note!(self, "the gateway purged {} and deleted its results queue", short(id));
            }
        }
    }

    /// One step of a session's results: the gateway forwards a few messages of its results queue, the client
    /// writes the next frame and acks it, or the gateway acks the deliveries of the frames the client acked.
    pub(super) fn step_results(&mut self, s: usize) -> Result<(), String> {
        if self.gateway_down() {
            return Ok(());
        }
        if self.sessions[s].ended {
            return Ok(());
        }
        let consumer = results_consumer(s);
        self.consume_results(s);
        let ready = self.broker.ready(&self.sessions[s].results_queue) > 0;
        let session = &self.sessions[s];
        let mut possible = Vec::new();
        if ready {
            possible.push(ResultsStep::Forward);
        }
        if !session.to_client.is_empty() {
            possible.push(ResultsStep::ClientWrites);
        }
        if session.client_ack.is_some() {
            possible.push(ResultsStep::GatewayAcks);
        }
        match possible.choose(&mut self.rng) {
            Some(ResultsStep::Forward) => {
                let queue = self.sessions[s].results_queue.clone();
                let max = self.rng.gen_range(1..=GROUP_MAX);
                for message in self.broker.deliver(&consumer, &queue, max, &mut self.rng) {
                    match self.sessions[s].forward.message(&message.bytes, message.id) {
                        Handling::Send(frame) => self.sessions[s].to_client.push_back(frame),
                        Handling::Drop(id, _, Admission::Duplicate) => {
                            self.coverage.reach(Reached::DuplicateDropped, 1);
                            self.broker.ack(&consumer, id);
                        }
                        Handling::Drop(_, result, other) => {
                            let id = short(self.sessions[s].id);
                            return Err(format!("result {result:?} of {id} admitted as {other:?}"));
                        }
                        Handling::Poison(_, why) => {
                            return Err(format!(
                                "a message on the results queue of {}: {why}",
                                short(self.sessions[s].id)
                            ))
                        }
                    }
                }
            }
            Some(ResultsStep::ClientWrites) => {
                // The client writes the frame's rows (unless it has them), then acks it.
                let session = &mut self.sessions[s];
                match session.to_client.pop_front().expect("chosen only when a frame is on its way") {
                    GatewayFrame::Result { n, id, rows } => {
                        if session.received.insert(&id) {
                            session.lines.extend(rows.iter().map(|r| r.to_ndjson()));
                        }
                        session.client_ack = Some(n);
                    }
                    GatewayFrame::QueryDone { n, .. } => session.client_ack = Some(n),
                    other => return Err(format!("the gateway sent the client {other:?}")),
                }
            }
            Some(ResultsStep::GatewayAcks) => {
                let upto = self.sessions[s].client_ack.take().expect("chosen only when an ack is on its way");
                for id in self.sessions[s].forward.client_acked(upto) {
                    self.broker.ack(&consumer, id);
                }
            }
            None => {}
        }
        let session = &mut self.sessions[s];
        session.to_client.extend(session.forward.query_ends());
        if session.forward.finished() {
            // The client acked every result and every query's end: the session is over, and its log goes.
            self.end_session(s);
        }
        Ok(())
    }

    /// A session whose client has every result: the gateway deletes its results queue (late copies of
    /// results published to it from now on are dropped) and removes its log.
    fn end_session(&mut self, s: usize) {
        let queue = self.sessions[s].results_queue.clone();
        self.broker.delete_queue(&queue);
        let session = &mut self.sessions[s];
        session.log = None;
        session.ended = true;
        UploadLog::remove_on(&self.gateway_disk, Path::new(GATEWAY_DIR), session.id);
    }
}
