//! Key reload without restart: on SIGHUP (wired by `main`) or when a `file:` secret changes,
//! the config is read and validated again and each provider's key replaced in place. New
//! requests use the new key; requests in flight keep the headers they were sent with.
//!
//! A reload that fails validation, or that would leave a provider without its key (a secret
//! file caught mid-rotation, an unset variable), keeps the old key and logs why.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};

use crate::config::plan::{Credential, PlanSource};
use crate::config::secret::SecretRef;
use crate::proxy::Route;

/// How often `file:` secrets are checked for changes.
pub const DEFAULT_SECRET_POLL: Duration = Duration::from_secs(2);

/// A provider's current credential, swapped whole on reload.
pub struct KeySlot(RwLock<Credential>);

impl KeySlot {
    pub fn new(c: Credential) -> KeySlot {
        KeySlot(RwLock::new(c))
    }

    /// The current credential (a cheap clone: header values are reference-counted).
    pub fn get(&self) -> Credential {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, c: Credential) {
        match self.0.write() {
            Ok(mut slot) => *slot = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
    }
}

fn same(a: &Credential, b: &Credential) -> bool {
    match (a, b) {
        (
            Credential::Configured {
                name: n1,
                value: v1,
            },
            Credential::Configured {
                name: n2,
                value: v2,
            },
        ) => n1 == n2 && v1 == v2,
        _ => false,
    }
}

/// What one reload did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: Vec<String>,
    pub kept: Vec<String>,
    pub failed: bool,
}

/// Reads the plan's source again and swaps every provider's key that changed.
pub fn reload(
    source: &PlanSource,
    routes: &[Arc<Route>],
    lookup: &dyn Fn(&str) -> Option<String>,
    why: &str,
) -> Outcome {
    let mut outcome = Outcome::default();
    let fresh = match source.load(lookup) {
        Ok(p) => p,
        Err(errors) => {
            let problems: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
            tracing::warn!(
                event = "reload_failed",
                trigger = why,
                problems = problems.join("; ").as_str(),
                "the config no longer validates; every provider keeps its current key"
            );
            outcome.failed = true;
            return outcome;
        }
    };
    for route in routes {
        let name = route.provider.name.as_str();
        let Some(next) = fresh.providers.iter().find(|p| p.name == name) else {
            tracing::warn!(
                event = "reload_kept_key",
                provider = name,
                reason = "the provider is gone from the config; restart to remove it"
            );
            outcome.kept.push(name.to_owned());
            continue;
        };
        let current = route.key.get();
        match &next.credential {
            Credential::Missing(reason) => {
                if matches!(current, Credential::Configured { .. }) {
                    tracing::warn!(
                        event = "reload_kept_key",
                        provider = name,
                        reason = reason.as_str()
                    );
                    outcome.kept.push(name.to_owned());
                }
            }
            fresh_key if !same(&current, fresh_key) => {
                route.key.set(fresh_key.clone());
                tracing::info!(event = "key_reloaded", provider = name, trigger = why);
                outcome.changed.push(name.to_owned());
            }
            _ => {}
        }
    }
    outcome
}

/// Modification time and length of every `file:` secret, to notice rotation.
fn fingerprint(routes: &[Arc<Route>]) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    routes
        .iter()
        .filter_map(|r| match &r.provider.key_ref {
            SecretRef::File(path) => {
                let meta = std::fs::metadata(path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                Some((path.clone(), meta))
            }
            SecretRef::Env(_) => None,
        })
        .collect()
}

/// Reloads on `trigger` and when a `file:` secret changes, until `stop` turns true.
pub async fn watch(
    source: PlanSource,
    routes: Vec<Arc<Route>>,
    trigger: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let env = |name: &str| std::env::var(name).ok();
    let mut seen = fingerprint(&routes);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = trigger.notified() => {
                reload(&source, &routes, &env, "signal");
                seen = fingerprint(&routes);
            }
            _ = tokio::time::sleep(poll) => {
                let now = fingerprint(&routes);
                if now != seen {
                    seen = now;
                    reload(&source, &routes, &env, "file_changed");
                }
            }
        }
    }
}
