//! The client-gateway protocol over TCP: length-prefixed frames (`tokio_util`'s `LengthDelimitedCodec`, a 4-byte
//! big-endian length), each a version byte and a `postcard` body.
//!
//! A session: the client says `Hello`, the gateway answers `Welcome` with the session id; the client streams
//! `Rows` per file kind with increasing seqs and one `EndOfFile` per kind counting its batches; the gateway
//! streams `Results` as they come, a `QueryDone` per query, and `Done` at the end. A frame that does not decode
//! ends that connection with an `Error` frame, never the gateway.

use coffee_model::keys::Query;

use coffee_model::message::Batch;

use coffee_model::node::NodeId;

use bytes::Bytes;
use coffee_model::model::FileKind;
use coffee_model::results::ResultRow;
use coffee_model::wire::SessionId;
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// The version byte of every frame (2: a `Resume` lists the results it has as ranges; 3: a transaction id in a
/// UUID's canonical text travels as its 16 bytes; 4: an item carries the month of its timestamp only).
pub const PROTOCOL_VERSION: u8 = 4;

/// The largest frame either side accepts.
///
/// Small on purpose: the codec reserves buffer space for a frame's announced length as soon as it reads the
/// prefix, so this bounds what a connection can make the gateway allocate (the client cuts its batches to fit; a
/// resume is a few hundred bytes per result stream, whatever the session's size).
pub const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// How long either end of a client-gateway connection waits on a peer that stopped answering before it takes
/// the connection for lost: a peer that vanished without a FIN or a reset (its host lost power, a firewall
/// dropping the flow) is otherwise waited on forever by a client whose results are not ready yet, and by a
/// gateway whose client went quiet. Short enough that a client resumes well inside its reconnect window.
pub const DEAD_PEER_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Makes the kernel find out, within about `after`, that the peer of `socket` is gone: TCP keepalive probes
/// while the connection is idle (the first after half of `after`, then three more), and a user timeout while
/// sent bytes wait for their ack. A peer that is alive but slow answers both from its kernel; but Linux also ends
/// a connection whose peer keeps its receive window closed for longer than the user timeout (a gateway pausing
/// its client for flow control, a client that reads nothing), probes answered or not: that connection fails too,
/// and the client resumes on a new one. The connection then fails on its next read or write, like one reset.
pub fn detect_dead_peer(socket: &tokio::net::TcpStream, after: std::time::Duration) -> std::io::Result<()> {
    use std::time::Duration;
    const PROBES: u32 = 3;
    // The kernel counts keepalive times in whole seconds, and refuses zero.
    let idle = Duration::from_secs((after.as_secs() / 2).max(1));
    let interval = Duration::from_secs((after.as_secs() / 2 / u64::from(PROBES)).max(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(PROBES);
    let socket = socket2::SockRef::from(socket);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(after.max(Duration::from_secs(1))))
}

/// The most rows a client's batch may carry (the client cuts at [`crate::client::BATCH_ROWS`], half of this).
/// A frame's bytes are bounded by [`MAX_FRAME_BYTES`], but rows can be tiny on the wire and large in memory (a
/// store with an empty name: 3 bytes encoded, 32 decoded): without this, one 2 MiB frame decoded to about a
/// million rows, and a broadcast kind was then cloned per destination.
pub const MAX_ROWS_PER_FRAME: usize = 65_536;

/// A client's batch decoded as its derived `Deserialize` would, but refused as soon as its length prefix says
/// more than [`MAX_ROWS_PER_FRAME`] rows, before a row is allocated; and only of the five kinds a client sends.
mod client_batch {
    use super::MAX_ROWS_PER_FRAME;
    use coffee_model::message::Batch;
    use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, SeqAccess, Unexpected, VariantAccess, Visitor};
    use std::marker::PhantomData;

    /// The client's kinds, in `Batch`'s order (its variant indices on the wire; a test holds them to it).
    const KINDS: &[&str] = &["Transactions", "TransactionItems", "Users", "Stores", "MenuItems"];

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Batch, D::Error> {
        deserializer.deserialize_enum("Batch", KINDS, ClientBatch)
    }

    struct ClientBatch;

    impl<'de> Visitor<'de> for ClientBatch {
        type Value = Batch;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a batch of one of the client's kinds")
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Batch, A::Error> {
            let (index, rows): (u32, _) = data.variant()?;
            Ok(match index {
                0 => Batch::Transactions(rows.newtype_variant_seed(Rows(PhantomData))?),
                1 => Batch::TransactionItems(rows.newtype_variant_seed(Rows(PhantomData))?),
                2 => Batch::Users(rows.newtype_variant_seed(Rows(PhantomData))?),
                3 => Batch::Stores(rows.newtype_variant_seed(Rows(PhantomData))?),
                4 => Batch::MenuItems(rows.newtype_variant_seed(Rows(PhantomData))?),
                other => return Err(de::Error::invalid_value(Unexpected::Unsigned(other.into()), &self)),
            })
        }
    }

    /// Up to [`MAX_ROWS_PER_FRAME`] rows of `T`.
    struct Rows<T>(PhantomData<T>);

    impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Rows<T> {
        type Value = Vec<T>;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
            deserializer.deserialize_seq(self)
        }
    }

    impl<'de, T: de::Deserialize<'de>> Visitor<'de> for Rows<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_ROWS_PER_FRAME} rows")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            if announced > MAX_ROWS_PER_FRAME {
                return Err(de::Error::invalid_length(announced, &self));
            }
            let mut rows = Vec::with_capacity(announced);
            while let Some(row) = seq.next_element()? {
                if rows.len() == MAX_ROWS_PER_FRAME {
                    return Err(de::Error::invalid_length(rows.len() + 1, &self));
                }
                rows.push(row);
            }
            Ok(rows)
        }
    }
}

