//! The envelope every message between nodes travels in, and its codec: (session, sender, stream, seq) around
//! either a batch of typed rows, a counted end of stream, or a purge.
//!
//! Encoding is `postcard` (compact, varint) behind one version byte, so a message of an unknown version is refused
//! rather than misread.

use crate::message::{Batch, Stream};
use crate::node::NodeId;
use serde::{Deserialize, Serialize};

/// The version byte every encoded envelope starts with (2: a transaction id in a UUID's canonical text travels as
/// its 16 bytes; 3: an item carries the month of its timestamp only).
pub const WIRE_VERSION: u8 = 3;

/// A client session, as the gateway assigned it (a random UUID).
pub type SessionId = uuid::Uuid;

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Data(Batch),
    /// The sender sent exactly `count` data messages (seqs `0..count`) on this stream to this receiver.
    Eof {
        count: u64,
    },
    /// The session was abandoned (its client is gone): drop all of it. Sent by the gateway to every replica, on
    /// [`Stream::Session`].
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

/// `value` in postcard after the one byte that says its version: how every message and every client frame is
/// encoded.
pub fn encode_versioned<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(version);
    // Serializing our own types into a Vec cannot fail.
    postcard::serialize_with_flavor(value, ShortCopiesInline(out)).expect("a value serializes into a Vec")
}

/// A `Vec` output for postcard that copies short pieces (varints, small fields) byte by byte. postcard's own `Vec`
/// outputs copy every piece with a call to `memcpy`; with a few pieces per row and 32,000 rows a batch, those
/// calls were a fifth of the gateway's time and a tenth of the client's (`docs/benchmarks.md`).
struct ShortCopiesInline(Vec<u8>);

impl postcard::ser_flavors::Flavor for ShortCopiesInline {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= 16 {
            self.0.reserve(16);
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(WIRE_VERSION, self)
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
    use crate::message::{Batch, Stream};
    use crate::model::Timestamp;
    use crate::model::Transaction;
    use crate::node::{NodeId, Role, StageKind};

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
}

/// Property tests: no bytes crash the decoder, and encoding then decoding any envelope gives it back.
#[cfg(test)]
mod prop_tests {
    use super::*;
    use crate::keys::{Query, YearHalf, YearMonth};
    use crate::message::{Batch, Candidate, ItemSales, Purchases, StoreTpv, Stream};
    use crate::model::prop_tests::{cents, date, menu_item, store, transaction, transaction_item, user};
    use crate::node::{NodeId, Role, StageKind};
    use crate::results::ResultRow;
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
        prop_oneof![prop::sample::select(plain.to_vec()), Just(Q4Candidates), query().prop_map(Results), Just(Session)]
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
            // Our output writes exactly postcard's bytes, only with fewer calls.
            prop_assert_eq!(&bytes[1..], &postcard::to_allocvec(&env).unwrap()[..]);
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
