//! TLS material for the mock: a fresh rcgen CA per server, a leaf certificate for the configured
//! hosts, and a rustls (ring provider) server config advertising the configured ALPN protocols.

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::Alpn;

/// The CA certificate (PEM) and a ready server config.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) server_config: Arc<ServerConfig>,
}

fn rcgen_err(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {e}"))
}

fn rustls_err(e: rustls::Error) -> io::Error {
    io::Error::other(format!("rustls: {e}"))
}

/// The ALPN protocol ids advertised for `alpn`.
pub(crate) fn alpn_ids(alpn: Alpn) -> Vec<Vec<u8>> {
    match alpn {
        Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::Http1Only => vec![b"http/1.1".to_vec()],
        Alpn::Http2Only => vec![b"h2".to_vec()],
    }
}

/// The SAN list of the leaf: `hosts` plus the loopback addresses, without duplicates.
fn san_list(hosts: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = Vec::new();
    let extra = ["127.0.0.1".to_string(), "::1".to_string()];
    for h in hosts.iter().chain(extra.iter()) {
        if !h.is_empty() && !sans.iter().any(|s| s.eq_ignore_ascii_case(h)) {
            sans.push(h.clone());
        }
    }
    sans
}

/// Generates a CA and a leaf certificate for `hosts`, and the server config using them.
pub(crate) fn build(hosts: &[String], alpn: Alpn) -> io::Result<TlsMaterial> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, "llm-keyproxy mock-upstream CA");
    ca_dn.push(DnType::OrganizationName, "llm-keyproxy tests");
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(rcgen_err)?;

    let sans = san_list(hosts);
    let mut leaf_params = CertificateParams::new(sans.clone()).map_err(rcgen_err)?;
    let mut leaf_dn = DistinguishedName::new();
    leaf_dn.push(DnType::CommonName, sans[0].as_str());
    leaf_params.distinguished_name = leaf_dn;
    leaf_params.is_ca = IsCa::NoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(rcgen_err)?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(rcgen_err)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .map_err(rustls_err)?;
    config.alpn_protocols = alpn_ids(alpn);

    Ok(TlsMaterial {
        ca_pem: ca.pem(),
        server_config: Arc::new(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_dedup_and_loopback() {
        let sans = san_list(&["a.test".into(), "A.test".into(), "127.0.0.1".into()]);
        assert_eq!(sans, vec!["a.test", "127.0.0.1", "::1"]);
    }

    #[test]
    fn builds_material() {
        let m = build(&["upstream.test".into()], Alpn::Both).unwrap();
        assert!(m.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(m.server_config.alpn_protocols.len(), 2);
    }
}
