//! The OIDC token a cloud's token service trusts: requested from GitHub Actions for an
//! audience (`ACTIONS_ID_TOKEN_REQUEST_URL` + `_TOKEN`), or read from a web identity token
//! file (Kubernetes projected tokens, `AWS_WEB_IDENTITY_TOKEN_FILE`).

use http::header::{HeaderValue, ACCEPT};
use http::{Method, Uri};

use super::http::{bearer, refusal, Client};
use crate::config::cloud::{web_identity_missing, WebIdentity};
use crate::config::secret::Secret;

/// A fresh OIDC token from `source`.
pub async fn token(client: &Client, source: &WebIdentity) -> Result<Secret, String> {
    match source {
        WebIdentity::File(path) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                format!(
                    "cannot read the web identity token file {}: {e}",
                    path.display()
                )
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!(
                    "the web identity token file {} is empty",
                    path.display()
                ));
            }
            Ok(Secret::new(text))
        }
        WebIdentity::GithubActions { audience, request } => {
            let Some((url, request_token)) = request else {
                return Err(web_identity_missing(source).unwrap_or_default());
            };
            let sep = if url.expose().contains('?') { '&' } else { '?' };
            let aud: String = form_urlencoded::byte_serialize(audience.as_bytes()).collect();
            let full = format!("{}{sep}audience={aud}", url.expose());
            let uri: Uri = full
                .parse()
                .map_err(|_| "ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".to_owned())?;
            let headers = vec![
                bearer(request_token.expose())?,
                (ACCEPT, HeaderValue::from_static("application/json")),
            ];
            let answer = client
                .send(Method::GET, &uri, headers, bytes::Bytes::new())
                .await
                .map_err(|e| format!("GitHub OIDC token request failed: {e}"))?;
            if !answer.status.is_success() {
                return Err(refusal("the GitHub OIDC token service", &answer));
            }
            #[derive(serde::Deserialize)]
            struct Value {
                value: String,
            }
            let v: Value = serde_json::from_slice(&answer.body)
                .map_err(|_| "the GitHub OIDC token service answered without a token".to_owned())?;
            Ok(Secret::new(v.value))
        }
    }
}
