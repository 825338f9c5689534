//! The async runtime the core runs on, in `serve` and in the desktop app.
//!
//! Few worker threads on purpose: the proxy's cost is thread wake-ups, not computation. A
//! request crosses several tasks (server connection, exchange, client connection); on one
//! worker they hand over without waking another core. Measured on 2 cores with the load
//! generator and mock upstream sharing them (docs/PERFORMANCE.md): one worker instead of two
//! cut the added latency at concurrency 1 by ~50 µs and raised saturation by ~15 %. Half the
//! cores are left to the agents the proxy serves.

/// Worker threads for a machine with `cores` cores: half of them, between 1 and 4.
pub fn workers(cores: usize) -> usize {
    (cores / 2).clamp(1, 4)
}

/// Builds the multi-threaded runtime with `workers(available cores)` workers.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers(cores))
        .thread_name("agent-budget-rt")
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn half_the_cores_between_one_and_four() {
        let got: Vec<usize> = [1, 2, 3, 4, 8, 16, 64].map(super::workers).to_vec();
        assert_eq!(got, [1, 1, 1, 2, 4, 4, 4]);
    }
}
