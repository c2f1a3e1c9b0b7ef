//! The sidecar injector's HTTPS server: `POST /mutate-pods` answers AdmissionReviews with the
//! KubeVirt adapter's decision. Every replica serves it, leader or not. The certificate is
//! re-read when its file changes (cert-manager renews it in place), so no restart is needed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use provisioner_kubevirt::InjectorOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const WEBHOOK_PATH: &str = "/mutate-pods";
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";
/// The API server sends one pod per review; a launcher pod is a few kB.
const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The review handler without TLS, for tests and for the server below.
pub fn router(opts: Arc<InjectorOptions>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(mutate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(opts)
}

async fn mutate(State(opts): State<Arc<InjectorOptions>>, body: Bytes) -> Response {
    match provisioner_kubevirt::review(&body, &opts) {
        Ok(review) => {
            if review.pointer("/response/patch").is_some() {
                tracing::info!(
                    uid = review
                        .pointer("/response/uid")
                        .and_then(|u| u.as_str())
                        .unwrap_or(""),
                    "injected the token proxy"
                );
            }
            (
                [(header::CONTENT_TYPE, "application/json")],
                review.to_string(),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a malformed admission review");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

/// The certificate and key in `dir`, reloaded when `tls.crt` or `tls.key` changes.
pub struct CertReloader {
    dir: PathBuf,
    current: Mutex<Option<(SystemTime, TlsAcceptor)>>,
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CertReloader {
    /// Loads once now, so a missing or broken certificate fails at start-up.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let reloader = Self {
            dir: dir.to_owned(),
            current: Mutex::new(None),
        };
        reloader.acceptor()?;
        Ok(reloader)
    }

    fn stamp(&self) -> std::io::Result<SystemTime> {
        let cert = std::fs::metadata(self.dir.join(CERT_FILE))?.modified()?;
        let key = std::fs::metadata(self.dir.join(KEY_FILE))?.modified()?;
        Ok(cert.max(key))
    }

    /// The acceptor for the files as they are now; the last good one if they cannot be read.
    pub fn acceptor(&self) -> std::io::Result<TlsAcceptor> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = self.stamp();
        if let (Ok(stamp), Some((loaded, acceptor))) = (&stamp, current.as_ref())
            && stamp == loaded
        {
            return Ok(acceptor.clone());
        }
        match (stamp, load(&self.dir)) {
            (Ok(stamp), Ok(acceptor)) => {
                *current = Some((stamp, acceptor.clone()));
                Ok(acceptor)
            }
            (stamp, load) => {
                let e = load.err().or(stamp.err()).unwrap_or_else(|| {
                    std::io::Error::other("the webhook certificate cannot be read")
                });
                match current.as_ref() {
                    Some((_, acceptor)) => {
                        tracing::warn!(error = %e, "keeping the previous webhook certificate");
                        Ok(acceptor.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }
}

fn load(dir: &Path) -> std::io::Result<TlsAcceptor> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}: {e}", dir.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join(CERT_FILE))
        .map_err(|e| invalid(CERT_FILE, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(CERT_FILE, &e))?;
    if certs.is_empty() {
        return Err(invalid(CERT_FILE, &"no certificate in the file"));
    }
    let key =
        PrivateKeyDer::from_pem_file(dir.join(KEY_FILE)).map_err(|e| invalid(KEY_FILE, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTPS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    opts: Arc<InjectorOptions>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(opts);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = match certs.acceptor() {
            Ok(acceptor) => acceptor,
            Err(e) => {
                tracing::error!(error = %e, "no usable webhook certificate");
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}
