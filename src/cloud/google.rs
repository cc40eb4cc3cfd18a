//! Google OAuth2 access tokens for Vertex AI: from a service-account key (a self-signed RS256
//! JWT exchanged at the token URI, RFC 7523), or by workload identity federation (an OIDC
//! token exchanged at Google STS, RFC 8693, then optionally the service account's own token
//! from the IAM credentials API).

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Uri};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::{pem::PemObject, PrivatePkcs8KeyDer};

use super::http::{bearer, form, refusal, Client};
use super::{Fetched, Fresh};
use crate::config::cloud::{CloudPlan, ServiceAccount};
use crate::config::secret::Secret;

/// Lifetime of a service-account assertion (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;

pub async fn token(client: &Client, plan: &CloudPlan) -> Result<Fetched, String> {
    match plan {
        CloudPlan::GoogleServiceAccount {
            key,
            token_uri,
            scopes,
        } => {
            let now = unix(SystemTime::now());
            let jwt = assertion(key, &token_uri.to_string(), &scopes.join(" "), now)?;
            let (headers, body) = form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt),
            ]);
            let answer = client
                .send(Method::POST, token_uri, headers, body)
                .await
                .map_err(|e| format!("Google token endpoint unreachable: {e}"))?;
            if !answer.status.is_success() {
                return Err(refusal("the Google token endpoint", &answer));
            }
            oauth_answer(&answer.body, "the Google token endpoint")
        }
        CloudPlan::GoogleFederated {
            audience,
            token,
            sts,
            service_account,
            iam,
            scopes,
        } => {
            let subject = super::identity::token(client, token).await?;
            let scope = scopes.join(" ");
            let (headers, body) = form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", audience),
                ("scope", &scope),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("subject_token", subject.expose()),
            ]);
            let answer = client
                .send(Method::POST, sts, headers, body)
                .await
                .map_err(|e| format!("Google STS unreachable: {e}"))?;
            if !answer.status.is_success() {
                return Err(refusal("Google STS", &answer));
            }
            let federated = oauth_answer(&answer.body, "Google STS")?;
            match service_account {
                None => Ok(federated),
                Some(sa) => {
                    let Fresh::Bearer(fed) = &federated.credential else {
                        return Err("Google STS gave no access token".into());
                    };
                    impersonate(client, iam, sa, scopes, fed).await
                }
            }
        }
        _ => Err("not a Google credential source".into()),
    }
}

/// The service account's own access token, with the federated token as the caller.
async fn impersonate(
    client: &Client,
    iam: &Uri,
    service_account: &str,
    scopes: &[String],
    federated: &Secret,
) -> Result<Fetched, String> {
    let base = iam.to_string();
    let url: Uri = format!(
        "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        base.trim_end_matches('/'),
        form_urlencoded::byte_serialize(service_account.as_bytes()).collect::<String>()
    )
    .parse()
    .map_err(|_| "the IAM credentials URL is not valid".to_owned())?;
    let body = serde_json::json!({"scope": scopes, "lifetime": "3600s"}).to_string();
    let headers = vec![
        bearer(federated.expose())?,
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
    ];
    let answer = client
        .send(Method::POST, &url, headers, body.into())
        .await
        .map_err(|e| format!("Google IAM credentials unreachable: {e}"))?;
    if !answer.status.is_success() {
        return Err(refusal("Google IAM credentials", &answer));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Impersonated {
        access_token: String,
        expire_time: String,
    }
    let v: Impersonated = serde_json::from_slice(&answer.body)
        .map_err(|_| "Google IAM credentials answered without accessToken/expireTime".to_owned())?;
    Ok(Fetched {
        credential: Fresh::Bearer(Secret::new(v.access_token)),
        expires: super::aws::expiration(&v.expire_time)?,
    })
}

/// `{"access_token": .., "expires_in": ..}`, as OAuth2 token endpoints answer.
pub fn oauth_answer(body: &[u8], service: &str) -> Result<Fetched, String> {
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: String,
        expires_in: Option<serde_json::Value>,
    }
    let t: Token = serde_json::from_slice(body)
        .map_err(|_| format!("{service} answered without an access_token"))?;
    // Entra ID has sent `expires_in` as a string; Google as a number.
    let secs = match t.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{service} answered without expires_in"))?;
    if t.access_token.is_empty() {
        return Err(format!("{service} answered an empty access_token"));
    }
    Ok(Fetched {
        credential: Fresh::Bearer(Secret::new(t.access_token)),
        expires: SystemTime::now() + Duration::from_secs(secs),
    })
}

/// The signed JWT a service account presents (RS256 over `header.claims`).
fn assertion(key: &ServiceAccount, aud: &str, scope: &str, now: u64) -> Result<String, String> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &key.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": key.client_email,
        "scope": scope,
        "aud": aud,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let der = PrivatePkcs8KeyDer::from_pem_slice(key.private_key.expose().as_bytes())
        .map_err(|_| "the service-account private_key is not a PKCS#8 PEM key".to_owned())?;
    let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|_| "the service-account private_key is not an RSA key ring accepts".to_owned())?;
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the service-account assertion failed".to_owned())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_answers() {
        let f = oauth_answer(
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            "t",
        )
        .unwrap();
        let left = f
            .expires
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs();
        assert!((3590..=3599).contains(&left));
        assert!(oauth_answer(br#"{"access_token":"a","expires_in":"60"}"#, "t").is_ok());
        assert!(oauth_answer(br#"{"access_token":"a"}"#, "t")
            .unwrap_err()
            .contains("expires_in"));
        assert!(oauth_answer(b"nope", "t").is_err());
    }
}
