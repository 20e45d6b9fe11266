//! The gateway: accepts client sessions over TCP, publishes their input into the pipeline, and forwards each
//! session's results (from the session's own queue) to its client, acking a result only once the client has
//! written it. A gateway can die at any point: a client reconnects with its session id and the new gateway
//! picks up where the results queue and the client's list of received results say.

pub mod limits;
pub mod progress;
pub mod purge;
pub mod results;
pub mod routing;
mod session;
pub mod upload;

pub use results::result_tracker;

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat;
use crate::metrics::Counters;
use crate::topology::Topology;
use coffee_model::node::{NodeId, Role};
use coffee_model::wire::SessionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The gateway's identity as a sender.
pub const GATEWAY: NodeId = NodeId { role: Role::Gateway, replica: 0 };

/// Messages a first-stage queue may hold before the gateway stops reading from the client that fills it. A
/// client batch is up to 2 MiB, so this keeps a backlog to about 128 MiB a queue.
const MAX_QUEUE_DEPTH: u32 = 64;

pub struct Gateway {
    pub topology: Topology,
    pub amqp_url: String,
    /// How long a session whose client vanished is kept before every node purges it.
    pub session_grace: Duration,
    /// The stages' session lease: the gateway announces its sessions every quarter of it (see [`crate::lease`]).
    pub session_lease: Duration,
    /// Where the gateway records how far each upload is durably in the pipeline.
    pub state_dir: std::path::PathBuf,
    pub limits: limits::Limits,
}

/// What every connection of this gateway shares.
struct Shared {
    topology: Topology,
    connection: Arc<lapin::Connection>,
    publisher: Publisher,
    flow: FlowControl,
    counters: Arc<Counters>,
    grace: Duration,
    /// The stages' session lease: a results queue nobody consumes expires after it too.
    lease: Duration,
    state_dir: std::path::PathBuf,
    limits: limits::Limits,
    /// Who each session belongs to now: the connection serving it (a newer one, a resume, supersedes the
    /// older), or its purge; and the peer address that opened or last resumed it.
    live: Mutex<HashMap<SessionId, (Slot, std::net::IpAddr)>>,
    next_connection: std::sync::atomic::AtomicU64,
}

/// Who a session belongs to at this gateway.
#[derive(Debug, Clone)]
enum Slot {
    /// Served by the connection numbered `id`, which ends when `replaced` is cancelled; `ended` hears when it has.
    /// `secret` is the session's: only its client may replace the connection.
    Served { id: u64, secret: u128, replaced: CancellationToken, ended: watch::Receiver<()> },
    /// Being purged: a resume is refused.
    Purging,
}

impl Slot {
    fn served_by(&self, number: u64) -> bool {
        matches!(self, Slot::Served { id, .. } if *id == number)
    }
}

