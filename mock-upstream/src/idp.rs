//! Identity providers that mint tokens from a GitHub OIDC token: the GitHub Actions OIDC token
//! endpoint itself (`GET /oidc/token`) and Entra ID's client-credentials grant with a federated
//! client assertion (`POST /entra/{tenant}/oauth2/v2.0/token`).

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cloud::CloudService;
use crate::routes::{bearer, json, unix_secs, Req, Resp};
use crate::tokenwire::{self, field, parse_jwt, unsigned_jwt};
use crate::Shared;

/// `sub` of every mock OIDC token.
pub const OIDC_SUBJECT: &str = "repo:o/r:ref:refs/heads/main";
/// `aud` a federated client assertion must carry for Entra ID.
pub const ENTRA_ASSERTION_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `GET /oidc/token?api-version=2.0&audience=AUD`: GitHub Actions' ID-token endpoint.
pub(crate) fn oidc(shared: &Arc<Shared>, req: &Req) -> Resp {
    let err =
        |status: StatusCode, msg: &str| json(shared, status, json!({"message": msg}).to_string());
    if req.method != Method::GET {
        return err(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let ok = match (bearer(req), shared.cfg.oidc_request_token.as_deref()) {
        (None, _) => false,
        (Some(got), Some(want)) => got == want,
        (Some(got), None) => !got.is_empty(),
    };
    if !ok {
        return err(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if shared.cloud.failing() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let audience = req
        .query("audience")
        .map(|a| tokenwire::percent_decode(a.as_bytes()))
        .unwrap_or_else(|| "https://github.com/o".to_owned());
    let now = unix_secs();
    let n = shared.cloud.count_of(CloudService::Oidc) + 1;
    let token = unsigned_jwt(&json!({
        "iss": "https://token.actions.githubusercontent.com",
        "aud": audience,
        "sub": OIDC_SUBJECT,
        "exp": now + shared.cloud.lifetime(),
        "iat": now,
        "jti": format!("mock-{n}"),
    }));
    shared.cloud.issue(CloudService::Oidc, &token, None);
    let body = json!({"count": 1, "value": token});
    json(shared, StatusCode::OK, body.to_string())
}

/// `POST /entra/{tenant}/oauth2/v2.0/token`: client credentials with a federated assertion.
pub(crate) fn entra(shared: &Arc<Shared>, req: &Req, tenant: &str) -> Resp {
    let form = tokenwire::form(&req.body.kept);
    shared.cloud.note(req, &form);
    let err = |status: StatusCode, code: &str, desc: &str| {
        let body = json!({"error": code, "error_description": desc, "error_codes": [],
            "timestamp": tokenwire::iso8601(std::time::SystemTime::now())});
        json(shared, status, body.to_string())
    };
    if shared.cloud.failing() {
        let desc = "AADSTS50196: The server is temporarily unavailable.";
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            desc,
        );
    }
    if field(&form, "grant_type") != Some("client_credentials") {
        let desc = "AADSTS70003: The app requested an unsupported grant type.";
        return err(StatusCode::BAD_REQUEST, "unsupported_grant_type", desc);
    }
    for name in ["client_id", "scope", "client_assertion"] {
        if field(&form, name).is_none_or(str::is_empty) {
            let desc = format!(
                "AADSTS900144: The request body must contain the following parameter: '{name}'."
            );
            return err(StatusCode::BAD_REQUEST, "invalid_request", &desc);
        }
    }
    let client_id = field(&form, "client_id").unwrap_or_default();
    let scope = field(&form, "scope").unwrap_or_default();
    if !scope.ends_with("/.default") {
        let desc = "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.";
        return err(StatusCode::BAD_REQUEST, "invalid_scope", desc);
    }
    if field(&form, "client_assertion_type") != Some(JWT_BEARER) {
        let desc = "AADSTS700024: Client assertion type is not supported.";
        return err(StatusCode::UNAUTHORIZED, "invalid_client", desc);
    }
    let assertion = field(&form, "client_assertion").and_then(parse_jwt);
    let Some(assertion) = assertion else {
        let desc = "AADSTS50027: JWT token is invalid or malformed.";
        return err(StatusCode::UNAUTHORIZED, "invalid_client", desc);
    };
    if !assertion.aud_is(ENTRA_ASSERTION_AUDIENCE) {
        let desc = "AADSTS700212: No matching federated identity record found for presented assertion audience.";
        return err(StatusCode::UNAUTHORIZED, "invalid_client", desc);
    }
    if !assertion.unexpired() {
        let desc = "AADSTS700024: Client assertion is not within its valid time range.";
        return err(StatusCode::UNAUTHORIZED, "invalid_client", desc);
    }
    let lifetime = shared.cloud.lifetime();
    let now = unix_secs();
    let resource = scope.trim_end_matches("/.default");
    let token = unsigned_jwt(&json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "appid": client_id,
        "sub": assertion.claims.get("sub").cloned().unwrap_or(Value::Null),
        "iat": now,
        "exp": now + lifetime,
        "uti": shared.next_id(),
    }));
    shared.cloud.issue(CloudService::Entra, &token, None);
    let body = json!({"token_type": "Bearer", "expires_in": lifetime,
        "ext_expires_in": lifetime, "access_token": token});
    json(shared, StatusCode::OK, body.to_string())
}
