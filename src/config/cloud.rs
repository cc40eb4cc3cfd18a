//! Keyless cloud credentials in the plan (docs/cloud.md): a provider's `region:`, `aws:`,
//! `google:` and `azure:` blocks validated into where its short-lived credentials come from.
//!
//! Secrets stay references until now and `Secret`s after; endpoints are `https://` URLs that
//! tests and private deployments may override.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use crate::config::plan::Credential;
use crate::config::secret::{Secret, SecretRef, Unresolved};
use crate::config::{self, Errors, Map, Node};

/// Audience of GitHub OIDC tokens exchanged at AWS STS.
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";
/// Audience of GitHub OIDC tokens used as Entra ID client assertions.
pub const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const DEFAULT_GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const DEFAULT_GOOGLE_STS: &str = "https://sts.googleapis.com/v1/token";
pub const DEFAULT_GOOGLE_IAM: &str = "https://iamcredentials.googleapis.com";
pub const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const DEFAULT_AZURE_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const AZURE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Lifetime asked of AWS STS for assumed-role credentials.
pub const DEFAULT_AWS_SESSION: Duration = Duration::from_secs(3600);

/// Where a provider's short-lived credentials come from; `None` in the plan: a static key.
#[derive(Debug, Clone)]
pub enum CloudPlan {
    /// AWS `AssumeRoleWithWebIdentity`: SigV4 credentials for `region`.
    AwsRole {
        region: String,
        role_arn: String,
        session_name: String,
        duration: Duration,
        token: WebIdentity,
        sts: Uri,
    },
    /// Google OAuth2 access tokens from a service-account key (JWT bearer grant).
    GoogleServiceAccount {
        key: ServiceAccount,
        token_uri: Uri,
        scopes: Vec<String>,
    },
    /// Google workload identity federation: STS token exchange, then optionally the
    /// service account's own token (impersonation).
    GoogleFederated {
        audience: String,
        token: WebIdentity,
        sts: Uri,
        service_account: Option<String>,
        iam: Uri,
        scopes: Vec<String>,
    },
    /// Entra ID client credentials with a federated client assertion.
    Azure {
        tenant_id: String,
        client_id: String,
        token: WebIdentity,
        authority: Uri,
        scope: String,
    },
}

/// The OIDC token presented to a cloud's token service.
#[derive(Debug, Clone)]
pub enum WebIdentity {
    /// Requested from GitHub Actions for `audience`; `None` when the job has no
    /// `id-token: write` permission (the variables are unset): the provider is not configured.
    GithubActions {
        audience: String,
        request: Option<(Secret, Secret)>,
    },
    /// Read from this file at every refresh (Kubernetes projected tokens).
    File(PathBuf),
}

/// A Google service-account key: who signs and with what (PEM, PKCS#8).
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub private_key: Secret,
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service account {} (key *****)", self.client_email)
    }
}

impl CloudPlan {
    /// What kind of source, for logs and `--check` (never a value).
    pub fn kind(&self) -> &'static str {
        match self {
            CloudPlan::AwsRole { token, .. } => match token {
                WebIdentity::GithubActions { .. } => "aws_role_github_oidc",
                WebIdentity::File(_) => "aws_role_web_identity_file",
            },
            CloudPlan::GoogleServiceAccount { .. } => "google_service_account",
            CloudPlan::GoogleFederated { .. } => "google_workload_identity",
            CloudPlan::Azure { .. } => "azure_federated",
        }
    }

    /// The token endpoints this source calls, for `--check` and docs.
    pub fn endpoints(&self) -> Vec<String> {
        let hosts: Vec<&Uri> = match self {
            CloudPlan::AwsRole { sts, .. } => vec![sts],
            CloudPlan::GoogleServiceAccount { token_uri, .. } => vec![token_uri],
            CloudPlan::GoogleFederated {
                sts,
                iam,
                service_account,
                ..
            } => match service_account {
                Some(_) => vec![sts, iam],
                None => vec![sts],
            },
            CloudPlan::Azure { authority, .. } => vec![authority],
        };
        hosts.into_iter().map(|u| u.to_string()).collect()
    }
}

/// Why a web identity cannot be used now (the provider is then not configured).
pub fn web_identity_missing(token: &WebIdentity) -> Option<String> {
    match token {
        WebIdentity::GithubActions { request: None, .. } => Some(
            "ACTIONS_ID_TOKEN_REQUEST_URL / ACTIONS_ID_TOKEN_REQUEST_TOKEN are unset (GitHub Actions needs `permissions: id-token: write`)".into(),
        ),
        _ => None,
    }
}

