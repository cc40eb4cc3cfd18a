//! AWF's keyless mode (`AWF_AUTH_TYPE=github-oidc`) rendered as a cloud provider on the OpenAI
//! port (docs/awf.md): `AWF_AUTH_PROVIDER` `azure` (the default), `aws` or `gcp`, with the
//! `AWF_AUTH_*` variables the Node sidecar reads. The GitHub OIDC request variables stay in the
//! environment, where the proxy reads them at run time.

use serde_json::{json, Map, Value};

/// `COPILOT_PROVIDER_TYPE=azure` with `COPILOT_PROVIDER_BASE_URL`: the BYOK resource's host
/// and base path (the Node sidecar's `parseApiTargetAndBasePath`), which the OpenAI port
/// uses when `OPENAI_API_TARGET` / `OPENAI_API_BASE_PATH` are unset.
pub(super) fn azure_byok(var: &dyn Fn(&str) -> Option<String>) -> Option<(String, String)> {
    if !var("COPILOT_PROVIDER_TYPE")?.eq_ignore_ascii_case("azure") {
        return None;
    }
    let url = var("COPILOT_PROVIDER_BASE_URL")?;
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Some((host.to_owned(), base.trim_end_matches('/').to_owned()))
}

/// Where Entra ID lives for `AWF_AUTH_AZURE_CLOUD`.
fn azure_authority(cloud: &str) -> Option<&'static str> {
    match cloud {
        "public" => Some("https://login.microsoftonline.com"),
        "usgovernment" => Some("https://login.microsoftonline.us"),
        "china" => Some("https://login.chinacloudapi.cn"),
        _ => None,
    }
}

/// What the OpenAI port becomes: its preset, region and credential block (`aws`, `google` or
/// `azure`), or `None` when OIDC is not asked for. `upstream` is the port's rendered target
/// (`None`: the default api.openai.com). Errors name the variable to set.
pub(super) fn openai_port(
    var: &dyn Fn(&str) -> Option<String>,
    upstream: Option<&str>,
    warnings: &mut Vec<String>,
) -> Option<Result<Cloud, Vec<String>>> {
    let kind = var("AWF_AUTH_TYPE")?.to_ascii_lowercase();
    if kind != "github-oidc" {
        if kind != "api-key" {
            warnings.push(format!(
                "AWF_AUTH_TYPE `{kind}` is not one AWF knows (api-key, github-oidc); keys are used"
            ));
        }
        return None;
    }
    if var("OPENAI_API_KEY").is_some() {
        // As in the Node sidecar: a static key wins over OIDC.
        warnings.push("AWF_AUTH_TYPE=github-oidc is ignored: OPENAI_API_KEY is set".into());
        return None;
    }
    let provider = var("AWF_AUTH_PROVIDER").map_or("azure".to_owned(), |p| p.to_ascii_lowercase());
    let mut errors = Vec::new();
    let mut need = |name: &str, why: &str| {
        let v = var(name);
        if v.is_none() {
            errors.push(format!(
                "{name}: required with AWF_AUTH_PROVIDER={provider} ({why})"
            ));
        }
        v.unwrap_or_default()
    };
    let mut block = Map::new();
    let cloud = match provider.as_str() {
        "azure" => {
            block.insert(
                "tenant_id".into(),
                need("AWF_AUTH_AZURE_TENANT_ID", "the Entra ID tenant").into(),
            );
            block.insert(
                "client_id".into(),
                need(
                    "AWF_AUTH_AZURE_CLIENT_ID",
                    "the app registration with the federated credential",
                )
                .into(),
            );
            if upstream.is_none() {
                errors.push("OPENAI_API_TARGET: required with AWF_AUTH_PROVIDER=azure (your resource, e.g. my-resource.openai.azure.com)".into());
            }
            if let Some(cloud) = var("AWF_AUTH_AZURE_CLOUD") {
                match azure_authority(&cloud.to_ascii_lowercase()) {
                    Some(a) => {
                        block.insert("authority".into(), a.into());
                    }
                    None => errors.push(format!(
                        "AWF_AUTH_AZURE_CLOUD: `{cloud}` is not public, usgovernment or china"
                    )),
                }
            }
            if let Some(scope) = var("AWF_AUTH_AZURE_SCOPE") {
                block.insert("scope".into(), scope.into());
            }
            Cloud {
                preset: "azure-openai",
                region: None,
                key: "azure",
                block,
            }
        }
        "aws" => {
            block.insert(
                "role_arn".into(),
                need("AWF_AUTH_AWS_ROLE_ARN", "the IAM role to assume").into(),
            );
            let region = need("AWF_AUTH_AWS_REGION", "the Bedrock region");
            block.insert(
                "session_name".into(),
                var("AWF_AUTH_AWS_ROLE_SESSION_NAME")
                    .unwrap_or_else(|| "awf-oidc-session".into())
                    .into(),
            );
            Cloud {
                preset: "bedrock",
                region: Some(region),
                key: "aws",
                block,
            }
        }
        "gcp" => {
            let wip = need(
                "AWF_AUTH_GCP_WORKLOAD_IDENTITY_PROVIDER",
                "the workload identity provider",
            );
            block.insert("workload_identity_provider".into(), wip.into());
            if let Some(sa) = var("AWF_AUTH_GCP_SERVICE_ACCOUNT") {
                block.insert("service_account".into(), sa.into());
            }
            if let Some(scope) = var("AWF_AUTH_GCP_SCOPE") {
                block.insert("scopes".into(), json!([scope]));
            }
            Cloud {
                preset: "vertex",
                region: None,
                key: "google",
                block,
            }
        }
        other => {
            errors.push(format!("AWF_AUTH_PROVIDER: `{other}` is not one llm-keyproxy serves (azure, aws, gcp); Anthropic's own OIDC federation is not reproduced"));
            return Some(Err(errors));
        }
    };
    if let Some(aud) = var("AWF_AUTH_OIDC_AUDIENCE") {
        let mut cloud = cloud;
        cloud.block.insert("audience".into(), aud.into());
        return Some(if errors.is_empty() {
            Ok(cloud)
        } else {
            Err(errors)
        });
    }
    Some(if errors.is_empty() {
        Ok(cloud)
    } else {
        Err(errors)
    })
}

/// The OpenAI port as a keyless cloud provider.
pub(super) struct Cloud {
    pub(super) preset: &'static str,
    pub(super) region: Option<String>,
    /// `aws`, `google` or `azure`.
    pub(super) key: &'static str,
    pub(super) block: Map<String, Value>,
}
