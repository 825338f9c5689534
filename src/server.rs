//! The server: binds the listener, assembles the router, and shuts down gracefully
//! (stop accepting, let requests finish within the grace period, flush accounting).

use crate::api::{self, LocalPort};
use crate::config::Config;
use crate::error::HttpError;
use crate::guard::{self, Policy};
use crate::proxy;
use crate::service::webhook;
use crate::service::{Service, StartError};
use axum::http::{Method, StatusCode};
use axum::routing::{any, get, post};
use axum::{Extension, Router, middleware};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// All routes, with the guards in front. `fn app` so tests can call it without a socket.
pub fn app(service: Arc<Service>, port: u16) -> Router {
    let policy = Arc::new(Policy::new(&service.config, service.admin.clone()));
    let v1 = |prefix: &str| {
        Router::new()
            .route(
                &format!("{prefix}/v1/messages/count_tokens"),
                post(proxy::passthrough),
            )
            .route(&format!("{prefix}/v1/models"), get(proxy::passthrough))
            .route(
                &format!("{prefix}/v1/models/{{id}}"),
                get(proxy::passthrough),
            )
            .route(&format!("{prefix}/v1/metrics"), post(proxy::telemetry))
            .route(&format!("{prefix}/v1/logs"), post(proxy::telemetry))
            .route(&format!("{prefix}/v1/traces"), post(proxy::telemetry))
            .route(&format!("{prefix}/v1/{{*rest}}"), any(proxy::not_proxied))
            .route(
                &format!("{prefix}/api/hello"),
                get(api::hello).head(api::hello),
            )
    };
    Router::new()
        .route("/agent-budget/v1/messages", post(proxy::messages))
        .route(
            "/agent-budget/b/{budget}/v1/messages",
            post(proxy::messages_for),
        )
        .merge(v1("/agent-budget"))
        .merge(v1("/agent-budget/b/{budget}"))
        .merge(api::routes())
        .fallback(|req: axum::extract::Request| async move {
            crate::error::HttpError::not_found(format!(
                "agent-budget: no route for {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .layer(Extension(LocalPort(port)))
        .layer(axum::extract::DefaultBodyLimit::max(proxy::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(policy, guard::check))
        .with_state(service)
}

/// Deletes expired usage records at start and then every hour.
async fn sweep_hourly(service: Arc<Service>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match service.sweep_retention().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                days = service.config.retention_days,
                "old usage records deleted"
            ),
            Err(e) => tracing::error!(error = %e.message, "retention sweep failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(
        "{addr} is already in use (another agent-budget running?); stop it or choose another port with --port"
    )]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}; choose another address with --host/--port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server that is accepting connections.
pub struct RunningServer {
    addr: SocketAddr,
    service: Arc<Service>,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    writer: crate::store::WriterHandle,
    router: Router,
}

/// The REST API called inside the process, as its admin: the desktop app's dashboard goes
/// through the same routes, handlers and errors as a browser, without a socket.
#[derive(Clone)]
pub struct InProcessApi {
    router: Router,
    port: u16,
}

impl InProcessApi {
    /// Serves one request of `/agent-budget/api/*` (`path` starts with `/api/`): its JSON
    /// answer (null when it has none), or the API's error.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, HttpError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| HttpError::invalid(format!("'{method}' is not an HTTP method")))?;
        if !path.starts_with("/api/") {
            return Err(HttpError::not_found(format!(
                "agent-budget: {path} is not an API path"
            )));
        }
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", crate::config::BASE_PATH))
            .header("host", format!("localhost:{}", self.port));
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                serde_json::to_vec(&b).map_err(|e| HttpError::invalid(e.to_string()))?
            }
            None => Vec::new(),
        };
        let mut req = req
            .body(axum::body::Body::from(body))
            .map_err(|e| HttpError::invalid(format!("agent-budget: {e}")))?;
        req.extensions_mut().insert(guard::InProcess);
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| {
                let msg = format!("agent-budget: the answer could not be read: {e}");
                HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", msg)
            })?;
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        Err(HttpError::from_answer(status, &json))
    }
}

/// The largest answer read in-process (a page of 500 usage records is well below it).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

impl RunningServer {
    /// Opens the store, rebuilds the ledger and binds the listener.
    pub async fn bind(config: Config) -> Result<RunningServer, ServeError> {
        let addr = SocketAddr::new(config.host, config.port);
        crate::connections::raise_file_limit();
        let (service, writer) = Service::start(config).await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => ServeError::PortInUse { addr },
                _ => ServeError::Bind { addr, source },
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let router = app(service.clone(), addr.port());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let limits = crate::connections::Limits {
            max_connections: service.config.max_connections,
            header_timeout: service.config.idle_timeout,
        };
        let served = tokio::spawn(crate::connections::serve(
            listener,
            router.clone(),
            limits,
            stopped,
        ));
        let host = match addr.ip() {
            ip if ip.is_loopback() || ip.is_unspecified() => "localhost".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let _ = service.base_url.set(format!(
            "http://{host}:{}{}",
            addr.port(),
            crate::config::BASE_PATH
        ));
        // Background work: webhook delivery, the hourly retention sweep, saving keys' last uses
        // (and the team's leases and budgets). `stop` ends them.
        tokio::spawn(webhook::run(service.clone(), stop.clone()));
        tokio::spawn(sweep_hourly(service.clone(), stop.clone()));
        tokio::spawn(crate::service::keys::save_uses_until(
            service.clone(),
            stop.clone(),
        ));
        if let Some(team) = &service.team {
            tokio::spawn(team.clone().keep_leases(stop.clone()));
            tokio::spawn(crate::service::team::watch(service.clone(), stop.clone()));
        }
        tracing::info!(%addr, upstream = %service.config.upstream, data_dir = %service.config.data_dir.display(), "agent-budget listening");
        Ok(RunningServer {
            addr,
            service,
            stop,
            served,
            writer,
            router,
        })
    }

    /// The REST API inside the process, for the app that embeds the server.
    pub fn api(&self) -> InProcessApi {
        InProcessApi {
            router: self.router.clone(),
            port: self.port(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Stops accepting, lets in-flight requests finish within the grace period (streams still
    /// open then are ended and charged as aborted), and commits all accounting.
    pub async fn shutdown(self) {
        let grace = self.service.config.shutdown_grace;
        self.stop.cancel();
        let mut served = self.served;
        if tokio::time::timeout(grace, &mut served).await.is_err() {
            tracing::warn!("grace period over; ending the requests still open");
            self.service.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut served).await;
            served.abort();
        }
        self.service.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.service.tracker.wait()).await;
        self.service.save_key_uses().await;
        self.service.save_subscriptions().await;
        self.service.flush_spans().await;
        if let Err(e) = self.service.store.writer.run(|_| Ok(())).await {
            tracing::error!(error = %e, "could not flush accounting");
        }
        drop(self.service);
        // The writer thread exits when its last sender is gone; don't wait on stragglers.
        let writer = self.writer;
        drop(tokio::task::spawn_blocking(move || writer.join()));
        tracing::info!("agent-budget stopped");
    }
}
