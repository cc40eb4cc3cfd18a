//! The compose fragment's unit tests: rendered from fixed inputs, checked field by field.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn grace_period_follows_awf() {
    assert_eq!(stop_grace_period(8000), "10s");
    assert_eq!(stop_grace_period(15000), "17s");
    assert_eq!(stop_grace_period(8001), "11s");
    assert_eq!(stop_grace_period(1), "3s");
}

#[test]
fn subnets() {
    let s: Subnet = "172.30.0.0/24".parse().unwrap();
    assert!(s.contains(DEFAULT_PROXY_IP));
    assert!(!s.contains(Ipv4Addr::new(172, 30, 1, 30)));
    assert!("172.30.0.0".parse::<Subnet>().is_err());
    assert!("172.30.0.0/0".parse::<Subnet>().is_err());
    assert_eq!(s.to_string(), "172.30.0.0/24");
}

#[test]
fn env_values_are_refused_without_echo() {
    let opts = Options {
        pass_env: vec!["OPENAI_API_KEY=sk-secret-value".into()],
        ..Options::default()
    };
    let err = render(&opts, &no_env).unwrap_err();
    assert!(matches!(err, Refusal::Inline(_)));
    let text = err.to_string();
    assert!(text.contains("OPENAI_API_KEY"), "{text}");
    assert!(!text.contains("sk-secret-value"), "{text}");
}

#[test]
fn every_problem_is_listed() {
    let opts = Options {
        network: "bad net".into(),
        agent_service: SERVICE.into(),
        squid_ip: DEFAULT_PROXY_IP,
        shutdown_timeout_ms: 0,
        ..Options::default()
    };
    match render(&opts, &no_env).unwrap_err() {
        Refusal::Invalid(p) => assert_eq!(p.len(), 4, "{p:?}"),
        other => panic!("{other:?}"),
    }
}

/// The key variables here are the ones `render-config` refers to, port for port.
#[test]
fn routes_match_the_awf_contract() {
    let rendered = crate::awf::render::render_config(&no_env).unwrap().yaml;
    for route in &ROUTES {
        let preset = crate::config::presets::preset(route.preset).unwrap();
        let listen = format!("listen: 0.0.0.0:{}", preset.awf_port);
        let key = format!("api_key: env:{}", route.key_var);
        let at = rendered.find(&listen).unwrap_or_else(|| panic!("{listen}"));
        let next = rendered[at..].find("api_key:").unwrap() + at;
        assert!(
            rendered[next..].starts_with(&key),
            "{}: {rendered}",
            route.preset
        );
    }
}

#[test]
fn guards() {
    let env = |n: &str| (n == "OPENAI_API_KEY").then(|| " sk-abcdefgh12 ".to_owned());
    assert_eq!(
        leaked_var(
            "x sk-abcdefgh12 y",
            ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"],
            &env
        ),
        Some("OPENAI_API_KEY")
    );
    assert_eq!(leaked_var("nothing", ["OPENAI_API_KEY"], &env), None);
    assert_eq!(
        redact("a sk-abcdefgh12 b", ["OPENAI_API_KEY"], &env),
        "a *** b"
    );
}

/// Keyless (`AWF_AUTH_TYPE=github-oidc`): the sidecar gets the AWF_AUTH_* and GitHub OIDC
/// variables that are set, by name only; the agent gets the OpenAI port without a key.
#[test]
fn github_oidc_variables_pass_by_name() {
    let env = |name: &str| match name {
        "AWF_AUTH_TYPE" => Some("github-oidc".to_owned()),
        "AWF_AUTH_PROVIDER" => Some("aws".to_owned()),
        "AWF_AUTH_AWS_ROLE_ARN" => Some("arn:aws:iam::1:role/a".to_owned()),
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN" => Some("sk-secret-request-token".to_owned()),
        _ => None,
    };
    let yaml = render(&Options::default(), &env).unwrap();
    assert!(!yaml.contains("sk-secret-request-token"), "{yaml}");
    assert!(!yaml.contains("arn:aws"), "{yaml}");
    for name in [
        "AWF_AUTH_TYPE",
        "AWF_AUTH_PROVIDER",
        "AWF_AUTH_AWS_ROLE_ARN",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    ] {
        assert!(
            yaml.contains(&format!("- {name}\n")),
            "{name} not passed:\n{yaml}"
        );
    }
    assert!(!yaml.contains("AWF_AUTH_GCP"), "{yaml}");
    assert!(
        yaml.contains("OPENAI_BASE_URL: http://172.30.0.30:10000"),
        "{yaml}"
    );
    // Without it, nothing of the kind.
    assert!(!render(&Options::default(), &no_env)
        .unwrap()
        .contains("AWF_AUTH"));
}

