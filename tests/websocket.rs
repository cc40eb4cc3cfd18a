//! WebSocket tunnelling (DESIGN 5.7): frames both ways through the proxy to the mock's echo,
//! key injected and the client's credential stripped, other upgrades 400, unconfigured 403,
//! and tunnels closed on shutdown.

mod common;
mod squid_support;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_no_canary, default_providers, logs, Harness, CANARY};
use mock_upstream::MockConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn upgrade_request(path: &str, upgrade: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: chat\r\nAuthorization: Bearer client\r\nX-Api-Key: client\r\n\r\n"
    )
}

/// Sends the upgrade and reads the response head (and anything after it, for non-101).
async fn open(addr: SocketAddr, path: &str, upgrade: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(upgrade_request(path, upgrade).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(T, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed during head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

async fn send_frame(s: &mut TcpStream, opcode: u8, payload: &[u8]) {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x80 | opcode];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f).await.unwrap();
}

async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let (b0, p) = read_raw_frame(s).await;
    (b0 & 0x0f, p)
}

/// One server frame: its first byte (FIN, RSV, opcode) and payload.
async fn read_raw_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    tokio::time::timeout(T, s.read_exact(&mut h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are unmasked");
    let len = match h[1] & 0x7f {
        126 => s.read_u16().await.unwrap() as usize,
        127 => s.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.unwrap();
    (h[0], p)
}

#[tokio::test]
async fn frames_both_ways_with_key_injected() {
    let cfg = MockConfig {
        expected_key: Some(CANARY.into()),
        ..MockConfig::default()
    };
    let h = Harness::start(cfg, "").await;
    let (mut s, head) = open(h.openai(), "/v1/responses", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(lower.contains("upgrade: websocket"), "{head}");

    for i in 0..5 {
        let msg = format!("hello {i}");
        send_frame(&mut s, 1, msg.as_bytes()).await;
        assert_eq!(read_frame(&mut s).await, (1, msg.into_bytes()));
    }
    let big = vec![7u8; 40_000];
    send_frame(&mut s, 2, &big).await;
    assert_eq!(read_frame(&mut s).await, (2, big));
    send_frame(&mut s, 9, b"ping").await;
    assert_eq!(read_frame(&mut s).await, (0xA, b"ping".to_vec()));
    send_frame(&mut s, 8, &[0x03, 0xe8]).await;
    assert_eq!(read_frame(&mut s).await.0, 8);
    // The client closes its TCP connection after the close handshake; the tunnel then ends.
    drop(s);

    let seen = h.mock.requests();
    let up = seen
        .iter()
        .find(|r| r.path_and_query == "/v1/responses")
        .expect("upgrade recorded");
    assert_eq!(up.method, "GET");
    assert_eq!(up.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(
        up.header_all("authorization"),
        vec![format!("Bearer {CANARY}")]
    );
    assert_eq!(up.header("x-api-key"), None);
    assert_eq!(up.header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(
        up.header("sec-websocket-key").as_deref(),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    assert_eq!(up.header("sec-websocket-version").as_deref(), Some("13"));
    assert_eq!(up.header("sec-websocket-protocol").as_deref(), Some("chat"));

    // The tunnel's `request_complete` line, once the close has gone through.
    let deadline = std::time::Instant::now() + T;
    let done =
        |l: &str| l.contains("\"websocket\":true") && l.contains("\"outcome\":\"completed\"");
    while !logs().lines().any(done) {
        assert!(
            std::time::Instant::now() < deadline,
            "no request_complete for the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_no_canary(&logs());
}

#[tokio::test]
async fn other_upgrades_are_400() {
    let h = Harness::start(MockConfig::default(), "").await;
    let (mut s, head) = open(h.openai(), "/v1/responses", "h2c").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let mut rest = vec![0u8; 4096];
    let n = tokio::time::timeout(T, s.read(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&rest[..n]).contains("invalid_request"),
        "{}",
        String::from_utf8_lossy(&rest[..n])
    );
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn unconfigured_provider_is_403() {
    let h = Harness::start(MockConfig::default(), "").await;
    let (_s, head) = open(h.unset(), "/v1/responses", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn upstream_refusal_is_passed_back() {
    let cfg = MockConfig {
        expected_key: Some("sk-some-other-key".into()),
        ..MockConfig::default()
    };
    let h = Harness::start(cfg, "").await;
    let (_s, head) = open(h.openai(), "/v1/responses", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

#[tokio::test]
async fn tunnels_close_on_shutdown() {
    let mut h = Harness::start(MockConfig::default(), "").await;
    let (mut s, head) = open(h.openai(), "/v1/realtime", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    send_frame(&mut s, 1, b"before").await;
    assert_eq!(read_frame(&mut s).await, (1, b"before".to_vec()));
    h.shutdown();
    let task = h.task.take().unwrap();
    tokio::time::timeout(T, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(T, s.read(&mut b)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "tunnel still open: {n:?}");
}

/// Through a real Squid: the upgrade goes out on a CONNECT tunnel like every other request.
#[tokio::test]
async fn through_squid() {
    let Some(bin) = squid_support::squid_or_skip() else {
        return;
    };
    let cfg = MockConfig {
        expected_key: Some(CANARY.into()),
        ..MockConfig::default()
    };
    let mut squid = None;
    let h = Harness::start_with(cfg, |mock| {
        let s = squid_support::Squid::start(&bin, mock.port(), squid_support::Policy::Allow);
        let yaml = format!("upstream_proxy: {}\n{}", s.url(), default_providers(mock));
        squid = Some(s);
        yaml
    })
    .await;
    let squid = squid.unwrap();
    let (mut s, head) = open(h.openai(), "/v1/responses", "websocket").await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "{head}\n{}",
        squid.diagnostics()
    );
    for i in 0..3 {
        let msg = format!("via squid {i}");
        send_frame(&mut s, 1, msg.as_bytes()).await;
        assert_eq!(read_frame(&mut s).await, (1, msg.into_bytes()));
    }
    // Squid logs a CONNECT when the tunnel ends.
    send_frame(&mut s, 8, &[0x03, 0xe8]).await;
    assert_eq!(read_frame(&mut s).await.0, 8);
    drop(s);
    let lines = squid.wait_connect_lines(1, T).await;
    assert!(!lines.is_empty(), "no CONNECT in Squid's log");
    let up = h.mock.requests();
    assert_eq!(
        up[0].header_all("authorization"),
        vec![format!("Bearer {CANARY}")]
    );
}

/// Reads frames until a whole text message (fragments put together, control frames between
/// them skipped) contains `needle`; returns it.
async fn read_message_with(s: &mut TcpStream, needle: &str) -> String {
    let mut message = Vec::new();
    loop {
        let (b0, p) = read_raw_frame(s).await;
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if opcode & 0x08 != 0 {
            continue;
        }
        if opcode != 0 {
            message.clear();
        }
        message.extend_from_slice(&p);
        if fin {
            let text = String::from_utf8(std::mem::take(&mut message)).unwrap();
            if text.contains(needle) {
                return text;
            }
        }
    }
}

/// Codex's transport: the Responses API over WebSocket. The `response.completed` usage the
/// upstream sends (fragmented, a ping between, written in uneven pieces) reaches the client
/// unchanged, and is counted: tokens metric, usage file, the tunnel's `request_complete` line
/// (model and tokens) and the provider budget, which then refuses the next request.
#[tokio::test]
async fn responses_over_websocket_usage_is_counted_and_charged() {
    let dir = std::env::temp_dir().join(format!("kp-ws-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let usage_path = dir.join("usage.jsonl");
    let up = usage_path.clone();
    let mut h = Harness::start_with(MockConfig::default(), move |m| {
        format!(
            "observability: {{token_usage: true, usage_file: '{}'}}
providers:
  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}', budget: {{tokens_total: 10}}}}
",
            up.display()
        )
    })
    .await;
    let mut s = TcpStream::connect(h.providers[0]).await.unwrap();
    let request = "GET /v1/responses HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        X-Request-ID: ws-usage-1\r\nAuthorization: Bearer client\r\n\r\n";
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(T, s.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    let create = r#"{"type":"response.create","model":"gpt-5-codex","input":"hi"}"#;
    send_frame(&mut s, 1, create.as_bytes()).await;
    let done = read_message_with(&mut s, "response.completed").await;
    let v: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(
        v["response"]["usage"]["output_tokens"], 5,
        "passed unchanged"
    );
    assert_eq!(
        v["response"]["output"][0]["content"][0]["text"],
        mock_upstream::expected_text(2)
    );
    send_frame(&mut s, 8, &[0x03, 0xe8]).await;
    while read_frame(&mut s).await.0 != 8 {}
    drop(s);

    let rec = h.mock.requests().pop().unwrap();
    assert_eq!(
        rec.header("sec-websocket-extensions"),
        None,
        "the deflate offer is not forwarded while usage is read"
    );

    // The tunnel's line, once it has ended.
    let mut line = None;
    for _ in 0..200 {
        line = logs()
            .lines()
            .find(|l| l.contains("\"request_id\":\"ws-usage-1\"") && l.contains("request_complete"))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line: serde_json::Value =
        serde_json::from_str(&line.expect("no request_complete")).unwrap();
    assert_eq!(line["websocket"], true);
    assert_eq!(line["model"], "gpt-5-codex", "{line}");
    assert_eq!(line["input_tokens"], 11, "{line}");
    assert_eq!(line["output_tokens"], 5, "{line}");

    let metrics = common::metrics_text(h.admin).await;
    let tokens = |kind: &str| {
        common::metric_value(
            &metrics,
            &format!(r#"keyproxy_tokens_total{{provider="openai",kind="{kind}"}}"#),
        )
    };
    assert_eq!(
        (tokens("input"), tokens("output")),
        (11.0, 5.0),
        "{metrics}"
    );
    assert_eq!(
        common::metric_value(
            &metrics,
            r#"keyproxy_budget_spent_tokens{scope="provider",name="openai",window="total"}"#
        ),
        16.0,
        "{metrics}"
    );

    // 16 tokens spent of 10: the next request is refused.
    let a = common::send(common::post(
        h.providers[0],
        "/v1/chat/completions",
        r#"{"model":"gpt-5","messages":[]}"#,
    ))
    .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["type"], "budget_exhausted");

    h.shutdown();
    let task = h.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let usage = std::fs::read_to_string(&usage_path).unwrap();
    let u: serde_json::Value =
        serde_json::from_str(usage.lines().find(|l| l.contains("ws-usage-1")).unwrap()).unwrap();
    assert_eq!(
        (u["input_tokens"].as_u64(), u["output_tokens"].as_u64()),
        (Some(11), Some(5))
    );
    assert_eq!(u["model"], "gpt-5-codex");
    assert_eq!(u["status"], 101);
    assert_no_canary(&logs());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tunnels count toward `limits.max_connections` (docs/security.md): with the cap held by
/// open tunnels, the next upgrade and a plain request get `503 overloaded` (counted), and
/// closing one tunnel makes room for a new one.
#[tokio::test]
async fn tunnels_count_toward_max_connections() {
    let h = Harness::start(MockConfig::default(), "limits: {max_connections: 2}").await;
    let mut tunnels = Vec::new();
    for i in 0..2 {
        let (mut s, head) = open(h.openai(), "/v1/responses", "websocket").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let msg = format!("tunnel {i}");
        send_frame(&mut s, 1, msg.as_bytes()).await;
        assert_eq!(read_frame(&mut s).await, (1, msg.into_bytes()));
        tunnels.push(s);
    }
    // The HTTP connections behind the tunnels are gone; the tunnels still hold their places.
    let upgrade = upgrade_request("/v1/responses", "websocket");
    let refused = common::raw(h.openai(), upgrade.as_bytes(), T).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"type\":\"overloaded\""), "{refused}");
    let plain = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let refused = common::raw(h.openai(), plain, T).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let series = "keyproxy_connections_refused_total{listener=\"openai\",reason=\"overloaded\"}";
    let text = common::metrics_text(h.admin).await;
    assert_eq!(common::metric_value(&text, series), 2.0, "{text}");

    // Closing one tunnel frees its place (the tunnel ends a moment after its client leaves).
    drop(tunnels.pop());
    let deadline = std::time::Instant::now() + T;
    let (mut s, head) = loop {
        let (s, head) = open(h.openai(), "/v1/responses", "websocket").await;
        if head.starts_with("HTTP/1.1 101") || std::time::Instant::now() > deadline {
            break (s, head);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    send_frame(&mut s, 1, b"again").await;
    assert_eq!(read_frame(&mut s).await, (1, b"again".to_vec()));
    // The tunnel that stayed open was never disturbed.
    send_frame(&mut tunnels[0], 1, b"still here").await;
    assert_eq!(
        read_frame(&mut tunnels[0]).await,
        (1, b"still here".to_vec())
    );
}

/// A tunnel with no bytes either way for `limits.websocket_idle_timeout` is closed, logged
/// `idle_timeout` and counted; traffic keeps a tunnel open past the timeout.
#[tokio::test]
async fn idle_tunnel_closes_after_the_timeout() {
    let h = Harness::start(
        MockConfig::default(),
        "limits: {websocket_idle_timeout: 1s}",
    )
    .await;
    let (mut s, head) = open(h.openai(), "/v1/realtime", "websocket").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let id = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_owned())
        })
        .expect("x-request-id on the 101");
    // Busy for twice the timeout: every 100 ms a frame each way.
    for i in 0..20 {
        let msg = format!("busy {i}");
        send_frame(&mut s, 1, msg.as_bytes()).await;
        assert_eq!(read_frame(&mut s).await, (1, msg.into_bytes()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silent: the proxy closes the tunnel.
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(T, s.read(&mut b))
        .await
        .expect("tunnel not closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let series = "keyproxy_stream_outcomes_total{provider=\"openai\",outcome=\"idle_timeout\"}";
    let text = common::metrics_text(h.admin).await;
    assert_eq!(common::metric_value(&text, series), 1.0, "{text}");
    let line = logs()
        .lines()
        .find(|l| l.contains(&id) && l.contains("\"request_complete\""))
        .map(str::to_owned)
        .expect("request_complete for the tunnel");
    assert!(line.contains("\"outcome\":\"idle_timeout\""), "{line}");
    assert!(line.contains("\"websocket\":true"), "{line}");
}
