//! The doors of the API (and of its WebSocket): a request addressed to a host the console does not serve is
//! refused (403: a page whose name an attacker rebinds to the console's address, DNS rebinding, sends its own
//! name as `Host` and as `Origin`, and would pass an origin check alone), so is a request from a browser page of
//! another origin (403), and when the console has a token (see [`crate::Config::effective_token`]) a request
//! without it is refused (401). The token comes as `Authorization: Bearer <token>` or, where a browser cannot set headers (the
//! WebSocket, a download link), as a `token` query parameter.

use crate::AppState;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;

/// The middleware in front of `/api`.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|h| h.to_str().unwrap_or("<not text>"));
    if let Some(host) = host.filter(|host| !state.hosts.serves(host)) {
        let message = format!("this console does not serve the host `{host}` (see --public-url)");
        tracing::warn!(%host, path = %request.uri().path(), "request for a host the console does not serve refused");
        return refuse(StatusCode::FORBIDDEN, message);
    }
    if let Err(origin) = same_origin(request.headers()) {
        let message = format!("cross-origin request from `{origin}` refused");
        tracing::warn!(%origin, path = %request.uri().path(), "cross-origin request refused");
        return refuse(StatusCode::FORBIDDEN, message);
    }
    if let Some(expected) = &state.token {
        if !presented(&request).is_some_and(|token| same_secret(token.as_bytes(), expected.as_bytes())) {
            let mut response = refuse(
                StatusCode::UNAUTHORIZED,
                "this console needs its token: open the URL it printed at start (`?token=...`)".into(),
            );
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `Ok` unless the request carries an `Origin` whose host differs from the `Host` it was sent to. Browsers send
/// `Origin` on every WebSocket handshake and every cross-origin request; tools that send none (curl, the tests)
/// are not a browser page that could be abused, and still face the token.
fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("<not text>");
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(origin.to_owned()),
    }
}

/// The token of the request: the bearer header, else the `token` query parameter.
fn presented(request: &Request) -> Option<String> {
    let bearer = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(token) = bearer.and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(token.trim().to_owned());
    }
    let Query(mut query) = Query::<HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
    query.remove("token")
}

/// Equality in time independent of where the first difference is (the length is not secret).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), v.parse().expect("header value"))).collect()
    }

    #[test]
    fn origins_must_match_the_host() {
        assert!(same_origin(&headers(&[(header::HOST, "10.0.0.5:8080")])).is_ok());
        let ok = headers(&[(header::HOST, "10.0.0.5:8080"), (header::ORIGIN, "http://10.0.0.5:8080")]);
        assert!(same_origin(&ok).is_ok());
        for bad in ["http://evil.example", "http://10.0.0.5:9999", "null", "file://", "ws://10.0.0.5:8080"] {
            let h = headers(&[(header::HOST, "10.0.0.5:8080"), (header::ORIGIN, bad)]);
            assert_eq!(same_origin(&h), Err(bad.to_owned()));
        }
    }

    #[test]
    fn tokens_from_header_or_query() {
        let request = |uri: &str, auth: Option<&str>| {
            let mut r = Request::builder().uri(uri);
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a);
            }
            r.body(axum::body::Body::empty()).expect("request")
        };
        assert_eq!(presented(&request("/api/status", Some("Bearer abc"))).as_deref(), Some("abc"));
        assert_eq!(presented(&request("/api/events?x=1&token=a%2Fb", None)).as_deref(), Some("a/b"));
        assert_eq!(presented(&request("/api/status", Some("Basic abc"))), None);
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"abc", b"ab"));
    }
}
