//! `mock-upstream [port] [--no-record]`: runs the mock on 127.0.0.1 and prints `listening <port>`.
//! `--no-record` keeps no copy of requests (benchmarks).

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = args.iter().find_map(|a| a.parse().ok()).unwrap_or(0);
    let mock = mock_upstream::start(port).await?;
    if args.iter().any(|a| a == "--no-record") {
        mock.state
            .record
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    println!("listening {}", mock.addr.port());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
