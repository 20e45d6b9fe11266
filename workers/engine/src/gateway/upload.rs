//! One session's upload as the gateway must carry it out, without a broker or a disk: each batch and each end of
//! file the client sends becomes the steps the gateway performs, in the order its guarantees need. A batch's
//! messages are published; everything is confirmed before progress is recorded (a resume starts after what the
//! log says is in, so it must be in) and before a file's EOFs go out (an EOF must not overtake the data it
//! counts on a restart); the EOFs are confirmed before the file's end is recorded. The connection's loop
//! (`session.rs`) performs the steps on RabbitMQ and the upload log; the simulator (`coffee sim`) performs them
//! on its broker and disk, one step at a time, and can crash the gateway between any two.

use super::routing::{input_eofs, route_input, stream_of};
use super::GATEWAY;
use crate::planted::{self, Bug};
use crate::topology::Topology;
use coffee_model::message::Batch;
use coffee_model::model::FileKind;
use coffee_model::wire::{Body, Envelope, SessionId};
use std::collections::{BTreeMap, BTreeSet};

/// Batches of one kind between two records of the upload's durable progress: with batches of up to 32,000 rows
/// (the client's `BATCH_ROWS`), a resumed client sends again at most about half a million rows of a kind.
pub const PROGRESS_EVERY: u64 = 16;

/// How often (in batches of one kind) the gateway looks at the depth of the queue it feeds.
const DEPTH_CHECK_EVERY: u64 = 4;

/// One thing the gateway does for an upload.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadStep {
    /// Publishes `envelope` to `queue`; its confirm joins those in flight. With `check_room`, first waits until
    /// the queue has room (flow control, now and then).
    Publish { queue: String, envelope: Envelope, check_room: bool },
    /// Waits for the oldest confirms while too many are in flight (backpressure on a fast client).
    Throttle,
    /// Waits for every confirm in flight.
    ConfirmAll,
    /// Records durably that the first `batches` batches of `kind` are in the pipeline.
    Record { kind: FileKind, batches: u64 },
}

/// Where one session's upload stands.
#[derive(Debug)]
pub struct Upload {
    session: SessionId,
    next_seq: BTreeMap<FileKind, u64>,
    ended: BTreeSet<FileKind>,
    progress_every: u64,
}

impl Upload {
    /// An upload that starts (or resumes) after `resume_from` batches of each kind, recording its progress every
    /// `progress_every` batches of a kind ([`PROGRESS_EVERY`] in the gateway).
    pub fn new(session: SessionId, resume_from: BTreeMap<FileKind, u64>, progress_every: u64) -> Upload {
        Upload { session, next_seq: resume_from, ended: BTreeSet::new(), progress_every: progress_every.max(1) }
    }

    /// Whether every kind has ended.
    pub fn all_ended(&self) -> bool {
        self.ended.len() == FileKind::ALL.len()
    }

    /// Batch `seq` of `kind`, as the client sent it: its steps, or why it breaks the protocol.
    pub fn rows(
        &mut self,
        topology: &Topology,
        kind: FileKind,
        seq: u64,
        batch: Batch,
    ) -> Result<Vec<UploadStep>, String> {
        let expected = self.next_seq.entry(kind).or_default();
        check(!self.ended.contains(&kind), || format!("{kind} rows after its end"))?;
        check(seq == *expected, || format!("{kind} batch {seq} out of order (expected {expected})"))?;
        check(stream_of(kind).carries(&batch), || format!("a {kind} batch holds other rows"))?;
        *expected += 1;
        let mut steps: Vec<UploadStep> = route_input(topology, kind, seq, batch)
            .into_iter()
            .map(|routed| {
                let body = Body::Data(routed.payload);
                let envelope =
                    Envelope { session: self.session, sender: GATEWAY, stream: routed.stream, seq: routed.seq, body };
                let queue = topology.queue_of(routed.to, self.session);
                UploadStep::Publish { queue, envelope, check_room: seq.is_multiple_of(DEPTH_CHECK_EVERY) }
            })
            .collect();
        steps.push(UploadStep::Throttle);
        if (seq + 1).is_multiple_of(self.progress_every) {
            let record = UploadStep::Record { kind, batches: seq + 1 };
            if planted::active(Bug::ProgressBeforeConfirm) {
                steps.extend([record, UploadStep::ConfirmAll]);
            } else {
                // Everything so far confirmed, then recorded: a resume starts after it.
                steps.extend([UploadStep::ConfirmAll, record]);
            }
        }
        Ok(steps)
    }

