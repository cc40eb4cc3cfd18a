//! SigV4 for Bedrock (docs/cloud.md): AWS's own signer (`aws-sigv4`) over the request exactly
//! as it will be sent: method, absolute URI, the headers that can matter and the whole body.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign as aws_sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::request::Parts;

use crate::config::cloud::AwsKeys;

/// The AWS service name Bedrock's runtime signs with.
pub const SERVICE: &str = "bedrock";

/// Headers a client may have sent that belong to an AWS signature: removed before signing,
/// so only the proxy's own reach the upstream.
const CLIENT_SIGNING_HEADERS: [&str; 3] =
    ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"];

/// Signs `parts` (URI already absolute: `https://bedrock-runtime.REGION.amazonaws.com/...`)
/// for `body`, adding `authorization`, `x-amz-date` and, for temporary credentials,
/// `x-amz-security-token` (all marked sensitive). Signed: `host`, `content-type` and every
/// other `x-amz-*` header; nothing a hop could change.
pub fn sign(
    parts: &mut Parts,
    body: &[u8],
    keys: &AwsKeys,
    region: &str,
    now: SystemTime,
) -> Result<(), String> {
    sign_for(SERVICE, parts, body, keys, region, now)
}

fn sign_for(
    service: &str,
    parts: &mut Parts,
    body: &[u8],
    keys: &AwsKeys,
    region: &str,
    now: SystemTime,
) -> Result<(), String> {
    for name in CLIENT_SIGNING_HEADERS {
        parts.headers.remove(name);
    }
    let identity: Identity = Credentials::new(
        keys.access_key_id.expose(),
        keys.secret_access_key.expose(),
        keys.session_token.as_ref().map(|t| t.expose().to_owned()),
        keys.expires,
        "llm-keyproxy",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into();
    let signed: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name == CONTENT_TYPE || name.as_str().starts_with("x-amz-"))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let uri = parts.uri.to_string();
    let request = SignableRequest::new(
        parts.method.as_str(),
        &uri,
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _) = aws_sign(request, &params)
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    for h in headers {
        let name = HeaderName::from_static(h.name());
        let mut value = HeaderValue::from_str(h.value())
            .map_err(|_| "the signature is not a valid header value".to_owned())?;
        // Every header the signer adds is unique per request or secret: never HPACK-indexed.
        value.set_sensitive(true);
        parts.headers.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::Secret;

    fn keys(token: Option<&str>) -> AwsKeys {
        AwsKeys {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
            expires: None,
        }
    }

    fn parts(uri: &str) -> Parts {
        let (mut p, ()) = http::Request::post(uri)
            .header("content-type", "application/json")
            .header("x-amz-security-token", "client-sent")
            .header("accept", "*/*")
            .body(())
            .unwrap()
            .into_parts();
        p.headers
            .insert("x-amz-date", HeaderValue::from_static("19990101T000000Z"));
        p
    }

    /// AWS's published vector `get-vanilla-with-session-token` (the SigV4 test suite that
    /// ships with aws-sigv4): this function gives the suite's signature.
    #[test]
    fn published_vector() {
        let (mut p, ()) = http::Request::get("https://example.amazonaws.com/")
            .body(())
            .unwrap()
            .into_parts();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        sign_for("service", &mut p, b"", &keys(Some(token)), "us-east-1", t).unwrap();
        assert_eq!(p.headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(p.headers["x-amz-security-token"], token);
        assert_eq!(
            p.headers["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        );
        assert!(p.headers["authorization"].is_sensitive());
    }

    #[test]
    fn client_signing_headers_are_replaced() {
        let mut p = parts("https://bedrock-runtime.us-east-1.amazonaws.com/model/a%3A0/invoke");
        sign(
            &mut p,
            b"{}",
            &keys(Some("session")),
            "us-east-1",
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(p.headers["x-amz-security-token"], "session");
        assert_ne!(p.headers["x-amz-date"], "19990101T000000Z");
        let auth = p.headers["authorization"].to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
            "{auth}"
        );
        let mut p = parts("https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke");
        sign(&mut p, b"{}", &keys(None), "us-east-1", SystemTime::now()).unwrap();
        assert!(p.headers.get("x-amz-security-token").is_none());
    }

    #[test]
    fn the_body_is_signed() {
        let t = SystemTime::now();
        let sig = |body: &[u8]| {
            let mut p = parts("https://bedrock-runtime.us-east-1.amazonaws.com/model/x/invoke");
            sign(&mut p, body, &keys(None), "us-east-1", t).unwrap();
            p.headers["authorization"].to_str().unwrap().to_owned()
        };
        assert_eq!(sig(b"{\"a\":1}"), sig(b"{\"a\":1}"));
        assert_ne!(sig(b"{\"a\":1}"), sig(b"{\"a\":2}"));
    }
}
