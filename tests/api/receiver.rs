//! A webhook receiver for tests: records every delivery; can answer, fail or hang.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Hang,
}

#[derive(Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
    pub fn all(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }
}

pub async fn start(mode: Mode) -> Receiver {
    start_on(0, mode).await
}

pub async fn start_on(port: u16, mode: Mode) -> Receiver {
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let state = (got.clone(), mode);
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State((got, mode)): State<(Arc<Mutex<Vec<Delivery>>>, Mode)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    got.lock().unwrap().push(Delivery { headers, body });
                    if mode == Mode::Hang {
                        std::future::pending::<()>().await;
                    }
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { port, got }
}

/// A port with nothing listening on it (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
