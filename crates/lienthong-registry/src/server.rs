//! Serving a registry: the signed configuration over HTTP, the management and admin APIs over
//! gRPC with TLS, and a timer that re-signs the configuration before it can expire.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use lienthong_pki::tls::TlsIdentity;
use lienthong_runtime::{Protocols, ServeOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::RegistryConfig;
use crate::error::RegistryError;
use crate::grpc;
use crate::home::RegistryHome;
use crate::registry::{Clock, Registry};
use crate::routes::{ANCHOR_PATH, CONF_MEDIA_TYPE, CONF_PATH, FEDERATION_CONF_PATH};

/// A registry serving in this process. Dropping it does not stop it: call [`Self::shutdown`].
#[derive(Debug)]
pub struct RunningRegistry {
    pub registry: Arc<Registry>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningRegistry {
    /// The URL nodes download the configuration from.
    pub fn conf_url(&self) -> String {
        format!("http://{}{CONF_PATH}", self.http_addr)
    }

    /// The URL of the management and admin API.
    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until a task ends (it only does on shutdown or a fatal error).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}

/// Binds the configured addresses, opens the registry in `config.data_dir` and serves it.
pub async fn serve(
    config: &RegistryConfig,
    passphrase: Option<&[u8]>,
    clock: Clock,
) -> Result<RunningRegistry, RegistryError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| RegistryError::Invalid(format!("cannot listen on {addr}: {e}")))
    };
    let http = bind(config.http.listen).await?;
    let grpc = bind(config.grpc.listen).await?;
    serve_on(config, http, grpc, passphrase, clock)
}

/// [`serve`] on listeners the caller bound instead of the configured addresses (a test kit
/// that keeps the registry's sockets across its restarts).
pub fn serve_on(
    config: &RegistryConfig,
    http: TcpListener,
    grpc: TcpListener,
    passphrase: Option<&[u8]>,
    clock: Clock,
) -> Result<RunningRegistry, RegistryError> {
    let settings = config.settings(local_addr(&http)?, local_addr(&grpc)?);
    let home = RegistryHome::new(&config.data_dir);
    let (registry, tls) = home.open(settings, passphrase, clock.clone())?;
    // The anchor reflects the keys and URLs in force now.
    home.write_anchor(&registry, clock())?;
    start(Arc::new(registry), tls, http, grpc, config)
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, RegistryError> {
    l.local_addr().map_err(RegistryError::internal)
}

/// Serves an open registry on already bound listeners, with `config`'s refresh interval and
/// connection caps.
pub fn start(
    registry: Arc<Registry>,
    tls: TlsIdentity,
    http: TcpListener,
    grpc: TcpListener,
    config: &RegistryConfig,
) -> Result<RunningRegistry, RegistryError> {
    let (stop, stopped) = watch::channel(false);
    let http_addr = local_addr(&http)?;
    let grpc_addr = local_addr(&grpc)?;
    let mut tasks = JoinSet::new();
    tasks.spawn(serve_http(http, registry.clone(), stopped.clone(), config.http.max_connections));
    let grpc_server =
        grpc::serve(grpc, registry.clone(), &tls, stopped.clone(), config.grpc.max_connections)?;
    tasks.spawn(grpc_server);
    tasks.spawn(refresh_loop(registry.clone(), config.refresh_interval(), stopped));
    tracing::info!(%http_addr, %grpc_addr, instance = %registry.settings().instance, "registry serving");
    Ok(RunningRegistry { registry, http_addr, grpc_addr, stop, tasks })
}

async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

async fn refresh_loop(registry: Arc<Registry>, every: Duration, stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let stop = until_stopped(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {
                let r = registry.clone();
                match tokio::task::spawn_blocking(move || r.publish()).await {
                    Ok(Ok(p)) => tracing::debug!(version = p.version, "configuration re-signed"),
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot re-sign the configuration"),
                    Err(e) => tracing::error!(error = %e, "re-signing task failed"),
                }
            }
        }
    }
}

/// Serves the configuration over plain HTTP/1.1 until `stopped`: many nodes poll it, so the
/// connection cap keeps a flood from exhausting descriptors.
async fn serve_http(
    listener: TcpListener,
    registry: Arc<Registry>,
    stopped: watch::Receiver<bool>,
    max_connections: usize,
) {
    let per_connection = move |_: &lienthong_runtime::Conn| {
        let registry = registry.clone();
        Some(service_fn(move |req| {
            let registry = registry.clone();
            async move { Ok::<_, Infallible>(handle_http(&req, &registry)) }
        }))
    };
    let options = ServeOptions {
        name: "registry-http",
        max_connections,
        protocols: Protocols::Http1,
        header_read_timeout: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    lienthong_runtime::serve(listener, None, per_connection, until_stopped(stopped), options).await;
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_str(content_type).expect("valid"));
    r
}

/// `GET /globalconf` (and `/globalconf/federation`, the partners' view) with `ETag` /
/// `If-None-Match`; `GET /anchor.json`. Nothing else.
fn handle_http(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method_not_allowed: use GET\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = req.method() == Method::HEAD;
    let body = |b: Vec<u8>| if head { Bytes::new() } else { Bytes::from(b) };
    let path = req.uri().path();
    match path {
        CONF_PATH | FEDERATION_CONF_PATH => {
            let published = registry.current();
            let (bytes, tag) = if path == CONF_PATH {
                (&published.bytes, &published.etag)
            } else {
                (&published.partner_bytes, &published.partner_etag)
            };
            if bytes.is_empty() {
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not_ready: no signing key yet\n",
                );
            }
            let etag = header::HeaderValue::from_str(tag).expect("etag is ASCII");
            let matches = req
                .headers()
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim() == tag.as_str() || t.trim() == "*");
            let mut r = if matches {
                respond(StatusCode::NOT_MODIFIED, CONF_MEDIA_TYPE, Bytes::new())
            } else {
                respond(StatusCode::OK, CONF_MEDIA_TYPE, body(bytes.clone()))
            };
            let h = r.headers_mut();
            h.insert(header::ETAG, etag);
            // Caches may keep it briefly but must revalidate: a change must reach nodes at the
            // next poll.
            h.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("public, max-age=5, must-revalidate"),
            );
            r
        }
        ANCHOR_PATH => {
            let anchor = registry.anchor(registry.now()).to_json();
            respond(StatusCode::OK, "application/json", body(anchor.into_bytes()))
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not_found\n"),
    }
}
