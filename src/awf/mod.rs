//! AWF (the Agentic Workflow Firewall) integration: the config rendered from its environment,
//! the docker-compose fragment, and the health probe its image runs.

pub mod compose;
mod oidc;
mod otel;
pub mod probe;
pub mod render;
