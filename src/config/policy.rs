//! The policy parts of the config (least privilege, docs/design.md §2b): callers and their tokens,
//! allow-lists of methods and normalised paths, model lists, token budgets. Parsed here with
//! every error collected; `policy/` enforces them at run time.

use http::Method;

use crate::config::path::{normalise, split_risk};
use crate::config::secret::{Secret, SecretRef, Unresolved};
use crate::config::{Errors, Node};

/// A caller: a name for logs and metrics, the token it presents, and an optional budget.
#[derive(Debug, Clone)]
pub struct CallerPlan {
    pub name: String,
    pub token: Secret,
    pub budget: Option<BudgetPlan>,
}

/// One `METHOD /path` rule; `*` matches one path segment, `**` the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub method: Option<Method>,
    pub segments: Vec<String>,
}

/// Parses `callers:`; every caller needs a token that resolves now.
pub fn callers(
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Vec<CallerPlan> {
    let mut out = Vec::new();
    let Some(map) = node.any_map(errors) else {
        return out;
    };
    for (name, n) in map.entries() {
        let valid = crate::config::valid_name(name);
        if !valid {
            errors.push(
                &n.path,
                "caller names use a-z, 0-9, `-` and `_` (at most 64)",
            );
            continue;
        }
        let Some(caller) = n.map(&["token", "budget"], errors) else {
            continue;
        };
        let budget = caller.get("budget").and_then(|b| budget_plan(&b, errors));
        let Some(t) = caller.get("token") else {
            errors.push(
                &crate::config::join(&n.path, "token"),
                "missing; add e.g. `token: env:KEYPROXY_AGENT_TOKEN`",
            );
            continue;
        };
        let Some(reference) = t.string(errors).and_then(|s| {
            SecretRef::parse(s)
                .map_err(|m| errors.push(&t.path, m))
                .ok()
        }) else {
            continue;
        };
        match reference.resolve(lookup) {
            Ok(token) => out.push(CallerPlan {
                name: name.to_owned(),
                token,
                budget,
            }),
            Err(Unresolved::Missing(why) | Unresolved::Unreadable(why)) => errors.push(
                &t.path,
                format!("{why}; every caller needs its token (remove the caller to drop it)"),
            ),
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(
            &node.path,
            "no callers; remove `callers:` to let any local process through",
        );
    }
    out
}

/// Parses `allow:` rules such as `POST /v1/chat/completions` or `GET /v1/models/*`.
pub fn allow_rules(node: &Node, errors: &mut Errors) -> Vec<AllowRule> {
    let mut out = Vec::new();
    let Some(list) = node.strings(errors) else {
        return out;
    };
    for (i, rule) in list.iter().enumerate() {
        let path = format!("{}[{i}]", node.path);
        let Some((method, pattern)) = rule.trim().split_once(' ') else {
            errors.push(
                &path,
                format!("`{rule}` is not `METHOD /path`; write e.g. `POST /v1/chat/completions`"),
            );
            continue;
        };
        let method = match method {
            "*" => None,
            m => match Method::from_bytes(m.as_bytes()) {
                Ok(m) if m.as_str().bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
                _ => {
                    errors.push(
                        &path,
                        format!("`{method}` is not an HTTP method; use e.g. GET, POST or *"),
                    );
                    continue;
                }
            },
        };
        let pattern = pattern.trim();
        if !pattern.starts_with('/') || normalise(pattern).as_deref() != Some(pattern) {
            errors.push(
                &path,
                format!(
                    "`{pattern}` must be a normalised absolute path such as /v1/chat/completions"
                ),
            );
            continue;
        }
        // Requests with such a path are always refused (docs/design.md §2b): say so now.
        if let Some(what) = split_risk(pattern) {
            errors.push(
                &path,
                format!("`{pattern}` has {what} in a segment; requests with such paths are always refused when an allow-list is set, so list the path without it"),
            );
            continue;
        }
        let segments: Vec<String> = pattern.split('/').skip(1).map(str::to_owned).collect();
        if segments
            .iter()
            .position(|s| s == "**")
            .is_some_and(|p| p + 1 != segments.len())
        {
            errors.push(&path, "`**` may only end a pattern");
            continue;
        }
        out.push(AllowRule { method, segments });
    }
    out
}

/// Parses `models:` patterns (`*` matches any run of characters).
pub fn models(node: &Node, errors: &mut Errors) -> Vec<String> {
    let list = node.strings(errors).unwrap_or_default();
    if list.is_empty() {
        errors.push(
            &node.path,
            "an empty models list would refuse every request; list models or remove the key",
        );
    }
    list.into_iter().map(str::to_owned).collect()
}

/// Limits of one budget (each optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BudgetPlan {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_hour: Option<u64>,
    pub tokens_total: Option<u64>,
}

/// Parses `budget: {tokens_per_minute, tokens_per_hour, tokens_total}`.
pub fn budget_plan(node: &Node, errors: &mut Errors) -> Option<BudgetPlan> {
    let map = node.map(
        &["tokens_per_minute", "tokens_per_hour", "tokens_total"],
        errors,
    )?;
    let count = |key: &str, errors: &mut Errors| {
        map.get(key)
            .and_then(|n| n.positive_count(" of tokens", errors))
    };
    Some(BudgetPlan {
        tokens_per_minute: count("tokens_per_minute", errors),
        tokens_per_hour: count("tokens_per_hour", errors),
        tokens_total: count("tokens_total", errors),
    })
}
