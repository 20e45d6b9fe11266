//! The event stream: everything the page hears about, broadcast to every `/api/events` WebSocket as JSON.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use coffee_types::{ClusterState, NodeView};
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Result lines sent in one `session_results` event; the rest are counted (`more`) and can be fetched.
pub const MAX_LINES_PER_EVENT: usize = 50;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The cluster came up, went down or failed to start (e.g. RabbitMQ is down: `error` says how to start it).
    Cluster(ClusterState),
    /// Every node, once a second.
    Nodes {
        nodes: Vec<NodeView>,
    },
    NodeKilled {
        node: String,
        pid: Option<u32>,
        cause: &'static str,
    },
    NodeRestarted {
        node: String,
        pid: Option<u32>,
        restarts: u32,
        /// Who restarted it: a monitor (`monitor-2`), the console's `supervisor`, or unknown (a container seen
        /// running again).
        by: Option<String>,
    },
    Chaos {
        running: bool,
        interval_ms: u64,
        kills: u32,
    },
    SessionStarted {
        session: Uuid,
        dataset: String,
        rows_total: u64,
    },
    SessionProgress {
        session: Uuid,
        rows_sent: u64,
    },
    SessionFile {
        session: Uuid,
        file: String,
        rows_sent: u64,
        malformed: u64,
        refused: Option<String>,
    },
    /// Result lines as they arrive (at most [`MAX_LINES_PER_EVENT`]) and the session's counts so far.
    SessionResults {
        session: Uuid,
        lines: Vec<String>,
        more: usize,
        counts: BTreeMap<String, u64>,
    },
    SessionQueryDone {
        session: Uuid,
        query: String,
    },
    SessionDone {
        session: Uuid,
        counts: BTreeMap<String, u64>,
        elapsed_ms: u64,
    },
    SessionFailed {
        session: Uuid,
        error: String,
    },
    DatasetReady {
        id: String,
    },
    Error {
        message: String,
    },
}

/// The sending side, cloned into every task that reports something.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        // Big enough for a burst of result events; a page that still lags refetches (see `Lagged` below).
        Events { tx: broadcast::channel(4096).0 }
    }
}

impl Events {
    pub fn send(&self, event: Event) {
        // No subscriber is fine: nobody has the page open.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// `GET /api/events`: upgrades to a WebSocket that streams every event as one JSON text message.
pub async fn websocket(State(state): State<crate::AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| stream(socket, state))
}

async fn stream(mut socket: WebSocket, state: crate::AppState) {
    let mut rx = state.events.subscribe();
    // The page learns the cluster's state at once instead of at the next change.
    let hello = Event::Cluster(state.nodes.cluster_state());
    if send(&mut socket, &hello).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Ok(event) => {
                    if send(&mut socket, &event).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // The page missed events: tell it, so it refetches the lists instead of trusting its copy.
                    let event = Event::Error { message: format!("lagged: {missed} events dropped, refreshing") };
                    if send(&mut socket, &event).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // The page sends nothing but pings; a close or an error ends the stream.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(socket: &mut WebSocket, event: &Event) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).expect("events serialize");
    socket.send(Message::Text(text.into())).await
}
