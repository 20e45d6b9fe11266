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

pub struct Console {
    pub app: App,
    pub base: String,
    pub http: reqwest::Client,
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
        Console { app, base, http: reqwest::Client::new() }
    }

    /// GETs `path` and returns its JSON, failing the test on an error status.
    pub async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        json_of(response, path).await
    }

    /// POSTs `body` to `path` and returns the JSON answer, failing the test on an error status.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("POST");
        json_of(response, path).await
    }

    /// The console's event stream, collected in the background from the moment this returns: the console's
    /// first message (the cluster's state) has arrived, so the socket is subscribed and no later event is missed.
    pub async fn events(&self) -> Events {
        let url = format!("{}/api/events", self.base.replace("http://", "ws://"));
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
        if let Some(found) = self.seen.iter().find(|e| e["type"] == kind && pred(e)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{kind}` event within 30 s"))
                .expect("event stream open");
            self.seen.push(event.clone());
            if event["type"] == kind && pred(&event) {
                return event;
            }
        }
    }
}
