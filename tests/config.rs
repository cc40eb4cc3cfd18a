//! Config validation: the documented examples load, and every file in `config/invalid/`
//! fails with the message its first line promises.

use std::path::Path;
use std::time::Duration;

use llm_keyproxy::config::plan::{Credential, Plan};

fn env(name: &str) -> Option<String> {
    match name {
        "K" | "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" => Some("sk-KPCANARY0a1b2c3d4e5f6789".into()),
        _ => None,
    }
}

#[test]
fn example_loads_and_check_output_redacts() {
    let plan = Plan::load(Path::new("config/example.yaml"), &env).expect("example config is valid");
    let names: Vec<_> = plan.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["openai", "anthropic", "internal-gateway"]);
    let gateway = &plan.providers[2];
    assert_eq!(gateway.base_path, "/v1");
    assert!(matches!(gateway.credential, Credential::Missing(_)));
    let described = plan.describe();
    assert!(described.contains("NOT CONFIGURED"), "{described}");
    assert!(
        described.contains("authorization: ***** from env:OPENAI_API_KEY"),
        "{described}"
    );
    assert!(!described.contains("KPCANARY"), "{described}");
    assert!(!format!("{plan:?}").contains("KPCANARY"));
    // The client bounds (docs/security.md) as configured there.
    assert_eq!(plan.limits.client_write_timeout, Duration::from_secs(60));
    assert_eq!(plan.limits.websocket_idle_timeout, Duration::from_secs(600));
    assert!(
        described.contains(
            "client_write_timeout 1m (a client that accepts nothing), websocket_idle_timeout 10m"
        ),
        "{described}"
    );
}

#[test]
fn every_invalid_file_fails_with_its_message() {
    let mut checked = 0;
    for entry in std::fs::read_dir("config/invalid").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` first line", path.display()));
        let errors = match Plan::from_yaml(&text, &env) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.to_string(),
        };
        assert!(
            errors.contains(expect),
            "{}: expected `{expect}` in:\n{errors}",
            path.display()
        );
        assert!(!errors.contains("sk-literal-do-not-do-this"), "{errors}");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} invalid files");
}

#[test]
fn all_errors_reported_at_once() {
    let yaml = "
bogus: 1
limits: {connect_timeout: 30, max_request_body: lots}
providers:
  openai: {api_key: sk-literal, listen: nowhere}
  gateway: {listen: 127.0.0.1:10010, api_key: env:K}
";
    let errors = Plan::from_yaml(yaml, &env).unwrap_err();
    let paths: Vec<_> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bogus",
            "limits.max_request_body",
            "limits.connect_timeout",
            "providers.openai.listen",
            "providers.openai.api_key",
            "providers.gateway.upstream",
            "providers.gateway.auth",
        ],
        "{errors}"
    );
    assert!(errors.to_string().starts_with("7 problems in the config:"));
}

#[test]
fn missing_key_is_not_an_error() {
    let plan = Plan::from_yaml("providers:\n  openai: {api_key: env:UNSET_VAR}\n", &env).unwrap();
    match &plan.providers[0].credential {
        Credential::Missing(why) => assert_eq!(why, "UNSET_VAR is not set"),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.providers[0].listen.to_string(), "127.0.0.1:10000");
}

#[test]
fn presets_and_custom_providers() {
    let yaml = "
providers:
  openai: {api_key: env:K}
  anthropic: {api_key: env:K}
  second-openai: {preset: openai, api_key: env:K, listen: 127.0.0.1:10020, upstream: 'https://example.azure.com:8443/openai/'}
  custom: {listen: 127.0.0.1:10010, upstream: 'https://llm.example', api_key: env:K, auth: {header: X-Key}}
";
    let plan = Plan::from_yaml(yaml, &env).unwrap();
    let p = &plan.providers;
    assert_eq!(
        (p[0].host.as_str(), p[0].port, p[0].base_path.as_str()),
        ("api.openai.com", 443, "/v1")
    );
    assert_eq!(
        (p[1].host.as_str(), p[1].base_path.as_str()),
        ("api.anthropic.com", "")
    );
    assert!(p[1].extras.anthropic_version);
    assert_eq!(
        (p[2].host.as_str(), p[2].port, p[2].base_path.as_str()),
        ("example.azure.com", 8443, "/openai")
    );
    assert_eq!(p[2].origin.to_string(), "https://example.azure.com:8443/");
    match &p[3].credential {
        Credential::Configured { name, value } => {
            assert_eq!(name, "x-key");
            assert!(value.is_sensitive());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn egress_from_file_and_environment() {
    let with_proxy = |k: &str| match k {
        "HTTPS_PROXY" => Some("http://user:pw@127.0.0.1:3128".to_string()),
        "NO_PROXY" => Some("anthropic.com".to_string()),
        other => env(other),
    };
    let yaml = "providers:\n  openai: {api_key: env:K}\n  anthropic: {api_key: env:K}\n";
    let plan = Plan::from_yaml(yaml, &with_proxy).unwrap();
    assert_eq!(
        plan.providers[0].proxy.as_ref().unwrap().to_string(),
        "http://***@127.0.0.1:3128"
    );
    assert_eq!(plan.providers[0].proxy_source, "HTTPS_PROXY");
    assert!(plan.providers[1].proxy.is_none());
    assert!(!plan.describe().contains("pw"));
    let yaml = "upstream_proxy: http://10.0.0.1:3128\nproviders:\n  anthropic: {api_key: env:K}\n";
    let plan = Plan::from_yaml(yaml, &with_proxy).unwrap();
    assert_eq!(
        plan.providers[0].proxy.as_ref().unwrap().to_string(),
        "http://10.0.0.1:3128"
    );
}
