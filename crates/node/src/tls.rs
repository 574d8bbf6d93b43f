//! TLS on the node's public listeners, HTTP and gRPC (`http.tls_cert`, `http.tls_key`): one
//! certificate chain and key in PEM files, served by rustls (the aws-lc-rs provider that the
//! cluster transport uses too). Handshakes run in their own tasks, so that a slow or broken
//! client never holds up the next connection; a handshake that fails or takes longer than
//! [`HANDSHAKE_TIMEOUT`] is dropped and logged at debug level; accepting never waits for
//! handshakes (see [`accept_loop`] for the limits).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// Longest TLS handshake a client gets.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once per listener; a connection over it is closed at once.
const MAX_HANDSHAKES: usize = 1024;

/// Handshakes in progress at once from one IP address; a connection over it is closed at
/// once, so that one client cannot take the whole budget.
const MAX_HANDSHAKES_PER_IP: usize = 32;

/// The certificate and key files of a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {path}: {reason}")]
pub struct TlsError {
    what: &'static str,
    path: String,
    reason: String,
}

fn tls_err(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The certificates of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err("certificate", path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("certificate", path, e))?;
    if certs.is_empty() {
        return Err(tls_err("certificate", path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        tls_err(
            "key",
            path,
            format!("{e} (a PEM PKCS#8, PKCS#1 or SEC1 key, not encrypted)"),
        )
    })
}

/// The server configuration of `files`, offering `alpn` (e.g. `h2` for gRPC).
pub fn server_config(
    files: &TlsFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("certificate", &files.cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("certificate/key", &files.cert, e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Handshakes in progress, in all and per client address.
#[derive(Default)]
struct Pending {
    total: usize,
    per_ip: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// One admitted handshake; released when dropped.
struct Admitted {
    pending: Arc<std::sync::Mutex<Pending>>,
    ip: std::net::IpAddr,
}

impl Admitted {
    /// Admits a handshake from `ip`, unless a limit is reached.
    fn try_new(pending: &Arc<std::sync::Mutex<Pending>>, ip: std::net::IpAddr) -> Option<Self> {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = p.per_ip.get(&ip).copied().unwrap_or(0);
        if p.total >= MAX_HANDSHAKES || from_ip >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        p.total += 1;
        p.per_ip.insert(ip, from_ip + 1);
        Some(Self {
            pending: pending.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accepts TCP connections on `listener` and hands out the ones whose handshake succeeded.
/// Accepting never waits for handshakes: over [`MAX_HANDSHAKES`] in progress (or
/// [`MAX_HANDSHAKES_PER_IP`] from one address) a new connection is closed at once. The loop
/// ends, closing the listener, when the receiver is dropped.
pub fn accept_loop(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> mpsc::Receiver<(TlsConn, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a TLS connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(admitted) = Admitted::try_new(&pending, peer.ip()) else {
                tracing::debug!(%peer, "too many TLS handshakes in progress; connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(admitted);
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((TlsConn { inner: tls, peer }, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// A server-side TLS connection.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl TlsConn {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.get_ref().0.connect_info()
    }
}

/// The HTTP listener over TLS, for `axum::serve`.
pub struct HttpsListener {
    conns: mpsc::Receiver<(TlsConn, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            conns: accept_loop(listener, config),
            local,
        })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.conns.recv().await {
            Some(c) => c,
            // The accept loop only ends when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
