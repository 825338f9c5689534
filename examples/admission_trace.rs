//! The admission benchmark: a simulated Claude Code session (`mock_upstream::trace`) against
//! caps of $2, $5 and $20 under each admission mode, through the real server on a real socket
//! against the mock upstream. Prints the table of docs/admission.md.
//!
//!     cargo run --release --example admission_trace [-- <seeds>]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use agent_budget::money::Money;
use agent_budget::{RunningServer, Settings};
use mock_upstream::trace::{self, Mode};

#[tokio::main]
async fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mock = mock_upstream::start(0).await.unwrap();
    mock.state
        .record
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        port: Some(0),
        data_dir: Some(dir.path().to_path_buf()),
        upstream: Some(mock.url()),
        ..Settings::default()
    };
    let server = RunningServer::bind(settings.validate().unwrap())
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}/agent-budget", server.port());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let sessions: Vec<_> = (1..=seeds)
        .map(|seed| trace::session(seed, 30, 3, 4, 12))
        .collect();
    let requests = sessions[0].requests();
    println!(
        "{seeds} sessions of {requests} requests each: a main agent of 30 turns beside 3 waves of 4 parallel subagents of 12 turns; Opus 4.8, max_tokens 32,000, stream. Sums over the sessions.\n"
    );
    println!(
        "| cap | admission | forwarded | blocked | turns lost | clamped | of those, truncated | spend / cap (worst session) | over the cap |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|");
    let mut n = 0;
    for cap in ["2", "5", "20"] {
        let limit = Money::parse(cap).unwrap();
        for mode in Mode::ALL {
            let mut total = trace::Tally::default();
            let (mut worst, mut over) = (0.0_f64, false);
            for s in &sessions {
                n += 1;
                let run = trace::measure(&client, &url, &format!("trace-{n}"), cap, mode, s).await;
                let spent = Money::parse(&run.spent).unwrap();
                let sum = run
                    .costs
                    .iter()
                    .fold(Money::ZERO, |a, c| a + Money::parse(c).unwrap());
                assert_eq!(sum, spent, "the records add up to the spend");
                assert_eq!(run.reserved, "0", "nothing left reserved");
                over |= spent > limit;
                // Display only: the check above is exact.
                worst = worst.max(spent.picos() as f64 / limit.picos() as f64);
                let t = &run.tally;
                total.forwarded += t.forwarded;
                total.blocked += t.blocked;
                total.clamped += t.clamped;
                total.truncated += t.truncated;
                total.lost += t.lost;
            }
            println!(
                "| ${cap} | {} | {} | {} | {} | {} | {} | {:.1} % | {} |",
                mode.label(),
                total.forwarded,
                total.blocked,
                total.lost,
                total.clamped,
                total.truncated,
                worst * 100.0,
                if over { "**yes**" } else { "never" }
            );
        }
    }
    server.shutdown().await;
}
