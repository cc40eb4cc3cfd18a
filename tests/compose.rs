//! `keyproxy-compose`: the AWF compose fragment (DESIGN section 8).
//!
//! - Snapshots in `tests/snapshots/compose/` (exact compare; `UPDATE_SNAPSHOTS=1` rewrites).
//! - Every AWF field asserted on the parsed YAML, not on text.
//! - Each snapshot merged with a minimal AWF project (`tests/deploy/base*.yml`) must pass the
//!   real `docker-compose config` (no engine needed). Without `docker-compose` on PATH that part
//!   is skipped with a message, unless `KEYPROXY_REQUIRE_COMPOSE=1`.
//! - Keys are set to a canary in the companion's environment; it never appears in what it
//!   prints (stdout or stderr), and asking to inline a key exits 64.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_yaml_ng::Value;

const CANARY: &str = "sk-KPCANARY0a1b2c3d4e5f6789";
const BIN: &str = env!("CARGO_BIN_EXE_keyproxy-compose");
const KEY_VARS: [&str; 5] = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "COPILOT_GITHUB_TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the companion with only `keys` set (each to the canary).
fn run(args: &[&str], keys: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(args);
    for k in keys {
        cmd.env(k, CANARY);
    }
    cmd.output().unwrap()
}

fn assert_no_canary(text: &str) {
    assert!(!text.contains("KPCANARY"), "canary key leaked:\n{text}");
    assert!(!text.contains("4e5f6789"), "canary suffix leaked:\n{text}");
}

/// Stdout of a successful run; stderr must be empty and nothing may show the canary.
fn render(args: &[&str], keys: &[&str]) -> String {
    let out = run(args, keys);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_no_canary(&stdout);
    assert_no_canary(&stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    assert_eq!(stderr, "", "{args:?}");
    stdout
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    keys: &'static [&'static str],
    /// The AWF project it is merged into.
    base: &'static str,
    network: &'static str,
    proxy_ip: &'static str,
    squid: &'static str,
    agent: &'static str,
    grace: &'static str,
}

const DEFAULT: Case = Case {
    name: "",
    args: &[],
    keys: &[],
    base: "base.yml",
    network: "awf-net",
    proxy_ip: "172.30.0.30",
    squid: "http://172.30.0.10:3128",
    agent: "agent",
    grace: "10s",
};

const CASES: &[Case] = &[
    Case {
        name: "no_keys",
        ..DEFAULT
    },
    Case {
        name: "one_key",
        keys: &["OPENAI_API_KEY"],
        ..DEFAULT
    },
    Case {
        name: "all_keys",
        keys: &KEY_VARS,
        ..DEFAULT
    },
    Case {
        name: "custom_image",
        args: &["--registry", "ghcr.io/example/awf", "--tag", "v0.3.1"],
        keys: &["ANTHROPIC_API_KEY"],
        ..DEFAULT
    },
    Case {
        name: "local_build",
        args: &["--build-context", "../.."],
        keys: &["COPILOT_GITHUB_TOKEN"],
        ..DEFAULT
    },
    Case {
        name: "custom_network",
        args: &[
            "--network",
            "llm-net",
            "--subnet",
            "10.89.0.0/24",
            "--proxy-ip",
            "10.89.0.30",
            "--squid-ip",
            "10.89.0.10",
            "--squid-port",
            "3129",
            "--agent-service",
            "worker",
            "--shutdown-timeout-ms",
            "15000",
            "--env",
            "OPENAI_API_TARGET",
        ],
        keys: &["OPENAI_API_KEY", "GEMINI_API_KEY"],
        base: "base-custom.yml",
        network: "llm-net",
        proxy_ip: "10.89.0.30",
        squid: "http://10.89.0.10:3129",
        agent: "worker",
        grace: "17s",
    },
];

fn snapshot_path(name: &str) -> PathBuf {
    root().join(format!("tests/snapshots/compose/{name}.yml"))
}

fn check_snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs (UPDATE_SNAPSHOTS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("no `{key}` on the way to `{path}` in {v:?}"))
    })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(s)
        .collect()
}

