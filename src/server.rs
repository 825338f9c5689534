//! The server: binds the listener, assembles the router, and shuts down gracefully
//! (stop accepting, let requests finish within the grace period, flush accounting).

use crate::api::{self, LocalPort};
use crate::config::Config;
use crate::guard::{self, Policy};
use crate::proxy;
use crate::service::webhook;
use crate::service::{Service, StartError};
use axum::routing::{any, delete, get, post};
use axum::{Extension, Router, middleware};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
        .route("/api/hello", get(api::hello).head(api::hello))
        .route("/agent-budget/health", get(api::health))
        .route(
            "/agent-budget/api/budgets",
            get(api::list_budgets).post(api::create_budget),
        )
        .route(
            "/agent-budget/api/budgets/{id}",
            get(api::get_budget)
                .patch(api::patch_budget)
                .delete(api::delete_budget),
        )
        .route("/agent-budget/api/budgets/{id}/usage", get(api::usage))
        .route(
            "/agent-budget/api/budgets/{id}/sessions",
            get(api::sessions),
        )
        .route(
            "/agent-budget/api/budgets/{id}/keys",
            get(api::list_keys).post(api::create_key),
        )
        .route(
            "/agent-budget/api/budgets/{id}/keys/{key_id}",
            delete(api::revoke_key),
        )
        .route("/agent-budget/api/budgets/{id}/badge", get(api::badge))
        .route(
            "/agent-budget/api/budgets/{id}/test-webhook",
            post(api::test_webhook),
        )
        .route("/agent-budget/api/alerts", get(api::alerts))
        .route("/agent-budget/api/events", get(api::live::events))
        .route(
            "/agent-budget/api/budgets/{id}/usage.csv",
            get(api::live::usage_csv),
        )
        .route(
            "/agent-budget/api/pricing",
            get(api::get_pricing).put(api::put_pricing),
        )
        .route("/agent-budget/api/stats", get(api::stats))
        .route(
            "/agent-budget/sign-in",
            get(api::session::redeem).post(api::session::with_token),
        )
        .route(
            "/agent-budget/api/sign-in-links",
            post(api::session::create_link),
        )
        .route("/agent-budget/api/sign-out", post(api::session::sign_out))
        .route("/agent-budget/api/spend", get(api::spend))
        .route("/agent-budget/api/settings", get(api::settings))
        .route(
            "/agent-budget/api/settings/upstream-key",
            get(api::upstream_key)
                .put(api::set_upstream_key)
                .delete(api::delete_upstream_key),
        )
        .route("/agent-budget", get(api::assets::root))
        .route("/agent-budget/", get(api::assets::index))
        .route("/agent-budget/{*path}", get(api::assets::file))
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
}

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
        let served = tokio::spawn(crate::connections::serve(listener, router, limits, stopped));
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
        })
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
