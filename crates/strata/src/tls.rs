//! TLS configurations built from [`TlsConfig`] files: rustls with ring as the only crypto
//! provider (no OpenSSL), TLS 1.2 and 1.3 with rustls's safe defaults.
//!
//! - [`server_config`]: a listener's certificate; with `ca_file`, clients must present a
//!   certificate that chains to it (mutual TLS).
//! - [`peer_configs`]: the cluster's RPC port, mutual TLS both ways: each member presents its
//!   certificate and accepts only peers whose certificate chains to the cluster CA, and whose
//!   name (checked when dialing) is the member's node name — so a certificate issued to one
//!   member cannot impersonate another.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificates or key (a key that does not match, say).
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The crypto provider every TLS configuration of Strata uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|e| file_err(path, e))?;
    }
    Ok(Arc::new(store))
}

fn rustls_err(e: impl ToString) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// A listener's configuration: its certificate and key; with `ca_file`, client
/// certificates chaining to it are required. `alpn` lists the protocols offered (`http/1.1`
/// for the admin port; none for RESP, as redis-server).
pub fn server_config(t: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?;
    let builder = match &t.ca_file {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(rustls_err)?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs(&t.cert_file)?, key(&t.key_file)?)
        .map_err(rustls_err)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The cluster RPC port's two sides: the acceptor requires a peer certificate chaining to
/// `ca_file`; the connector presents this member's certificate and checks the callee's
/// against the CA and the callee's node name.
pub fn peer_configs(
    t: &TlsConfig,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), TlsError> {
    let ca = t
        .ca_file
        .as_ref()
        .ok_or_else(|| TlsError::Rustls("cluster.tls.ca_file is required".into()))?;
    let server = server_config(t, &[])?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(&t.cert_file)?, key(&t.key_file)?)
        .map_err(rustls_err)?;
    Ok((server, Arc::new(client)))
}

/// Whether `cert` (a peer's end-entity certificate, already verified against the CA) is
/// valid for the node name `name` (a DNS name in its subject alternative names).
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = rustls_pki_types::ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

/// Files of a test PKI made by [`test_certs`].
#[cfg(feature = "test-certs")]
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate (PEM).
    pub ca_file: std::path::PathBuf,
    /// Per name given: (certificate file, key file), PEM.
    pub leaves: Vec<(std::path::PathBuf, std::path::PathBuf)>,
}

#[cfg(feature = "test-certs")]
impl TestCerts {
    /// The [`TlsConfig`] of leaf `i`, with the CA as `ca_file` when `with_ca`.
    pub fn config(&self, i: usize, with_ca: bool) -> TlsConfig {
        TlsConfig {
            cert_file: self.leaves[i].0.clone(),
            key_file: self.leaves[i].1.clone(),
            ca_file: with_ca.then(|| self.ca_file.clone()),
        }
    }
}

/// Makes a CA in `dir` and one certificate per entry of `names`, each valid for that DNS
/// name, `localhost` and `127.0.0.1` (tests only).
#[cfg(feature = "test-certs")]
pub fn test_certs(dir: &Path, names: &[&str]) -> Result<TestCerts, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (redis-cli) takes a leaf whose subject equals its issuer's
    // for self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Strata test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca = ca_params.self_signed(&ca_key).map_err(e)?;
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .map(|_| p)
            .map_err(|e| e.to_string())
    };
    let ca_file = write("ca.pem", ca.pem())?;
    let mut leaves = Vec::new();
    for name in names {
        let mut params =
            CertificateParams::new(vec![(*name).to_owned(), "localhost".to_owned()]).map_err(e)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name.push(DnType::CommonName, *name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(e)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
        leaves.push((
            write(&format!("{name}.pem"), cert.pem())?,
            write(&format!("{name}.key"), key.serialize_pem())?,
        ));
    }
    Ok(TestCerts { ca_file, leaves })
}
