//! Google's token services: the OAuth JWT-bearer grant of a service account (`POST
//! /google/token`, RS256 checked against the mock's test-only key), the STS token exchange of
//! workload identity federation (`POST /google/sts/v1/token`) and service-account impersonation
//! (`POST /google/iam/v1/projects/-/serviceAccounts/{email}:generateAccessToken`).

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::StatusCode;
use ring::signature::{self, KeyPair as _, RsaKeyPair};
use serde_json::{json, Value};

use crate::cloud::CloudService;
use crate::routes::{bearer, json, unix_secs, Req, Resp};
use crate::tokenwire::{self, field, parse_jwt};
use crate::Shared;

/// `client_email` of the mock's service account.
pub const SA_EMAIL: &str = "agent@mock-project.iam.gserviceaccount.com";
/// Scope every Google token request must include.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The service account's key: TEST-ONLY, committed on purpose (ring cannot generate RSA keys).
const KEY_PEM: &str = include_str!("test_sa_key.pem");
const PRIVATE_KEY_ID: &str = "6d6f636b2d6b65792d30303031";

/// The PKCS#8 DER of [`KEY_PEM`].
fn key_der() -> Vec<u8> {
    let b64: String = KEY_PEM
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(b64).unwrap_or_default()
}

/// The service account's public key (DER RSAPublicKey), parsed once.
fn public_key() -> Option<&'static [u8]> {
    static KEY: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = RsaKeyPair::from_pkcs8(&key_der()).ok()?;
        Some(pair.public_key().as_ref().to_vec())
    })
    .as_deref()
}

