//! State shared by the cloud token services (src/idp.rs, src/sts.rs, src/google.rs) and the
//! provider routes that accept their tokens (src/aws.rs, src/vertex.rs, src/azure.rs): the
//! registry of issued credentials with their expiry, per-service counts, the lifetime and fail
//! switches, and the `/mock/cloud/*` control routes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{json, Value};

use crate::routes::{json, Req, Resp};
use crate::tokenwire::iso8601;
use crate::{MockUpstream, Shared};

/// Default lifetime of issued credentials and tokens, in seconds.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// How many token-service requests `/mock/cloud/stats` remembers.
const RECENT: usize = 20;
/// Form fields never shown in the stats (they carry credentials).
const SECRET_FIELDS: [&str; 5] = [
    "WebIdentityToken",
    "assertion",
    "subject_token",
    "client_assertion",
    "client_secret",
];

/// A token service of the mock: what issued a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloudService {
    /// GitHub Actions OIDC token endpoint `GET /oidc/token`.
    Oidc,
    /// AWS STS `AssumeRoleWithWebIdentity` (`POST /sts/`).
    AwsSts,
    /// Google OAuth JWT-bearer grant (`POST /google/token`).
    GoogleToken,
    /// Google STS token exchange (`POST /google/sts/v1/token`).
    GoogleSts,
    /// IAM credentials `generateAccessToken` (service-account impersonation).
    GoogleIam,
    /// Entra ID client credentials (`POST /entra/{tenant}/oauth2/v2.0/token`).
    Entra,
}

impl CloudService {
    /// Every service, in the order of `/mock/cloud/stats`.
    pub const ALL: [CloudService; 6] = [
        CloudService::Oidc,
        CloudService::AwsSts,
        CloudService::GoogleToken,
        CloudService::GoogleSts,
        CloudService::GoogleIam,
        CloudService::Entra,
    ];

    /// The service's key in `/mock/cloud/stats`: `oidc`, `aws_sts`, `google_token`,
    /// `google_sts`, `google_iam`, `entra`.
    pub fn name(self) -> &'static str {
        match self {
            CloudService::Oidc => "oidc",
            CloudService::AwsSts => "aws_sts",
            CloudService::GoogleToken => "google_token",
            CloudService::GoogleSts => "google_sts",
            CloudService::GoogleIam => "google_iam",
            CloudService::Entra => "entra",
        }
    }
}

/// A temporary AWS credential issued by the mock STS.
#[derive(Clone, Debug)]
pub struct AwsCredential {
    /// `ASIAMOCK…`, unique per call.
    pub access_key_id: String,
    /// The secret the client signs with.
    pub secret_access_key: String,
    /// Must come back as `x-amz-security-token`.
    pub session_token: String,
    /// When the mock stops accepting it.
    pub expires: SystemTime,
}

/// One issued credential (keyed by the token, or the access key id for AWS).
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) service: CloudService,
    pub(crate) expires: SystemTime,
    /// AWS: the secret access key and the session token.
    pub(crate) aws: Option<(String, String)>,
}

impl Issued {
    pub(crate) fn live(&self) -> bool {
        SystemTime::now() < self.expires
    }
}