    /// The end of `kind` after `batches` batches, as the client sent it: its steps, or why it breaks the
    /// protocol.
    pub fn end_of_file(
        &mut self,
        topology: &Topology,
        kind: FileKind,
        batches: u64,
    ) -> Result<Vec<UploadStep>, String> {
        let sent = self.next_seq.get(&kind).copied().unwrap_or(0);
        check(batches == sent, || format!("{kind} ends after {batches} batches, but {sent} arrived"))?;
        check(self.ended.insert(kind), || format!("{kind} ended twice"))?;
        // Everything of this kind is confirmed before its EOF can overtake it on a restart.
        let mut steps = vec![UploadStep::ConfirmAll];
        steps.extend(input_eofs(topology, kind, batches).into_iter().map(|eof| {
            let body = Body::Eof { count: eof.payload };
            let envelope = Envelope { session: self.session, sender: GATEWAY, stream: eof.stream, seq: eof.seq, body };
            UploadStep::Publish { queue: topology.queue_of(eof.to, self.session), envelope, check_room: false }
        }));
        steps.extend([UploadStep::ConfirmAll, UploadStep::Record { kind, batches }]);
        Ok(steps)
    }
}

fn check(holds: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::model::Store;

    fn stores(n: usize) -> Batch {
        let store = Store { store_id: 1, store_name: "A".into() };
        Batch::Stores(vec![store; n])
    }

    fn is_record(step: &UploadStep) -> bool {
        matches!(step, UploadStep::Record { .. })
    }

    #[test]
    fn progress_is_recorded_only_after_everything_is_confirmed() {
        let topology = Topology::default();
        let mut upload = Upload::new(SessionId::from_u128(1), BTreeMap::new(), 2);
        let first = upload.rows(&topology, FileKind::Stores, 0, stores(3)).unwrap();
        assert!(!first.iter().any(is_record), "{first:?}");
        assert!(matches!(first[0], UploadStep::Publish { check_room: true, .. }));
        let second = upload.rows(&topology, FileKind::Stores, 1, stores(3)).unwrap();
        let n = second.len();
        assert_eq!(
            second[n - 2..],
            [UploadStep::ConfirmAll, UploadStep::Record { kind: FileKind::Stores, batches: 2 }]
        );
        let end = upload.end_of_file(&topology, FileKind::Stores, 2).unwrap();
        assert_eq!(end[0], UploadStep::ConfirmAll, "the data is confirmed before its EOFs go out");
        assert!(end[1..end.len() - 2].iter().all(|s| matches!(s, UploadStep::Publish { .. })));
        assert_eq!(
            end[end.len() - 2..],
            [UploadStep::ConfirmAll, UploadStep::Record { kind: FileKind::Stores, batches: 2 }]
        );
    }

    #[test]
    fn a_resumed_upload_expects_the_batch_after_its_mark_and_refuses_what_breaks_the_protocol() {
        let topology = Topology::default();
        let resume_from = BTreeMap::from([(FileKind::Stores, 5)]);
        let mut upload = Upload::new(SessionId::from_u128(1), resume_from, PROGRESS_EVERY);
        let err = upload.rows(&topology, FileKind::Stores, 0, stores(1)).unwrap_err();
        assert!(err.contains("out of order (expected 5)"), "{err}");
        upload.rows(&topology, FileKind::Stores, 5, stores(1)).unwrap();
        let err = upload.rows(&topology, FileKind::Stores, 6, Batch::Users(Vec::new())).unwrap_err();
        assert!(err.contains("holds other rows"), "{err}");
        assert!(upload.end_of_file(&topology, FileKind::Stores, 4).unwrap_err().contains("but 6 arrived"));
        upload.end_of_file(&topology, FileKind::Stores, 6).unwrap();
        assert!(upload.end_of_file(&topology, FileKind::Stores, 6).unwrap_err().contains("ended twice"));
        assert!(upload.rows(&topology, FileKind::Stores, 6, stores(1)).unwrap_err().contains("after its end"));
        assert!(!upload.all_ended());
    }
}
