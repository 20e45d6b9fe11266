//! The console's JSON API as typed calls. The types mirror the backend's views (`backend/src/*.rs`); only the
//! fields the page uses are declared.

use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dataset {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Session {
    pub id: String,
    pub dataset: String,
    pub state: String,
    pub rows_sent: u64,
    pub rows_total: u64,
    pub results: BTreeMap<String, u64>,
    pub queries_done: Vec<String>,
    pub malformed: u64,
    pub error: Option<String>,
    pub started_ms: u64,
    pub elapsed_ms: u64,
}

impl Session {
    pub fn short_id(&self) -> String {
        self.id.chars().take(8).collect()
    }

    /// Sent rows over the dataset's rows, in percent (a finished session is full).
    pub fn sent_pct(&self) -> f64 {
        if self.state == "done" || self.rows_total == 0 {
            return 100.0;
        }
        (self.rows_sent as f64 * 100.0 / self.rows_total as f64).min(100.0)
    }

    /// Finished queries over the four, in percent.
    pub fn done_pct(&self) -> f64 {
        self.queries_done.len().min(4) as f64 * 25.0
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Node {
    pub name: String,
    pub role: String,
    pub replica: u16,
    pub up: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub heartbeat_age_ms: Option<u64>,
}

/// The chaos monkey. `chaos` events carry all but `max_kills`, hence the defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Chaos {
    pub running: bool,
    pub interval_ms: u64,
    pub kills: u32,
    pub max_kills: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Status {
    pub namespace: String,
    pub gateway: String,
    pub replicas: String,
    pub amqp_url: String,
    pub chaos: Chaos,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stage {
    pub name: String,
    pub replicas: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub stream: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Topology {
    pub stages: Vec<Stage>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionResults {
    pub lines: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueryComparison {
    pub name: String,
    pub left: usize,
    pub right: usize,
    pub equal: bool,
    pub missing_from_right: Vec<String>,
    pub missing_from_right_total: usize,
    pub extra_in_right: Vec<String>,
    pub extra_in_right_total: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Comparison {
    pub queries: Vec<QueryComparison>,
    pub equal: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompareResponse {
    pub left: String,
    pub right: String,
    pub comparison: Comparison,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Launched {
    pub sessions: Vec<String>,
}

/// The console's token, from the page's own URL (`?token=...`): a console bound beyond loopback requires it on
/// every API call and on the event stream. `None` when the URL has none (a loopback console needs none).
pub fn token() -> Option<String> {
    thread_local! {
        static TOKEN: Option<String> = web_sys::window()
            .and_then(|w| w.location().search().ok())
            .and_then(|search| web_sys::UrlSearchParams::new_with_str(&search).ok())
            .and_then(|params| params.get("token"))
            .filter(|t| !t.is_empty());
    }
    TOKEN.with(Clone::clone)
}

/// `url` with the token as a query parameter, for what cannot carry a header (the WebSocket, download links).
pub fn with_token(url: &str) -> String {
    match token() {
        Some(token) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}token={}", js_sys::encode_uri_component(&token))
        }
        None => url.to_owned(),
    }
}

/// The request with the token as a bearer header, if there is one.
fn authorized(request: RequestBuilder) -> RequestBuilder {
    match token() {
        Some(token) => request.header("Authorization", &format!("Bearer {token}")),
        None => request,
    }
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    decode(authorized(Request::get(path)).send().await.map_err(|e| e.to_string())?).await
}

pub async fn post<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> Result<T, String> {
    let request = authorized(Request::post(path)).json(body).map_err(|e| e.to_string())?;
    decode(request.send().await.map_err(|e| e.to_string())?).await
}

/// Posts a multipart form (an upload).
pub async fn post_form<T: DeserializeOwned>(path: &str, form: web_sys::FormData) -> Result<T, String> {
    let request = authorized(Request::post(path)).body(form).map_err(|e| e.to_string())?;
    decode(request.send().await.map_err(|e| e.to_string())?).await
}

/// The body as `T`, or the API's `{"error": ...}` message.
async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, String> {
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if response.ok() {
        return serde_json::from_str(&text).map_err(|e| format!("unexpected answer: {e}"));
    }
    let error: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Err(error["error"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned))
}

/// Bytes as `1.2 MB`.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A count with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
