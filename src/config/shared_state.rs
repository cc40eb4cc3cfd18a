//! `shared_state:` (docs/design.md §8c): the Redis every replica shares its rate limits and
//! budgets through. The URL is a reference (`env:`/`file:`), resolved here and kept as a
//! `Secret` (it may carry a password); no message here ever shows it.

use std::time::Duration;

use crate::config::secret::{Secret, SecretRef, Unresolved};
use crate::config::{Errors, Node};

/// The default per-operation timeout on Redis.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "keyproxy";

/// What a request gets when Redis cannot answer within `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// 503 `shared_state_unavailable`.
    Deny,
    /// Admitted, counted nowhere.
    Allow,
    /// This replica's own in-process limits and budgets (the default).
    Local,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnavailable::Deny => "deny",
            OnUnavailable::Allow => "allow",
            OnUnavailable::Local => "local",
        }
    }
}

/// The validated `shared_state:` section.
#[derive(Debug, Clone)]
pub struct SharedStatePlan {
    /// Where the URL comes from (safe to print).
    pub redis_ref: SecretRef,
    /// `redis://` or `rediss://` URL; never printed.
    pub url: Secret,
    pub tls: bool,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
}

const KEYS: &[&str] = &["redis", "key_prefix", "timeout", "on_unavailable"];

/// Parses `shared_state:`; the URL must resolve now (a replica without it would enforce
/// limits alone, silently).
pub fn shared_state(
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<SharedStatePlan> {
    let map = node.map(KEYS, errors)?;
    let mut ok = true;
    let mut key_prefix = DEFAULT_KEY_PREFIX.to_owned();
    if let Some(n) = map.get("key_prefix") {
        match n.string(errors) {
            Some(p) if valid_prefix(p) => key_prefix = p.to_owned(),
            Some(_) => {
                errors.push(&n.path, "use 1 to 64 of a-z, A-Z, 0-9, `_`, `-`, `.`, `:`");
                ok = false;
            }
            None => ok = false,
        }
    }
    let mut timeout = DEFAULT_TIMEOUT;
    if let Some(n) = map.get("timeout") {
        match n.duration(errors) {
            Some(d) if !d.is_zero() => timeout = d,
            Some(_) => {
                errors.push(&n.path, "must be more than 0");
                ok = false;
            }
            None => ok = false,
        }
    }
    let mut on_unavailable = OnUnavailable::Local;
    if let Some(n) = map.get("on_unavailable") {
        match n.string(errors) {
            Some("deny") => on_unavailable = OnUnavailable::Deny,
            Some("allow") => on_unavailable = OnUnavailable::Allow,
            Some("local") => on_unavailable = OnUnavailable::Local,
            Some(other) => {
                errors.push(
                    &n.path,
                    format!("`{other}` is not one of deny, allow, local"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    let Some(n) = map.get("redis") else {
        errors.push(
            &crate::config::join(&node.path, "redis"),
            "missing; add e.g. `redis: env:KEYPROXY_REDIS_URL`",
        );
        return None;
    };
    let reference = n.string(errors).and_then(|s| {
        SecretRef::parse(s)
            .map_err(|m| errors.push(&n.path, m))
            .ok()
    })?;
    let url = match reference.resolve(lookup) {
        Ok(url) => url,
        Err(Unresolved::Missing(why) | Unresolved::Unreadable(why)) => {
            errors.push(&n.path, format!("{why}; shared_state needs its Redis URL"));
            return None;
        }
    };
    let tls = match url.expose().split_once("://").map(|(s, _)| s) {
        Some("redis") => false,
        Some("rediss") => true,
        _ => {
            errors.push(
                &n.path,
                format!("the URL in {reference} must start with redis:// or rediss://"),
            );
            return None;
        }
    };
    ok.then_some(SharedStatePlan {
        redis_ref: reference,
        url,
        tls,
        key_prefix,
        timeout,
        on_unavailable,
    })
}

fn valid_prefix(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use crate::config::plan::Plan;

    fn plan(shared: &str, url: Option<&str>) -> Result<Plan, String> {
        let text = format!("{shared}\nproviders:\n  openai: {{api_key: env:K}}\n");
        let url = url.map(str::to_owned);
        let lookup = move |n: &str| match n {
            "K" => Some("sk-x".to_owned()),
            "URL" => url.clone(),
            _ => None,
        };
        Plan::from_yaml(&text, &lookup).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_errors_never_show_the_url() {
        let p = plan(
            "shared_state: {redis: env:URL}",
            Some("redis://:pw-CANARY@127.0.0.1:6379"),
        )
        .unwrap();
        let check = p.describe();
        assert!(
            check.contains("shared_state: env:URL (redis)") && !check.contains("CANARY"),
            "{check}"
        );
        let s = p.shared_state.unwrap();
        assert_eq!(s.key_prefix, "keyproxy");
        assert_eq!(s.timeout, std::time::Duration::from_millis(50));
        assert_eq!(s.on_unavailable, super::OnUnavailable::Local);
        assert!(!format!("{s:?}").contains("CANARY"));
        let e = plan(
            "shared_state: {redis: env:URL}",
            Some("http://:pw-CANARY@h"),
        )
        .unwrap_err();
        assert!(
            e.contains("redis:// or rediss://") && !e.contains("CANARY"),
            "{e}"
        );
        let e = plan("shared_state: {redis: 'redis://h'}", None).unwrap_err();
        assert!(e.contains("literal"), "{e}");
        let e = plan("shared_state: {redis: env:URL}", None).unwrap_err();
        assert!(e.contains("URL is not set"), "{e}");
        let e = plan(
            "shared_state: {redis: env:URL, on_unavailable: maybe, timeout: 0s, key_prefix: 'a b'}",
            Some("rediss://h"),
        )
        .unwrap_err();
        assert!(
            e.contains("maybe") && e.contains("more than 0") && e.contains("key_prefix"),
            "{e}"
        );
    }
}
