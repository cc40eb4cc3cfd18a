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
