//! The gateway: accepts client sessions over TCP, publishes their input into the pipeline, and forwards each
//! session's results (from the session's own queue) to its client, acking a result only once the client has
//! written it. A gateway can die at any point: a client reconnects with its session id and the new gateway
//! picks up where the results queue and the client's list of received results say.

pub mod limits;
mod progress;
pub mod routing;
mod session;

use crate::amqp::{self, BrokerError, Publisher};
use crate::heartbeat::{self, Counters};
use crate::message::{NodeId, Role, SessionId};
use crate::topology::Topology;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The gateway's identity as a sender.
pub const GATEWAY: NodeId = NodeId { role: Role::Gateway, replica: 0 };

/// Messages a first-stage queue may hold before the gateway stops reading from the client that fills it.
const MAX_QUEUE_DEPTH: u32 = 512;

pub struct Gateway {
    pub topology: Topology,
    pub amqp_url: String,
    /// How long a session whose client vanished is kept before every node purges it.
    pub session_grace: Duration,
    /// Where the gateway records how far each upload is durably in the pipeline.
    pub state_dir: std::path::PathBuf,
    pub limits: limits::Limits,
}

/// What every connection of this gateway shares.
struct Shared {
    topology: Topology,
    connection: lapin::Connection,
    publisher: Publisher,
    flow: FlowControl,
    counters: Arc<Counters>,
    grace: Duration,
    state_dir: std::path::PathBuf,
    limits: limits::Limits,
    /// The connection currently serving each session; a newer one (a resume) supersedes the older.
    live: Mutex<HashMap<SessionId, u64>>,
    next_connection: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Makes a new connection the one serving `session`; returns its number.
    fn claim(&self, session: SessionId) -> u64 {
        let number = self.next_connection.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live.lock().expect("live lock").insert(session, number);
        self.update_gauge();
        number
    }

    /// Whether `number` still serves `session` (no resume came after it).
    fn serves(&self, session: SessionId, number: u64) -> bool {
        self.live.lock().expect("live lock").get(&session) == Some(&number)
    }

    fn release(&self, session: SessionId, number: u64) {
        let mut live = self.live.lock().expect("live lock");
        if live.get(&session) == Some(&number) {
            live.remove(&session);
        }
        drop(live);
        self.update_gauge();
    }

    /// Whether a connection serves `session` now.
    fn sessions_include(&self, session: SessionId) -> bool {
        self.live.lock().expect("live lock").contains_key(&session)
    }

    /// Sessions this gateway serves now.
    fn sessions(&self) -> usize {
        self.live.lock().expect("live lock").len()
    }

    fn update_gauge(&self) {
        let open = self.live.lock().expect("live lock").len() as u64;
        self.counters.open_sessions.store(open, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Gateway {
    /// Serves clients on `listener` until the broker connection fails.
    pub async fn run(self, listener: TcpListener) -> anyhow::Result<()> {
        let connection = amqp::connect_patiently(&self.amqp_url, "gateway", amqp::NODE_PATIENCE).await?;
        let channel = connection.create_channel().await?;
        amqp::declare_queues(&channel, &self.topology).await?;
        let counters = Arc::new(Counters::default());
        heartbeat::start(&connection, &self.topology, "gateway".into(), counters.clone()).await?;
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
            state_dir: self.state_dir,
            limits: self.limits,
            live: Mutex::default(),
            next_connection: 0.into(),
        });
        // Sessions a previous gateway left open: their clients have the grace period to resume them, after
        // which they are purged (a client that never learned its session id, say, cannot).
        for session in progress::UploadLog::sessions(&shared.state_dir) {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(shared.grace).await;
                if shared.sessions_include(session) || !progress::UploadLog::exists(&shared.state_dir, session) {
                    return;
                }
                if let Err(e) = session::purge(session, &shared).await {
                    warn!(%session, error = %e, "could not purge a session left by a previous gateway");
                }
            });
        }
        let connections = Arc::new(limits::Connections::default());
        let mut broker_check = tokio::time::interval(Duration::from_millis(500));
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = broker_check.tick() => {
                    // Without the broker the gateway can do nothing; exiting lets the supervisor restart it,
                    // and the restarted gateway waits patiently for the broker. The same if a channel every
                    // session shares was closed by the broker: no session could publish again (and since a
                    // broker failure only drops its clients' connections, they would resume here in vain).
                    anyhow::ensure!(shared.connection.status().connected(), "lost the broker connection");
                    anyhow::ensure!(shared.publisher.is_open(), "the broker closed the publishing channel");
                    anyhow::ensure!(shared.flow.channel.status().connected(), "the broker closed the flow channel");
                    continue;
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
                if let Err(e) = session::serve_client(socket, shared).await {
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