/// (key variable, port, agent variables that get the base URL, placeholders)
type Route = (
    &'static str,
    u16,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);
const ROUTES: [Route; 5] = [
    (
        "OPENAI_API_KEY",
        10000,
        &["OPENAI_BASE_URL"],
        &[
            ("OPENAI_API_KEY", "sk-placeholder-for-api-proxy"),
            ("CODEX_API_KEY", "sk-placeholder-for-api-proxy"),
        ],
    ),
    (
        "ANTHROPIC_API_KEY",
        10001,
        &["ANTHROPIC_BASE_URL"],
        &[(
            "ANTHROPIC_AUTH_TOKEN",
            "sk-ant-placeholder-key-for-credential-isolation",
        )],
    ),
    (
        "COPILOT_GITHUB_TOKEN",
        10002,
        &["COPILOT_API_URL", "COPILOT_PROVIDER_BASE_URL"],
        &[
            ("COPILOT_TOKEN", "ghu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            (
                "COPILOT_GITHUB_TOKEN",
                "ghu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ],
    ),
    (
        "GEMINI_API_KEY",
        10003,
        &["GOOGLE_GEMINI_BASE_URL", "GEMINI_API_BASE_URL"],
        &[(
            "GEMINI_API_KEY",
            "gemini-api-key-placeholder-for-credential-isolation",
        )],
    ),
    (
        "GOOGLE_API_KEY",
        10004,
        &["GOOGLE_VERTEX_BASE_URL"],
        &[(
            "GOOGLE_API_KEY",
            "google-api-key-placeholder-for-credential-isolation",
        )],
    ),
];

/// DESIGN section 8 and awf-behaviours J, field by field.
fn assert_awf_fields(case: &Case, doc: &Value) {
    let services = get(doc, "services").as_mapping().unwrap();
    assert_eq!(services.len(), 2, "api-proxy and the agent only");
    let proxy = get(doc, "services.api-proxy");
    assert_eq!(s(get(proxy, "container_name")), "awf-api-proxy");
    let net = get(proxy, "networks").as_mapping().unwrap();
    assert_eq!(net.len(), 1);
    assert_eq!(
        s(get(
            get(proxy, "networks"),
            &format!("{}.ipv4_address", case.network)
        )),
        case.proxy_ip
    );
    assert_eq!(strings(get(proxy, "cap_drop")), ["ALL"]);
    assert_eq!(
        strings(get(proxy, "security_opt")),
        ["no-new-privileges:true"]
    );
    assert_eq!(get(proxy, "read_only").as_bool(), Some(true));
    assert_eq!(s(get(proxy, "mem_limit")), "512m");
    assert_eq!(s(get(proxy, "memswap_limit")), "512m");
    assert_eq!(get(proxy, "pids_limit").as_u64(), Some(100));
    assert_eq!(get(proxy, "cpu_shares").as_u64(), Some(512));
    assert_eq!(s(get(proxy, "stop_grace_period")), case.grace);

    let hc = get(proxy, "healthcheck");
    assert_eq!(strings(get(hc, "test")), ["CMD", "/llm-keyproxy", "health"]);
    // That probe's default URL is the admin listener as `awf` binds it: the container's
    // loopback, published nowhere.
    assert_eq!(
        llm_keyproxy::awf::probe::DEFAULT_URL,
        format!("http://{}/ready", llm_keyproxy::awf::render::ADMIN_LISTEN)
    );
    assert!(llm_keyproxy::awf::render::ADMIN_LISTEN.starts_with("127.0.0.1:"));
    for key in ["ports", "expose"] {
        assert!(proxy.get(key).is_none(), "the proxy service has `{key}`");
    }
    assert_eq!(s(get(hc, "interval")), "1s");
    assert_eq!(s(get(hc, "timeout")), "3s");
    assert_eq!(get(hc, "retries").as_u64(), Some(15));
    assert_eq!(s(get(hc, "start_period")), "30s");

    // The proxy's environment: keys by name only, Squid for egress, localhost direct.
    let env = strings(get(proxy, "environment"));
    for key in KEY_VARS {
        assert_eq!(
            env.contains(&key),
            case.keys.contains(&key),
            "{key} passed iff set: {env:?}"
        );
        assert!(
            !env.iter().any(|e| e.starts_with(&format!("{key}="))),
            "{key} must be passed by name, never with a value: {env:?}"
        );
    }
    assert!(env.contains(&format!("HTTPS_PROXY={}", case.squid).as_str()));
    assert!(env.contains(&format!("HTTP_PROXY={}", case.squid).as_str()));
    for var in ["NO_PROXY", "no_proxy"] {
        let v = env
            .iter()
            .find_map(|e| e.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{var} missing: {env:?}"));
        for local in ["localhost", "127.0.0.1", "::1"] {
            assert!(v.split(',').any(|x| x == local), "{var}={v}");
        }
    }
    let timeout: u64 = case.grace.trim_end_matches('s').parse::<u64>().unwrap() * 1000 - 2000;
    assert!(env.contains(&format!("AWF_API_PROXY_SHUTDOWN_TIMEOUT_MS={timeout}").as_str()));

    match case.args.iter().position(|a| *a == "--build-context") {
        Some(i) => {
            assert!(proxy.get("image").is_none());
            assert_eq!(s(get(proxy, "build.context")), case.args[i + 1]);
            assert_eq!(
                s(get(proxy, "build.dockerfile")),
                "containers/api-proxy/Dockerfile"
            );
        }
        None => {
            assert!(proxy.get("build").is_none());
            let image = s(get(proxy, "image"));
            if case.args.contains(&"--registry") {
                assert_eq!(image, "ghcr.io/example/awf/api-proxy:v0.3.1");
            } else {
                assert_eq!(image, format!("llm-keyproxy:{}", env!("CARGO_PKG_VERSION")));
            }
        }
    }

    // The agent's additions.
    let agent = get(get(doc, "services"), case.agent);
    assert_eq!(
        s(get(agent, "depends_on.api-proxy.condition")),
        "service_healthy"
    );
    let env = get(agent, "environment").as_mapping().unwrap();
    let var = |k: &str| env.get(k).map(s);
    assert_eq!(var("AWF_API_PROXY_IP"), Some(case.proxy_ip));
    for name in ["NO_PROXY", "no_proxy"] {
        let v = var(name).unwrap_or_else(|| panic!("agent {name} missing"));
        let items: Vec<&str> = v.split(',').collect();
        assert!(items.contains(&case.proxy_ip), "{name}={v}");
        assert!(items.contains(&"api-proxy"), "{name}={v}");
    }
    let mut expected = 3;
    for (key, port, url_vars, placeholders) in ROUTES {
        let on = case.keys.contains(&key);
        for url_var in url_vars {
            let want = format!("http://{}:{port}", case.proxy_ip);
            assert_eq!(var(url_var), on.then_some(want.as_str()), "{url_var}");
        }
        for (name, value) in placeholders {
            assert_eq!(var(name), on.then_some(*value), "{name}");
        }
        if on {
            expected += url_vars.len() + placeholders.len();
            if key == "COPILOT_GITHUB_TOKEN" {
                assert_eq!(var("COPILOT_OFFLINE"), Some("true"));
                expected += 1;
            }
        }
    }
    assert_eq!(env.len(), expected, "no other agent variables: {env:?}");
    // DESIGN's own examples.
    if case.proxy_ip == "172.30.0.30" && case.keys.contains(&"OPENAI_API_KEY") {
        assert_eq!(var("OPENAI_BASE_URL"), Some("http://172.30.0.30:10000"));
    }
    if case.proxy_ip == "172.30.0.30" && case.keys.contains(&"ANTHROPIC_API_KEY") {
        assert_eq!(var("ANTHROPIC_BASE_URL"), Some("http://172.30.0.30:10001"));
    }

    // With --subnet the fragment declares the network too.
    match case.args.iter().position(|a| *a == "--subnet") {
        Some(i) => {
            let n = get(get(doc, "networks"), case.network);
            let config = get(n, "ipam.config").as_sequence().unwrap();
            assert_eq!(s(get(&config[0], "subnet")), case.args[i + 1]);
        }
        None => assert!(doc.get("networks").is_none()),
    }
}

/// `docker-compose -f BASE -f FRAGMENT config`, parsed; None when docker-compose is missing
/// (and not required).
fn compose_config(case: &Case, fragment: &str) -> Option<Value> {
    let dir = root().join("target/compose-fragments");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.yml", case.name));
    std::fs::write(&file, fragment).unwrap();
    let base = root().join("tests/deploy").join(case.base);
    // A clean environment: compose fills `- OPENAI_API_KEY` from its own environment, and
    // this output is parsed, not printed.
    let out = Command::new("docker-compose")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("-f")
        .arg(&base)
        .arg("-f")
        .arg(&file)
        .arg("config")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("KEYPROXY_REQUIRE_COMPOSE").as_deref() != Ok("1"),
                "docker-compose is not installed and KEYPROXY_REQUIRE_COMPOSE=1 \
                 (Debian: apt-get install docker-compose)"
            );
            eprintln!(
                "SKIP docker-compose config for {}: docker-compose is not installed",
                case.name
            );
            common::note_skipped("docker-compose is not installed");
            return None;
        }
        Err(e) => panic!("cannot run docker-compose: {e}"),
    };
    assert!(
        out.status.success(),
        "docker-compose -f {} -f {} config failed:\n{}",
        base.display(),
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_yaml_ng::from_slice(&out.stdout).unwrap())
}