fn openai_set(name: &str) -> Option<String> {
    (name == "OPENAI_API_KEY").then(|| "sk-test-value-long".to_owned())
}

#[test]
fn codex_config_points_codex_at_the_openai_listener() {
    let opts = Options {
        codex_config: true,
        ..Options::default()
    };
    let yaml = render(&opts, &openai_set).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let content = doc["configs"][CODEX_CONFIG_NAME]["content"]
        .as_str()
        .unwrap();
    let codex: toml::Table = toml::from_str(content).unwrap();
    assert_eq!(
        codex["openai_base_url"].as_str(),
        Some("http://172.30.0.30:10000/v1")
    );
    let mounts = &doc["services"][DEFAULT_AGENT_SERVICE]["configs"];
    assert_eq!(mounts[0]["source"].as_str(), Some(CODEX_CONFIG_NAME));
    assert_eq!(mounts[0]["target"].as_str(), Some("/etc/codex/config.toml"));
    // The other agents keep their variables.
    let env = &doc["services"][DEFAULT_AGENT_SERVICE]["environment"];
    assert_eq!(
        env["OPENAI_BASE_URL"].as_str(),
        Some("http://172.30.0.30:10000")
    );
}

#[test]
fn codex_config_is_opt_in_and_needs_the_openai_route() {
    let yaml = render(&Options::default(), &openai_set).unwrap();
    assert!(!yaml.contains("configs"), "{yaml}");
    let opts = Options {
        codex_config: true,
        ..Options::default()
    };
    let err = render(&opts, &no_env).unwrap_err();
    assert!(err.to_string().contains("--codex-config"), "{err}");
}

/// Copilot BYOK on Azure: the BYOK variables pass by name, the agent gets the OpenAI port.
#[test]
fn copilot_byok_azure_passes_by_name() {
    let env = |name: &str| match name {
        "COPILOT_PROVIDER_TYPE" => Some("azure".to_owned()),
        "COPILOT_PROVIDER_BASE_URL" => Some("https://r.openai.azure.com/openai/v1".to_owned()),
        "COPILOT_PROVIDER_API_KEY" => Some("sk-secret-byok".to_owned()),
        _ => None,
    };
    let yaml = render(&Options::default(), &env).unwrap();
    assert!(
        !yaml.contains("sk-secret-byok") && !yaml.contains("r.openai.azure.com"),
        "{yaml}"
    );
    for name in [
        "COPILOT_PROVIDER_TYPE",
        "COPILOT_PROVIDER_BASE_URL",
        "COPILOT_PROVIDER_API_KEY",
    ] {
        assert!(
            yaml.contains(&format!("- {name}\n")),
            "{name} not passed:\n{yaml}"
        );
    }
    assert!(
        yaml.contains("OPENAI_BASE_URL: http://172.30.0.30:10000"),
        "{yaml}"
    );
}

/// OpenTelemetry (docs/awf.md): the variables that are set pass by name only, so a collector
/// key in `OTEL_EXPORTER_OTLP_HEADERS` never enters the fragment.
#[test]
fn opentelemetry_variables_pass_by_name() {
    let env = |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("https://otel.example.com".to_owned()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("authorization=Bearer s3cret".to_owned()),
        "GITHUB_AW_OTEL_TRACE_ID" => Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
        _ => None,
    };
    let yaml = render(&Options::default(), &env).unwrap();
    assert!(
        !yaml.contains("s3cret") && !yaml.contains("otel.example"),
        "{yaml}"
    );
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "GITHUB_AW_OTEL_TRACE_ID",
    ] {
        assert!(yaml.contains(&format!("- {name}\n")), "{name}:\n{yaml}");
    }
    assert!(!yaml.contains("OTEL_SERVICE_NAME"), "{yaml}");
    assert!(!render(&Options::default(), &no_env)
        .unwrap()
        .contains("OTEL"));
}
