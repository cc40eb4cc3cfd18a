//! Keyless cloud providers (docs/cloud.md): SigV4 signing for Bedrock, and short-lived
//! credentials (AWS STS, Google OAuth2 / STS / IAM, Entra ID) obtained from a GitHub Actions
//! OIDC token, a web identity token file or a service-account key, refreshed in the
//! background before they expire.

mod aws;
mod azure;
mod google;
mod http;
mod identity;
pub mod refresh;
pub mod sigv4;

use std::time::SystemTime;

use crate::config::cloud::AwsKeys;
use crate::config::secret::Secret;

/// A credential fetched from a token service, and when it expires.
pub struct Fetched {
    pub credential: Fresh,
    pub expires: SystemTime,
}

/// What a token service gave.
pub enum Fresh {
    /// AWS temporary credentials (SigV4).
    Aws(AwsKeys),
    /// An OAuth2 access token, sent as `Authorization: Bearer`.
    Bearer(Secret),
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "credential ***** until {:?}", self.expires)
    }
}