/// What the merge must keep: the fragment's fields on the proxy, the agent's own definition
/// plus the additions.
fn assert_merged(case: &Case, merged: &Value) {
    let proxy = get(merged, "services.api-proxy");
    assert_eq!(
        strings(get(proxy, "healthcheck.test")),
        ["CMD", "/llm-keyproxy", "health"]
    );
    assert_eq!(get(proxy, "read_only").as_bool(), Some(true));
    assert_eq!(s(get(proxy, "stop_grace_period")), case.grace);
    let env = get(proxy, "environment");
    for key in KEY_VARS {
        // Passed by name: compose takes the value from its own (here empty) environment.
        match env.get(key) {
            Some(v) => {
                assert!(case.keys.contains(&key), "{key}");
                assert!(v.is_null(), "{key} has a value in the merged config: {v:?}");
            }
            None => assert!(!case.keys.contains(&key), "{key} lost in the merge"),
        }
    }
    assert_eq!(s(get(env, "HTTPS_PROXY")), case.squid);
    let agent = get(get(merged, "services"), case.agent);
    assert!(
        agent.get("image").is_some(),
        "the agent's own definition is kept"
    );
    assert_eq!(
        s(get(agent, "depends_on.api-proxy.condition")),
        "service_healthy"
    );
    assert_eq!(s(get(agent, "environment.AWF_API_PROXY_IP")), case.proxy_ip);
    assert!(get(merged, "networks").get(case.network).is_some());
}

