//! The gateway's bounds against floods, stalls and greedy peers: connections in all and per peer address,
//! sessions at once in all and per peer address, how long a client may take to say hello, to move its frames
//! along while it uploads, to read the results sent to it, or to answer at all, and how soon a session that never uploaded anything
//! gives its slot back. Each refusal is logged with its reason; other clients go on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub max_sessions: usize,
    /// Sessions one peer address holds at once (served, or waiting for a resume).
    pub max_sessions_per_peer: usize,
    /// How long a session whose client sent nothing but its `Hello` waits for a resume: it holds a slot and
    /// costs the client nothing, so it is given back soon.
    pub empty_session_grace: Duration,
    /// How long the gateway waits for a client to ack the results it was sent: a client that reads nothing
    /// while results wait for it is closed (its session then waits its grace for a resume).
    pub read_timeout: Duration,
    /// From connecting to the first frame.
    pub handshake_timeout: Duration,
    /// While the client uploads, the longest it may go without moving a few KiB (a stalled client, or half a
    /// frame sent and then nothing). A frame may take longer than this on a slow link, as long as it moves.
    pub frame_timeout: Duration,
    /// How long a client may leave the connection unanswered (no ack of what the gateway sent, no answer to a
    /// keepalive probe) before the gateway takes it for lost ([`crate::protocol::detect_dead_peer`]).
    pub dead_peer_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_peer: 64,
            max_sessions: 256,
            max_sessions_per_peer: 64,
            empty_session_grace: Duration::from_secs(1),
            read_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            dead_peer_after: crate::protocol::DEAD_PEER_AFTER,
        }
    }
}

/// Open connections, in all and per peer address.
#[derive(Default)]
pub struct Connections {
    per_peer: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; gives it back when dropped.
pub struct Admitted {
    connections: Arc<Connections>,
    peer: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_peer = self.connections.per_peer.lock().expect("connections lock");
        if let Some(n) = per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

impl Connections {
    /// Admits a connection from `peer`, or says why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, limits: &Limits) -> Result<Admitted, &'static str> {
        let mut per_peer = self.per_peer.lock().expect("connections lock");
        let total: usize = per_peer.values().sum();
        if total >= limits.max_connections {
            return Err("too many connections");
        }
        let mine = per_peer.entry(peer).or_default();
        if *mine >= limits.max_connections_per_peer {
            return Err("too many connections from this address");
        }
        *mine += 1;
        Ok(Admitted { connections: self.clone(), peer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_peer_and_given_back() {
        let limits = Limits { max_connections: 3, max_connections_per_peer: 2, ..Limits::default() };
        let connections = Arc::new(Connections::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = connections.admit(a, &limits).unwrap();
        let _second = connections.admit(a, &limits).unwrap();
        assert_eq!(connections.admit(a, &limits).err(), Some("too many connections from this address"));
        let _third = connections.admit(b, &limits).unwrap();
        assert_eq!(connections.admit(b, &limits).err(), Some("too many connections"));
        drop(first);
        assert!(connections.admit(a, &limits).is_ok(), "a place given back is free again");
    }
}
