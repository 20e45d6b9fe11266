//! The event stream: everything the page hears about, broadcast to every `/api/events` WebSocket as JSON.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokio::sync::broadcast;

/// Result lines sent in one `session_results` event; the rest are counted (`more`) and can be fetched.
pub const MAX_LINES_PER_EVENT: usize = 50;

pub use coffee_types::{Event, KillCause};

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
