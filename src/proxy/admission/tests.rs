use super::*;
use crate::pricing::PriceBook;

fn dollars(s: &str) -> Money {
    Money::parse(s).unwrap()
}

#[test]
fn a_clamp_takes_the_largest_max_tokens_that_fits_and_never_goes_below_the_floor() {
    let book = PriceBook::seeded(vec![]).unwrap();
    let (opus, _) = book.lookup("claude-opus-4-8");
    // Output at $25/MTok: each token is 25 µ$; 10,000 input tokens at $5 cost $0.05.
    let ask = Ask {
        input_tokens: 10_000,
        max_tokens: 32_000,
        ..Ask::default()
    };
    let room = |d: &str, t: Option<u64>| Room {
        dollars: Some(dollars(d)),
        tokens: t,
    };
    let cases: [(&str, Room, u64, Option<u64>); 8] = [
        ("all of it fits", room("10", None), 1024, Some(32_000)),
        (
            "$0.30 leaves $0.25 of output",
            room("0.3", None),
            1024,
            Some(10_000),
        ),
        (
            "just under a token more",
            room("0.300024", None),
            1024,
            Some(10_000),
        ),
        ("the floor exactly", room("0.0756", None), 1024, Some(1024)),
        ("below the floor", room("0.0755", None), 1024, None),
        (
            "a thinking budget raises the floor",
            room("0.3", None),
            10_001,
            None,
        ),
        (
            "the token cap binds first",
            room("10", Some(15_000)),
            1024,
            Some(5_000),
        ),
        (
            "no room for the prompt",
            room("10", Some(9_000)),
            1024,
            None,
        ),
    ];
    for (what, r, floor, want) in cases {
        let got = largest_fit(&opus, &ask, floor, r);
        assert_eq!(got.map(|g| g.2), want, "{what}");
        if let Some((cost, tokens, n)) = got {
            assert!(r.dollars.is_none_or(|d| cost <= d), "{what}: fits");
            assert_eq!(
                cost,
                worst_case(
                    &opus,
                    &Ask {
                        max_tokens: n,
                        ..ask
                    }
                ),
                "{what}"
            );
            assert_eq!(tokens, 10_000 + n, "{what}");
            let more = worst_case(
                &opus,
                &Ask {
                    max_tokens: n + 1,
                    ..ask
                },
            );
            assert!(
                n == ask.max_tokens
                    || r.dollars.is_some_and(|d| more > d)
                    || r.tokens.is_some_and(|t| tokens + 1 > t),
                "{what}: largest"
            );
        }
    }
}
