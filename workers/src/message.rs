//! The messages stages exchange over the broker: an envelope naming (session, sender, stream, seq) around either a
//! batch of typed rows or a counted end of stream.
//!
//! Encoding is `postcard` (compact, varint) behind one version byte, so a message of an unknown version is refused
//! rather than misread.

use crate::model::{Date, MenuItem, Store, Transaction, TransactionItem, User};
use crate::results::ResultRow;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The version byte every encoded envelope starts with.
pub const WIRE_VERSION: u8 = 1;

/// A client session, as the gateway assigned it (a random UUID).
pub type SessionId = uuid::Uuid;

/// Who sent a message: the gateway or one replica of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    pub role: Role,
    pub replica: u16,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Gateway => f.write_str("gateway"),
            Role::Stage(stage) => write!(f, "{}-{}", stage.name(), self.replica),
        }
    }
}

/// The role of a node in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Gateway,
    Stage(StageKind),
}

/// The stages of the pipeline (see [`crate::topology`] for how they connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StageKind {
    /// Transactions of 2024-2025: Q1 rows, and partial aggregates for Q3 and Q4.
    TxFilter,
    /// Transaction items of 2024-2025: partial aggregates for Q2.
    ItemFilter,
    /// Q2 per month, partitioned by month, joined with menu items.
    Q2Agg,
    /// Q3 per (semester, store), partitioned by store, joined with stores.
    Q3Agg,
    /// Q4 purchase counts per (store, user), partitioned by user, joined with users; local top 3 per store.
    Q4Count,
    /// Q4 final top 3 per store, partitioned by store, joined with stores.
    Q4Top,
}

impl StageKind {
    pub const ALL: [StageKind; 6] = [
        StageKind::TxFilter,
        StageKind::ItemFilter,
        StageKind::Q2Agg,
        StageKind::Q3Agg,
        StageKind::Q4Count,
        StageKind::Q4Top,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::TxFilter => "tx_filter",
            StageKind::ItemFilter => "item_filter",
            StageKind::Q2Agg => "q2_agg",
            StageKind::Q3Agg => "q3_agg",
            StageKind::Q4Count => "q4_count",
            StageKind::Q4Top => "q4_top",
        }
    }

    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A logical stream of one session. A receiver counts data messages and EOFs per (stream, sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stream {
    Transactions,
    TransactionItems,
    Users,
    Stores,
    MenuItems,
    Q2Partial,
    Q3Partial,
    Q4Partial,
    Q4Candidates,
    Results(Query),
}

/// The result streams the gateway collects, one per query (Q2 carries both of its result kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Query {
    Q1,
    Q2,
    Q3,
    Q4,
}

impl Stream {
    /// Whether `batch` is what this stream carries: anything else on it is a poison message.
    pub fn carries(&self, batch: &Batch) -> bool {
        matches!(
            (self, batch),
            (Stream::Transactions, Batch::Transactions(_))
                | (Stream::TransactionItems, Batch::TransactionItems(_))
                | (Stream::Users, Batch::Users(_))
                | (Stream::Stores, Batch::Stores(_))
                | (Stream::MenuItems, Batch::MenuItems(_))
                | (Stream::Q2Partial, Batch::ItemSales(_))
                | (Stream::Q3Partial, Batch::StoreTpv(_))
                | (Stream::Q4Partial, Batch::Purchases(_))
                | (Stream::Q4Candidates, Batch::Candidates(_))
                | (Stream::Results(_), Batch::Results(_))
        )
    }
}

impl Query {
    pub const ALL: [Query; 4] = [Query::Q1, Query::Q2, Query::Q3, Query::Q4];
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `YYYY-MM` as a number of months since year 0, so it orders and hashes cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct YearMonth(pub u32);

impl YearMonth {
    pub fn new(year: u16, month: u8) -> Self {
        YearMonth(u32::from(year) * 12 + u32::from(month) - 1)
    }
    pub fn year(self) -> u32 {
        self.0 / 12
    }
    pub fn month(self) -> u32 {
        self.0 % 12 + 1
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// `YYYY-H1` / `YYYY-H2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct YearHalf {
    pub year: u16,
    pub half: u8,
}

impl YearHalf {
    pub fn of(year: u16, month: u8) -> Self {
        YearHalf { year, half: if month <= 6 { 1 } else { 2 } }
    }
}

impl fmt::Display for YearHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-H{}", self.year, self.half)
    }
}