/// The identity of one result message: which query, who sent it, its seq, and for an end of stream the count
/// it announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResultId {
    pub query: Query,
    pub sender: NodeId,
    pub seq: u64,
    pub eof: Option<u64>,
}

/// What a resuming client already has of one result stream (one query from one sender): the seqs of its result
/// messages as half-open ranges, and the count its end of stream announced, if that came. Results arrive nearly
/// in order, so a stream is a handful of ranges however many results it carried: a resume stays small whatever
/// the session's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedStream {
    pub query: Query,
    pub sender: NodeId,
    pub seqs: Vec<(u64, u64)>,
    pub eof: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    Hello,
    /// Reconnects to a session after the connection (or the gateway) died; the client then sends its input again
    /// from the start (the pipeline drops what it already has).
    Resume {
        session: SessionId,
        /// The secret the gateway gave this client in its first `Welcome`.
        secret: u128,
        /// The results it has, so the gateway forwards only the others and knows when each query is complete.
        received: Vec<ReceivedStream>,
    },
    /// The client has written every result frame numbered up to `upto` on this connection.
    Ack {
        upto: u64,
    },
    /// One batch of parsed rows of `kind`; `seq` counts this kind's batches from 0.
    Rows {
        kind: FileKind,
        seq: u64,
        /// At most [`MAX_ROWS_PER_FRAME`] rows of one of the client's five kinds, refused as it decodes.
        #[serde(deserialize_with = "client_batch::deserialize")]
        batch: Batch,
    },
    /// The client sent `batches` batches of `kind` (seqs `0..batches`).
    EndOfFile {
        kind: FileKind,
        batches: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GatewayFrame {
    /// The session is open. On a resume, `resume_from` says how many batches of each file kind are already in
    /// the pipeline: the client sends the batches after them (and every end of file again).
    Welcome {
        session: SessionId,
        /// Needed to resume the session: only this client has it.
        secret: u128,
        resume_from: Vec<(FileKind, u64)>,
    },
    /// Result frame `n` of this connection (numbered from 1), to be acked.
    Result {
        n: u64,
        id: ResultId,
        rows: Vec<ResultRow>,
    },
    /// Every result of `query` has been sent; frame `n` of this connection, to be acked like a result.
    QueryDone {
        n: u64,
        query: Query,
    },
    Done,
    /// The gateway ends the connection (and, unless `code` says otherwise, the session).
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// Why the gateway refused a connection or ended a session, for the client to act on (the message is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The client broke the protocol: a frame out of place, out of order, or that does not decode.
    Protocol,
    /// The gateway serves its maximum of sessions: try again later.
    Busy,
    /// No such session here: it never was, or it ended with every result delivered, or it was purged.
    UnknownSession,
    /// The secret does not match the session's.
    WrongSecret,
    /// The session was abandoned and is being purged from every node: it cannot be resumed.
    SessionExpired,
    /// The session's results are gone from the broker (its results queue was deleted): it cannot complete.
    ResultsLost,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("empty frame")]
    Empty,
    #[error("unknown protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("malformed frame: {}", malformed(.0))]
    Malformed(#[from] postcard::Error),
    #[error("the peer closed the connection")]
    Closed,
}

/// Postcard keeps no message of a value a type refused (its `SerdeDeCustom`): say which bound that can be.
fn malformed(e: &postcard::Error) -> String {
    match e {
        postcard::Error::SerdeDeCustom => {
            format!("a value out of bounds (a batch of more than {MAX_ROWS_PER_FRAME} rows, or not of a client's kind)")
        }
        other => other.to_string(),
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

pub fn encode<T: Serialize>(frame: &T) -> Bytes {
    Bytes::from(coffee_model::wire::encode_versioned(PROTOCOL_VERSION, frame))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    match bytes.split_first() {
        None => Err(FrameError::Empty),
        Some((&PROTOCOL_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((&v, _)) => Err(FrameError::Version(v)),
    }
}

/// Reads frames of type `T`.
pub struct FrameReader<R, T> {
    inner: FramedRead<R, LengthDelimitedCodec>,
    _frames: std::marker::PhantomData<T>,
}

impl<R: AsyncRead + Unpin, T: DeserializeOwned> FrameReader<R, T> {
    pub fn new(reader: R) -> Self {
        FrameReader { inner: FramedRead::new(reader, codec()), _frames: std::marker::PhantomData }
    }

    /// The next frame; `Err(Closed)` at a clean end of the connection.
    pub async fn next(&mut self) -> Result<T, FrameError> {
        match self.inner.next().await {
            None => Err(FrameError::Closed),
            Some(bytes) => decode(&bytes?),
        }
    }
}

/// Writes frames of type `T`.
pub struct FrameWriter<W, T> {
    inner: FramedWrite<W, LengthDelimitedCodec>,
    _frames: std::marker::PhantomData<T>,
}

impl<W: AsyncWrite + Unpin, T: Serialize> FrameWriter<W, T> {
    pub fn new(writer: W) -> Self {
        FrameWriter { inner: FramedWrite::new(writer, codec()), _frames: std::marker::PhantomData }
    }

    pub async fn send(&mut self, frame: &T) -> Result<(), FrameError> {
        Ok(self.inner.send(encode(frame)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffee_model::model::Store;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_round_trip_over_a_stream() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut writer = FrameWriter::<_, ClientFrame>::new(client);
        let mut reader = FrameReader::<_, ClientFrame>::new(server);
        let rows = ClientFrame::Rows {
            kind: FileKind::Stores,
            seq: 3,
            batch: Batch::Stores(vec![Store { store_id: 1, store_name: "G, Coffee".into() }]),
        };
        writer.send(&ClientFrame::Hello).await.unwrap();
        writer.send(&rows).await.unwrap();
        writer.send(&ClientFrame::EndOfFile { kind: FileKind::Stores, batches: 4 }).await.unwrap();
        drop(writer);
        assert_eq!(reader.next().await.unwrap(), ClientFrame::Hello);
        assert_eq!(reader.next().await.unwrap(), rows);
        assert!(matches!(reader.next().await.unwrap(), ClientFrame::EndOfFile { batches: 4, .. }));
        assert!(matches!(reader.next().await, Err(FrameError::Closed)));
    }

    /// The bounded decoding of a client's batch reads exactly what the derived encoding wrote, kind by kind,
    /// up to the bound, and refuses a longer batch or another kind before decoding its rows.
    #[test]
    fn a_client_batch_decodes_as_derived_up_to_its_bound() {
        let rows = |batch| ClientFrame::Rows { kind: FileKind::Stores, seq: 1, batch };
        for batch in [
            Batch::Transactions(vec![]),
            Batch::TransactionItems(vec![]),
            Batch::Users(vec![]),
            Batch::Stores(vec![]),
            Batch::MenuItems(vec![]),
        ] {
            let frame = rows(batch);
            assert_eq!(decode::<ClientFrame>(&encode(&frame)).unwrap(), frame);
        }
        let store = Store { store_id: 1, store_name: String::new() };
        let full = rows(Batch::Stores(vec![store.clone(); MAX_ROWS_PER_FRAME]));
        assert_eq!(decode::<ClientFrame>(&encode(&full)).unwrap(), full);
        let over = encode(&rows(Batch::Stores(vec![store; MAX_ROWS_PER_FRAME + 1])));
        let refused = decode::<ClientFrame>(&over).unwrap_err();
        assert!(refused.to_string().contains("more than 65536 rows"), "{refused}");
        let not_a_client_kind = encode(&rows(Batch::Results(vec![])));
        assert!(matches!(decode::<ClientFrame>(&not_a_client_kind), Err(FrameError::Malformed(_))));
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        assert!(matches!(decode::<ClientFrame>(&[]), Err(FrameError::Empty)));
        assert!(matches!(decode::<ClientFrame>(&[7, 0]), Err(FrameError::Version(7))));
        assert!(matches!(decode::<ClientFrame>(&[PROTOCOL_VERSION, 200, 1]), Err(FrameError::Malformed(_))));
        // A length prefix past the limit is refused before anything is buffered.
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        let mut reader = FrameReader::<_, ClientFrame>::new(server);
        assert!(matches!(reader.next().await, Err(FrameError::Io(_))));
    }
}
