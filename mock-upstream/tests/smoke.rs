//! Smoke tests of the mock upstream through a hyper-util legacy client over tokio-rustls, for both
//! ALPN h2 and http/1.1.

mod common;

use common::{call, client, send, T};
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use mock_upstream::{expected_text, MockConfig, MockUpstream};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("json body")
}

const AUTH: (&str, &str) = ("authorization", "Bearer sk-test-key");

#[tokio::test]
async fn openai_chat_echo_and_recording_over_h2_and_h1() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    for h2 in [true, false] {
        mock.clear();
        let c = client(&mock, h2);

        let chat = br#"{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}"#;
        let (st, hdrs, body) =
            call(&c, Method::POST, "/v1/chat/completions", &[AUTH], &chat[..]).await;
        assert_eq!(st, StatusCode::OK);
        assert!(hdrs.contains_key("x-request-id"));
        let v = json(&body);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-test");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            expected_text(5).as_str()
        );
        assert_eq!(v["usage"]["prompt_tokens"], 11);
        assert_eq!(v["usage"]["completion_tokens"], 5);
        assert_eq!(v["usage"]["total_tokens"], 16);

        let stream =
            br#"{"model":"gpt-test","stream":true,"stream_options":{"include_usage":true}}"#;
        let hdr = [AUTH, ("x-mock-chunks", "3"), ("x-mock-gap-ms", "1")];
        let (st, hdrs, body) =
            call(&c, Method::POST, "/v1/chat/completions", &hdr, &stream[..]).await;
        assert_eq!(st, StatusCode::OK);
        assert!(hdrs["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1, "{text}");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        let content: String = chunks[1..4]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(content, expected_text(3));
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[5]["choices"].as_array().unwrap().len(), 0);
        assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);

        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let digest = format!("{:x}", Sha256::digest(&payload));
        let (st, _, body) = call(
            &c,
            Method::PUT,
            "/mock/echo?x=1",
            &[("x-dup", "a"), ("x-dup", "b")],
            payload.clone(),
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let v = json(&body);
        assert_eq!(v["len"], 100_000);
        assert_eq!(v["sha256"], digest.as_str());
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["path"], "/mock/echo");

        assert!(mock.wait_for_requests(3, T).await);
        let recs = mock.requests();
        assert_eq!(recs.len(), 3);
        let want_version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let want_alpn = if h2 { "h2" } else { "http/1.1" };
        for r in &recs {
            assert_eq!(r.version, want_version);
            assert_eq!(r.sni.as_deref(), Some("api.openai.com"));
            assert_eq!(r.alpn.as_deref(), Some(want_alpn));
            assert_eq!(r.authority.as_deref(), Some("api.openai.com"));
            assert!(r.body_complete);
        }
        assert_eq!(recs[0].method, "POST");
        assert_eq!(recs[0].path_and_query, "/v1/chat/completions");
        assert_eq!(
            recs[0].header("Authorization").as_deref(),
            Some("Bearer sk-test-key")
        );
        assert_eq!(recs[0].body, chat.to_vec());
        assert_eq!(recs[1].header("x-mock-chunks").as_deref(), Some("3"));
        assert_eq!(recs[2].path_and_query, "/mock/echo?x=1");
        assert_eq!(recs[2].header_all("x-dup"), vec!["a", "b"]);
        assert_eq!(recs[2].body_len, 100_000);
        assert_eq!(recs[2].body_sha256, digest);
        assert_eq!(recs[2].body, payload);
        assert_eq!(mock.handshakes(), 1, "one pooled connection (h2={h2})");
        assert_eq!(mock.cancelled_streams(), 0);
    }
}

#[tokio::test]
async fn mock_sse_carries_timestamps_and_gaps() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    for h2 in [true, false] {
        let c = client(&mock, h2);
        let resp = send(
            &c,
            Method::GET,
            "/mock/sse?events=4&gap_ms=20&size=100",
            &[],
            "",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        // Each event arrives as its own body frame (the gap keeps them apart on the wire).
        let mut frames = Vec::new();
        let mut stream = resp.into_body();
        while let Some(frame) = tokio::time::timeout(T, stream.frame()).await.unwrap() {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames.len(), 4, "one frame per event (h2={h2})");
        let body: Vec<u8> = frames.concat();
        let text = String::from_utf8(body).unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 4);
        let mut last = 0u64;
        for (i, ev) in events.iter().enumerate() {
            let (id, data) = ev.split_once('\n').unwrap();
            assert_eq!(id, format!("id: {i}"));
            let data = data.strip_prefix("data: ").unwrap();
            assert_eq!(data.len(), 100);
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["i"], i);
            let sent = v["sent_ns"].as_u64().unwrap();
            if i > 0 {
                assert!(sent - last >= 15_000_000, "gap {} ns", sent - last);
            }
            last = sent;
        }
    }
}

