//! The least-privilege AWF config documented in docs/awf.md loads, and admits what AWF's agents
//! use while refusing the rest.

use llm_keyproxy::config::plan::Plan;
use llm_keyproxy::policy::access::check_allowed;

fn documented() -> String {
    let doc = std::fs::read_to_string("docs/awf.md").unwrap();
    let after = doc
        .split("<!-- awf-least-privilege -->")
        .nth(1)
        .expect("marker in docs/awf.md");
    after
        .split("```yaml")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn documented_awf_least_privilege_config_admits_what_agents_use() {
    let lookup =
        |k: &str| (k.ends_with("_KEY") || k.ends_with("_TOKEN")).then(|| format!("value-of-{k}"));
    let plan = Plan::from_yaml(&documented(), &lookup).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.callers.len(), 1);
    let allow = |name: &str, method: &str, path: &str| {
        let p = plan.providers.iter().find(|p| p.name == name).unwrap();
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        check_allowed(p.allow.as_ref().unwrap(), &method, path, name).is_ok()
    };
    assert!(allow("openai", "POST", "/v1/chat/completions"));
    assert!(allow("openai", "POST", "/v1/responses"));
    assert!(allow("openai", "POST", "/responses"));
    assert!(allow("openai", "GET", "/v1/models"));
    assert!(allow("anthropic", "POST", "/v1/messages"));
    assert!(allow("copilot", "POST", "/chat/completions"));
    assert!(allow(
        "gemini",
        "POST",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    ));
    assert!(allow(
        "vertex",
        "POST",
        "/v1/projects/p/locations/l/publishers/google/models/m:generateContent"
    ));
    for (name, method, path) in [
        ("openai", "POST", "/v1/files"),
        ("openai", "POST", "/v1/fine_tuning/jobs"),
        ("openai", "POST", "/v1/batches"),
        ("openai", "DELETE", "/v1/models/ft-x"),
        ("openai", "GET", "/v1/organization/api_keys"),
        ("anthropic", "POST", "/v1/messages/batches"),
        ("anthropic", "GET", "/v1/organizations/api_keys"),
        ("gemini", "POST", "/v1beta/files"),
        ("gemini", "POST", "/v1beta/tunedModels"),
    ] {
        assert!(
            !allow(name, method, path),
            "{name}: {method} {path} should be refused"
        );
    }
}
