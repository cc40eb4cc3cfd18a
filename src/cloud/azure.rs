//! Entra ID (Azure AD) access tokens for Azure OpenAI: the client-credentials grant with a
//! federated client assertion (the OIDC token), no client secret.

use http::{Method, Uri};

use super::http::{form, refusal, Client};
use super::Fetched;
use crate::config::cloud::CloudPlan;

pub async fn token(client: &Client, plan: &CloudPlan) -> Result<Fetched, String> {
    let CloudPlan::Azure {
        tenant_id,
        client_id,
        token,
        authority,
        scope,
    } = plan
    else {
        return Err("not an Entra ID credential source".into());
    };
    let assertion = super::identity::token(client, token).await?;
    let url: Uri = format!(
        "{}/{tenant_id}/oauth2/v2.0/token",
        authority.to_string().trim_end_matches('/')
    )
    .parse()
    .map_err(|_| "the Entra ID token URL is not valid".to_owned())?;
    let (headers, body) = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.expose()),
    ]);
    let answer = client
        .send(Method::POST, &url, headers, body)
        .await
        .map_err(|e| format!("Entra ID unreachable: {e}"))?;
    if !answer.status.is_success() {
        return Err(refusal("Entra ID", &answer));
    }
    super::google::oauth_answer(&answer.body, "Entra ID")
}
