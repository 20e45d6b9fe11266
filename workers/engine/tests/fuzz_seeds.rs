//! Writes the seed corpora of the `cargo fuzz` targets (`fuzz/seeds/<target>/`): a few valid encodings each.
//! Ignored in normal runs; regenerate with `cargo test -p coffee-engine --test fuzz_seeds -- --ignored`.

use coffee_model::keys::Query;

use coffee_model::message::{Batch, Stream};

use coffee_model::node::{NodeId, Role, StageKind};

use coffee_engine::protocol::{encode, ClientFrame, ReceivedStream, ResultId};
use coffee_engine::state::log::frame;
use coffee_model::model::{FileKind, Store, Timestamp, Transaction};
use coffee_model::wire::{Body, Envelope};
use std::path::PathBuf;

fn write(target: &str, seeds: Vec<Vec<u8>>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
    }
}

#[test]
#[ignore = "writes the fuzz seed corpora into the source tree"]
fn write_fuzz_seeds() {
    let transaction = Transaction {
        transaction_id: "ac6f851c-649f-42fb-a606-72be0fdcf8d2".into(),
        store_id: 5,
        user_id: Some(17272),
        final_amount: 6350,
        created_at: Timestamp { year: 2024, month: 1, day: 1, secs_of_day: 36410 },
    };
    let store = Store { store_id: 1, store_name: "G Coffee @ USJ 89q".into() };
    let sender = NodeId { role: Role::Stage(StageKind::TxFilter), replica: 1 };
    let id = ResultId { query: Query::Q3, sender, seq: 4, eof: None };

    let frames = [
        ClientFrame::Hello,
        ClientFrame::Resume {
            session: uuid::Uuid::from_u128(7),
            secret: 99,
            received: vec![ReceivedStream {
                query: id.query,
                sender: id.sender,
                seqs: vec![(0, 4), (5, 9)],
                eof: None,
            }],
        },
        ClientFrame::Ack { upto: 12 },
        ClientFrame::Rows { kind: FileKind::Stores, seq: 0, batch: Batch::Stores(vec![store.clone()]) },
        ClientFrame::Rows {
            kind: FileKind::Transactions,
            seq: 3,
            batch: Batch::Transactions(vec![transaction.clone()]),
        },
        ClientFrame::EndOfFile { kind: FileKind::Transactions, batches: 4 },
    ];
    write("frame_codec", frames.iter().map(|f| encode(f).to_vec()).collect());

    let envelope = |stream, seq, body| Envelope { session: uuid::Uuid::from_u128(7), sender, stream, seq, body };
    let envelopes = [
        envelope(Stream::Transactions, 0, Body::Data(Batch::Transactions(vec![transaction]))),
        envelope(Stream::Stores, 1, Body::Data(Batch::Stores(vec![store]))),
        envelope(Stream::Q3Partial, 2, Body::Eof { count: 2 }),
        envelope(Stream::Results(Query::Q1), 3, Body::Purge),
    ];
    let encoded: Vec<Vec<u8>> = envelopes.iter().map(Envelope::encode).collect();
    write("envelope", encoded.clone());

    write(
        "csv_rows",
        vec![
            b"ac6f,5,1,,17272.0,63.5,0.0,63.5,2024-01-01 10:06:50\nac70,5,1,,,7,0,7,2024-07-01 23:59:60\n".to_vec(),
            b"x,8,2,9.0,18.0,2024-01-01 15:15:53\n".to_vec(),
            b"5775,male,1988-09-25,2023-11-01 07:03:11\n".to_vec(),
            b"1,\"G Coffee, USJ\",\"a, b\",1,c,d,3.1,101.6\n".to_vec(),
            b"2,Americano,coffee,7.0,False,,\n".to_vec(),
        ],
    );

    let log: Vec<u8> = encoded.iter().flat_map(|e| frame(e)).collect();
    write("state_log", vec![Vec::new(), frame(b"one"), log.clone(), log[..log.len() - 3].to_vec()]);
}
