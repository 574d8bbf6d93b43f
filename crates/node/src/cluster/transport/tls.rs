//! TLS for the cluster transport: every node presents its certificate and checks its peer's
//! against the configured CA, in both directions (mutual TLS). rustls through tokio-rustls,
//! as `ractor_cluster` takes them.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{TlsFiles, TransportError};

pub(super) struct Tls {
    pub(super) acceptor: TlsAcceptor,
    pub(super) connector: TlsConnector,
    pub(super) server_name: ServerName<'static>,
}

fn err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(format!("{what} {}: {e}", path.display()))
}

impl Tls {
    pub(super) fn load(files: &TlsFiles) -> Result<Self, TransportError> {
        // rustls picks its crypto provider from its crate features only when exactly one is
        // on; a build that links another crate enabling `ring` beside ractor_cluster's
        // `aws-lc-rs` (the test binaries do) would panic here. Name the provider, unless the
        // application installed one already (then this is a no-op).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = |e: crate::tls::TlsError| TransportError::Tls(e.to_string());
        let certs = crate::tls::read_certs(&files.cert).map_err(tls)?;
        let key = crate::tls::read_key(&files.key).map_err(tls)?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| err("CA", &files.ca, e))? {
            let ca = ca.map_err(|e| err("CA", &files.ca, e))?;
            roots.add(ca).map_err(|e| err("CA", &files.ca, e))?;
        }
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| err("CA", &files.ca, e))?;
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| err("certificate/key", &files.cert, e))?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| err("certificate/key", &files.cert, e))?;
        let name = files
            .server_name
            .clone()
            .unwrap_or_else(|| "perdure".into());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| TransportError::Tls(format!("server name {name:?}: {e}")))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}
