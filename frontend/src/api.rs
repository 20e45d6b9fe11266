//! The console's JSON API as typed calls, with the backend's own view types (the serde-only `coffee-types`
//! crate, which both sides build).

use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use coffee_types::{
    ChaosFaults, ChaosView, ClusterState, CompareResponse, DatasetView, DeadLetterView, Event, FlowView, KillCause,
    Launched, NodeView, QueryComparison, ResultKind, SessionResults, SessionState, SessionView, StatusView,
    TopologyView, Uuid,
};

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

/// The local time of day (`HH:MM:SS`) of a moment given in ms since the epoch.
pub fn time_of_day(ms: u64) -> String {
    let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
    format!("{:02}:{:02}:{:02}", at.get_hours(), at.get_minutes(), at.get_seconds())
}
