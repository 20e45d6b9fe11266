//! Property tests of the client-gateway frame codec: arbitrary bytes, as one frame or as a stream, give frames or
//! errors and never a panic; encoding then decoding any frame gives it back. `PROPTEST_CASES` raises the count.

use coffee_model::keys::Query;

use coffee_model::message::Batch;

use coffee_engine::protocol::{
    decode, encode, ClientFrame, ErrorCode, FrameReader, GatewayFrame, ReceivedStream, ResultId, PROTOCOL_VERSION,
};
use coffee_model::model::{Date, FileKind, Store, Timestamp, Transaction, User};
use coffee_model::node::{NodeId, Role, StageKind};
use coffee_model::results::ResultRow;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

fn kind() -> impl Strategy<Value = FileKind> {
    prop::sample::select(FileKind::ALL.to_vec())
}

fn query() -> impl Strategy<Value = Query> {
    prop::sample::select(Query::ALL.to_vec())
}

fn result_id() -> impl Strategy<Value = ResultId> {
    let role = prop_oneof![Just(Role::Gateway), prop::sample::select(StageKind::ALL.to_vec()).prop_map(Role::Stage)];
    (query(), role, any::<u16>(), any::<u64>(), any::<Option<u64>>())
        .prop_map(|(query, role, replica, seq, eof)| ResultId { query, sender: NodeId { role, replica }, seq, eof })
}

fn received_stream() -> impl Strategy<Value = ReceivedStream> {
    (result_id(), prop::collection::vec((any::<u64>(), any::<u64>()), 0..4)).prop_map(|(id, seqs)| ReceivedStream {
        query: id.query,
        sender: id.sender,
        seqs,
        eof: id.eof,
    })
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (any::<u16>(), any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(year, month, day, secs_of_day)| Timestamp {
        year,
        month,
        day,
        secs_of_day,
    })
}

/// A representative set of batches: a dimension table, the fact table, and users.
fn batch() -> impl Strategy<Value = Batch> {
    use prop::collection::vec;
    let store = (any::<u32>(), "\\PC{0,20}").prop_map(|(store_id, store_name)| Store { store_id, store_name });
    // Any text, and ids in a UUID's canonical text (which travel as 16 bytes).
    let id = prop_oneof!["\\PC{1,36}", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"];
    let transaction = (id, any::<u32>(), any::<Option<u32>>(), any::<i64>(), timestamp()).prop_map(
        |(transaction_id, store_id, user_id, final_amount, created_at)| Transaction {
            transaction_id: transaction_id.as_str().into(),
            store_id,
            user_id,
            final_amount,
            created_at,
        },
    );
    let user = (any::<u32>(), any::<u16>(), any::<u8>(), any::<u8>())
        .prop_map(|(user_id, year, month, day)| User { user_id, birthdate: Date { year, month, day } });
    prop_oneof![
        vec(store, 0..8).prop_map(Batch::Stores),
        vec(transaction, 0..8).prop_map(Batch::Transactions),
        vec(user, 0..8).prop_map(Batch::Users),
    ]
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        Just(ClientFrame::Hello),
        (any::<u128>(), any::<u128>(), prop::collection::vec(received_stream(), 0..6)).prop_map(
            |(session, secret, received)| ClientFrame::Resume {
                session: uuid::Uuid::from_u128(session),
                secret,
                received
            }
        ),
        any::<u64>().prop_map(|upto| ClientFrame::Ack { upto }),
        (kind(), any::<u64>(), batch()).prop_map(|(kind, seq, batch)| ClientFrame::Rows { kind, seq, batch }),
        (kind(), any::<u64>()).prop_map(|(kind, batches)| ClientFrame::EndOfFile { kind, batches }),
    ]
}

const ERROR_CODES: [ErrorCode; 6] = [
    ErrorCode::Protocol,
    ErrorCode::Busy,
    ErrorCode::UnknownSession,
    ErrorCode::WrongSecret,
    ErrorCode::SessionExpired,
    ErrorCode::ResultsLost,
];

fn gateway_frame() -> impl Strategy<Value = GatewayFrame> {
    let row = prop_oneof![
        ("\\PC{0,36}", any::<i64>())
            .prop_map(|(transaction_id, final_amount)| ResultRow::Q1 { transaction_id, final_amount }),
        ("\\PC{0,20}", any::<u32>(), any::<u64>()).prop_map(|(store_name, user_id, purchases_qty)| ResultRow::Q4 {
            store_name,
            birthdate: None,
            user_id,
            purchases_qty
        }),
    ];
    prop_oneof![
        (any::<u128>(), any::<u128>(), prop::collection::vec((kind(), any::<u64>()), 0..5)).prop_map(
            |(session, secret, resume_from)| GatewayFrame::Welcome {
                session: uuid::Uuid::from_u128(session),
                secret,
                resume_from
            }
        ),
        (any::<u64>(), result_id(), prop::collection::vec(row, 0..6)).prop_map(|(n, id, rows)| GatewayFrame::Result {
            n,
            id,
            rows
        }),
        (any::<u64>(), query()).prop_map(|(n, query)| GatewayFrame::QueryDone { n, query }),
        Just(GatewayFrame::Done),
        ("\\PC{0,40}", prop::sample::select(ERROR_CODES.to_vec()))
            .prop_map(|(message, code)| GatewayFrame::Error { code, message }),
    ]
}

/// Feeds `bytes` through a `FrameReader` until it errors or the stream ends; returns the frames read before.
fn read_stream(bytes: Vec<u8>) -> Vec<ClientFrame> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (mut writer, reader) = tokio::io::duplex(1 << 12);
        // The reader may stop early (on an error): a write to the closed pipe then fails, which is fine.
        let feed = tokio::spawn(async move { writer.write_all(&bytes).await });
        let mut reader = FrameReader::<_, ClientFrame>::new(reader);
        let mut frames = Vec::new();
        while let Ok(frame) = reader.next().await {
            frames.push(frame);
        }
        drop(reader);
        let _ = feed.await.expect("the feeder does not panic");
        frames
    })
}

/// A length-delimited frame as `FrameWriter` sends it (a 4-byte big-endian length, then the payload).
fn framed(payload: &[u8]) -> Vec<u8> {
    [&(payload.len() as u32).to_be_bytes()[..], payload].concat()
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode::<ClientFrame>(&bytes);
        let _ = decode::<GatewayFrame>(&bytes);
        // With the right version byte, the body parser itself is exercised.
        let versioned = [&[PROTOCOL_VERSION][..], &bytes].concat();
        let _ = decode::<ClientFrame>(&versioned);
        let _ = decode::<GatewayFrame>(&versioned);
    }

    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let bytes = encode(&frame);
        prop_assert_eq!(decode::<ClientFrame>(&bytes).unwrap(), frame);
        prop_assert!(decode::<ClientFrame>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn gateway_frames_round_trip(frame in gateway_frame()) {
        let bytes = encode(&frame);
        prop_assert_eq!(decode::<GatewayFrame>(&bytes).unwrap(), frame);
        prop_assert!(decode::<GatewayFrame>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn arbitrary_streams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read_stream(bytes);
    }

    /// Valid frames followed by garbage: the valid ones come out first, whole and in order.
    #[test]
    fn frames_then_garbage(
        frames in prop::collection::vec(client_frame(), 0..4),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes: Vec<u8> = frames.iter().flat_map(|f| framed(&encode(f))).collect();
        bytes.extend_from_slice(&garbage);
        let read = read_stream(bytes);
        prop_assert!(read.len() >= frames.len());
        prop_assert_eq!(&read[..frames.len()], frames.as_slice());
    }
}
