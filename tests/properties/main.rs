//! Property tests ("fuzzing" that runs in CI): every parser and validator that sees
//! untrusted input, fed generated input. No panic, no hang, bounded memory, and the
//! invariants each one promises. `PROPTEST_CASES=<n>` runs more cases (docs/RELIABILITY.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod input;
mod sse;
