//! Certificate authorities of the simulated clusters. Each Hopsworks and Kubernetes API server
//! has a CA of its own, as self-hosted clusters do, and clients must trust exactly that CA.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::sync::Arc;

/// A certificate authority that issues server certificates for loopback.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA named `name` (ECDSA P-256).
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate in PEM, as a client's CA bundle or a kubeconfig's
    /// `certificate-authority-data` (base64 of this).
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A self-signed certificate for `127.0.0.1` and `localhost` marked as a CA, and a server
    /// configuration presenting it as the server's own: the hand-made certificate kubectl
    /// accepts and rustls refuses (`CaUsedAsEndEntity`). Answers its PEM (what a client is
    /// given to trust) and the configuration.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn serving_itself(name: &str) -> anyhow::Result<(String, rustls::ServerConfig)> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, format!("{name} API server"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let config = server_config(cert.der().clone(), &key)?;
        Ok((cert.pem(), config))
    }

    /// A rustls server configuration with a certificate for `127.0.0.1` and `localhost` signed
    /// by this CA.
    ///
    /// # Errors
    /// When signing fails.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        server_config(cert.der().clone(), &key)
    }
}

/// A server configuration presenting `cert` (and no chain) with `key`.
fn server_config(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: &KeyPair,
) -> anyhow::Result<rustls::ServerConfig> {
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| anyhow::anyhow!("server key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key_der)?)
}