/// Why a cloud source cannot start at all (its web identity is missing), if so.
pub fn web_identity_missing_of(plan: &CloudPlan) -> Option<String> {
    match plan {
        CloudPlan::AwsRole { token, .. }
        | CloudPlan::GoogleFederated { token, .. }
        | CloudPlan::Azure { token, .. } => web_identity_missing(token),
        CloudPlan::GoogleServiceAccount { key, .. } if key.client_email.is_empty() => {
            Some("the service-account key is missing".into())
        }
        CloudPlan::GoogleServiceAccount { .. } => None,
    }
}

/// `aws:` of a bedrock provider: static keys into `Credential::Aws`, or a role to assume.
pub(crate) fn aws(
    node: &Node,
    region: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<(Credential, Option<CloudPlan>)> {
    const KEYS: &[&str] = &[
        "access_key_id",
        "secret_access_key",
        "session_token",
        "role_arn",
        "web_identity",
        "audience",
        "session_name",
        "session_duration",
        "sts_endpoint",
    ];
    let map = node.map(KEYS, errors)?;
    if let Some(role) = map.get("role_arn") {
        for k in ["access_key_id", "secret_access_key", "session_token"] {
            if let Some(n) = map.get(k) {
                errors.push(
                    &n.path,
                    "not with `role_arn`: give static keys or a role to assume, not both",
                );
            }
        }
        let role_arn = role.string(errors)?.to_owned();
        if !role_arn.starts_with("arn:") {
            errors.push(&role.path, format!("`{role_arn}` is not a role ARN; write e.g. `arn:aws:iam::123456789012:role/agent`"));
        }
        let token = web_identity(&map, AWS_AUDIENCE, lookup, errors)?;
        let session_name = match map.get("session_name") {
            Some(n) => n.string(errors)?.to_owned(),
            None => "llm-keyproxy".to_owned(),
        };
        let duration = match map.get("session_duration") {
            Some(n) => n.duration(errors)?,
            None => DEFAULT_AWS_SESSION,
        };
        let sts = endpoint(
            &map,
            "sts_endpoint",
            &match region.starts_with("cn-") {
                true => format!("https://sts.{region}.amazonaws.com.cn/"),
                false => format!("https://sts.{region}.amazonaws.com/"),
            },
            errors,
        )?;
        let credential = pending(&token);
        return Some((
            credential,
            Some(CloudPlan::AwsRole {
                region: region.to_owned(),
                role_arn,
                session_name,
                duration,
                token,
                sts,
            }),
        ));
    }
    let reference = |key: &str, errors: &mut Errors| -> Option<SecretRef> {
        let n = map.get(key)?;
        let s = n.string(errors)?;
        SecretRef::parse(s)
            .map_err(|m| errors.push(&n.path, m))
            .ok()
    };
    let missing = |key: &str, errors: &mut Errors| {
        errors.push(
            &config::join(&node.path, key),
            "missing; give `access_key_id` and `secret_access_key` (env:/file: references), or `role_arn` and `web_identity`",
        )
    };
    let id = reference("access_key_id", errors);
    let secret = reference("secret_access_key", errors);
    let token = reference("session_token", errors);
    if map.get("access_key_id").is_none() {
        missing("access_key_id", errors);
    }
    if map.get("secret_access_key").is_none() {
        missing("secret_access_key", errors);
    }
    let (id, secret) = (id?, secret?);
    let resolve = |r: &SecretRef, errors: &mut Errors| -> Result<Secret, Option<String>> {
        r.resolve(lookup).map_err(|u| match u {
            Unresolved::Missing(why) => Some(why),
            Unresolved::Unreadable(why) => {
                errors.push(&node.path, why);
                None
            }
        })
    };
    let keys = (
        resolve(&id, errors),
        resolve(&secret, errors),
        token.as_ref().map(|t| resolve(t, errors)).transpose(),
    );
    let credential = match keys {
        (Ok(id), Ok(secret), Ok(token)) => Credential::Aws(std::sync::Arc::new(AwsKeys {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
            expires: None,
        })),
        (Err(Some(why)), _, _) | (_, Err(Some(why)), _) | (_, _, Err(Some(why))) => {
            Credential::Missing(why)
        }
        _ => return None,
    };
    Some((credential, None))
}

/// AWS credentials for SigV4; `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// When short-lived credentials expire (`None`: static keys).
    pub expires: Option<std::time::SystemTime>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AWS credentials *****")
    }
}

