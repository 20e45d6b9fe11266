//! A console started in-process for a test and served on a loopback port, with helpers to call its API and
//! read its event stream.

use crate::harness::{amqp_url, free_addr, node_binary, unique_namespace};
use coffee_console::{App, Config};
use futures::StreamExt;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A test's console settings: its own data folder, namespace and gateway port, the `coffee-node` binary as every
/// node, no frontend, local processes. Tests change the public fields they care about.
pub fn config(data_dir: &Path, test: &str) -> Config {
    let (namespace, gateway, amqp) = (unique_namespace(test), free_addr(), amqp_url());
    let (data, node) = (data_dir.display().to_string(), node_binary().display().to_string());
    let static_dir = data_dir.join("no-frontend").display().to_string();
    let args = [
        "coffee-console",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--static-dir",
        &static_dir,
        "--coffee-bin",
        &node,
        "--namespace",
        &namespace,
        "--gateway",
        &gateway,
        "--amqp-url",
        &amqp,
        "--orchestrator",
        "local",
    ];
    <Config as clap::Parser>::try_parse_from(args).expect("the test's console flags")
}

/// A console started in-process, served on loopback; its API through [`ConsoleClient`] (dereferenced).
pub struct Console {
    pub app: App,
    pub client: ConsoleClient,
}

impl Console {
    /// Starts the console and serves it on loopback, whatever `config.bind` says (the token rule follows the
    /// configured bind).
    pub async fn start(config: Config) -> Console {
        let app = App::start(config).await.expect("console start");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let router = app.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Console { app, client: ConsoleClient::new(&base, None) }
    }
}

impl std::ops::Deref for Console {
    type Target = ConsoleClient;

    fn deref(&self) -> &ConsoleClient {
        &self.client
    }
}

/// A console's API and event stream as a page reaches them: at `base`, with its token if it needs one.
pub struct ConsoleClient {
    pub base: String,
    pub http: reqwest::Client,
    token: Option<String>,
}

impl ConsoleClient {
    pub fn new(base: &str, token: Option<&str>) -> ConsoleClient {
        ConsoleClient { base: base.to_owned(), http: reqwest::Client::new(), token: token.map(str::to_owned) }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// GETs `path` and returns its JSON, failing the test on an error status.
    pub async fn get(&self, path: &str) -> Value {
        let response = self.authorized(self.http.get(format!("{}{path}", self.base))).send().await.expect("GET");
        json_of(response, path).await
    }

    /// POSTs `body` to `path` and returns the JSON answer, failing the test on an error status.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let request = self.authorized(self.http.post(format!("{}{path}", self.base)).json(&body));
        json_of(request.send().await.expect("POST"), path).await
    }

    /// POSTs `body` to `path` and returns the status and JSON answer, whatever the status (for refusals).
    pub async fn post_answer(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.authorized(self.http.post(format!("{}{path}", self.base)).json(&body));
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}")))
    }

    /// Launches one session on `dataset`; its id.
    pub async fn launch(&self, dataset: &str) -> String {
        let launched = self.post("/api/sessions", serde_json::json!({ "dataset": dataset })).await;
        launched["sessions"][0].as_str().expect("a session").to_owned()
    }

    /// Waits (120 s at most) until the session's view satisfies `ok`, failing at once if the session fails; the
    /// view.
    pub async fn wait_session(&self, session: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let view = self.get(&format!("/api/sessions/{session}")).await;
            assert!(view["state"] != "failed", "session {session} failed: {view}");
            if ok(&view) {
                return view;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "session {session} was not {what}: {view}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The row of `/api/nodes` of the node named `name` (null if the console does not list it).
    pub async fn node(&self, name: &str) -> Value {
        let nodes = self.get("/api/nodes").await;
        nodes.as_array().into_iter().flatten().find(|n| n["name"] == name).cloned().unwrap_or(Value::Null)
    }

    /// Waits (`limit` at most) until the row of node `name` satisfies `done`, failing with `what` it never did;
    /// the row.
    pub async fn node_until(&self, name: &str, limit: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let row = self.node(name).await;
            if done(&row) {
                return row;
            }
            assert!(started.elapsed() < limit, "{name} never {what}: {row}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (`limit` at most) until the console lists `count` nodes (or any number, at least one), each up and
    /// heard within `fresh`; their names.
    pub async fn nodes_beating(&self, count: Option<usize>, fresh: Duration, limit: Duration) -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let nodes = self.get("/api/nodes").await;
            let nodes = nodes.as_array().expect("a list of nodes");
            let fresh_ms = fresh.as_millis() as u64;
            let beating = |n: &Value| n["up"] == true && n["heartbeat_age_ms"].as_u64().is_some_and(|a| a < fresh_ms);
            let counted = count.map_or(!nodes.is_empty(), |count| nodes.len() == count);
            if counted && nodes.iter().all(beating) {
                return nodes.iter().map(|n| n["name"].as_str().expect("a name").to_owned()).collect();
            }
            assert!(started.elapsed() < limit, "the nodes did not all come up and beat: {nodes:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The console's event stream, collected in the background from the moment this returns: the console's
    /// first message (the cluster's state) has arrived, so the socket is subscribed and no later event is missed.
    pub async fn events(&self) -> Events {
        let mut url = format!("{}/api/events", self.base.replace("http://", "ws://"));
        if let Some(token) = &self.token {
            // A browser cannot set headers on a WebSocket: the page sends its token as a query parameter.
            url = format!("{url}?token={token}");
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
        let hello = socket.next().await.expect("a first event").expect("a readable first event");
        let hello: Value = serde_json::from_str(hello.to_text().expect("text")).expect("JSON");
        assert_eq!(hello["type"], "cluster", "the stream opens with the cluster's state: {hello}");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Ok(value) = message.to_text().map(serde_json::from_str::<Value>) else { continue };
                if value.is_ok_and(|v| tx.send(v).is_err()) {
                    return;
                }
            }
        });
        Events { rx, seen: Vec::new() }
    }
}

/// The JSON of a successful answer; fails the test on an error status.
pub async fn json_of(response: reqwest::Response, path: &str) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// The events heard so far and those to come.
pub struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    pub seen: Vec<Value>,
}

impl Events {
    /// The first event of `kind` matching `pred`, among those heard or within 30 s.
    pub async fn wait(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_within(kind, Duration::from_secs(30), pred).await
    }

    /// The first event of `kind` matching `pred`, among those heard or within `limit`.
    pub async fn wait_within(&mut self, kind: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|e| e["type"] == kind && pred(e)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{kind}` event within {limit:?}"))
                .expect("event stream open");
            self.seen.push(event.clone());
            if event["type"] == kind && pred(&event) {
                return event;
            }
        }
    }
}
