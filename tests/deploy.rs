//! Deployment: `llm-keyproxy health` as the container healthcheck, and the manifests in
//! `docs/deploy.md`.
//!
//! - `health` (the built binary, with proxy variables pointing at a dead port to prove they
//!   are ignored) against a ready proxy (exit 0), a draining one (503: exit 1 and one reason
//!   line), a dead port and a silent peer (exit 1).
//! - The Kubernetes manifest in the docs parses (every document), names the readiness probe
//!   `/ready`, keeps keys in a Secret, and its embedded config is valid for the proxy itself;
//!   so is the systemd example config; the compose fragment shown is the companion's snapshot.
//! - The scale-out examples (section 5): replicas sharing one Redis that only the proxies
//!   reach, the Redis URL and keys from a Secret or the environment, valid configs.

mod common;

use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use llm_keyproxy::config::plan::Plan;
use mock_upstream::MockConfig;
use serde_yaml_ng::Value;

const BIN: &str = env!("CARGO_BIN_EXE_llm-keyproxy");

/// `llm-keyproxy health URL` with every proxy variable pointing at a closed port.
async fn health(url: &str) -> Output {
    tokio::process::Command::new(BIN)
        .env_clear()
        .env("HTTPS_PROXY", "http://127.0.0.1:1")
        .env("HTTP_PROXY", "http://127.0.0.1:1")
        .env("https_proxy", "http://127.0.0.1:1")
        .env("http_proxy", "http://127.0.0.1:1")
        .env("ALL_PROXY", "http://127.0.0.1:1")
        .env("NO_PROXY", "")
        .args(["health", url])
        .output()
        .await
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Exit 1 and exactly one line on stderr, containing `reason`.
fn assert_unhealthy(out: &Output, reason: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one reason line: {err:?}");
    assert!(err.starts_with("llm-keyproxy health: "), "{err}");
    assert!(err.contains(reason), "expected `{reason}` in {err:?}");
    assert!(out.stdout.is_empty());
}

async fn wait_ready(h: &Harness) {
    for _ in 0..500 {
        if h.shared.ready.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy never became ready");
}

#[tokio::test]
async fn health_ready_draining_dead_and_silent() {
    let h = Harness::start(MockConfig::default(), "").await;
    wait_ready(&h).await;
    let ready = format!("http://{}/ready", h.admin);

    let out = health(&ready).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    // /live too (an explicit URL is probed as given).
    let out = health(&format!("http://{}/live", h.admin)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Draining: /ready says 503 from the moment shutdown starts.
    h.shared.draining.store(true, Ordering::Relaxed);
    assert_unhealthy(&health(&ready).await, "answered 503");
    h.shared.draining.store(false, Ordering::Relaxed);
    assert_eq!(health(&ready).await.status.code(), Some(0));

    // A path the admin listener does not serve.
    assert_unhealthy(
        &health(&format!("http://{}/nope", h.admin)).await,
        "answered 404",
    );

    // Dead: nothing listens on that port any more.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert_unhealthy(
        &health(&format!("http://{dead}/ready")).await,
        &format!("cannot connect to {dead}"),
    );

    // Silent: accepts and never answers; the probe gives up after its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    assert_unhealthy(
        &health(&format!("http://{addr}/ready")).await,
        "did not answer within 3s",
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    hold.abort();

    // Not an http:// URL: exit 1 with the reason, no request made.
    assert_unhealthy(&health("https://127.0.0.1:9901/ready").await, "http://");
}

fn read(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The body of the first fenced block after `<!-- deploy-test: NAME -->`.
fn block_after(doc: &str, name: &str) -> String {
    let marker = format!("<!-- deploy-test: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/deploy.md has no `{marker}`"));
    let rest = &doc[at + marker.len()..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let rest = &rest[open..];
    let body_start = rest.find('\n').unwrap() + 1;
    let end = rest[body_start..]
        .find("\n```")
        .expect("the fenced block is closed");
    assert!(
        rest[..body_start].trim_end().ends_with("```yaml"),
        "the block after `{marker}` is not ```yaml"
    );
    rest[body_start..body_start + end + 1].to_owned()
}

fn docs() -> Vec<Value> {
    let text = block_after(&read("docs/deploy.md"), "kubernetes");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("the Kubernetes manifest does not parse: {e}"))
        })
        .collect()
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("no `{key}` on the way to `{path}`"))
    })
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .unwrap()
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` in {list:?}"))
}

/// A lookup that gives every `*_API_KEY` a fake key: the docs' configs must validate with keys.
fn fake_keys(name: &str) -> Option<String> {
    name.ends_with("_API_KEY")
        .then(|| format!("fake-{}", name.to_ascii_lowercase()))
}

#[test]
fn kubernetes_manifest_parses_and_probes_ready() {
    let docs = docs();
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| get(d, "kind").as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Pod"]);
    let pod = &docs[1];
    let proxy = named(get(pod, "spec.initContainers"), "llm-keyproxy");
    assert_eq!(get(proxy, "restartPolicy").as_str(), Some("Always"));

    for probe in ["readinessProbe", "startupProbe"] {
        assert_eq!(
            get(proxy, &format!("{probe}.httpGet.path")).as_str(),
            Some("/ready"),
            "{probe}"
        );
        assert_eq!(
            get(proxy, &format!("{probe}.httpGet.port")).as_u64(),
            Some(9901)
        );
    }
    assert_eq!(
        get(proxy, "livenessProbe.httpGet.path").as_str(),
        Some("/live")
    );

    let sc = get(proxy, "securityContext");
    assert_eq!(get(sc, "runAsNonRoot").as_bool(), Some(true));
    assert_eq!(get(sc, "readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(get(sc, "allowPrivilegeEscalation").as_bool(), Some(false));

    // Keys only from the Secret, only in the proxy.
    for e in get(proxy, "env").as_sequence().unwrap() {
        assert!(
            e.get("value").is_none(),
            "a literal value in the proxy env: {e:?}"
        );
        assert!(get(e, "valueFrom.secretKeyRef.name").as_str().is_some());
    }
    let agent = named(get(pod, "spec.containers"), "agent");
    let agent_env = get(agent, "env");
    assert_eq!(
        get(named(agent_env, "OPENAI_BASE_URL"), "value").as_str(),
        Some("http://127.0.0.1:10000/v1")
    );
    for e in agent_env.as_sequence().unwrap() {
        assert!(
            e.get("valueFrom").is_none(),
            "the agent reads no secret: {e:?}"
        );
    }

    // The ConfigMap's config is one the proxy accepts, and its listeners match the probes.
    let config = get(&docs[0], "data")
        .get("proxy.yaml")
        .and_then(Value::as_str)
        .expect("the ConfigMap holds proxy.yaml");
    let plan = Plan::from_yaml(config, &fake_keys).unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert_eq!(plan.admin_listen.port(), 9901);
    for p in &plan.providers {
        assert!(p.listen.ip().is_loopback(), "{} binds {}", p.name, p.listen);
    }
    let args: Vec<&str> = get(proxy, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mount = get(
        &get(proxy, "volumeMounts").as_sequence().unwrap()[0],
        "mountPath",
    )
    .as_str()
    .unwrap();
    assert_eq!(args, ["--config", &format!("{mount}/proxy.yaml")]);
}

#[test]
fn systemd_example_config_is_valid() {
    let text = block_after(&read("docs/deploy.md"), "systemd-config");
    let plan = Plan::from_yaml(&text, &fake_keys).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(plan.providers.len(), 2);
    let doc = read("docs/deploy.md");
    for needle in [
        "DynamicUser=yes",
        "LoadCredential=openai:",
        "ExecStartPre=/usr/local/bin/llm-keyproxy --config /etc/llm-keyproxy/proxy.yaml --check",
        "llm-keyproxy health",
    ] {
        assert!(doc.contains(needle), "docs/deploy.md lacks `{needle}`");
    }
}

/// The fragment shown in the docs is the one the companion prints (its snapshot).
#[test]
fn compose_example_is_the_snapshot() {
    let shown = block_after(&read("docs/deploy.md"), "compose-one-key");
    assert_eq!(shown, read("tests/snapshots/compose/one_key.yml"));
}

/// Keys, caller tokens and the Redis URL the scale-out examples read, all fake.
fn fake_shared(name: &str) -> Option<String> {
    match name {
        "KEYPROXY_REDIS_URL" => Some("redis://:fake-password@redis:6379/0".into()),
        "KEYPROXY_AGENT_TOKEN" => Some("fake-agent-token".into()),
        other => fake_keys(other),
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{e}:\n{text}")))
        .collect()
}

#[test]
fn kubernetes_replicas_share_one_redis_only_the_proxies_reach() {
    let docs = yaml_docs(&block_after(&read("docs/deploy.md"), "kubernetes-replicas"));
    let of = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| {
                get(d, "kind").as_str() == Some(kind)
                    && get(d, "metadata.name").as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let deployment = of("Deployment", "llm-keyproxy");
    assert!(get(deployment, "spec.replicas").as_u64().unwrap() >= 2);
    let proxy = named(
        get(deployment, "spec.template.spec.containers"),
        "llm-keyproxy",
    );
    assert_eq!(
        get(proxy, "readinessProbe.httpGet.path").as_str(),
        Some("/ready")
    );
    for e in get(proxy, "env").as_sequence().unwrap() {
        assert!(
            e.get("value").is_none(),
            "a literal value in the proxy env: {e:?}"
        );
        assert!(get(e, "valueFrom.secretKeyRef.name").as_str().is_some());
    }
    let config = get(of("ConfigMap", "llm-keyproxy-shared"), "data")
        .get("proxy.yaml")
        .and_then(Value::as_str)
        .unwrap();
    let plan = Plan::from_yaml(config, &fake_shared).unwrap_or_else(|e| panic!("{e}\n{config}"));
    let shared = plan.shared_state.expect("shared_state configured");
    assert_eq!(shared.redis_ref.to_string(), "env:KEYPROXY_REDIS_URL");
    assert!(
        !plan.callers.is_empty(),
        "a shared proxy requires caller tokens"
    );
    // Redis: a Service, and a NetworkPolicy letting in only the proxies' pods.
    of("Service", "redis");
    of("StatefulSet", "redis");
    let policy = of("NetworkPolicy", "redis-from-llm-keyproxy-only");
    assert_eq!(
        get(policy, "spec.podSelector.matchLabels.app").as_str(),
        Some("redis")
    );
    let from = &get(policy, "spec.ingress").as_sequence().unwrap()[0];
    let allowed = get(
        &get(from, "from").as_sequence().unwrap()[0],
        "podSelector.matchLabels.app",
    );
    assert_eq!(allowed.as_str(), Some("llm-keyproxy"));
}

#[test]
fn compose_replicas_share_one_redis_on_an_internal_network() {
    let doc = read("docs/deploy.md");
    let config = block_after(&doc, "compose-replicas-config");
    let plan = Plan::from_yaml(&config, &fake_shared).unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert!(plan.shared_state.is_some() && !plan.callers.is_empty());
    assert!(
        plan.admin_listen.ip().is_loopback(),
        "the healthcheck probes 127.0.0.1:9901"
    );
    let compose = &yaml_docs(&block_after(&doc, "compose-replicas"))[0];
    let proxy = get(compose, "services.keyproxy");
    assert!(get(proxy, "deploy.replicas").as_u64().unwrap() >= 2);
    let env = get(proxy, "environment");
    for (k, v) in env.as_mapping().unwrap() {
        let v = v.as_str().unwrap();
        assert!(v.contains("${"), "{k:?} is written literally: {v}");
    }
    let redis_nets = get(compose, "services.redis.networks")
        .as_sequence()
        .unwrap();
    assert_eq!(redis_nets.len(), 1, "Redis is on the state network only");
    let net = redis_nets[0].as_str().unwrap();
    assert_eq!(
        get(compose, &format!("networks.{net}.internal")).as_bool(),
        Some(true)
    );
    assert!(get(proxy, "networks")
        .as_sequence()
        .unwrap()
        .iter()
        .any(|n| n.as_str() == Some(net)));
}