/// How long a resume waits for the connection it replaces to end (hand back its unacked results, stop writing to
/// the session's upload log) before it goes on anyway.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(5);

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, (Slot, std::net::IpAddr)>> {
        self.live.lock().expect("live lock")
    }

    /// Makes a new connection from `peer` the one serving `session`; refused while the session is being purged,
    /// and, for a new session, when the gateway or the peer's address holds its maximum of sessions (every
    /// session counts until it is purged: one waiting for a resume holds its slot).
    fn claim(
        &self,
        session: SessionId,
        secret: u128,
        resumed: bool,
        peer: std::net::IpAddr,
    ) -> Result<session::Claim, session::SessionError> {
        let id = self.next_connection.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let claim;
        {
            let mut live = self.live();
            if live.get(&session).is_some_and(|(slot, _)| matches!(slot, Slot::Purging)) {
                let message = format!("session {session} was abandoned and is being purged");
                return Err(session::refuse(crate::protocol::ErrorCode::SessionExpired, message));
            }
            if !resumed {
                let (max, per_peer) = (self.limits.max_sessions, self.limits.max_sessions_per_peer);
                let busy = |message: String| Err(session::refuse(crate::protocol::ErrorCode::Busy, message));
                if live.len() >= max {
                    return busy(format!("the gateway serves its maximum of {max} sessions; try again later"));
                }
                if live.values().filter(|(_, from)| *from == peer).count() >= per_peer {
                    return busy(format!("{peer} holds its maximum of {per_peer} sessions; try again later"));
                }
            }
            let replaced = CancellationToken::new();
            let (ended_tx, ended) = watch::channel(());
            let slot = Slot::Served { id, secret, replaced: replaced.clone(), ended };
            // A connection still serving the session (a client that resumed from a new connection while its old
            // one looks alive here) ends now, so the results it holds unacked go back to the queue for this one.
            if let Some((Slot::Served { replaced: older, .. }, _)) = live.insert(session, (slot, peer)) {
                older.cancel();
            }
            claim = session::Claim { id, resumed, replaced, _ended: ended_tx };
        }
        self.update_gauge();
        Ok(claim)
    }

    /// Ends the connection serving `session` now, if any, and waits until it has ended (at most
    /// [`TAKE_OVER_WAIT`]): a resume comes from a client that gave that connection up (its gateway's host
    /// looked gone, say), and the gateway may not have noticed yet. Until it ends, that connection holds the
    /// session's unacked results and may still write to its upload log.
    /// Only the session's client, which knows its `secret`, may do this.
    async fn take_over(&self, session: SessionId, secret: u128) {
        let serving = match self.live().get(&session) {
            Some((Slot::Served { secret: known, replaced, ended, .. }, _)) if *known == secret => {
                Some((replaced.clone(), ended.clone()))
            }
            _ => None,
        };
        if let Some((replaced, mut ended)) = serving {
            replaced.cancel();
            // `changed` fails once the connection's claim, the sender, is dropped: when it has ended.
            let _ = tokio::time::timeout(TAKE_OVER_WAIT, ended.changed()).await;
        }
    }

    fn release(&self, session: SessionId, number: u64) {
        let mut live = self.live();
        if live.get(&session).is_some_and(|(slot, _)| slot.served_by(number)) {
            live.remove(&session);
        }
        drop(live);
        self.update_gauge();
    }

    /// Starts purging `session` if nobody took it over: it is still served by `lost` (the connection that
    /// ended), or, for a session a previous gateway left (`None`), by nobody. Atomic with [`Shared::claim`], so
    /// a resume either wins (and no purge starts) or is refused.
    fn begin_purge(&self, session: SessionId, lost: Option<u64>) -> bool {
        let mut live = self.live();
        let current = live.get(&session);
        let free = match (lost, current) {
            (Some(number), Some((slot, _))) => slot.served_by(number),
            (Some(_), None) => false,
            (None, current) => current.is_none(),
        };
        if free {
            let peer = current.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |(_, peer)| *peer);
            live.insert(session, (Slot::Purging, peer));
        }
        free
    }

    fn end_purge(&self, session: SessionId) {
        self.live().remove(&session);
        self.update_gauge();
    }

    /// Sessions served by a connection now.
    fn sessions(&self) -> usize {
        self.live().values().filter(|(slot, _)| matches!(slot, Slot::Served { .. })).count()
    }

    fn update_gauge(&self) {
        let open = self.sessions() as u64;
        self.counters.open_sessions.store(open, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Gateway {
    /// Claims the gateway's folder (the only live gateway from here on: an older one steps aside first), listens
    /// on `addr`, and serves clients until the broker connection fails.
    pub async fn run(self, addr: &str) -> anyhow::Result<()> {
        let incarnation = std::sync::Arc::new(crate::incarnation::Incarnation::claim(&self.state_dir).await?);
        incarnation.watch();
        let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let connection = Arc::new(amqp::connect_node(&self.amqp_url, "gateway").await);
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let counters = Arc::new(Counters::default());
        heartbeat::start(&connection, &self.topology, "gateway".into(), counters.clone()).await?;
        let every = crate::lease::announce_every(self.session_lease);
        // The sessions it knows: open, waiting for a resume, or being purged (those with an upload log).
        let dir = self.state_dir.clone();
        let known = move || progress::UploadLog::ids(&dir);
        crate::lease::start_announcing(connection.clone(), &self.topology, every, known).await?;
        let publisher = Publisher::new(&connection, counters.clone()).await?;
        let flow = FlowControl { channel, limit: MAX_QUEUE_DEPTH };
        info!(addr = %listener.local_addr()?, topology = %self.topology, "gateway listening");
        let shared = Arc::new(Shared {
            topology: self.topology,
            connection,
            publisher,
            flow,
            counters,
            grace: self.session_grace,
            lease: self.session_lease,
            state_dir: self.state_dir,
            limits: self.limits,
            live: Mutex::default(),
            next_connection: 0.into(),
        });
        // Sessions a previous gateway left open: their clients have the grace period to resume them, after
        // which they are purged (a client that never learned its session id, say, cannot). One whose purge had
        // begun is purged at once.
        for (session, purging) in progress::UploadLog::sessions(&shared.state_dir) {
            let shared = shared.clone();
            tokio::spawn(async move {
                if !purging {
                    tokio::time::sleep(shared.grace).await;
                }
                if !shared.begin_purge(session, None) {
                    return; // its client resumed it
                }
                session::purge_until_done(session, &shared).await;
                shared.end_purge(session);
            });
        }
        let connections = Arc::new(limits::Connections::default());
        let mut broker_check = tokio::time::interval(Duration::from_millis(500));
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = broker_check.tick() => {
                    // A lost connection ends the process on its own (`amqp::connect_node`). A channel every
                    // session shares that the broker closed ends it here: no session could publish again (and
                    // since a broker failure only drops its clients' connections, they would resume here in
                    // vain); the supervisor restarts the gateway, which waits patiently for the broker.
                    let lost = if !shared.publisher.is_open() {
                        "the broker closed the publishing channel"
                    } else if !shared.flow.channel.status().connected() {
                        "the broker closed the flow channel"
                    } else {
                        continue;
                    };
                    return Err(BrokerError::Lost(lost.into()).into());
                }
            };
            let admitted = match connections.admit(peer.ip(), &shared.limits) {
                Ok(admitted) => admitted,
                Err(why) => {
                    warn!(%peer, reason = why, "connection refused");
                    drop(socket);
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _place = admitted;
                if let Err(e) = session::serve_client(socket, peer.ip(), shared).await {
                    warn!(%peer, error = %e, "client connection ended with an error");
                }
            });
        }
    }
}

/// Flow control: a client faster than the pipeline is paused (its TCP writes block) while the queue it feeds is
/// deeper than the limit, so the broker holds a bounded backlog per queue instead of the whole dataset.
struct FlowControl {
    channel: lapin::Channel,
    limit: u32,
}

impl FlowControl {
    async fn wait_for_room(&self, queue: &str) -> Result<(), BrokerError> {
        while amqp::queue_depth(&self.channel, queue).await? >= self.limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}
