//! The console's doors, against a console started in-process with no broker (its cluster stays down, the API
//! answers anyway): a non-loopback bind needs its token on the API and the WebSocket (401 without it), a page of
//! another origin is refused (403), uploads past their caps are refused with a clear message and leave nothing,
//! and a file name with `../` is reduced to its last component inside the upload's folder.

use coffee_console::UploadLimits;
use coffee_tests::console::{self, Console};
use coffee_tests::harness::files_under;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const STORES_HEADER: &str = "store_id,store_name,street,postal_code,city,state,latitude,longitude\n";

async fn start_console(data_dir: &Path, bind: &str, token: Option<&str>) -> Console {
    let mut config = console::config(data_dir, "console-doors");
    config.bind = bind.into();
    config.token = token.map(str::to_owned);
    config.uploads = UploadLimits { max_files: 3, max_file_mib: 1, max_total_mib: 2 };
    config.replicas = "all=1".into();
    // Nothing listens there: the cluster fails at once and the console serves without it.
    config.amqp_url = "amqp://127.0.0.1:1/%2f".into();
    Console::start(config).await
}

/// What these tests ask of a console besides the shared helpers.
trait Doors {
    fn token(&self) -> String;
    async fn status_of(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value);
    async fn upload(&self, files: Vec<(&str, Vec<u8>)>) -> (StatusCode, Value);
    async fn websocket(&self, query: &str, origin: Option<&str>) -> u16;
}

impl Doors for Console {
    fn token(&self) -> String {
        self.app.state.token.as_deref().expect("a token").to_owned()
    }

