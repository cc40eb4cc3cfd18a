//! AWS STS `AssumeRoleWithWebIdentity`: an OIDC token exchanged for temporary SigV4
//! credentials of a role (the request is unsigned, as AWS defines it).

use std::time::{Duration, SystemTime};

use http::Method;

use super::http::{form, refusal, xml_text, Client};
use super::{Fetched, Fresh};
use crate::config::cloud::{AwsKeys, CloudPlan};
use crate::config::secret::Secret;

pub async fn assume_role(client: &Client, plan: &CloudPlan) -> Result<Fetched, String> {
    let CloudPlan::AwsRole {
        role_arn,
        session_name,
        duration,
        token,
        sts,
        ..
    } = plan
    else {
        return Err("not an AWS role".into());
    };
    let jwt = super::identity::token(client, token).await?;
    let secs = duration.as_secs().clamp(900, 43_200).to_string();
    let (headers, body) = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("DurationSeconds", &secs),
        ("WebIdentityToken", jwt.expose()),
    ]);
    let answer = client
        .send(Method::POST, sts, headers, body)
        .await
        .map_err(|e| format!("AWS STS unreachable: {e}"))?;
    if !answer.status.is_success() {
        return Err(refusal("AWS STS", &answer));
    }
    parse(&String::from_utf8_lossy(&answer.body))
}

/// Reads the credentials of an `AssumeRoleWithWebIdentityResponse`.
fn parse(xml: &str) -> Result<Fetched, String> {
    let field = |tag: &str| {
        xml_text(xml, tag)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("AWS STS answered without <{tag}>"))
    };
    let expires = expiration(&field("Expiration")?)?;
    Ok(Fetched {
        credential: Fresh::Aws(AwsKeys {
            access_key_id: Secret::new(field("AccessKeyId")?),
            secret_access_key: Secret::new(field("SecretAccessKey")?),
            session_token: Some(Secret::new(field("SessionToken")?)),
            expires: Some(expires),
        }),
        expires,
    })
}

/// An RFC 3339 / ISO 8601 time as AWS and Google write it.
pub fn expiration(text: &str) -> Result<SystemTime, String> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let t = DateTime::from_str(text.trim(), Format::DateTime).map_err(|_| {
        format!(
            "`{}` is not a time",
            crate::telemetry::logging::sanitize(text, 40)
        )
    })?;
    let secs = u64::try_from(t.secs()).map_err(|_| "the expiry is before 1970".to_owned())?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sts_credentials() {
        let xml = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s/e+c</SecretAccessKey><SessionToken>tok&amp;en</SessionToken><Expiration>2026-12-04T08:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#;
        let f = parse(xml).unwrap();
        let Fresh::Aws(k) = f.credential else {
            panic!()
        };
        assert_eq!(k.access_key_id.expose(), "ASIAX");
        assert_eq!(k.secret_access_key.expose(), "s/e+c");
        assert_eq!(k.session_token.unwrap().expose(), "tok&en");
        assert_eq!(
            f.expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_796_371_200
        );
        assert!(parse("<x/>").unwrap_err().contains("<Expiration>"));
        assert!(expiration("2026-12-04T08:00:00.123456Z").is_ok());
    }
}
