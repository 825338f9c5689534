use super::*;
use crate::budget::period::Period;

fn budget(cap: &str, max_tokens: Option<u64>) -> Budget {
    Budget {
        id: 1,
        name: "a".into(),
        max_dollars: Some(Money::parse(cap).unwrap()),
        max_tokens,
        period: Period::Daily,
        webhook_url: None,
        thresholds: vec![50, 80, 100],
        admission: Default::default(),
        max_dollars_per_hour: None,
        max_request_dollars: None,
        models: None,
        loop_guard: None,
        parent: None,
        max_session_dollars: None,
        max_subscription_utilization: None,
        created_at: Utc::now(),
    }
}
fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}

fn ledger(b: Budget) -> (Ledger, Arc<Slot>) {
    let l = Ledger::new(Zone::parse("UTC").unwrap());
    l.insert(b, History::default(), Utc::now());
    let s = l.find("a").unwrap();
    (l, s)
}

#[test]
fn admits_while_spent_plus_reserved_fits_and_counts_refusals() {
    let (_l, s) = ledger(budget("1", None));
    let now = Utc::now();
    let r1 = s.reserve(m("0.6"), 10, now).unwrap();
    assert_eq!(r1.remaining(), Some(m("1")));
    let refused = s.reserve(m("0.5"), 10, now).unwrap_err();
    assert_eq!(
        (refused.status.reserved, refused.limit == Limit::Tokens),
        (m("0.6"), false)
    );
    assert!(
        s.count_blocked(Money::ZERO, now).is_some(),
        "the first block in a period raises an alert"
    );
    assert!(s.count_blocked(Money::ZERO, now).is_none());
    let r2 = s.reserve(m("0.4"), 10, now).unwrap();
    assert_eq!(r2.remaining(), Some(m("0.4")));
    r1.settle(m("0.1"), 5, now);
    drop(r2); // released, not charged
    let st = s.status(now);
    assert_eq!(
        (
            st.period.dollars,
            st.reserved,
            st.period.requests,
            st.period.blocked
        ),
        (m("0.1"), Money::ZERO, 1, 2)
    );
    assert_eq!(st.remaining(), Some(m("0.9")));
}

#[test]
fn a_dropped_reservation_neither_raises_nor_swallows_an_alert() {
    let (l, s) = ledger(budget("1", None));
    let now = Utc::now();
    s.reserve(m("0.6"), 1, now)
        .unwrap()
        .settle(m("0.6"), 1, now);
    // Spend is past a threshold the budget gains later; no settlement has reached it yet.
    let mut b = s.budget();
    b.thresholds = vec![50, 55, 80, 100];
    l.update(b, now);
    drop(s.reserve(m("0.1"), 1, now).unwrap());
    let next = s
        .reserve(m("0.1"), 1, now)
        .unwrap()
        .settle(m("0.1"), 1, now);
    assert_eq!(
        next[0].reached,
        vec![55],
        "the drop did not mark 55 as raised"
    );
}

#[test]
fn alerts_of_past_periods_are_forgotten_when_the_period_rolls() {
    let (_l, s) = ledger(budget("1", None));
    let day1 = Utc::now();
    s.reserve(m("0.9"), 1, day1)
        .unwrap()
        .settle(m("0.9"), 1, day1);
    assert_eq!(s.lock().alerted.len(), 2, "50 % and 80 %");
    let day2 = day1 + chrono::Duration::days(1);
    s.status(day2);
    assert!(
        s.lock().alerted.is_empty(),
        "yesterday's alerts are not kept"
    );
    let next = s
        .reserve(m("0.5"), 1, day2)
        .unwrap()
        .settle(m("0.5"), 1, day2);
    assert_eq!(next[0].reached, vec![50], "a new period alerts afresh");
}

#[test]
fn token_caps_refuse_independently_of_dollars() {
    let (_l, s) = ledger(budget("100", Some(1000)));
    let now = Utc::now();
    let r = s.reserve(m("0.01"), 900, now).unwrap();
    assert_eq!(
        s.reserve(m("0.01"), 101, now).unwrap_err().limit,
        Limit::Tokens
    );
    r.settle(m("0.01"), 1000, now);
    assert!(s.reserve(Money::ZERO, 1, now).is_err());
}

