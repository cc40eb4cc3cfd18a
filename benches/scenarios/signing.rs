//! SigV4 (bedrock, docs/cloud.md): what reading a 100 KiB request body whole and signing it
//! adds per request. The same 100 KiB POST to `/mock/echo` goes through a bedrock provider
//! (static keys) and through the plain provider, alternately on one connection each, p50 and
//! p99; and `sigv4::sign` alone, in process, over the same body.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use llm_keyproxy::cloud::sigv4;
use llm_keyproxy::config::cloud::AwsKeys;
use llm_keyproxy::config::secret::Secret;

use crate::support::*;

const BODY: usize = 100 * 1024;

pub async fn signed_100k(r: &mut Report, env: &Env, scale: &Scale) {
    let provider = format!(
        "signed: {{preset: bedrock, listen: '127.0.0.1:{{port}}', region: us-east-1, upstream_address: '{}', aws: {{access_key_id: env:BENCH_AWS_ID, secret_access_key: env:BENCH_AWS_SECRET}}}}",
        env.upstream.mock
    );
    let keys = [
        ("BENCH_AWS_ID", "AKIABENCHEXAMPLE0001"),
        ("BENCH_AWS_SECRET", env.upstream.key.as_str()),
    ];
    let proxy =
        ProxyProcess::spawn_provider(&env.dir, &env.upstream, "", &provider, &keys, "signing");
    proxy.wait_ready(std::time::Duration::from_secs(10));
    let signed = Target::keyproxy("llm-keyproxy (bedrock, SigV4)", &proxy);
    let plain = env.target(KEYPROXY);
    let body = Bytes::from(vec![b'x'; BODY]);
    let n = (scale.small_n / 5).max(50);
    let (mut a, mut b) = (Samples::default(), Samples::default());
    for i in 0..n + 20 {
        for (t, s) in [(plain, &mut a), (&signed, &mut b)] {
            let start = Instant::now();
            let ok = post_all(&t.client, &t.url("/mock/echo"), body.clone()).await;
            match (ok, i >= 20) {
                (Ok(()), true) => s.v.push(start.elapsed().as_secs_f64() * 1e6),
                (Err(e), _) => {
                    s.errors += 1;
                    if s.errors == 1 {
                        r.note(format!("{}: 100 KiB POST failed: {e}", t.name));
                    }
                }
                _ => {}
            }
        }
    }
    if a.errors + b.errors > 0 {
        r.check(
            false,
            format!("signing: {} + {} failed requests", a.errors, b.errors),
        );
        return;
    }
    let without = "plain provider (streamed, unsigned)";
    r.kp(
        "sigv4_100k_p50_us",
        "100 KiB POST through bedrock (read whole, SigV4): 1 connection p50 (us)",
        b.p(50.0),
        Some((without, a.p(50.0))),
        1,
    );
    r.kp(
        "sigv4_100k_p99_us",
        "100 KiB POST through bedrock (read whole, SigV4): 1 connection p99 (us)",
        b.p(99.0),
        Some((without, a.p(99.0))),
        1,
    );
    let keys = AwsKeys {
        access_key_id: Secret::new("AKIABENCHEXAMPLE0001"),
        secret_access_key: Secret::new("bench-secret-key"),
        session_token: None,
        expires: None,
    };
    let mut own = Vec::with_capacity(200);
    for _ in 0..200 {
        let (mut parts, ()) =
            http::Request::post("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke")
                .header("content-type", "application/json")
                .body(())
                .expect("request")
                .into_parts();
        let t = Instant::now();
        sigv4::sign(&mut parts, &body, &keys, "us-east-1", SystemTime::now()).expect("sign");
        own.push(t.elapsed().as_secs_f64() * 1e6);
    }
    r.kp(
        "sigv4_sign_100k_us",
        "sigv4::sign over a 100 KiB body alone, in process (median of 200, us)",
        median(own),
        None,
        1,
    );
}

/// POST and read the whole answer; Err on a transport error or a non-2xx status.
async fn post_all(c: &AnyClient, url: &str, body: Bytes) -> Result<(), String> {
    let resp = c.post(url, body).await?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    match status.is_success() {
        true => Ok(()),
        false => Err(format!("status {status}")),
    }
}