#[test]
fn snapshots_fields_and_docker_compose_config() {
    let mut validated = 0;
    for case in CASES {
        let yaml = render(case.args, case.keys);
        check_snapshot(case.name, &yaml);
        let doc: Value =
            serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", case.name));
        assert_awf_fields(case, &doc);
        if let Some(merged) = compose_config(case, &yaml) {
            assert_merged(case, &merged);
            validated += 1;
        }
    }
    eprintln!(
        "{} fragments checked, {validated} through docker-compose config",
        CASES.len()
    );
}

/// The output depends on which keys are set, never on their values.
#[test]
fn key_values_never_matter() {
    let with_canary = render(&[], &KEY_VARS);
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for k in KEY_VARS {
        cmd.env(k, "a-completely-different-and-much-longer-value-0123456789");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), with_canary);
    // Empty or blank counts as unset.
    let out = Command::new(BIN)
        .env_clear()
        .env("OPENAI_API_KEY", "  ")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), render(&[], &[]));
}

/// Exit 64, nothing on stdout, a clear reason on stderr, and never the value.
fn assert_refused(args: &[&str], keys: &[&str], reason: &str) {
    let out = run(args, keys);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_no_canary(&stdout);
    assert_no_canary(&stderr);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    assert_eq!(stdout, "", "{args:?}");
    assert!(
        stderr.contains(reason),
        "{args:?}: expected `{reason}` in:\n{stderr}"
    );
}

