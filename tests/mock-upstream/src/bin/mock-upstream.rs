//! `mock-upstream [port]`: runs the mock on 127.0.0.1 and prints `listening <port>`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mock = mock_upstream::start(port).await?;
    println!("listening {}", mock.addr.port());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