/// A service-account JSON key file for the mock's account, with `token_uri` as given (e.g.
/// `https://127.0.0.1:PORT/google/token`). Its private key is the mock's test-only key.
pub fn google_service_account_json(token_uri: &str) -> String {
    let pem: String = KEY_PEM
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .map(|l| format!("{l}\n"))
        .collect();
    json!({
        "type": "service_account",
        "project_id": "mock-project",
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": pem,
        "client_email": SA_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

/// An OAuth-shaped error (`{"error":..,"error_description":..}`).
fn oauth_error(shared: &Arc<Shared>, status: StatusCode, code: &str, desc: &str) -> Resp {
    let body = json!({"error": code, "error_description": desc});
    json(shared, status, body.to_string())
}

/// A Google API-shaped error (`{"error":{"code","message","status"}}`).
pub(crate) fn api_error(shared: &Arc<Shared>, status: StatusCode, msg: &str, kind: &str) -> Resp {
    let body = json!({"error": {"code": status.as_u16(), "message": msg, "status": kind}});
    json(shared, status, body.to_string())
}

/// Why a service-account assertion is refused, if it is.
fn check_assertion(token: &str) -> Result<(), &'static str> {
    let jwt = parse_jwt(token).ok_or("Invalid JWT: malformed")?;
    if jwt.header["alg"] != "RS256" {
        return Err("Invalid JWT: alg must be RS256");
    }
    let key = public_key().ok_or("mock key unusable")?;
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(jwt.signing_input.as_bytes(), &jwt.signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    let c = &jwt.claims;
    if c["iss"] != SA_EMAIL {
        return Err("Invalid grant: account not found");
    }
    let aud = c["aud"].as_str().unwrap_or_default();
    if !(aud == "https://oauth2.googleapis.com/token"
        || aud.starts_with("https://") && aud.ends_with("/google/token"))
    {
        return Err("Invalid JWT: audience must be the token URI");
    }
    let scopes = c["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == CLOUD_PLATFORM) {
        return Err("Invalid JWT: scope must include cloud-platform");
    }
    let (iat, exp) = (c["iat"].as_u64(), c["exp"].as_u64());
    let (Some(iat), Some(exp)) = (iat, exp) else {
        return Err("Invalid JWT: iat and exp are required");
    };
    let now = unix_secs();
    if exp <= now || exp < iat || exp - iat > 3600 || iat > now + 300 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.");
    }
    Ok(())
}

/// `POST /google/token`: the JWT-bearer grant of the mock's service account.
pub(crate) fn token(shared: &Arc<Shared>, req: &Req) -> Resp {
    let form = tokenwire::form(&req.body.kept);
    shared.cloud.note(req, &form);
    if shared.cloud.failing() {
        let (status, desc) = (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        return oauth_error(shared, status, "internal_failure", desc);
    }
    let grant = field(&form, "grant_type").unwrap_or_default();
    if grant != JWT_BEARER {
        let desc = format!("Invalid grant_type: {grant}");
        return oauth_error(
            shared,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &desc,
        );
    }
    let assertion = field(&form, "assertion").unwrap_or_default();
    if let Err(desc) = check_assertion(assertion) {
        return oauth_error(shared, StatusCode::BAD_REQUEST, "invalid_grant", desc);
    }
    let n = shared.cloud.count_of(CloudService::GoogleToken) + 1;
    let token = format!("ya29.mock-{n}-{}", shared.next_id());
    shared.cloud.issue(CloudService::GoogleToken, &token, None);
    let body = json!({"access_token": token, "expires_in": shared.cloud.lifetime(),
        "token_type": "Bearer"});
    json(shared, StatusCode::OK, body.to_string())
}

/// The request's fields: a form, or a JSON object of strings (Google STS accepts both).
fn fields(req: &Req) -> Vec<(String, String)> {
    if let Ok(Some(Value::Object(map))) = req.json() {
        return map
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
            .collect();
    }
    tokenwire::form(&req.body.kept)
}

/// `POST /google/sts/v1/token`: token exchange of an OIDC JWT for a federated access token.
/// The JWT must be unexpired and its `aud` the `audience` field, or `https:` + it.
pub(crate) fn sts(shared: &Arc<Shared>, req: &Req) -> Resp {
    let form = fields(req);
    shared.cloud.note(req, &form);
    let bad = |desc: &str| oauth_error(shared, StatusCode::BAD_REQUEST, "invalid_request", desc);
    if shared.cloud.failing() {
        let (status, desc) = (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        return oauth_error(shared, status, "temporarily_unavailable", desc);
    }
    if field(&form, "grant_type") != Some(TOKEN_EXCHANGE) {
        return bad("Invalid value for \"grant_type\".");
    }
    let jwt_type = field(&form, "subject_token_type").unwrap_or_default();
    if ![
        "urn:ietf:params:oauth:token-type:jwt",
        "urn:ietf:params:oauth:token-type:id_token",
    ]
    .contains(&jwt_type)
    {
        return bad("Invalid value for \"subject_token_type\".");
    }
    if field(&form, "requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return bad("Invalid value for \"requested_token_type\".");
    }
    let audience = field(&form, "audience").unwrap_or_default();
    if !audience.starts_with("//iam.googleapis.com/") {
        return bad("Invalid value for \"audience\".");
    }
    let subject = field(&form, "subject_token").and_then(parse_jwt);
    let aud_ok = subject
        .as_ref()
        .is_some_and(|j| j.aud_is(audience) || j.aud_is(&format!("https:{audience}")));
    if !aud_ok || !subject.as_ref().is_some_and(|j| j.unexpired()) {
        let desc = "The audience in ID Token does not match the expected audience, or the token is invalid or expired.";
        return oauth_error(shared, StatusCode::BAD_REQUEST, "invalid_grant", desc);
    }
    let n = shared.cloud.count_of(CloudService::GoogleSts) + 1;
    let token = format!("fed.mock-{n}-{}", shared.next_id());
    shared.cloud.issue(CloudService::GoogleSts, &token, None);
    let body = json!({"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer", "expires_in": shared.cloud.lifetime()});
    json(shared, StatusCode::OK, body.to_string())
}

/// `POST .../serviceAccounts/{email}:generateAccessToken` with a federated (or service-account)
/// bearer token.
pub(crate) fn impersonate(shared: &Arc<Shared>, req: &Req, email: &str) -> Resp {
    let body = req.json().ok().flatten().unwrap_or(Value::Null);
    let lifetime = body["lifetime"].as_str().unwrap_or_default().to_owned();
    shared.cloud.note(req, &[("lifetime".into(), lifetime)]);
    let bearer = bearer(req).unwrap_or_default();
    let allowed = [CloudService::GoogleSts, CloudService::GoogleToken];
    if !shared.cloud.valid(bearer, &allowed) {
        return unauthenticated(shared);
    }
    if shared.cloud.failing() {
        let msg = "The service is currently unavailable.";
        return api_error(shared, StatusCode::SERVICE_UNAVAILABLE, msg, "UNAVAILABLE");
    }
    let scopes = body["scope"].as_array().map(Vec::len).unwrap_or(0);
    if scopes == 0 || !email.contains('@') {
        let msg = "Request contains an invalid argument.";
        return api_error(shared, StatusCode::BAD_REQUEST, msg, "INVALID_ARGUMENT");
    }
    let n = shared.cloud.count_of(CloudService::GoogleIam) + 1;
    let token = format!("ya29.imp-{n}-{}", shared.next_id());
    let expires = shared.cloud.issue(CloudService::GoogleIam, &token, None);
    let body = json!({"accessToken": token, "expireTime": tokenwire::iso8601(expires)});
    json(shared, StatusCode::OK, body.to_string())
}

/// Google's 401 for a missing, unknown or expired OAuth token.
pub(crate) fn unauthenticated(shared: &Arc<Shared>) -> Resp {
    let msg = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
    api_error(shared, StatusCode::UNAUTHORIZED, msg, "UNAUTHENTICATED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// An assertion as a Google client library signs it, with `claims` changed by `edit`.
    fn assertion(edit: impl FnOnce(&mut Value)) -> String {
        let now = unix_secs();
        let mut claims = json!({"iss": SA_EMAIL, "aud": "https://127.0.0.1:1/google/token",
            "scope": CLOUD_PLATFORM, "iat": now, "exp": now + 3600});
        edit(&mut claims);
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let input = format!("{head}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let pair = RsaKeyPair::from_pkcs8(&key_der()).unwrap();
        let mut sig = vec![0; pair.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &rng,
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn signed_assertion_is_accepted() {
        assert_eq!(check_assertion(&assertion(|_| {})), Ok(()));
    }

    #[test]
    fn tampered_or_wrong_assertions_are_refused() {
        let good = assertion(|_| {});
        let (input, _) = good.rsplit_once('.').unwrap();
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 256]));
        assert_eq!(check_assertion(&forged), Err("Invalid JWT Signature."));
        let now = unix_secs();
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: [(&str, Edit); 4] = [
            ("account", Box::new(|c| c["iss"] = json!("x@y"))),
            (
                "audience",
                Box::new(|c| c["aud"] = json!("https://evil/token")),
            ),
            ("scope", Box::new(|c| c["scope"] = json!("email"))),
            (
                "short-lived",
                Box::new(move |c| c["exp"] = json!(now + 7200)),
            ),
        ];
        for (want, edit) in cases {
            let err = check_assertion(&assertion(edit)).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn service_account_json_carries_the_key() {
        let v: Value = serde_json::from_str(&google_service_account_json("https://h/t")).unwrap();
        assert_eq!(v["client_email"], SA_EMAIL);
        assert_eq!(v["token_uri"], "https://h/t");
        let pem = v["private_key"].as_str().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(public_key().is_some());
    }
}
