//! AWS STS `AssumeRoleWithWebIdentity` (`POST /sts/`, or `POST /` with that `Action`): trades a
//! web identity JWT (aud `sts.amazonaws.com`, unexpired) for temporary credentials, in AWS's XML.

use std::sync::Arc;

use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::body::MockBody;
use crate::cloud::CloudService;
use crate::record::hex;
use crate::routes::{respond, set_header, Req, Resp};
use crate::tokenwire::{self, field, parse_jwt};
use crate::Shared;

/// The audience a web identity token must carry.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// True when `POST /` is an STS call (a form with `Action=AssumeRoleWithWebIdentity`).
pub(crate) fn is_sts_form(req: &Req) -> bool {
    field(&tokenwire::form(&req.body.kept), "Action") == Some("AssumeRoleWithWebIdentity")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml(shared: &Arc<Shared>, status: StatusCode, request_id: &str, body: String) -> Resp {
    let mut resp = respond(status, "text/xml", MockBody::full(shared, body));
    set_header(&mut resp, "x-amzn-requestid", request_id);
    resp
}

fn error(shared: &Arc<Shared>, status: StatusCode, code: &str, msg: &str, rid: &str) -> Resp {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{XMLNS}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{rid}</RequestId>\n</ErrorResponse>\n",
        xml_escape(msg)
    );
    xml(shared, status, rid, body)
}

/// A 40-hex-digit pseudo-random string (unique per call).
fn opaque(shared: &Shared, label: &str) -> String {
    let digest = Sha256::digest(format!("{label}{}", shared.next_id()));
    hex(&digest)
}

/// Handles an STS call.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let form = tokenwire::form(&req.body.kept);
    shared.cloud.note(req, &form);
    let h = opaque(shared, "rid");
    let rid = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    if shared.cloud.failing() {
        let msg = "Service is unavailable. Please try again later.";
        return error(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            msg,
            &rid,
        );
    }
    let action = field(&form, "Action").unwrap_or_default();
    if action != "AssumeRoleWithWebIdentity" {
        let msg = format!("Could not find operation {action} for version 2011-06-15");
        return error(shared, StatusCode::BAD_REQUEST, "InvalidAction", &msg, &rid);
    }
    for (name, member) in [
        ("RoleArn", "roleArn"),
        ("RoleSessionName", "roleSessionName"),
        ("WebIdentityToken", "webIdentityToken"),
    ] {
        if field(&form, name).is_none_or(str::is_empty) {
            let msg = format!("1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null");
            return error(
                shared,
                StatusCode::BAD_REQUEST,
                "ValidationError",
                &msg,
                &rid,
            );
        }
    }
    let role_arn = field(&form, "RoleArn").unwrap_or_default();
    let session = field(&form, "RoleSessionName").unwrap_or_default();
    let Some(jwt) = field(&form, "WebIdentityToken").and_then(parse_jwt) else {
        let msg = "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)";
        return error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            msg,
            &rid,
        );
    };
    if !jwt.aud_is(STS_AUDIENCE) {
        let msg = "Incorrect token audience";
        return error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidIdentityToken",
            msg,
            &rid,
        );
    }
    if !jwt.unexpired() {
        let msg = "Token expired: current date/time must be before the expiration date/time";
        return error(
            shared,
            StatusCode::BAD_REQUEST,
            "ExpiredTokenException",
            msg,
            &rid,
        );
    }
    let n = shared.cloud.count_of(CloudService::AwsSts) + 1;
    let akid = format!("ASIAMOCK{n:012}");
    let secret = opaque(shared, "secret")[..40].to_owned();
    let session_token = format!("IQoJmock//{}", opaque(shared, "session"));
    let aws = Some((secret.clone(), session_token.clone()));
    let expires = shared.cloud.issue(CloudService::AwsSts, &akid, aws);
    let role_name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let account = role_arn.split(':').nth(4).unwrap_or("123456789012");
    let subject = jwt.claims["sub"].as_str().unwrap_or_default();
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{XMLNS}\">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>
    <Audience>{STS_AUDIENCE}</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::{}:assumed-role/{}/{}</Arn>
      <AssumedRoleId>AROAMOCK{n:012}:{}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{akid}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{session_token}</SessionToken>
      <Expiration>{}</Expiration>
    </Credentials>
    <Provider>arn:aws:iam::{}:oidc-provider/token.actions.githubusercontent.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{rid}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
",
        xml_escape(subject),
        xml_escape(account),
        xml_escape(role_name),
        xml_escape(session),
        xml_escape(session),
        tokenwire::iso8601(expires),
        xml_escape(account),
    );
    xml(shared, StatusCode::OK, &rid, body)
}
