//! A WebSocket echo at `/v1/responses` and `/v1/realtime` (requests with `Upgrade: websocket`):
//! the credential is checked like the OpenAI routes, the upgrade request is recorded, then text
//! and binary frames are echoed, pings answered with pongs, and a close echoed before closing.
//! A text message `{"type":"response.create",...}` is answered the way the Responses API over
//! WebSocket answers (Codex): `response.created`, text deltas, then `response.completed` with
//! usage (11 input, 5 output tokens), that last one fragmented, with a ping between the
//! fragments, and everything written in uneven pieces so readers see frames split anywhere.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::MockBody;
use crate::record::{self, ConnInfo, Recorded};
use crate::routes::{credential_ok, json, Req, Resp, Scheme};
use crate::Shared;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame payload the echo accepts.
const MAX_PAYLOAD: u64 = 16 << 20;

/// True when the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Records the upgrade request and answers 101 (or 401/404/400), then echoes frames.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Resp {
    let (mut parts, body) = req.into_parts();
    let on_upgrade = parts.extensions.remove::<OnUpgrade>();
    let read = record::read_body(body, 0).await;
    shared.push_record(Recorded::new(&parts, &info, &read));
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: read,
    };
    if !credential_ok(&shared, &req, Scheme::Bearer) {
        let body = r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        return json(&shared, StatusCode::UNAUTHORIZED, body.into());
    }
    if req.path != "/v1/responses" && req.path != "/v1/realtime" {
        return json(
            &shared,
            StatusCode::NOT_FOUND,
            r#"{"error":"no websocket here"}"#.into(),
        );
    }
    let (Some(key), Some(on_upgrade)) = (req.header("sec-websocket-key"), on_upgrade) else {
        return json(
            &shared,
            StatusCode::BAD_REQUEST,
            r#"{"error":"bad websocket upgrade"}"#.into(),
        );
    };
    let accept = accept_key(key.trim());
    tokio::spawn(async move {
        if let Ok(io) = on_upgrade.await {
            let _ = echo(io).await;
        }
    });
    let mut resp = Response::new(MockBody::full(&shared, ""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

/// Echoes frames until a close frame, an error or EOF.
async fn echo(io: Upgraded) -> std::io::Result<()> {
    let mut io = TokioIo::new(io);
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let (b0, opcode) = (head[0], head[0] & 0x0f);
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_PAYLOAD {
            return Ok(());
        }
        let mut mask = [0u8; 4];
        if masked {
            io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        io.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            1 if payload.windows(17).any(|w| w == b"\"response.create\"") => {
                for piece in responses_answer(&payload).chunks(37) {
                    io.write_all(piece).await?;
                    io.flush().await?;
                }
            }
            0..=2 => io.write_all(&frame(b0, &payload)).await?,
            9 => io.write_all(&frame(0x80 | 0xA, &payload)).await?,
            0xA => {}
            8 => {
                io.write_all(&frame(0x88, &payload)).await?;
                io.shutdown().await?;
                return Ok(());
            }
            _ => return Ok(()),
        }
        io.flush().await?;
    }
}

/// The frames answering a `response.create` (see the module docs).
fn responses_answer(request: &[u8]) -> Vec<u8> {
    let model = serde_json::from_slice::<serde_json::Value>(request)
        .ok()
        .and_then(|v| {
            v.get("model")
                .or_else(|| v.get("response").and_then(|r| r.get("model")))
                .and_then(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "gpt-5-codex".to_owned());
    let created = serde_json::json!({"type": "response.created", "response": {"id": "resp_ws", "model": model, "status": "in_progress"}});
    let mut out = frame(0x81, created.to_string().as_bytes());
    for i in 0..2 {
        let delta = serde_json::json!({"type": "response.output_text.delta", "delta": crate::chunk_text(i)});
        out.extend(frame(0x81, delta.to_string().as_bytes()));
    }
    let completed = serde_json::json!({
        "type": "response.completed",
        "response": {
            "id": "resp_ws", "model": model, "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": crate::expected_text(2)}]}],
            "usage": {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
        }
    })
    .to_string();
    let (a, rest) = completed.as_bytes().split_at(30);
    let (b, c) = rest.split_at(rest.len() / 2);
    out.extend(frame(0x01, a));
    out.extend(frame(0x89, b"mock"));
    out.extend(frame(0x00, b));
    out.extend(frame(0x80, c));
    out
}

/// An unmasked server frame.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    base64(&sha1(format!("{key}{GUID}").as_bytes()))
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc6455_example() {
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