#[test]
fn inlining_a_key_is_refused() {
    let inline = format!("OPENAI_API_KEY={CANARY}");
    let inline_eq = format!("--env=OPENAI_API_KEY={CANARY}");
    assert_refused(&["--inline-keys"], &KEY_VARS, "refused: --inline-keys");
    assert_refused(
        &["--env", &inline],
        &["OPENAI_API_KEY"],
        "refused: --env OPENAI_API_KEY=...",
    );
    assert_refused(&[&inline_eq], &[], "refused: --env OPENAI_API_KEY=...");
    // A key's value smuggled in through another option is caught before printing.
    assert_refused(
        &["--image", CANARY],
        &["OPENAI_API_KEY"],
        "the value of OPENAI_API_KEY appears in the options",
    );
    // An invalid option echoed in a message is redacted.
    let bad_network = format!("{CANARY} net");
    assert_refused(
        &["--network", &bad_network],
        &["OPENAI_API_KEY"],
        "--network `*** net`",
    );
    // The argument parser's own errors are redacted too.
    let unknown = format!("--api-key={CANARY}");
    assert_refused(&[&unknown], &["OPENAI_API_KEY"], "unexpected argument");
}

#[test]
fn bad_options_are_all_listed() {
    let out = run(
        &[
            "--proxy-ip",
            "172.30.0.10",
            "--agent-service",
            "api-proxy",
            "--shutdown-timeout-ms",
            "0",
            "--subnet",
            "10.0.0.0/8",
        ],
        &[],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for needle in [
        "--agent-service: `api-proxy` is the proxy's own service",
        "--proxy-ip and --squid-ip are both 172.30.0.10",
        "--proxy-ip 172.30.0.10 is outside --subnet 10.0.0.0/8",
        "--squid-ip 172.30.0.10 is outside --subnet 10.0.0.0/8",
        "--shutdown-timeout-ms: a positive number",
    ] {
        assert!(stderr.contains(needle), "`{needle}` missing in:\n{stderr}");
    }
    for line in stderr.lines() {
        assert!(line.starts_with("keyproxy-compose: "), "{line}");
    }
    // Conflicting image sources are a usage error.
    let out = run(&["--image", "a:b", "--build-context", "."], &[]);
    assert_eq!(out.status.code(), Some(64));
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("--inline-keys"));
}

/// True when the installed docker-compose knows inline `configs.content` (v2.23.1 or newer).
fn compose_has_inline_configs() -> bool {
    let Ok(out) = Command::new("docker-compose")
        .args(["version", "--short"])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u32> = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    v.as_slice() >= [2, 23, 1].as_slice()
}

/// `--codex-config`: Codex (which reads no OPENAI_BASE_URL since April 2026) gets `openai_base_url`
/// pointing at the openai listener, in its system config layer.
#[test]
fn codex_config_points_codex_at_the_proxy() {
    let fragment = render(&["--codex-config"], &["OPENAI_API_KEY"]);
    let doc: Value = serde_yaml_ng::from_str(&fragment).unwrap();
    let content = s(get(&doc, "configs.awf-codex-config.content"));
    let codex: toml::Table = toml::from_str(content).unwrap();
    assert_eq!(
        codex["openai_base_url"].as_str(),
        Some("http://172.30.0.30:10000/v1")
    );
    let mount = &get(&doc, "services.agent.configs")[0];
    assert_eq!(s(get(mount, "target")), "/etc/codex/config.toml");
    assert_eq!(s(get(mount, "source")), "awf-codex-config");

    let out = run(&["--codex-config"], &["ANTHROPIC_API_KEY"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "no openai route, nothing for Codex"
    );

    if !compose_has_inline_configs() {
        common::note_skipped("docker-compose older than 2.23.1 (no inline configs)");
        return;
    }
    let dir = root().join("target/compose-fragments");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("codex-config.yml");
    std::fs::write(&file, &fragment).unwrap();
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(root().join("tests/deploy/base.yml"))
        .arg("-f")
        .arg(&file)
        .arg("config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