/// The cloud part of [`Shared`].
pub(crate) struct Cloud {
    lifetime_secs: AtomicU64,
    fail: AtomicBool,
    issued: Mutex<HashMap<String, Issued>>,
    counts: Mutex<HashMap<CloudService, usize>>,
    recent: Mutex<VecDeque<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cloud {
    pub(crate) fn new() -> Cloud {
        Cloud {
            lifetime_secs: AtomicU64::new(DEFAULT_TOKEN_LIFETIME_SECS),
            fail: AtomicBool::new(false),
            issued: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Lifetime of credentials issued from now on.
    pub(crate) fn lifetime(&self) -> u64 {
        self.lifetime_secs.load(Ordering::SeqCst)
    }

    /// True while the token services are to fail (503).
    pub(crate) fn failing(&self) -> bool {
        self.fail.load(Ordering::SeqCst)
    }

    /// Registers `key` as issued by `service` for the configured lifetime; returns its expiry.
    pub(crate) fn issue(
        &self,
        service: CloudService,
        key: &str,
        aws: Option<(String, String)>,
    ) -> SystemTime {
        let expires = SystemTime::now() + Duration::from_secs(self.lifetime());
        let issued = Issued {
            service,
            expires,
            aws,
        };
        lock(&self.issued).insert(key.to_owned(), issued);
        *lock(&self.counts).entry(service).or_insert(0) += 1;
        expires
    }

    /// The credential issued under `key`, expired or not.
    pub(crate) fn lookup(&self, key: &str) -> Option<Issued> {
        lock(&self.issued).get(key).cloned()
    }

    /// True when `token` was issued by one of `services` and has not expired.
    pub(crate) fn valid(&self, token: &str, services: &[CloudService]) -> bool {
        self.lookup(token)
            .is_some_and(|i| i.live() && services.contains(&i.service))
    }

    /// Remembers a token-service request for `/mock/cloud/stats`, without secret fields.
    pub(crate) fn note(&self, req: &Req, form: &[(String, String)]) {
        let fields: serde_json::Map<String, Value> = form
            .iter()
            .filter(|(k, _)| !SECRET_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let entry = json!({"method": req.method.as_str(), "path": req.path, "form": fields});
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    pub(crate) fn count_of(&self, service: CloudService) -> usize {
        lock(&self.counts).get(&service).copied().unwrap_or(0)
    }

    fn stats(&self) -> Value {
        let issued: serde_json::Map<String, Value> = CloudService::ALL
            .iter()
            .map(|s| (s.name().to_owned(), Value::from(self.count_of(*s))))
            .collect();
        let recent: Vec<Value> = lock(&self.recent).iter().cloned().collect();
        json!({
            "issued": issued,
            "lifetime_secs": self.lifetime(),
            "fail": self.failing(),
            "requests": recent,
        })
    }

    fn aws_credentials(&self) -> Vec<AwsCredential> {
        let mut out: Vec<AwsCredential> = lock(&self.issued)
            .iter()
            .filter_map(|(akid, i)| {
                let (secret, session) = i.aws.clone()?;
                Some(AwsCredential {
                    access_key_id: akid.clone(),
                    secret_access_key: secret,
                    session_token: session,
                    expires: i.expires,
                })
            })
            .collect();
        out.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
        out
    }

    fn expire_all(&self) {
        for issued in lock(&self.issued).values_mut() {
            issued.expires = UNIX_EPOCH;
        }
    }
}

/// The `/mock/cloud/*` control routes (`route` is what follows `/mock/cloud/`).
pub(crate) fn control(shared: &Arc<Shared>, req: &Req, route: &str) -> Resp {
    let cloud = &shared.cloud;
    match route {
        "lifetime" => {
            let secs = req.query_u64("secs", DEFAULT_TOKEN_LIFETIME_SECS);
            cloud.lifetime_secs.store(secs, Ordering::SeqCst);
        }
        "fail" => cloud
            .fail
            .store(req.query("on") == Some("1"), Ordering::SeqCst),
        "expire" => cloud.expire_all(),
        "stats" => {}
        "aws-credentials" => {
            let list: Vec<Value> = cloud
                .aws_credentials()
                .into_iter()
                .map(|c| {
                    json!({
                        "access_key_id": c.access_key_id,
                        "secret_access_key": c.secret_access_key,
                        "session_token": c.session_token,
                        "expiration": iso8601(c.expires),
                    })
                })
                .collect();
            return json(shared, StatusCode::OK, Value::Array(list).to_string());
        }
        _ => {
            let msg = json!({"error": format!("no mock route {}", req.path)});
            return json(shared, StatusCode::NOT_FOUND, msg.to_string());
        }
    }
    json(shared, StatusCode::OK, cloud.stats().to_string())
}

impl MockUpstream {
    /// Credentials and tokens issued so far by `service` (not reset by
    /// [`MockUpstream::clear`]).
    pub fn issued_tokens(&self, service: CloudService) -> usize {
        self.shared.cloud.count_of(service)
    }

    /// Lifetime of credentials and tokens issued from now on (whole seconds; default
    /// [`DEFAULT_TOKEN_LIFETIME_SECS`]). Zero issues already-expired ones.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let secs = lifetime.as_secs();
        self.shared
            .cloud
            .lifetime_secs
            .store(secs, Ordering::SeqCst);
    }

    /// Fault injection: while on, every token service answers 503 (AWS: `ServiceUnavailable`
    /// XML) and issues nothing.
    pub fn set_token_service_failure(&self, on: bool) {
        self.shared.cloud.fail.store(on, Ordering::SeqCst);
    }

    /// Makes every credential and token issued so far expired (provider routes refuse them).
    pub fn expire_issued_tokens(&self) {
        self.shared.cloud.expire_all();
    }

    /// The AWS credentials the mock STS issued so far (expired ones too), by access key id.
    pub fn aws_issued_credentials(&self) -> Vec<AwsCredential> {
        self.shared.cloud.aws_credentials()
    }

    /// What `GET /mock/cloud/stats` answers: `{"issued":{service name: count},
    /// "lifetime_secs":N,"fail":bool,"requests":[{"method","path","form"}]}` (the last 20
    /// token-service requests, form fields that carry credentials left out).
    pub fn cloud_stats(&self) -> Value {
        self.shared.cloud.stats()
    }
}
