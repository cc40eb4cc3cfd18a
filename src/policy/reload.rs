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

    /// Replaces the credential (a reload, or a cloud credential refresh).
    pub fn set(&self, c: Credential) {
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
        (Credential::Aws(a), Credential::Aws(b)) => a == b,
        _ => false,
    }
}

/// One provider's key as a reload sees it: its name, where the key comes from, and the slot
/// the request path reads it from.
#[derive(Clone)]
pub struct Keyed {
    pub name: String,
    pub key_ref: SecretRef,
    pub slot: Arc<KeySlot>,
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
    keys: &[Keyed],
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
    for keyed in keys {
        let name = keyed.name.as_str();
        let Some(next) = fresh.providers.iter().find(|p| p.name == name) else {
            tracing::warn!(
                event = "reload_kept_key",
                provider = name,
                reason = "the provider is gone from the config; restart to remove it"
            );
            outcome.kept.push(name.to_owned());
            continue;
        };
        let current = keyed.slot.get();
        if next.cloud.is_some() {
            // Now refreshed from a cloud source: a restart switches the source.
            tracing::warn!(
                event = "reload_kept_key",
                provider = name,
                reason = "the provider now takes a cloud credential source; restart to switch"
            );
            outcome.kept.push(name.to_owned());
            continue;
        }
        match &next.credential {
            Credential::Missing(reason) if current.usable() => {
                tracing::warn!(
                    event = "reload_kept_key",
                    provider = name,
                    reason = reason.as_str()
                );
                outcome.kept.push(name.to_owned());
            }
            Credential::Missing(_) => {}
            fresh_key if !same(&current, fresh_key) => {
                keyed.slot.set(fresh_key.clone());
                tracing::info!(event = "key_reloaded", provider = name, trigger = why);
                outcome.changed.push(name.to_owned());
            }
            _ => {}
        }
    }
    outcome
}

/// Modification time and length of every `file:` secret, to notice rotation.
fn fingerprint(keys: &[Keyed]) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    keys.iter()
        .filter_map(|k| match &k.key_ref {
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
    keys: Vec<Keyed>,
    trigger: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let env = |name: &str| std::env::var(name).ok();
    let mut seen = fingerprint(&keys);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = trigger.notified() => {
                reload(&source, &keys, &env, "signal");
                seen = fingerprint(&keys);
            }
            _ = tokio::time::sleep(poll) => {
                let now = fingerprint(&keys);
                if now != seen {
                    seen = now;
                    reload(&source, &keys, &env, "file_changed");
                }
            }
        }
    }
}