#[test]
fn concurrent_reservations_never_exceed_the_cap() {
    let (_l, s) = ledger(budget("1", None));
    let now = Utc::now();
    let admitted: Vec<Reservation> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..64)
            .map(|_| sc.spawn(|| s.reserve(m("0.1"), 1, now).ok()))
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(admitted.len(), 10);
    for r in admitted {
        r.settle(m("0.1"), 1, now);
    }
    assert_eq!(s.status(now).period.dollars, m("1"));
}

#[test]
fn concurrent_settlements_reach_each_threshold_exactly_once() {
    let (_l, s) = ledger(budget("10", None));
    let now = Utc::now();
    let reservations: Vec<Reservation> = (0..200)
        .map(|_| s.reserve(m("0.01"), 1, now).unwrap())
        .collect();
    let reached: Vec<u8> = std::thread::scope(|sc| {
        let hs: Vec<_> = reservations
            .into_iter()
            .map(|r| sc.spawn(move || r.settle(m("0.05"), 1, now).remove(0).reached))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = reached.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![50, 80, 100], "{reached:?}");
}

#[test]
fn a_new_period_starts_from_the_daily_history() {
    let l = Ledger::new(Zone::parse("UTC").unwrap());
    let now = Utc::now();
    let today = Zone::parse("UTC").unwrap().day(now);
    let mut days = BTreeMap::new();
    days.insert(
        today.pred_opt().unwrap(),
        Totals {
            dollars: m("5"),
            tokens: 1,
            requests: 1,
            blocked: 0,
        },
    );
    days.insert(
        today,
        Totals {
            dollars: m("2"),
            tokens: 1,
            requests: 1,
            blocked: 0,
        },
    );
    let mut b = budget("10", None);
    l.insert(
        b.clone(),
        History {
            days,
            ..History::default()
        },
        now,
    );
    assert_eq!(l.find("1").unwrap().status(now).period.dollars, m("2"));
    b.period = Period::Total;
    b.created_at = now - chrono::Duration::days(3);
    l.update(b, now);
    assert_eq!(l.find("a").unwrap().status(now).period.dollars, m("7"));
    l.remove(1);
    assert!(l.find("a").is_none() && l.find("1").is_none());
}

/// `total` ($1) above `a` ($0.60) and `b` (no cap of its own), in one ledger.
fn family() -> (Ledger, Arc<Slot>, Arc<Slot>, Arc<Slot>) {
    let l = Ledger::new(Zone::parse("UTC").unwrap());
    let now = Utc::now();
    let mut total = budget("1", None);
    total.name = "total".into();
    let mut a = budget("0.6", None);
    (a.id, a.name, a.parent) = (2, "a".into(), Some(1));
    let mut b = budget("1", None);
    (b.id, b.name, b.parent, b.max_dollars) = (3, "b".into(), Some(1), None);
    for x in [total, a, b] {
        l.insert(x, History::default(), now);
    }
    let (t, a, b) = (
        l.find("total").unwrap(),
        l.find("a").unwrap(),
        l.find("b").unwrap(),
    );
    (l, t, a, b)
}

#[test]
fn a_hold_moves_to_the_chain_its_budget_has_at_settlement() {
    let (l, t, a, b) = family();
    let now = Utc::now();
    let mut r = reserve(&l.chain(&b), m("0.3"), 10, now, None).unwrap();
    assert!(l.moved(r.slots(), None).is_none(), "nothing moved yet");
    // `b` moved below `a` while the request was in flight.
    let mut moved = b.budget();
    moved.parent = Some(2);
    l.update(moved, now);
    r.rechain(l.moved(r.slots(), None).unwrap());
    assert_eq!(
        (t.status(now).reserved, a.status(now).reserved),
        (m("0.3"), m("0.3")),
        "held where it is now: b, a, total"
    );
    r.settle(m("0.2"), 10, now);
    let spent = |s: &Arc<Slot>| (s.status(now).period.dollars, s.status(now).reserved);
    assert_eq!(spent(&a), (m("0.2"), Money::ZERO));
    assert_eq!(spent(&t), (m("0.2"), Money::ZERO));
    assert_eq!(spent(&b), (m("0.2"), Money::ZERO));
    // A budget moved from below a parent frees that parent's hold.
    let mut r = reserve(&l.chain(&b), m("0.1"), 10, now, None).unwrap();
    let mut moved = b.budget();
    moved.parent = Some(1);
    l.update(moved, now);
    r.rechain(l.moved(r.slots(), None).unwrap());
    assert_eq!(a.status(now).reserved, Money::ZERO);
    drop(r);
    assert_eq!(
        t.status(now).reserved,
        Money::ZERO,
        "released once, where held"
    );
}

#[test]
fn a_chain_is_the_budget_then_its_ancestors() {
    let (l, t, a, _) = family();
    let names: Vec<String> = l.chain(&a).iter().map(|s| s.name()).collect();
    assert_eq!(names, ["a", "total"]);
    assert_eq!(l.chain(&t).len(), 1);
}

#[test]
fn a_request_fits_every_scope_and_is_held_and_settled_on_all() {
    let (l, t, a, b) = family();
    let now = Utc::now();
    let r = reserve(&l.chain(&b), m("0.7"), 10, now, None).unwrap();
    assert_eq!(r.remaining(), Some(m("1")), "the least room on the chain");
    assert_eq!(t.status(now).reserved, m("0.7"));
    // `a` has its $0.60, but `total` has $0.30 left.
    let refused = reserve(&l.chain(&a), m("0.4"), 10, now, None).unwrap_err();
    let named = (
        refused.status.budget.name.as_str(),
        refused.below.as_deref(),
    );
    assert_eq!(named, ("total", Some("'a'")));
    let own = reserve(&l.chain(&a), m("0.65"), 10, now, None).unwrap_err();
    assert_eq!(
        (own.status.budget.name.as_str(), own.below),
        ("a", None),
        "the nearest scope first"
    );
    let scopes = r.settle(m("0.5"), 10, now);
    assert_eq!(scopes.len(), 2);
    assert_eq!(scopes[1].reached, vec![50], "total crossed 50 %");
    assert_eq!(
        (t.status(now).period.dollars, t.status(now).reserved),
        (m("0.5"), Money::ZERO)
    );
    assert_eq!(b.status(now).period.dollars, m("0.5"));
    let clamped = reserve_within(&l.chain(&a), (m("2"), None), now, |room| {
        assert_eq!(
            room.dollars,
            Some(m("0.5")),
            "total's $0.50 is less than a's $0.60"
        );
        Some((m("0.5"), 1, ()))
    });
    assert!(clamped.is_some());
}

#[test]
fn concurrent_siblings_never_push_their_parent_over_its_cap() {
    let (l, t, a, b) = family();
    let now = Utc::now();
    let (ca, cb) = (l.chain(&a), l.chain(&b));
    std::thread::scope(|sc| {
        for i in 0..8 {
            let chain = if i % 2 == 0 { &ca } else { &cb };
            sc.spawn(move || {
                for _ in 0..200 {
                    if let Ok(r) = reserve(chain, m("0.01"), 1, now, None) {
                        r.settle(m("0.01"), 1, now);
                    }
                }
            });
        }
    });
    let spent = t.status(now).period.dollars;
    assert_eq!(spent, m("1"), "filled exactly, never over");
    assert_eq!(
        a.status(now).period.dollars + b.status(now).period.dollars,
        spent
    );
}

#[test]
fn spend_rolls_up_into_every_ancestor() {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
    let spent = |d: &str| {
        let mut h = History::default();
        h.days.insert(
            day,
            Totals {
                dollars: m(d),
                tokens: 0,
                requests: 1,
                blocked: 0,
            },
        );
        h
    };
    let mut h: std::collections::HashMap<i64, History> =
        [(1, spent("1")), (2, spent("2")), (3, spent("4"))].into();
    let parents = [(2, 1), (3, 2)].into();
    chain::roll_up(&mut h, &parents);
    let total = |id: i64| h[&id].days[&day].dollars;
    assert_eq!((total(1), total(2), total(3)), (m("7"), m("6"), m("4")));
}

#[test]
fn each_session_is_held_to_the_budgets_session_cap_in_its_period() {
    let mut b = budget("10", None);
    b.max_session_dollars = Some(m("1"));
    let (l, s) = ledger(b);
    let now = Utc::now();
    let chain = l.chain(&s);
    let r = reserve(&chain, m("0.6"), 1, now, Some("s1")).unwrap();
    let refused = reserve(&chain, m("0.5"), 1, now, Some("s1")).unwrap_err();
    assert_eq!(refused.limit, Limit::Session);
    assert_eq!(
        refused
            .session
            .as_ref()
            .map(|(n, t)| (n.as_str(), t.reserved)),
        Some(("s1", m("0.6")))
    );
    assert!(
        reserve(&chain, m("0.5"), 1, now, Some("s2")).is_ok(),
        "another session has its own"
    );
    assert!(
        reserve(&chain, m("0.5"), 1, now, None).is_ok(),
        "a request of no session is not held to it"
    );
    r.settle(m("0.3"), 1, now);
    assert_eq!(s.session_spent("s1"), Some(m("0.3")));
    let fits = reserve(&chain, m("0.7"), 1, now, Some("s1"));
    assert!(
        fits.is_ok(),
        "what settled below its worst case is free again"
    );
    let clamped = reserve_within(&chain, (m("2"), Some("s1")), now, |room| {
        assert_eq!(
            room.dollars,
            Some(Money::ZERO),
            "s1 has $0.30 spent and $0.70 held"
        );
        None::<(Money, u64, ())>
    });
    assert!(clamped.is_none());
    drop(fits);
    // A new period starts every session from nothing.
    let tomorrow = now + chrono::Duration::days(1);
    assert!(reserve(&chain, m("0.9"), 1, tomorrow, Some("s1")).is_ok());
}

/// A chain whose scopes have different periods, in a zone with a DST change: each scope
/// resets on its own local boundary, and the spend stays with the scopes whose period holds it.
#[test]
fn each_scope_of_a_chain_resets_on_its_own_periods_boundary_across_dst() {
    let zone = Zone::parse("Europe/Berlin").unwrap();
    let l = Ledger::new(zone);
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
    };
    let created = at("2026-10-01T00:00:00+02:00");
    for (id, name, period, parent) in [
        (1, "top", Period::Monthly, None),
        (2, "mid", Period::Weekly, Some(1)),
        (3, "leaf", Period::Daily, Some(2)),
    ] {
        let mut b = budget("100", None);
        (b.id, b.name, b.period, b.parent, b.created_at) =
            (id, name.into(), period, parent, created);
        l.insert(b, History::default(), created);
    }
    let leaf = l.find("leaf").unwrap();
    let chain = l.chain(&leaf);
    // Saturday 24 October, 23:30 local (CEST); the clocks go back at 03:00 on Sunday.
    let saturday = at("2026-10-24T23:30:00+02:00");
    reserve(&chain, m("1"), 1, saturday, None)
        .unwrap()
        .settle(m("1"), 1, saturday);
    let spent = |now| ["leaf", "mid", "top"].map(|n| l.find(n).unwrap().status(now).period.dollars);
    let (zero, one) = (Money::ZERO, m("1"));
    let cases = [
        ("2026-10-24T23:59:00+02:00", [one, one, one]),
        // Sunday after the change (CET): a new day, the same week and month.
        ("2026-10-25T12:00:00+01:00", [zero, one, one]),
        // Monday: a new week.
        ("2026-10-26T00:30:00+01:00", [zero, zero, one]),
        // Sunday 1 November: a new month.
        ("2026-11-01T00:00:00+01:00", [zero, zero, zero]),
    ];
    for (now, want) in cases {
        assert_eq!(spent(at(now)), want, "at {now}");
    }
}
