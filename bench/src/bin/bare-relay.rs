//! The simplest HTTP relay hyper allows: every request is sent on to the upstream and its
//! response relayed, with no routing, parsing, admission or accounting. The benchmark runs it
//! as a reference row: what any proxy pays on this machine for the extra hop.
//!
//! Usage: `bare-relay <upstream port>`; prints `listening <port>`.
#![expect(clippy::print_stdout, reason = "reports its port")]

use hyper::body::Incoming;
use hyper::{Request, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let upstream: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("usage: bare-relay <upstream port>"))?;
    // One worker, as `agent-budget serve` uses on two cores.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(serve(upstream))
}

async fn serve(upstream: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?.port());
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    *req.uri_mut() = format!("http://127.0.0.1:{upstream}{path}").parse::<Uri>()?;
                    anyhow::Ok(client.request(req).await?)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