/// Partial Q2 sums of one (month, item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSales {
    pub month: YearMonth,
    pub item_id: u32,
    pub quantity: i64,
    pub subtotal: i64,
}

/// Partial Q3 sum of one (semester, store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTpv {
    pub half: YearHalf,
    pub store_id: u32,
    pub cents: i64,
}

/// Partial Q4 count of one (store, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchases {
    pub store_id: u32,
    pub user_id: u32,
    pub count: u64,
}

/// A Q4 candidate: one of the top users of a store among one partition's users, with the user's birthdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub store_id: u32,
    pub user_id: u32,
    pub count: u64,
    pub birthdate: Option<Date>,
}

/// The rows a data message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Batch {
    Transactions(Vec<Transaction>),
    TransactionItems(Vec<TransactionItem>),
    Users(Vec<User>),
    Stores(Vec<Store>),
    MenuItems(Vec<MenuItem>),
    ItemSales(Vec<ItemSales>),
    StoreTpv(Vec<StoreTpv>),
    Purchases(Vec<Purchases>),
    Candidates(Vec<Candidate>),
    Results(Vec<ResultRow>),
}

impl Batch {
    pub fn len(&self) -> usize {
        match self {
            Batch::Transactions(v) => v.len(),
            Batch::TransactionItems(v) => v.len(),
            Batch::Users(v) => v.len(),
            Batch::Stores(v) => v.len(),
            Batch::MenuItems(v) => v.len(),
            Batch::ItemSales(v) => v.len(),
            Batch::StoreTpv(v) => v.len(),
            Batch::Purchases(v) => v.len(),
            Batch::Candidates(v) => v.len(),
            Batch::Results(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Data(Batch),
    /// The sender sent exactly `count` data messages (seqs `0..count`) on this stream to this receiver.
    Eof {
        count: u64,
    },
    /// The session was abandoned (its client is gone): drop all of it. Sent by the gateway to every replica.
    Purge,
}

/// One message between nodes. `(session, sender, stream, seq)` identifies it: a duplicate has the same four.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub session: SessionId,
    pub sender: NodeId,
    pub stream: Stream,
    pub seq: u64,
    pub body: Body,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // Serializing our own types into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("envelope serializes");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            None => Err(DecodeError::Empty),
            Some((&WIRE_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&v, _)) => Err(DecodeError::Version(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    #[test]
    fn envelope_round_trip_and_bad_input() {
        let env = Envelope {
            session: uuid::Uuid::from_u128(7),
            sender: NodeId { role: Role::Stage(StageKind::TxFilter), replica: 1 },
            stream: Stream::Transactions,
            seq: 42,
            body: Body::Data(Batch::Transactions(vec![Transaction {
                transaction_id: "ac6f851c-649f-42fb-a606-72be0fdcf8d2".into(),
                store_id: 5,
                user_id: None,
                final_amount: 7550,
                created_at: Timestamp { year: 2024, month: 1, day: 1, secs_of_day: 3600 },
            }])),
        };
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        assert!(matches!(Envelope::decode(&[]), Err(DecodeError::Empty)));
        assert!(matches!(Envelope::decode(&[9, 1, 2]), Err(DecodeError::Version(9))));
        assert!(matches!(Envelope::decode(&bytes[..bytes.len() / 2]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn calendar_keys_print_as_the_contract_says() {
        assert_eq!(YearMonth::new(2024, 1).to_string(), "2024-01");
        assert_eq!(YearMonth::new(2025, 12).to_string(), "2025-12");
        assert!(YearMonth::new(2024, 12) < YearMonth::new(2025, 1));
        assert_eq!(YearHalf::of(2024, 6).to_string(), "2024-H1");
        assert_eq!(YearHalf::of(2024, 7).to_string(), "2024-H2");
    }
}

/// Property tests: no bytes crash the decoder, and encoding then decoding any envelope gives it back.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use crate::model::prop_tests::{cents, date, menu_item, store, transaction, transaction_item, user};
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = StageKind> {
        prop::sample::select(StageKind::ALL.to_vec())
    }

    fn query() -> impl Strategy<Value = Query> {
        prop::sample::select(Query::ALL.to_vec())
    }

    fn node() -> impl Strategy<Value = NodeId> {
        let role = prop_oneof![Just(Role::Gateway), stage().prop_map(Role::Stage)];
        (role, any::<u16>()).prop_map(|(role, replica)| NodeId { role, replica })
    }

    fn stream() -> impl Strategy<Value = Stream> {
        use Stream::*;
        let plain = [Transactions, TransactionItems, Users, Stores, MenuItems, Q2Partial, Q3Partial, Q4Partial];
        prop_oneof![prop::sample::select(plain.to_vec()), Just(Q4Candidates), query().prop_map(Results)]
    }

    fn result_row() -> impl Strategy<Value = ResultRow> {
        let text = "\\PC{0,16}";
        let month = any::<u32>().prop_map(YearMonth);
        let half = (any::<u16>(), 1u8..=2).prop_map(|(year, half)| YearHalf { year, half });
        prop_oneof![
            (text, cents()).prop_map(|(transaction_id, final_amount)| ResultRow::Q1 { transaction_id, final_amount }),
            (month.clone(), text, any::<i64>()).prop_map(|(month, item_name, sellings_qty)| ResultRow::Q2Qty {
                month,
                item_name,
                sellings_qty
            }),
            (month, text, cents()).prop_map(|(month, item_name, profit_sum)| ResultRow::Q2Profit {
                month,
                item_name,
                profit_sum
            }),
            (half, text, cents()).prop_map(|(half, store_name, tpv)| ResultRow::Q3 { half, store_name, tpv }),
            (text, prop::option::of(date()), any::<u32>(), any::<u64>()).prop_map(
                |(store_name, birthdate, user_id, purchases_qty)| ResultRow::Q4 {
                    store_name,
                    birthdate,
                    user_id,
                    purchases_qty
                }
            ),
        ]
    }

    fn batch() -> impl Strategy<Value = Batch> {
        use prop::collection::vec;
        let (n, month) = (0..6usize, any::<u32>().prop_map(YearMonth));
        let half = (any::<u16>(), 1u8..=2).prop_map(|(year, half)| YearHalf { year, half });
        prop_oneof![
            vec(transaction(), n.clone()).prop_map(Batch::Transactions),
            vec(transaction_item(), n.clone()).prop_map(Batch::TransactionItems),
            vec(user(), n.clone()).prop_map(Batch::Users),
            vec(store(), n.clone()).prop_map(Batch::Stores),
            vec(menu_item(), n.clone()).prop_map(Batch::MenuItems),
            vec((month, any::<u32>(), any::<i64>(), any::<i64>()), n.clone()).prop_map(|v| Batch::ItemSales(
                v.into_iter()
                    .map(|(month, item_id, quantity, subtotal)| ItemSales { month, item_id, quantity, subtotal })
                    .collect()
            )),
            vec((half, any::<u32>(), any::<i64>()), n.clone()).prop_map(|v| Batch::StoreTpv(
                v.into_iter().map(|(half, store_id, cents)| StoreTpv { half, store_id, cents }).collect()
            )),
            vec((any::<u32>(), any::<u32>(), any::<u64>()), n.clone()).prop_map(|v| Batch::Purchases(
                v.into_iter().map(|(store_id, user_id, count)| Purchases { store_id, user_id, count }).collect()
            )),
            vec((any::<u32>(), any::<u32>(), any::<u64>(), prop::option::of(date())), n.clone()).prop_map(|v| {
                Batch::Candidates(
                    v.into_iter()
                        .map(|(store_id, user_id, count, birthdate)| Candidate { store_id, user_id, count, birthdate })
                        .collect(),
                )
            }),
            vec(result_row(), n).prop_map(Batch::Results),
        ]
    }

    fn envelope() -> impl Strategy<Value = Envelope> {
        let body = prop_oneof![
            4 => batch().prop_map(Body::Data),
            1 => any::<u64>().prop_map(|count| Body::Eof { count }),
            1 => Just(Body::Purge),
        ];
        (any::<u128>(), node(), stream(), any::<u64>(), body).prop_map(|(session, sender, stream, seq, body)| {
            Envelope { session: uuid::Uuid::from_u128(session), sender, stream, seq, body }
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(&bytes);
            // With the right version byte, the body parser itself is exercised.
            let _ = Envelope::decode(&[&[WIRE_VERSION][..], &bytes].concat());
        }

        #[test]
        fn encode_then_decode_is_identity(env in envelope()) {
            let bytes = env.encode();
            prop_assert_eq!(Envelope::decode(&bytes).unwrap(), env);
            // Every strict prefix is refused, never misread.
            for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                prop_assert!(Envelope::decode(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn mutated_encodings_never_panic(env in envelope(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = env.encode();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = Envelope::decode(&bytes);
        }
    }
}
