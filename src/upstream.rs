//! The upstream client: hyper's pooled client over rustls. It replaces reqwest on the hot
//! path, whose per-request URL parsing, redirect policy and layering were ~8 % of the runtime
//! thread's CPU at saturation (docs/PERFORMANCE.md). Redirects are relayed, never followed:
//! following one would send the client's API key to a host nobody configured.

use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyDataStream, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Where requests go, and the pooled connections to it.
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing slash, prefixed to every request's path.
    base_path: String,
}

impl Upstream {
    /// A client for the upstream at `url` (`http` or `https`; checked by the config).
    pub fn new(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("the upstream URL '{url}' is invalid: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!(
                "the upstream URL '{url}' needs a scheme and a host, like https://api.anthropic.com"
            ));
        };
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let tls = rustls::ClientConfig::builder_with_provider(provider.into())
            .with_safe_default_protocol_versions()
            .and_then(rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier)
            .map_err(|e| format!("cannot set up TLS for the upstream: {e}"))?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Upstream {
            client,
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// Sends a request to `path_and_query` under the upstream's base path.
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, SendError> {
        let pq = PathAndQuery::try_from(format!("{}{path_and_query}", self.base_path))
            .map_err(|e| SendError::Path(e.to_string()))?;
        *req.uri_mut() = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| SendError::Path(e.to_string()))?;
        self.client.request(req).await.map_err(SendError::Transport)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the request path is not valid upstream: {0}")]
    Path(String),
    #[error(transparent)]
    Transport(#[from] hyper_util::client::legacy::Error),
}

/// A response body's bytes, ending with a `TimedOut` error if nothing arrives for `idle`.
pub struct Chunks {
    body: BodyDataStream<Incoming>,
    idle: Duration,
    /// When the last chunk arrived; the timer is moved on from it only when it fires, so a
    /// busy stream does not touch the timer wheel for every chunk.
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Chunks {
    pub fn new(body: Incoming, idle: Duration) -> Chunks {
        let last = Instant::now();
        Chunks {
            body: BodyDataStream::new(body),
            idle,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
        }
    }
}

impl Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.last = Instant::now();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(std::io::Error::other(e))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        loop {
            match this.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let due = this.last + this.idle;
                    if Instant::now() >= due {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no data from the upstream for {} s", this.idle.as_secs()),
                        ))));
                    }
                    this.timer.as_mut().reset(due);
                }
            }
        }
    }
}