#[tokio::test]
async fn credentials_and_error_shapes() {
    let cfg = MockConfig {
        expected_key: Some("sk-right".into()),
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(cfg).await.unwrap();
    let c = client(&mock, true);
    let (st, hdrs, body) = call(
        &c,
        Method::GET,
        "/v1/models",
        &[("authorization", "Bearer sk-wrong")],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(hdrs["content-type"], "application/json");
    assert!(hdrs.contains_key("x-request-id"));
    assert_eq!(json(&body)["error"]["code"], "invalid_api_key");

    let (st, _, body) = call(
        &c,
        Method::GET,
        "/v1/models",
        &[("authorization", "Bearer sk-right")],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&body)["data"][0]["id"], "gpt-4o-mini");

    let (st, hdrs, body) = call(&c, Method::POST, "/v1/messages", &[AUTH], "{}").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(hdrs.contains_key("request-id"));
    let v = json(&body);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let (st, _, body) = call(
        &c,
        Method::POST,
        "/v1/nope",
        &[("authorization", "Bearer sk-right")],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");

    let (st, _, _) = call(
        &c,
        Method::POST,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-right")],
        "not json",
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let (st, hdrs, body) = call(&c, Method::GET, "/mock/status/429?retry_after=2", &[], "").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(hdrs["retry-after"], "2");
    assert_eq!(json(&body)["status"], 429);

    let (st, _, body) = call(&c, Method::GET, "/mock/delay-headers?ms=30", &[], "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&body)["delayed_ms"], 30);
}

fn sse_event_names(text: &str) -> Vec<String> {
    text.split_terminator("\n\n")
        .map(|ev| {
            ev.lines()
                .next()
                .unwrap()
                .trim_start_matches("event: ")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn anthropic_and_responses_streams() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let c = client(&mock, false);
    let hdr = [
        ("x-api-key", "sk-ant"),
        ("x-mock-chunks", "2"),
        ("x-mock-gap-ms", "1"),
    ];
    let body = r#"{"model":"claude-test","stream":true,"max_tokens":10,"messages":[]}"#;
    let (st, _, out) = call(&c, Method::POST, "/v1/messages", &hdr, body).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8(out).unwrap();
    let names = sse_event_names(&text);
    let want = [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ];
    assert_eq!(names, want);

    let body = r#"{"model":"claude-test","max_tokens":10,"messages":[]}"#;
    let (_, _, out) = call(&c, Method::POST, "/v1/messages", &hdr, body).await;
    let v = json(&out);
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], expected_text(2).as_str());
    assert_eq!(v["usage"]["output_tokens"], 2);

    let hdr = [AUTH, ("x-mock-chunks", "2"), ("x-mock-gap-ms", "1")];
    let body = r#"{"model":"gpt-test","stream":true,"input":"hi"}"#;
    let (st, _, out) = call(&c, Method::POST, "/v1/responses", &hdr, body).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8(out).unwrap();
    let names = sse_event_names(&text);
    assert_eq!(names.first().map(String::as_str), Some("response.created"));
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "response.output_text.delta")
            .count(),
        2
    );
    assert_eq!(names.last().map(String::as_str), Some("response.completed"));
    let last = text.split_terminator("\n\n").last().unwrap();
    let data: Value =
        serde_json::from_str(last.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(data["response"]["usage"]["total_tokens"], 13);
    assert_eq!(
        data["response"]["output"][0]["content"][0]["text"],
        expected_text(2).as_str()
    );
}

#[tokio::test]
async fn cancel_abort_and_large() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    for (n, h2) in [(1, true), (2, false)] {
        let c = client(&mock, h2);
        let resp = send(&c, Method::GET, "/mock/hang", &[], "").await;
        let mut body = resp.into_body();
        let first = tokio::time::timeout(T, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(first.into_data().unwrap().starts_with(b"id: 0\n"));
        drop(body);
        assert!(
            mock.wait_for_cancelled(n, T).await,
            "hang cancelled (h2={h2})"
        );

        let resp = send(&c, Method::GET, "/mock/abort?after=2", &[], "").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let res = tokio::time::timeout(T, resp.into_body().collect())
            .await
            .unwrap();
        assert!(res.is_err(), "abort must fail the body (h2={h2})");

        let (st, hdrs, body) = call(&c, Method::GET, "/mock/large?bytes=100000", &[], "").await;
        assert_eq!(st, StatusCode::OK);
        if !h2 {
            assert_eq!(hdrs["content-length"], "100000");
        }
        assert_eq!(body.len(), 100_000);
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }
    assert_eq!(mock.cancelled_streams(), 2);
}

#[tokio::test]
async fn drop_shuts_the_server_down() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let addr = mock.addr();
    let c = client(&mock, true);
    let (st, _, _) = call(&c, Method::GET, "/mock/echo", &[], "").await;
    assert_eq!(st, StatusCode::OK);
    drop(mock);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let req = http::Request::get("https://api.openai.com/mock/echo")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(T, c.request(req)).await.unwrap();
    assert!(res.is_err(), "pooled connection must be gone");
}
