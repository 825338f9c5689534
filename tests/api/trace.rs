//! Admission on a simulated Claude Code session (`mock_upstream::trace`): under every mode and
//! cap, spend never exceeds the cap, nothing stays reserved, the records add up to the spend.
//! The full-size run with its figures is `cargo run --release --example admission_trace`.

use crate::helpers::*;
use agent_budget::money::Money;
use mock_upstream::trace::{self, Mode};

#[tokio::test]
async fn a_claude_code_session_never_pushes_spend_over_the_cap_in_any_mode() {
    let app = spawn_app().await;
    let url = app.url("");
    let session = trace::session(7, 10, 2, 3, 5);
    let mut n = 0;
    for cap in ["2", "5", "20"] {
        let limit = Money::parse(cap).unwrap();
        for mode in Mode::ALL {
            n += 1;
            let run =
                trace::measure(&app.client, &url, &format!("t{n}"), cap, mode, &session).await;
            let what = format!("${cap}, {}: {:?}", mode.label(), run.tally);
            let spent = Money::parse(&run.spent).unwrap();
            assert!(spent <= limit, "{what}: spent {spent}");
            assert_eq!(run.reserved, "0", "{what}");
            let sum = run
                .costs
                .iter()
                .fold(Money::ZERO, |a, c| a + Money::parse(c).unwrap());
            assert_eq!(sum, spent, "{what}: the records add up");
            let t = &run.tally;
            assert_eq!(
                t.forwarded + t.blocked + t.lost,
                session.requests() as u64,
                "{what}: every turn is accounted for"
            );
            match (cap, mode) {
                // Far below the session's ~$4: agents are stopped, and clamping lets some through.
                ("2", Mode::Clamp) => assert!(t.clamped >= 1 && t.blocked >= 1, "{what}"),
                ("2", _) => assert!(t.blocked >= 1 && t.clamped == 0, "{what}"),
                // Room for the whole session and its parallel worst cases.
                ("20", _) => assert_eq!((t.blocked, t.clamped), (0, 0), "{what}"),
                _ => {}
            }
        }
    }
}