    async fn status_of(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    async fn upload(&self, files: Vec<(&str, Vec<u8>)>) -> (StatusCode, Value) {
        let form = files
            .into_iter()
            .fold(Form::new(), |form, (name, bytes)| form.part("files", Part::bytes(bytes).file_name(name.to_owned())));
        let url = format!("{}/api/datasets/upload?token={}", self.base, self.token());
        self.status_of(self.http.post(url).multipart(form)).await
    }

    /// The status of a WebSocket handshake on `/api/events` (101 when it opens).
    async fn websocket(&self, query: &str, origin: Option<&str>) -> u16 {
        let url = format!("{}/api/events{query}", self.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().expect("ws request");
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().expect("header"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((_, response)) => response.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("websocket: {e}"),
        }
    }
}

/// A stores file of about `bytes` bytes.
fn stores_csv(bytes: usize) -> Vec<u8> {
    let mut csv = STORES_HEADER.as_bytes().to_vec();
    let mut id = 0;
    while csv.len() < bytes {
        id += 1;
        csv.extend_from_slice(format!("{id},Store {id},Main St,1,City,ST,1.0,2.0\n").as_bytes());
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_console_needs_its_token_and_its_origin() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let console = start_console(data_dir.path(), "0.0.0.0:0", None).await;
    let token = console.token();
    assert_eq!(token.len(), 32, "a generated token");
    let status = format!("{}/api/status", console.base);

    // Without the token, or with a wrong one: 401 on the API and on the WebSocket.
    let (code, body) = console.status_of(console.http.get(&status)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("token")), "{body}");
    let (code, _) = console.status_of(console.http.get(&status).bearer_auth("wrong")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = console.status_of(console.http.post(format!("{}/api/nodes/kill-random", console.base))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(console.websocket("", None).await, 401);
    assert_eq!(console.websocket("?token=wrong", None).await, 401);

    // With it, as a bearer header or a query parameter: 200, and the WebSocket opens.
    let (code, body) = console.status_of(console.http.get(&status).bearer_auth(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = console.status_of(console.http.get(format!("{status}?token={token}"))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(console.websocket(&format!("?token={token}"), None).await, 101);
    let own = console.base.clone();
    assert_eq!(console.websocket(&format!("?token={token}"), Some(&own)).await, 101);

    // Another origin is refused even with the token: the WebSocket and the API.
    assert_eq!(console.websocket(&format!("?token={token}"), Some("http://evil.example")).await, 403);
    let cross = console.http.get(&status).bearer_auth(&token).header("origin", "http://evil.example");
    assert_eq!(console.status_of(cross).await.0, StatusCode::FORBIDDEN);

    // The page itself is not behind the token (it reads the token from its own URL).
    let page = console.http.get(format!("{}/", console.base)).send().await.expect("GET /");
    assert_ne!(page.status(), StatusCode::UNAUTHORIZED);
    console.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_needs_no_token_unless_given_one() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let open = start_console(data_dir.path(), "127.0.0.1:0", None).await;
    assert!(open.app.state.token.is_none());
    assert_eq!(open.status_of(open.http.get(format!("{}/api/status", open.base))).await.0, StatusCode::OK);
    assert_eq!(open.websocket("", None).await, 101);
    open.app.shutdown().await;

    let given = start_console(data_dir.path(), "127.0.0.1:0", Some("s3cret")).await;
    assert_eq!(given.status_of(given.http.get(format!("{}/api/status", given.base))).await.0, StatusCode::UNAUTHORIZED);
    let authorized = given.http.get(format!("{}/api/status", given.base)).bearer_auth("s3cret");
    assert_eq!(given.status_of(authorized).await.0, StatusCode::OK);
    given.app.shutdown().await;
}

/// DNS rebinding: a page of `evil.test` whose name is rebound to 127.0.0.1 sends `Host: evil.test:PORT` and a
/// matching `Origin`, which an origin check alone lets through. The loopback console, which needs no token,
/// serves only loopback names: such a request is refused (403) on the API and the WebSocket. Before, `GET
/// /api/sessions`, `GET /api/nodes` and `POST /api/chaos/stop` answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_name_is_refused_by_a_loopback_console() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let console = start_console(data_dir.path(), "127.0.0.1:0", None).await;
    let port = console.base.rsplit_once(':').expect("a port").1.to_owned();
    let evil = format!("evil.test:{port}");
    let origin = format!("http://{evil}");
    let requests = [
        console.http.get(format!("{}/api/sessions", console.base)),
        console.http.get(format!("{}/api/nodes", console.base)),
        console.http.post(format!("{}/api/chaos/stop", console.base)).json(&serde_json::json!({})),
    ];
    for request in requests {
        let (code, body) = console.status_of(request.header("host", &evil).header("origin", &origin)).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("does not serve the host")), "{body}");
    }
    let url = format!("{}/api/events", console.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("ws request");
    request.headers_mut().insert("host", evil.parse().expect("header"));
    request.headers_mut().insert("origin", origin.parse().expect("header"));
    let refused = match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("the WebSocket opened for a rebound name: {:?}", other.map(|_| ())),
    };
    assert_eq!(refused, 403);
    // Its own names still work.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let request = console.http.get(format!("{}/api/sessions", console.base)).header("host", &host);
        assert_eq!(console.status_of(request).await.0, StatusCode::OK, "{host}");
    }
    console.app.shutdown().await;
}

/// The broker's password reaches no page: not `/api/status` (which used to show the broker's URL whole), not the
/// error the cluster fails with when the broker cannot be reached (which named the URL), not any other answer
/// of the API, the metrics or the event stream. They show `user:***@`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_shows_the_brokers_password() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut config = console::config(data_dir.path(), "console-secret");
    config.amqp_url = "amqp://coffee:pw-do-not-leak@127.0.0.1:1/%2f".into();
    let console = Console::start(config).await;
    // The cluster fails to reach the broker, and says why.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = console.get("/api/status").await;
        if status["cluster"].to_string().contains("127.0.0.1:1") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the cluster never said why it failed: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(status.to_string().contains("coffee:***@127.0.0.1:1"), "{status}");
    let mut answers = vec![status.to_string()];
    for path in ["/api/nodes", "/api/sessions", "/api/datasets", "/api/chaos", "/api/dead-letters", "/api/flow"] {
        let response = console.http.get(format!("{}{path}", console.base)).send().await.expect("GET");
        answers.push(response.text().await.expect("a body"));
    }
    let metrics = console.http.get(format!("{}/metrics", console.base)).send().await.expect("GET");
    answers.push(metrics.text().await.expect("a body"));
    let url = format!("{}/api/events", console.base.replace("http://", "ws://"));
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.expect("the event stream");
    use futures::StreamExt;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await;
    answers.push(format!("{first:?}"));
    for answer in &answers {
        assert!(!answer.contains("pw-do-not-leak"), "the password in an answer: {answer}");
    }
    console.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_capped_and_stay_in_the_data_folder() {
    let root = tempfile::tempdir().expect("tempdir");
    let data_dir = root.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let console = start_console(&data_dir, "0.0.0.0:0", Some("t0ken")).await;
    let uploads = data_dir.join("uploads");

    // One file over the 1 MiB per-file cap: 413, a message saying so, nothing kept.
    let (code, body) = console.upload(vec![("big.csv", stores_csv(3 << 19))]).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("big.csv") && error.contains("too large") && error.contains("1 MiB per file"), "{error}");
    // Files under the per-file cap, together over the 2 MiB total.
    let parts =
        vec![("a.csv", stores_csv(900 << 10)), ("b.csv", stores_csv(900 << 10)), ("c.csv", stores_csv(900 << 10))];
    let (code, body) = console.upload(parts).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("2 MiB per upload")), "{body}");
    // More files than the cap of 3.
    let parts = ["a.csv", "b.csv", "c.csv", "d.csv"].map(|n| (n, stores_csv(10))).to_vec();
    let (code, body) = console.upload(parts).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("too many files: at most 3")), "{body}");
    assert!(files_under(&uploads).is_empty(), "refused uploads leave nothing: {:?}", files_under(&uploads));

    // Names that try to leave the folder are cut to their last component; a name with nothing left is refused.
    let (code, body) = console.upload(vec![("..csv", stores_csv(10))]).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let hostile = ["../../escape-a.csv", "..\\..\\escape-b.csv", "/tmp/escape-c.csv"];
    let (code, body) = console.upload(hostile.iter().map(|&n| (n, stores_csv(10))).collect()).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let id = body["id"].as_str().expect("dataset id").strip_prefix("upload-").expect("an upload").to_owned();
    let mut written: Vec<PathBuf> = files_under(root.path());
    written.sort();
    let folder = uploads.join(&id);
    let expected: Vec<PathBuf> = ["stores/escape-a.csv", "stores/escape-b.csv", "stores/escape-c.csv", "upload.json"]
        .iter()
        .map(|f| folder.join(f))
        .collect();
    assert_eq!(written, expected, "everything written is inside the upload's folder");
    assert!(!Path::new("/tmp/escape-c.csv").exists());
    console.app.shutdown().await;
}
