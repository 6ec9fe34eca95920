//! TLS to PostgreSQL with rustls, following libpq's `sslmode` meanings: `require`
//! encrypts without checking the certificate; `verify-full` checks the chain against
//! the given root certificates (or the bundled Mozilla roots) and the host name.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read root certificates from {path}: {message}")]
    RootCert { path: String, message: String },
    #[error("no certificates found in {path}")]
    NoRootCert { path: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A connector that encrypts but accepts any server certificate (`sslmode=require`).
pub fn encrypt_only() -> Result<MakeRustlsConnect, TlsError> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A connector that verifies the server certificate and host name (`sslmode=verify-full`)
/// against the PEM roots in `root_cert`.
pub fn verify_full(root_cert: &Path) -> Result<MakeRustlsConnect, TlsError> {
    let path = root_cert.display().to_string();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(root_cert).map_err(|e| TlsError::RootCert {
        path: path.clone(),
        message: e.to_string(),
    })?;
    for cert in certs {
        let cert = cert.map_err(|e| TlsError::RootCert {
            path: path.clone(),
            message: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoRootCert { path });
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
