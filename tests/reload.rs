//! Key reload without restart: SIGHUP-style trigger and `file:` secret rotation; new requests
//! use the new key, a stream in flight is untouched, a failed reload keeps the old key.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use llm_keyproxy::config::plan::Plan;
use llm_keyproxy::{run, Bound, Shared};
use mock_upstream::{MockConfig, MockUpstream};

const KEY_A: &str = "sk-KPCANARY0a1b2c3d4e5f6789-A";
const KEY_B: &str = "sk-KPCANARY0a1b2c3d4e5f6789-B";
const KEY_C: &str = "sk-KPCANARY0a1b2c3d4e5f6789-C";

struct Running {
    mock: MockUpstream,
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

async fn start(name: &str) -> Running {
    init_logs();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("kp-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), mock.ca_pem()).unwrap();
    std::fs::write(dir.join("key"), KEY_A).unwrap();
    let config = format!(
        "admin: {{listen: 127.0.0.1:0}}\ntls: {{extra_ca_file: '{d}/ca.pem'}}\nproviders:\n  anthropic: {{listen: 127.0.0.1:0, api_key: 'file:{d}/key', upstream_address: '{m}'}}\n",
        d = dir.display(),
        m = mock.addr()
    );
    std::fs::write(dir.join("proxy.yaml"), config).unwrap();
    let plan = Plan::load(&dir.join("proxy.yaml"), &|_: &str| None).unwrap();
    let bound = Bound::bind(&plan).await.unwrap();
    let addr = bound.provider_addrs()[0];
    let shared = Arc::new(Shared::default());
    let task = tokio::spawn(run(plan, bound, std::future::pending(), shared.clone()));
    Running {
        mock,
        shared,
        addr,
        dir,
        task,
    }
}

fn msg(addr: std::net::SocketAddr) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    post(
        addr,
        "/v1/messages",
        r#"{"model":"m","max_tokens":5,"messages":[]}"#,
    )
}

fn keys_seen(r: &Running) -> Vec<String> {
    r.mock
        .requests()
        .iter()
        .map(|q| q.header("x-api-key").unwrap_or_default())
        .collect()
}

async fn until(mut ok: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn signal_reload_swaps_the_key_and_leaves_streams_alone() {
    let r = start("signal").await;
    let body = r#"{"model":"m","max_tokens":5,"stream":true,"messages":[]}"#;
    // A stream sent with key A, still running across the reload.
    let mut req = post(r.addr, "/v1/messages", body);
    req.headers_mut()
        .insert("x-mock-chunks", "10".parse().unwrap());
    req.headers_mut()
        .insert("x-mock-gap-ms", "50".parse().unwrap());
    let stream = client().request(req).await.unwrap();
    std::fs::write(r.dir.join("key"), KEY_B).unwrap();
    r.shared.reload.notify_one();
    assert!(
        until(|| logs().contains("\"event\":\"key_reloaded\"")).await,
        "no key_reloaded logged"
    );
    assert_eq!(
        send(post(
            r.addr,
            "/v1/messages",
            r#"{"model":"m","max_tokens":5,"messages":[]}"#
        ))
        .await
        .status,
        200
    );
    let frames = frames(stream, Duration::from_secs(5))
        .await
        .expect("the stream in flight completes");
    let text: String = frames
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(text.contains("message_stop"), "{text}");
    assert_eq!(keys_seen(&r), [KEY_A, KEY_B]);
    r.task.abort();
    assert_no_canary(&logs());
}

#[tokio::test]
async fn rotated_secret_file_is_noticed_without_a_signal() {
    let r = start("poll").await;
    assert_eq!(send(msg(r.addr)).await.status, 200);
    // A different length, so the change shows even within one mtime tick.
    std::fs::write(r.dir.join("key"), format!("{KEY_C}-rotated")).unwrap();
    let mut seen = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(send(msg(r.addr)).await.status, 200);
        if keys_seen(&r).last().map(String::as_str) == Some(&format!("{KEY_C}-rotated")) {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "the rotated key was never used: {:?}",
        keys_seen(&r).len()
    );
    r.task.abort();
}

#[tokio::test]
async fn failed_reloads_keep_the_old_key() {
    let r = start("failed").await;
    // An empty secret file (mid-rotation): the old key stays.
    std::fs::write(r.dir.join("key"), "").unwrap();
    r.shared.reload.notify_one();
    assert!(until(|| logs().contains("\"event\":\"reload_kept_key\"")).await);
    assert_eq!(send(msg(r.addr)).await.status, 200);
    // A config that no longer validates: the old key stays, and the log says why.
    std::fs::write(r.dir.join("key"), KEY_B).unwrap();
    let config = std::fs::read_to_string(r.dir.join("proxy.yaml")).unwrap();
    std::fs::write(r.dir.join("proxy.yaml"), format!("{config}bogus_key: 1\n")).unwrap();
    r.shared.reload.notify_one();
    assert!(until(|| logs().contains("\"event\":\"reload_failed\"")).await);
    assert!(logs().contains("bogus_key: unknown key"));
    assert_eq!(send(msg(r.addr)).await.status, 200);
    assert_eq!(keys_seen(&r), [KEY_A, KEY_A]);
    r.task.abort();
    assert_no_canary(&logs());
}