/// `google:` of a vertex provider.
pub(crate) fn google(
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<(Credential, CloudPlan)> {
    const KEYS: &[&str] = &[
        "service_account_key",
        "token_endpoint",
        "workload_identity_provider",
        "web_identity",
        "audience",
        "service_account",
        "sts_endpoint",
        "iam_endpoint",
        "scopes",
    ];
    let map = node.map(KEYS, errors)?;
    let scopes = match map.get("scopes") {
        Some(n) => n.strings(errors)?.into_iter().map(str::to_owned).collect(),
        None => vec![GOOGLE_SCOPE.to_owned()],
    };
    if let Some(n) = map.get("service_account_key") {
        if let Some(other) = map.get("workload_identity_provider") {
            errors.push(
                &other.path,
                "not with `service_account_key`: choose one source",
            );
        }
        let reference = SecretRef::parse(n.string(errors)?)
            .map_err(|m| errors.push(&n.path, m))
            .ok()?;
        let text = match reference.resolve(lookup) {
            Ok(t) => t,
            Err(Unresolved::Missing(why)) => {
                // Not configured, like a missing key; the plan still needs a token URI.
                let token_uri = endpoint(&map, "token_endpoint", DEFAULT_GOOGLE_TOKEN_URI, errors)?;
                let key = ServiceAccount {
                    client_email: String::new(),
                    private_key_id: None,
                    private_key: Secret::new(""),
                    token_uri: None,
                };
                return Some((
                    Credential::Missing(why),
                    CloudPlan::GoogleServiceAccount {
                        key,
                        token_uri,
                        scopes,
                    },
                ));
            }
            Err(Unresolved::Unreadable(why)) => {
                errors.push(&n.path, why);
                return None;
            }
        };
        let key = service_account(&text, &reference, &n.path, errors)?;
        let default_uri = key
            .token_uri
            .clone()
            .unwrap_or_else(|| DEFAULT_GOOGLE_TOKEN_URI.to_owned());
        let token_uri = endpoint(&map, "token_endpoint", &default_uri, errors)?;
        return Some((
            Credential::Missing("no access token yet: the first one is being requested".into()),
            CloudPlan::GoogleServiceAccount {
                key,
                token_uri,
                scopes,
            },
        ));
    }
    let Some(wip) = map.get("workload_identity_provider") else {
        errors.push(&config::join(&node.path, "service_account_key"), "missing; give `service_account_key: file:/path/key.json`, or `workload_identity_provider` and `web_identity`");
        return None;
    };
    let audience = wip.string(errors)?.trim_start_matches("https:");
    // AWF and google-github-actions/auth write it without the service prefix.
    let audience = match audience.strip_prefix("projects/") {
        Some(_) => format!("//iam.googleapis.com/{audience}"),
        None => audience.to_owned(),
    };
    if !audience.starts_with("//iam.googleapis.com/") {
        errors.push(&wip.path, "write the provider's full name, e.g. `//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/github`");
    }
    let default_audience = format!("https:{audience}");
    let token = web_identity(&map, &default_audience, lookup, errors)?;
    let sts = endpoint(&map, "sts_endpoint", DEFAULT_GOOGLE_STS, errors)?;
    let iam = endpoint(&map, "iam_endpoint", DEFAULT_GOOGLE_IAM, errors)?;
    let service_account = match map.get("service_account") {
        Some(n) => Some(n.string(errors)?.to_owned()),
        None => None,
    };
    Some((
        pending(&token),
        CloudPlan::GoogleFederated {
            audience,
            token,
            sts,
            service_account,
            iam,
            scopes,
        },
    ))
}

/// `azure:` of an azure-openai provider: Entra ID with a federated assertion.
pub(crate) fn azure(
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<(Credential, CloudPlan)> {
    const KEYS: &[&str] = &[
        "tenant_id",
        "client_id",
        "web_identity",
        "audience",
        "authority",
        "scope",
    ];
    let map = node.map(KEYS, errors)?;
    let required = |key: &str, errors: &mut Errors| -> Option<String> {
        match map.get(key) {
            Some(n) => n.string(errors).map(str::to_owned),
            None => {
                errors.push(
                    &config::join(&node.path, key),
                    "missing; Entra ID needs the app registration's `tenant_id` and `client_id`",
                );
                None
            }
        }
    };
    let tenant_id = required("tenant_id", errors);
    let client_id = required("client_id", errors);
    let token = web_identity(&map, AZURE_AUDIENCE, lookup, errors)?;
    let authority = endpoint(&map, "authority", DEFAULT_AZURE_AUTHORITY, errors)?;
    let scope = match map.get("scope") {
        Some(n) => n.string(errors)?.to_owned(),
        None => AZURE_SCOPE.to_owned(),
    };
    let (tenant_id, client_id) = (tenant_id?, client_id?);
    if !tenant_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        errors.push(
            &config::join(&node.path, "tenant_id"),
            "a tenant id is a GUID or a domain name",
        );
    }
    Some((
        pending(&token),
        CloudPlan::Azure {
            tenant_id,
            client_id,
            token,
            authority,
            scope,
        },
    ))
}

/// Not configured until the first refresh, with the reason when it cannot even start.
fn pending(token: &WebIdentity) -> Credential {
    Credential::Missing(
        web_identity_missing(token)
            .unwrap_or_else(|| "no credential yet: the first one is being requested".into()),
    )
}

/// `web_identity: github_actions` (the default) or `file:PATH`, and `audience:`.
fn web_identity(
    map: &Map,
    default_audience: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<WebIdentity> {
    let source = match map.get("web_identity") {
        Some(n) => Some((n.string(errors)?, n.path.clone())),
        None => None,
    };
    if let Some((s, at)) = source.filter(|(s, _)| *s != "github_actions") {
        if let Some(n) = map.get("audience") {
            errors.push(
                &n.path,
                "only with `web_identity: github_actions` (a token file has its audience already)",
            );
        }
        return match s.strip_prefix("file:").map(str::trim) {
            Some(p) if !p.is_empty() => Some(WebIdentity::File(PathBuf::from(p))),
            _ => {
                errors.push(&at, format!("`{s}` is not a token source; write `github_actions` or `file:/var/run/secrets/token`"));
                None
            }
        };
    }
    let audience = match map.get("audience") {
        Some(n) => n.string(errors)?.to_owned(),
        None => default_audience.to_owned(),
    };
    let var = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let url = var("ACTIONS_ID_TOKEN_REQUEST_URL");
    if url.as_ref().is_some_and(|u| !u.starts_with("https://")) {
        errors.push(
            "(environment) ACTIONS_ID_TOKEN_REQUEST_URL",
            "must be an https:// URL",
        );
    }
    let request = url
        .zip(var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))
        .map(|(u, t)| (Secret::new(u), Secret::new(t)));
    Some(WebIdentity::GithubActions { audience, request })
}

/// An overridable token-service URL (https only).
fn endpoint(map: &Map, key: &str, default: &str, errors: &mut Errors) -> Option<Uri> {
    let (text, at) = match map.get(key) {
        Some(n) => (n.string(errors)?.to_owned(), n.path.clone()),
        None => (default.to_owned(), key.to_owned()),
    };
    match text.parse::<Uri>() {
        Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => Some(u),
        _ => {
            errors.push(
                &at,
                format!("`{text}` is not an https:// URL of a token service"),
            );
            None
        }
    }
}

/// Reads a Google service-account key file (JSON), keeping the key as a `Secret`.
fn service_account(
    text: &Secret,
    reference: &SecretRef,
    path: &str,
    errors: &mut Errors,
) -> Option<ServiceAccount> {
    #[derive(serde::Deserialize)]
    struct KeyFile {
        #[serde(rename = "type")]
        kind: Option<String>,
        client_email: Option<String>,
        private_key_id: Option<String>,
        private_key: Option<String>,
        token_uri: Option<String>,
    }
    // The parse error could quote the file: only its position is reported.
    let parsed: KeyFile = match serde_json::from_str(text.expose()) {
        Ok(k) => k,
        Err(e) => {
            errors.push(
                path,
                format!(
                    "{reference} is not a JSON service-account key (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            );
            return None;
        }
    };
    if parsed.kind.as_deref() != Some("service_account") {
        errors.push(path, format!("{reference} is not a service-account key (its `type` is not `service_account`); for workload identity federation use `workload_identity_provider`"));
        return None;
    }
    match (parsed.client_email, parsed.private_key) {
        (Some(client_email), Some(private_key)) if private_key.contains("PRIVATE KEY") => {
            Some(ServiceAccount {
                client_email,
                private_key_id: parsed.private_key_id,
                private_key: Secret::new(private_key),
                token_uri: parsed.token_uri,
            })
        }
        _ => {
            errors.push(
                path,
                format!("{reference} lacks `client_email` or a PEM `private_key`"),
            );
            None
        }
    }
}

/// `region:` as AWS and Google write it (`us-east-1`, `europe-west4`, `global`).
pub(crate) fn region(node: &Node, errors: &mut Errors) -> Option<String> {
    let s = node.string(errors)?;
    if !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some(s.to_owned())
    } else {
        errors.push(
            &node.path,
            format!("`{s}` is not a region; write e.g. `us-east-1`"),
        );
        None
    }
}
