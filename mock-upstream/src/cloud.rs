//! State shared by the cloud token services (src/idp.rs, src/sts.rs, src/google.rs) and the
//! provider routes that accept their tokens (src/aws.rs, src/vertex.rs, src/azure.rs): the
//! registry of issued credentials with their expiry, per-service counts, the lifetime and fail
//! switches, the `/mock/cloud/*` control routes, and the helpers they share (form decoding, JWT
//! parts, ISO 8601 times).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value};

use crate::routes::{json, Req, Resp};
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

/// `application/x-www-form-urlencoded` pairs, percent- and `+`-decoded.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

/// Percent-decoding with `+` as space (form encoding); invalid escapes stay as they are.
pub(crate) fn percent_decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let escaped = match s.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, s[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of form field `name`.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The parts of a compact JWT: header and payload JSON, the signed input, the signature.
pub(crate) struct Jwt {
    pub(crate) header: Value,
    pub(crate) claims: Value,
    pub(crate) signing_input: String,
    pub(crate) signature: Vec<u8>,
}

/// Parses a compact JWT (`b64url(header).b64url(payload).b64url(sig)`); no signature check.
pub(crate) fn parse_jwt(token: &str) -> Option<Jwt> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
    Some(Jwt {
        header,
        claims,
        signing_input: format!("{h}.{p}"),
        signature: URL_SAFE_NO_PAD.decode(s).ok()?,
    })
}

impl Jwt {
    /// True when claim `aud` is `want` (or an array holding it).
    pub(crate) fn aud_is(&self, want: &str) -> bool {
        match &self.claims["aud"] {
            Value::String(s) => s == want,
            Value::Array(a) => a.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        }
    }

    /// True when claim `exp` is in the future.
    pub(crate) fn unexpired(&self) -> bool {
        self.claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp > crate::routes::unix_secs())
    }
}

/// An unsigned-but-well-formed JWT (`alg` RS256, signature `signature`) with `claims`.
pub(crate) fn unsigned_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

/// `t` as ISO 8601 UTC with second precision, e.g. `2026-12-04T08:00:00Z`.
pub(crate) fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_utc_seconds() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_342_400 + 8 * 3600 + 61);
        assert_eq!(iso8601(t), "2026-12-04T08:01:01Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn form_decodes_percent_and_plus() {
        let f = form(b"a=1&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&s=x+y&bad=%zz&end=%4");
        assert_eq!(field(&f, "a"), Some("1"));
        assert_eq!(field(&f, "RoleArn"), Some("arn:aws:iam::1:role/r"));
        assert_eq!(field(&f, "s"), Some("x y"));
        assert_eq!(field(&f, "bad"), Some("%zz"));
        assert_eq!(field(&f, "end"), Some("%4"));
        assert_eq!(field(&f, "none"), None);
    }

    #[test]
    fn jwt_round_trip_and_claims() {
        let exp = crate::routes::unix_secs() + 60;
        let token = unsigned_jwt(&json!({"aud": ["x", "sts.amazonaws.com"], "exp": exp}));
        let jwt = parse_jwt(&token).unwrap();
        assert_eq!(jwt.header["alg"], "RS256");
        assert!(jwt.aud_is("sts.amazonaws.com"));
        assert!(!jwt.aud_is("y"));
        assert!(jwt.unexpired());
        assert_eq!(jwt.signature, b"signature");
        assert!(parse_jwt("a.b").is_none());
        assert!(parse_jwt(&format!("{token}.x")).is_none());
        let old = unsigned_jwt(&json!({"aud": "a", "exp": 5}));
        assert!(!parse_jwt(&old).unwrap().unexpired());
    }
}
