//! With an allow-list the path checked is the path forwarded (docs/design.md §2b): each form a
//! lenient upstream could split or decode into another path is refused with 403 `not_allowed`
//! over HTTP/1.1 and h2c and never reaches the upstream; an allowed path arrives byte for byte;
//! without an allow-list the same paths are forwarded as sent.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use mock_upstream::MockConfig;

/// Each path and what the refusal must name. None of the messages may echo the path.
const REFUSED: &[(&str, &str)] = &[
    ("/echo/ok/..%2fsecret", "an encoded `/` (%2F)"),
    ("/echo/ok/..%2Fsecret", "an encoded `/` (%2F)"),
    ("/echo/ok/..%5csecret", "an encoded `\\` (%5C)"),
    ("/echo/ok/..%5Csecret", "an encoded `\\` (%5C)"),
    ("/echo/ok/..\\secret", "a `\\`"),
    ("/echo/ok/..;/secret", "a `;` (path parameter)"),
    ("/echo/ok/..%3b/secret", "an encoded `;` (%3B)"),
    ("/echo/ok/%252e%252e/secret", "an encoded `%` (%25)"),
    ("/echo/ok/%252E%252E%252Fsecret", "an encoded `%` (%25)"),
    ("/echo/ok/..%3f/secret", "an encoded `?` (%3F)"),
    ("/echo/ok/..%23/secret", "an encoded `#` (%23)"),
    ("/echo/ok/secret%00.txt", "an encoded control character"),
    ("/echo/ok/%c0%af..%c0%afsecret", "do not decode to UTF-8"),
    ("/echo/ok/%2E%2e/secret", "not in normal form"),
];

/// Allowed: escapes that are not separators, UTF-8, and a query the list does not match.
const ALLOWED: &str = "/echo/ok/a%20b/caf%C3%A9?x=%2f..%2f&y=%252e";

/// `listed` has `allow: [GET /echo/ok/**]`; `open` is the same provider with no allow-list.
async fn start() -> Harness {
    Harness::start_with(MockConfig::default(), |m| {
        format!(
            "providers:
  listed: {{preset: anthropic, listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}', allow: ['GET /echo/ok/**']}}
  open: {{preset: anthropic, listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}'}}
"
        )
    })
    .await
}

fn get_raw(addr: SocketAddr, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends each request on one prior-knowledge h2c connection.
async fn send_h2c(addr: SocketAddr, paths: &[&str]) -> Vec<Answer> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::new();
    for path in paths {
        let resp = sender.send_request(get_raw(addr, path)).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        out.push(collect(resp).await);
    }
    out
}

async fn send_h1(addr: SocketAddr, paths: &[&str]) -> Vec<Answer> {
    let mut out = Vec::new();
    for path in paths {
        out.push(send(get_raw(addr, path)).await);
    }
    out
}

/// What the upstream received, path and query as sent on the wire, in order.
fn seen_paths(h: &Harness) -> Vec<String> {
    h.mock
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect()
}

fn assert_refused(protocol: &str, path: &str, what: &str, a: &Answer) {
    assert_eq!(a.status, 403, "{protocol} {path}: {}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["type"], "not_allowed", "{protocol} {path}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(what), "{protocol} {path}: {message}");
    assert!(
        !message.contains("secret"),
        "{protocol} {path}: the path is echoed: {message}"
    );
}

#[tokio::test]
async fn split_and_decode_tricks_are_refused_over_http1_and_h2c() {
    let h = start().await;
    let listed = h.providers[0];
    let paths: Vec<&str> = REFUSED.iter().map(|(p, _)| *p).collect();
    let h1 = send_h1(listed, &paths).await;
    let h2 = send_h2c(listed, &paths).await;
    for (i, (path, what)) in REFUSED.iter().enumerate() {
        assert_refused("HTTP/1.1", path, what, &h1[i]);
        assert_refused("h2c", path, what, &h2[i]);
    }
    let seen = seen_paths(&h);
    assert!(
        seen.is_empty(),
        "a refused path reached the upstream: {seen:?}"
    );
    let metrics = metrics_text(h.admin).await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"keyproxy_rejections_total{provider="listed",reason="not_allowed"}"#
        ),
        (2 * REFUSED.len()) as f64,
        "{metrics}"
    );
}

#[tokio::test]
async fn an_allowed_path_arrives_byte_for_byte_and_no_list_changes_nothing() {
    let h = start().await;
    let (listed, open) = (h.providers[0], h.providers[1]);
    // The control: allowed on both protocols, forwarded exactly as checked, query untouched.
    let h1 = send_h1(listed, &[ALLOWED]).await;
    let h2 = send_h2c(listed, &[ALLOWED]).await;
    assert_ne!(h1[0].status, 403, "{}", h1[0].text());
    assert_ne!(h2[0].status, 403, "{}", h2[0].text());
    let seen = seen_paths(&h);
    assert_eq!(seen, [ALLOWED, ALLOWED]);
    // Without an allow-list nothing is refused or rewritten: each path arrives as sent.
    h.mock.clear();
    let paths: Vec<&str> = REFUSED.iter().map(|(p, _)| *p).collect();
    for a in send_h1(open, &paths).await {
        assert_ne!(a.status, 403, "{}", a.text());
    }
    for a in send_h2c(open, &paths).await {
        assert_ne!(a.status, 403, "{}", a.text());
    }
    let seen = seen_paths(&h);
    let want: Vec<&str> = paths.iter().chain(paths.iter()).copied().collect();
    assert_eq!(seen, want);
}
