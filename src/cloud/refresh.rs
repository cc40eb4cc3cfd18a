//! Background refresh of cloud credentials (docs/cloud.md): fetched at start, refreshed
//! before expiry (a third of the lifetime before, at most 5 minutes), so no request waits
//! on a refresh while a valid credential exists. A failed refresh is retried with backoff
//! and keeps the current credential until it expires; then the provider answers 403
//! `provider_not_configured` saying why, until a refresh succeeds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, AUTHORIZATION};
use rustls::ClientConfig;
use tokio::sync::watch;

use super::http::Client;
use super::{Fetched, Fresh};
use crate::config::cloud::CloudPlan;
use crate::config::plan::{Credential, ProviderPlan};
use crate::policy::reload::KeySlot;
use crate::telemetry::metrics::Metrics;

/// Refresh this long before expiry at most.
const MAX_MARGIN: Duration = Duration::from_secs(300);
/// Retry a failed refresh after 1, 2, 4 ... seconds, at most this while the current
/// credential lasts ...
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// ... and at most this when there is none (requests are refused meanwhile).
const MAX_BACKOFF_NONE: Duration = Duration::from_secs(10);

/// Everything one provider's refresher needs.
pub struct Refresher {
    provider: String,
    plan: CloudPlan,
    slot: Arc<KeySlot>,
    client: Client,
    metrics: Arc<Metrics>,
}

impl Refresher {
    /// The refresher of a provider with a cloud source, else `None`.
    pub fn new(
        provider: &ProviderPlan,
        slot: Arc<KeySlot>,
        tls: &ClientConfig,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Option<Refresher> {
        let plan = provider.cloud.clone()?;
        // A source that cannot start (no OIDC variables, no key file) stays not configured
        // with the plan's reason; only a restart can change that.
        if crate::config::cloud::web_identity_missing_of(&plan).is_some() {
            return None;
        }
        Some(Refresher {
            provider: provider.name.clone(),
            client: Client::new(tls, provider.proxy.clone(), connect_timeout),
            plan,
            slot,
            metrics,
        })
    }

    /// Keeps the slot holding a valid credential until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut valid_until: Option<SystemTime> = None;
        let mut failures: u32 = 0;
        // Whether a credential was ever installed (for what a refusal says).
        let mut had_one = false;
        self.metrics.credential_expiry(&self.provider, None);
        loop {
            let fresh = match self.fetch().await {
                Ok(fetched) => usable(fetched),
                Err(why) => Err(why),
            };
            let next = match fresh {
                Ok((credential, expires)) => {
                    failures = 0;
                    had_one = true;
                    valid_until = Some(expires);
                    self.installed(credential, expires)
                }
                Err(why) => {
                    failures += 1;
                    self.failed(&why, failures, valid_until, had_one);
                    // Without a valid credential, retry sooner: requests are being refused.
                    let cap = if valid_until.is_some() {
                        MAX_BACKOFF
                    } else {
                        MAX_BACKOFF_NONE
                    };
                    let wait = backoff(failures).min(cap);
                    match valid_until {
                        // Keep trying while the old credential lasts, and mark it gone
                        // the moment it expires.
                        Some(t) => wait.min(until(t)),
                        None => wait,
                    }
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(next) => {}
            }
            if let Some(t) = valid_until.filter(|t| *t <= SystemTime::now()) {
                self.expired(t);
                valid_until = None;
            }
        }
    }

    async fn fetch(&self) -> Result<Fetched, String> {
        match &self.plan {
            CloudPlan::AwsRole { .. } => super::aws::assume_role(&self.client, &self.plan).await,
            CloudPlan::GoogleServiceAccount { .. } | CloudPlan::GoogleFederated { .. } => {
                super::google::token(&self.client, &self.plan).await
            }
            CloudPlan::Azure { .. } => super::azure::token(&self.client, &self.plan).await,
        }
    }

    /// Puts a fresh credential in the slot; returns how long until the next refresh.
    fn installed(&self, credential: Credential, expires: SystemTime) -> Duration {
        self.slot.set(credential);
        let lifetime = until(expires);
        self.metrics.credential_refresh(&self.provider, "ok");
        self.metrics
            .credential_expiry(&self.provider, Some(expires));
        tracing::info!(
            event = "credential_refreshed",
            provider = self.provider.as_str(),
            source = self.plan.kind(),
            expires_in_s = lifetime.as_secs(),
        );
        lifetime.saturating_sub(margin(lifetime))
    }

    fn failed(&self, why: &str, failures: u32, valid_until: Option<SystemTime>, had_one: bool) {
        self.metrics.credential_refresh(&self.provider, "failed");
        let why = crate::telemetry::logging::sanitize(why, 300);
        // Once per episode at WARN; the retries that follow at DEBUG.
        if failures == 1 {
            tracing::warn!(
                event = "credential_refresh_failed",
                provider = self.provider.as_str(),
                source = self.plan.kind(),
                reason = &*why,
                current_valid_for_s = valid_until.map(|t| until(t).as_secs()),
                "retrying with backoff; the current credential, if any, is used until it expires",
            );
        } else {
            tracing::debug!(
                event = "credential_refresh_failed",
                provider = self.provider.as_str(),
                attempt = failures,
                reason = &*why,
            );
        }
        if valid_until.is_none() {
            let state = if had_one {
                "expired; refreshing it failed"
            } else {
                "not obtained yet"
            };
            self.slot.set(Credential::Missing(format!(
                "the {} credential {state}: {why}",
                self.plan.kind()
            )));
        }
    }

    fn expired(&self, at: SystemTime) {
        let ago = SystemTime::now().duration_since(at).unwrap_or_default();
        self.slot.set(Credential::Missing(format!(
            "the {} credential expired {}s ago and could not be refreshed",
            self.plan.kind(),
            ago.as_secs()
        )));
        self.metrics.credential_expiry(&self.provider, None);
        tracing::warn!(
            event = "credential_expired",
            provider = self.provider.as_str(),
            source = self.plan.kind(),
            "requests get 403 provider_not_configured until a refresh succeeds",
        );
    }
}

/// The credential a token service gave, as the request path uses it, and its expiry.
fn usable(fetched: Fetched) -> Result<(Credential, SystemTime), String> {
    let credential = match fetched.credential {
        Fresh::Aws(keys) => Credential::Aws(Arc::new(keys)),
        Fresh::Bearer(token) => {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    "the token service answered a token that is not a valid header value".to_owned()
                })?;
            value.set_sensitive(true);
            Credential::Configured {
                name: AUTHORIZATION,
                value,
            }
        }
    };
    Ok((credential, fetched.expires))
}

/// Time left until `t` (zero when past).
fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// How long before expiry to refresh: a third of the lifetime, at most `MAX_MARGIN`.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 3).min(MAX_MARGIN)
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_timing() {
        assert_eq!(margin(Duration::from_secs(3600)), MAX_MARGIN);
        assert_eq!(margin(Duration::from_secs(6)), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
