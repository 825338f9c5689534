//! Team budgets on a real PostgreSQL server: several proxies, one cap.

use crate::durability::{Proc, fixture, serve, url};
use crate::helpers::*;
use agent_budget::money::Money;
use agent_budget::team::{Ask, Charge, Scope, Team};
use mock_upstream::postgres::Postgres;
use serde_json::{Value, json};
use std::time::Duration;

fn dollars(s: &str) -> Money {
    Money::parse(s).unwrap()
}

/// A budget's own name as its subtree (it has no budgets below it).
fn alone(name: &str) -> Vec<String> {
    vec![name.to_string()]
}

static TEAM: std::sync::LazyLock<[Scope; 1]> = std::sync::LazyLock::new(|| {
    [Scope {
        name: "team".into(),
        period: 0,
        max_dollars: Some(dollars("10")),
        max_tokens: None,
    }]
});

fn ask(amount: &str) -> Ask<'static> {
    Ask {
        scopes: &*TEAM,
        amount: dollars(amount),
        tokens: 100,
        subtree: &alone,
        key: None,
    }
}

fn charge(cost: &str) -> Charge {
    Charge {
        cost: dollars(cost),
        tokens: 50,
        created_at: 1,
        model: "claude-haiku-4-5".into(),
        upstream_request_id: None,
        day: "1970-01-01".into(),
        scopes: vec![("team".into(), 0)],
    }
}

#[tokio::test]
async fn three_ledgers_never_take_more_headroom_than_the_cap_has() {
    let pg = Postgres::start();
    let mut teams = Vec::new();
    for _ in 0..3 {
        teams.push(
            Team::connect(&pg.url("postgres"), Duration::from_secs(30))
                .await
                .unwrap(),
        );
    }
    let race = |teams: &Vec<std::sync::Arc<Team>>| {
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let t = teams[i % 3].clone();
                tokio::spawn(async move { t.reserve(ask("1")).await.unwrap().ok() })
            })
            .collect();
        async move {
            let mut held = Vec::new();
            for t in tasks {
                held.extend(t.await.unwrap());
            }
            held
        }
    };
    let held = race(&teams).await;
    assert_eq!(held.len(), 10, "a $10 cap holds ten $1 worst cases");
    let totals = teams[0].totals("team", 0).await.unwrap();
    assert_eq!(
        (totals.reserved, totals.spent),
        (dollars("10"), Money::ZERO)
    );
    for h in held {
        teams[1].settle(h, &charge("0.5")).await.unwrap();
    }
    let totals = teams[2].totals("team", 0).await.unwrap();
    assert_eq!(
        (totals.reserved, totals.spent, totals.requests),
        (Money::ZERO, dollars("5"), 10)
    );
    let more = race(&teams).await;
    assert_eq!(
        more.len(),
        5,
        "what was settled below its worst case is free again"
    );
}

#[tokio::test]
async fn a_dead_proxys_reservations_expire_with_their_lease() {
    let pg = Postgres::start();
    let lease = Duration::from_millis(600);
    let dying = Team::connect(&pg.url("postgres"), lease).await.unwrap();
    let living = Team::connect(&pg.url("postgres"), lease).await.unwrap();
    let taken = dying.reserve(ask("10")).await.unwrap().unwrap();
    assert!(
        living.reserve(ask("1")).await.unwrap().is_err(),
        "the cap is held"
    );
    // The dying proxy stops renewing (its hold is forgotten, as when the process dies).
    std::mem::forget(taken);
    let kept = living.reserve(ask("0")).await.unwrap().unwrap();
    let started = std::time::Instant::now();
    loop {
        living.beat().await.unwrap();
        if let Ok(h) = living.reserve(ask("1")).await.unwrap() {
            std::mem::forget(h); // kept (renewed) to the end
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= lease / 2,
        "freed only once the lease ran out"
    );
    // The living proxy's own reservation is renewed while it runs, never swept.
    let stop = tokio_util::sync::CancellationToken::new();
    let upkeep = tokio::spawn(living.clone().keep_leases(stop.clone()));
    tokio::time::sleep(lease * 3).await;
    // A sweep by another proxy now frees every expired reservation: renewed ones are not.
    let sweeper = Team::connect(&pg.url("postgres"), lease).await.unwrap();
    sweeper.beat().await.unwrap();
    let expect_held = living.totals("team", 0).await.unwrap();
    assert_eq!(
        expect_held.reserved_tokens, 200,
        "the renewed hold and the new one"
    );
    stop.cancel();
    upkeep.await.unwrap();
    living.settle(kept, &charge("0")).await.unwrap();
    assert_eq!(living.totals("team", 0).await.unwrap().requests, 1);
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    r.status().as_u16()
}

/// Three proxies on one database, the same budget on each.
async fn three_proxies(pg: &Postgres, cap: Option<&str>, lease_secs: u64) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for _ in 0..3 {
        let url = pg.url("postgres");
        let app = spawn_with(|s| {
            s.database = Some(url);
            s.lease_secs = Some(lease_secs);
        })
        .await;
        apps.push(app);
    }
    if let Some(cap) = cap {
        // Made on one proxy, followed by the others.
        apps[0]
            .create_budget(json!({"name": "team", "max_dollars": cap}))
            .await;
        for app in &apps[1..] {
            app.eventually("the others to follow the new budget", || async {
                status_of(app, "/api/budgets/team").await == 200
            })
            .await;
        }
    }
    apps
}

/// A request whose reported usage costs exactly its worst case (Haiku 4.5: $1 in, $5 out per
/// MTok; no cache, so the worst case is the estimated prompt at $1 plus `max_tokens` at $5).
async fn exact_script(app: &TestApp, b: &Value) -> (Money, Value) {
    app.send(None, b, None).await;
    let probe = &app.usage("default").await[0];
    let wc = Money::parse(probe["worst_case_dollars"].as_str().unwrap()).unwrap();
    let out = b["max_tokens"].as_u64().unwrap();
    let input = (wc.picos() - out as i64 * 5_000_000) / 1_000_000;
    assert_eq!(wc.picos(), input * 1_000_000 + out as i64 * 5_000_000);
    (
        wc,
        json!({"usage": {"input_tokens": input, "output_tokens": out}}),
    )
}

#[tokio::test]
async fn three_proxies_forward_exactly_what_fits_one_cap() {
    let pg = Postgres::start();
    let b = body("claude-haiku-4-5", 2000);
    let probe = three_proxies(&pg, None, 30).await;
    let (wc, script) = exact_script(&probe[0], &b).await;
    // Room for 10 worst cases and a half: each proxy alone would forward 10.
    let cap = wc.scale(21, 2);
    let apps = three_proxies(&pg, Some(&cap.to_string()), 30).await;
    let sends = (0..300).map(|i| {
        let (app, b, script) = (&apps[i % 3], &b, script.clone());
        async move {
            app.send(Some("team"), b, Some(script))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let forwarded = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(forwarded, 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 290);
    // Every forwarded request is charged in the team's totals and on its own proxy.
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    let shared = team.totals("team", 0).await.unwrap();
    assert_eq!(shared.spent, wc.scale(10, 1));
    assert!(shared.spent <= cap);
    assert_eq!((shared.reserved, shared.requests), (Money::ZERO, 10));
    let mut local = 0;
    for app in &apps {
        local += app
            .usage("team")
            .await
            .iter()
            .filter(|r| r["status"] == "ok")
            .count();
    }
    assert_eq!(local, 10);
    // Every proxy's dashboard shows the team's figures (polled once a second).
    let spent = wc.scale(10, 1).to_string();
    for app in &apps {
        app.eventually("the team's totals on every dashboard", || async {
            let v = app.budget("team").await;
            v["spent_dollars"] == spent.as_str() && v["requests"] == 10
        })
        .await;
    }
    // A refusal says what the budget stands at across all proxies.
    let r = apps[1].send(Some("team"), &b, Some(script)).await;
    assert_eq!(r.status(), 429);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(&format!("spent {}", wc.scale(10, 1).display_cents())),
        "{text}"
    );
}

/// `serve` with a data directory and mock of its own, on the team database.
async fn team_proxy(
    pg: &Postgres,
    lease_secs: u64,
) -> (Proc, mock_upstream::Mock, tempfile::TempDir) {
    let (mock, dir, mut args) = fixture().await;
    args.extend([
        "--database".to_string(),
        pg.url("postgres"),
        "--lease-secs".to_string(),
        lease_secs.to_string(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (serve(&refs), mock, dir)
}

async fn post(c: &reqwest::Client, p: &Proc, b: &Value, script: &Value) -> reqwest::Response {
    c.post(url(p.port, "/v1/messages"))
        .header("x-api-key", "sk-test")
        .header("x-budget-id", "team")
        .header("x-mock", script.to_string())
        .json(b)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_proxy_killed_mid_stream_frees_its_reservation_within_the_lease() {
    let pg = Postgres::start();
    let lease = 3;
    let (mut a, _ma, _da) = team_proxy(&pg, lease).await;
    let (b, _mb, _db) = team_proxy(&pg, lease).await;
    let c = reqwest::Client::new();
    let req = body("claude-haiku-4-5", 2000);
    let r = c
        .post(url(a.port, "/api/budgets"))
        .json(&json!({"name": "team", "max_dollars": "0.015"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let started = std::time::Instant::now();
    while c
        .get(url(b.port, "/api/budgets/team"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Delivered by A before it dies: its charge is in the team's record.
    let small = json!({"usage": {"input_tokens": 10, "output_tokens": 10}});
    assert_eq!(post(&c, &a, &req, &small).await.status(), 200);
    // A stream on A holds a worst case (about $0.01) and hangs; B has no room meanwhile.
    let mut streaming = req.clone();
    streaming["stream"] = json!(true);
    let held = post(&c, &a, &streaming, &json!({"hang_after": 2})).await;
    assert_eq!(held.status(), 200);
    let mut chunks = futures_util::StreamExt::boxed(held.bytes_stream());
    futures_util::StreamExt::next(&mut chunks)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(post(&c, &b, &req, &small).await.status(), 429);

    a.child.kill().unwrap();
    let killed = std::time::Instant::now();
    a.child.wait().unwrap();
    assert_eq!(
        post(&c, &b, &req, &small).await.status(),
        429,
        "the lease still runs right after the kill"
    );
    // Freed once the lease runs out: B sweeps every third of a lease.
    let bound = Duration::from_secs(lease) * 4 / 3 + Duration::from_secs(2);
    loop {
        if post(&c, &b, &req, &small).await.status() == 200 {
            break;
        }
        assert!(killed.elapsed() < bound, "not freed within {bound:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    let shared = team.totals("team", 0).await.unwrap();
    assert_eq!(shared.requests, 2, "A's delivered request and B's");
    assert_eq!(shared.reserved, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_fails_requests_closed_then_recovers() {
    let pg = std::sync::Arc::new(Postgres::start());
    let (p, _m, _d) = team_proxy(&pg, 30).await;
    let c = reqwest::Client::new();
    let created = c
        .post(url(p.port, "/api/budgets"))
        .json(&json!({"name": "team", "max_dollars": "5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let port = p.port;
    let stop = tokio_util::sync::CancellationToken::new();
    // Four clients keep sending while the database goes away and comes back.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let (req, small) = (
                    body("claude-haiku-4-5", 100),
                    json!({"usage": {"input_tokens": 10, "output_tokens": 10}}),
                );
                let mut seen = Vec::new();
                while !stop.is_cancelled() {
                    let r = c
                        .post(url(port, "/v1/messages"))
                        .header("x-budget-id", "team")
                        .header("x-mock", small.to_string())
                        .json(&req)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    seen.push((status, r.text().await.unwrap()));
                }
                seen
            })
        })
        .collect();
    // A fresh connection each time, as a proxy starting while others serve: it must not
    // lock their tables (it once ran its DDL and deadlocked with their charges).
    let team_totals = || async {
        let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
            .await
            .unwrap();
        team.totals("team", 0).await.unwrap()
    };
    while team_totals().await.requests < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = pg.clone();
    tokio::task::spawn_blocking(move || down.stop_server())
        .await
        .unwrap();
    // Requests are refused while it is away (the load's get the same answer).
    let started = std::time::Instant::now();
    let refusal = loop {
        let r = c
            .post(url(port, "/v1/messages"))
            .header("x-budget-id", "team")
            .json(&body("claude-haiku-4-5", 100))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break r.text().await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never refused");
    };
    assert!(
        refusal.contains("team database is unreachable"),
        "{refusal}"
    );
    let up = pg.clone();
    tokio::task::spawn_blocking(move || up.start_server())
        .await
        .unwrap();
    let before = team_totals().await.requests;
    while team_totals().await.requests < before + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let mut forwarded = 0;
    for task in load {
        for (status, text) in task.await.unwrap() {
            match status {
                200 => forwarded += 1,
                503 => assert!(text.contains("team database is unreachable"), "{text}"),
                other => panic!("only 200 or 503 under a database restart, got {other}: {text}"),
            }
        }
    }
    // Charges made while the database was away are committed once it is back, once each. A
    // reservation committed just as the database went away, its answer lost (the request was
    // refused with 503), is freed by its lease: within 30 s and a third.
    let started = std::time::Instant::now();
    loop {
        let shared = team_totals().await;
        if shared.requests == forwarded && shared.reserved == Money::ZERO {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "team record {shared:?} != {forwarded} forwarded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn each_alert_is_raised_once_across_proxies_from_the_teams_spend() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, Some("1"), 30).await;
    // $0.06 each: 15 make $0.90 across the team (50 % and 80 %), $0.30 on each proxy.
    let b = body("claude-haiku-4-5", 12_000);
    let script = json!({"usage": {"input_tokens": 0, "output_tokens": 12_000}});
    let sends = (0..15).map(|i| apps[i % 3].send(Some("team"), &b, Some(script.clone())));
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.status(), 200);
    }
    // Then more than fits: every proxy refuses some.
    let sends = (0..12).map(|i| apps[i % 3].send(Some("team"), &b, Some(script.clone())));
    let statuses: Vec<u16> = futures_util::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 3,
        "{statuses:?}"
    );
    let mut raised = Vec::new();
    for app in &apps {
        for a in app.get("/api/alerts?budget=team").await["items"]
            .as_array()
            .unwrap()
        {
            raised.push((
                a["kind"].as_str().unwrap().to_string(),
                a["threshold"].clone(),
            ));
        }
    }
    raised.sort_by_key(|(k, t)| (k.clone(), t.to_string()));
    assert_eq!(
        raised,
        vec![
            ("blocked".to_string(), Value::Null),
            ("threshold".to_string(), json!(50)),
            ("threshold".to_string(), json!(80)),
        ]
    );
}

#[tokio::test]
async fn budgets_made_changed_and_deleted_on_one_proxy_are_followed_by_the_others() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, Some("10"), 30).await;
    let change = json!({"max_dollars": "25", "period": "daily", "thresholds": [90], "max_session_dollars": "2"});
    let patch = apps[1].patch("/api/budgets/team", change).await;
    assert_eq!(patch.status(), 200);
    for app in &apps {
        app.eventually("every proxy to follow the change", || async {
            let b = app.budget("team").await;
            b["max_dollars"] == "25"
                && b["period"] == "daily"
                && b["thresholds"] == json!([90])
                && b["max_session_dollars"] == "2"
        })
        .await;
    }
    // A proxy that joins brings its own budgets and takes the team's.
    let url = pg.url("postgres");
    let solo = spawn_app().await;
    solo.create_budget(json!({"name": "solo", "max_dollars": "3"}))
        .await;
    let (mock, dir) = solo.stop().await;
    let joined = start_on(mock, dir, |s| s.database = Some(url)).await;
    joined
        .eventually("the joining proxy to take the team's budget", || async {
            status_of(&joined, "/api/budgets/team").await == 200
                && joined.budget("team").await["max_dollars"] == "25"
        })
        .await;
    apps[2]
        .eventually("the team to take the joining proxy's budget", || async {
            status_of(&apps[2], "/api/budgets/solo").await == 200
        })
        .await;
    let deleted = apps[0]
        .client
        .delete(apps[0].url("/api/budgets/team"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    for app in apps.iter().chain([&joined]) {
        app.eventually("every proxy to follow the deletion", || async {
            status_of(app, "/api/budgets/team").await == 404
        })
        .await;
    }
}

#[tokio::test]
async fn a_streams_team_reservation_shrinks_once_its_prompt_is_known() {
    let pg = Postgres::start();
    // A long prompt the estimator must assume is dear; the stream reports 10 input tokens.
    let mut b = body("claude-haiku-4-5", 100);
    b["messages"][0]["content"] = json!("word ".repeat(20_000));
    b["stream"] = json!(true);
    let script = json!({"usage": {"input_tokens": 10, "output_tokens": 5}, "hang_after": 2});
    let probe = three_proxies(&pg, None, 30).await;
    let mut whole = b.clone();
    whole["stream"] = json!(false);
    let (wc, _) = exact_script(&probe[0], &whole).await;
    // Room for one and a half worst cases: a second request fits only once the first shrank.
    let apps = three_proxies(&pg, Some(&wc.scale(3, 2).to_string()), 30).await;
    let first = apps[0].send(Some("team"), &b, Some(script.clone())).await;
    assert_eq!(first.status(), 200);
    let mut chunks = futures_util::StreamExt::boxed(first.bytes_stream());
    let start = futures_util::StreamExt::next(&mut chunks)
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&start).contains("message_start"));
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while team.totals("team", 0).await.unwrap().reserved >= wc {
        assert!(started.elapsed() < Duration::from_secs(10), "never shrank");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = apps[1].send(Some("team"), &b, Some(script)).await;
    assert_eq!(
        second.status(),
        200,
        "the first stream's shrink made room across proxies"
    );
    drop(chunks);
}

#[tokio::test]
async fn the_default_budget_stays_each_proxys_own() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, None, 30).await;
    for app in &apps[..2] {
        let r = app
            .patch("/api/budgets/default", json!({"max_dollars": "1"}))
            .await;
        assert_eq!(r.status(), 200);
        // $0.60 on each proxy: under each one's own $1, over a shared one.
        let spend = json!({"usage": {"input_tokens": 0, "output_tokens": 120_000}});
        let r = app
            .send(None, &body("claude-haiku-4-5", 10), Some(spend))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(app.budget("default").await["spent_dollars"], "0.6");
    }
    assert_eq!(apps[2].budget("default").await["max_dollars"], Value::Null);
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(team.totals("default", 0).await.unwrap().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_change_the_team_database_cannot_take_changes_nothing() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, Some("10"), 30).await;
    let app = &apps[0];
    pg.stop_server();
    let created = app
        .client
        .post(app.url("/api/budgets"))
        .json(&json!({"name": "late", "max_dollars": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 503);
    let text = created.text().await.unwrap();
    assert!(
        text.contains("was not created") && text.contains("unreachable"),
        "{text}"
    );
    assert_eq!(status_of(app, "/api/budgets/late").await, 404);
    let patched = app
        .patch("/api/budgets/team", json!({"max_dollars": "99"}))
        .await;
    assert_eq!(patched.status(), 503);
    assert_eq!(app.budget("team").await["max_dollars"], "10");
    let deleted = app
        .client
        .delete(app.url("/api/budgets/team"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 503);
    assert_eq!(status_of(app, "/api/budgets/team").await, 200);
    pg.start_server();
    app.eventually("changes to work again", || async {
        let r = app
            .patch("/api/budgets/team", json!({"max_dollars": "99"}))
            .await;
        r.status() == 200
    })
    .await;
    apps[1]
        .eventually("the others to follow", || async {
            apps[1].budget("team").await["max_dollars"] == "99"
        })
        .await;
}

/// Spends $0.06 a request across the proxies, `n` requests.
async fn spend_across(apps: &[TestApp], n: usize) {
    let b = body("claude-haiku-4-5", 12_000);
    let script = json!({"usage": {"input_tokens": 0, "output_tokens": 12_000}});
    let sends = (0..n).map(|i| apps[i % apps.len()].send(Some("team"), &b, Some(script.clone())));
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.status(), 200);
    }
}

async fn outbox(pg: &Postgres) -> Vec<(i32, bool)> {
    let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query("SELECT attempts, done FROM team_outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_team_webhook_is_delivered_once_and_signed_with_the_teams_secret() {
    let pg = Postgres::start();
    let hook = crate::receiver::start(crate::receiver::Mode::Ok).await;
    let apps = three_proxies(&pg, None, 30).await;
    apps[0]
        .create_budget(json!({"name": "team", "max_dollars": "1", "thresholds": [50], "webhook_url": hook.url()}))
        .await;
    for app in &apps[1..] {
        app.eventually("the others to follow", || async {
            status_of(app, "/api/budgets/team").await == 200
        })
        .await;
    }
    spend_across(&apps, 15).await;
    apps[0]
        .eventually("one delivery, done in the team's outbox", || async {
            hook.count() == 1 && outbox(&pg).await == vec![(1, true)]
        })
        .await;
    let secrets: Vec<Value> = futures_util::future::join_all(
        apps.iter()
            .map(|a| async { a.get("/api/settings").await["webhook_secret"].clone() }),
    )
    .await;
    assert!(
        secrets.iter().all(|s| *s == secrets[0]),
        "one secret: {secrets:?}"
    );
    let d = &hook.all()[0];
    let sig = d.headers["x-agent-budget-signature"].to_str().unwrap();
    assert_eq!(
        sig,
        agent_budget::service::webhook::signature(secrets[0].as_str().unwrap(), &d.body)
    );
    let payload: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(
        (payload["kind"].as_str(), payload["threshold"].as_u64()),
        (Some("threshold"), Some(50))
    );
    assert_eq!(hook.count(), 1);
}

#[tokio::test]
async fn a_team_webhook_is_delivered_by_another_proxy_when_the_raising_one_is_gone() {
    let pg = Postgres::start();
    // Nobody listens at first: the raising proxy's attempt fails and is due again in 5 s.
    let port = crate::receiver::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut apps = three_proxies(&pg, None, 30).await;
    apps[0]
        .create_budget(
            json!({"name": "team", "max_dollars": "1", "thresholds": [50], "webhook_url": url}),
        )
        .await;
    for app in &apps[1..] {
        app.eventually("the others to follow", || async {
            status_of(app, "/api/budgets/team").await == 200
        })
        .await;
    }
    spend_across(&apps[..1], 10).await;
    apps[0]
        .eventually("the first attempt to fail", || async {
            outbox(&pg).await == vec![(1, false)]
        })
        .await;
    let raiser = apps.remove(0);
    raiser.stop().await;
    let hook = crate::receiver::start_on(port, crate::receiver::Mode::Ok).await;
    apps[0]
        .eventually("another proxy to deliver it", || async {
            hook.count() == 1 && outbox(&pg).await == vec![(2, true)]
        })
        .await;
    assert_eq!(hook.count(), 1);
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_charged_in_the_team_too() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, Some("5"), 30).await;
    let mut b = body("claude-haiku-4-5", 1000);
    b["stream"] = json!(true);
    let script = json!({"usage": {"input_tokens": 10, "output_tokens": 5}, "hang_after": 3});
    let r = apps[0].send(Some("team"), &b, Some(script)).await;
    let mut chunks = futures_util::StreamExt::boxed(r.bytes_stream());
    futures_util::StreamExt::next(&mut chunks)
        .await
        .unwrap()
        .unwrap();
    drop(chunks);
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    apps[0]
        .eventually(
            "the abandoned stream charged in the team's record",
            || async {
                let t = team.totals("team", 0).await.unwrap();
                t.requests == 1 && t.reserved == Money::ZERO && t.spent.is_positive()
            },
        )
        .await;
}

#[tokio::test]
async fn every_proxys_overview_shows_the_teams_totals_and_its_own_default() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, Some("0.2"), 30).await;
    // $0.12 through two proxies, then a refusal on the third ($0.06 more would fit, $0.12 not).
    spend_across(&apps[..2], 2).await;
    let big = json!({"usage": {"input_tokens": 0, "output_tokens": 24_000}});
    let refused = apps[2]
        .send(Some("team"), &body("claude-haiku-4-5", 24_000), Some(big))
        .await;
    assert_eq!(refused.status(), 429);
    // The default budget is each proxy's own: its $0.06 shows only on the proxy that spent it.
    let own = json!({"usage": {"input_tokens": 0, "output_tokens": 12_000}});
    let r = apps[0]
        .send(None, &body("claude-haiku-4-5", 12_000), Some(own))
        .await;
    assert_eq!(r.status(), 200);
    for (i, app) in apps.iter().enumerate() {
        let mine = if i == 0 { "0.18" } else { "0.12" };
        app.eventually("the team's totals on every overview", || async {
            let s = app.get("/api/stats").await;
            s["today"]["dollars"] == mine
                && s["this_month"]["dollars"] == mine
                && s["all_time"]["requests"] == if i == 0 { 3 } else { 2 }
                && s["today"]["blocked"] == 1
        })
        .await;
        assert_eq!(
            app.get("/api/settings").await["team"],
            true,
            "the overview says so"
        );
        let s = app.get("/api/stats").await;
        let team = s["by_budget"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["budget"] == "team")
            .unwrap()
            .clone();
        assert_eq!(
            (&team["dollars"], &team["requests"]),
            (&json!("0.12"), &json!(2))
        );
        let spend = app.get("/api/spend?days=1").await;
        let series = spend["by_budget"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "team")
            .unwrap()
            .clone();
        assert_eq!(
            series["dollars"],
            json!(["0.12"]),
            "the chart shows the team's spend"
        );
    }
    // Deleted and made again, the budget starts afresh, as it does on one proxy.
    let r = apps[0]
        .client
        .delete(apps[0].url("/api/budgets/team"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    apps[1]
        .eventually("the others to follow the deletion", || async {
            status_of(&apps[1], "/api/budgets/team").await == 404
        })
        .await;
    apps[0]
        .create_budget(json!({"name": "team", "max_dollars": "0.2"}))
        .await;
    apps[1]
        .eventually("the others to follow the new budget", || async {
            status_of(&apps[1], "/api/budgets/team").await == 200
        })
        .await;
    let fresh = apps[1].budget("team").await;
    assert_eq!(
        (&fresh["spent_dollars"], &fresh["requests"]),
        (&json!("0"), &json!(0))
    );
    assert_eq!(apps[0].get("/api/stats").await["today"]["dollars"], "0.06");
}

/// Team charges follow the local retention; the team's totals do not change because of it.
#[tokio::test]
async fn retention_sweeps_old_team_charges_and_keeps_the_totals() {
    let pg = Postgres::start();
    let team = Team::connect(&pg.url("postgres"), Duration::from_secs(30))
        .await
        .unwrap();
    let old = team.reserve(ask("1")).await.unwrap().unwrap();
    team.settle(old, &charge("0.5")).await.unwrap(); // created at 1 ms after the epoch
    let recent = team.reserve(ask("1")).await.unwrap().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let c = Charge {
        created_at: now,
        ..charge("0.25")
    };
    team.settle(recent, &c).await.unwrap();
    let before = team.totals("team", 0).await.unwrap();
    assert_eq!(
        team.sweep(1_000).await.unwrap(),
        1,
        "the old charge, not the recent one"
    );
    assert_eq!(team.sweep(1_000).await.unwrap(), 0);
    let after = team.totals("team", 0).await.unwrap();
    assert_eq!(
        (after.spent, after.requests),
        (before.spent, before.requests)
    );
    assert_eq!(after.spent, dollars("0.75"));
    // Subscription credentials not seen for over 8 days go too.
    let secs = now / 1000;
    let states = [("old", 1), ("new", secs)].map(|(a, t)| (a.to_string(), "{}".to_string(), t));
    team.put_windows(&states).await.unwrap();
    assert_eq!(team.sweep(1_000).await.unwrap(), 1, "the old credential");
    let kept: Vec<String> = (team.windows_since(0).await.unwrap().into_iter())
        .map(|s| s.0)
        .collect();
    assert_eq!(kept, vec!["new"]);
}

/// A period changed mid-way starts from what the team spent in the new period so far, not
/// from zero: each proxy's ledger holds only its own share, so the team's figure is the one
/// that keeps the cap.
#[tokio::test]
async fn a_team_budget_given_a_new_period_counts_what_the_team_spent_in_it() {
    let pg = Postgres::start();
    let apps = three_proxies(&pg, Some("0.2"), 30).await;
    // $0.12 this month across two proxies: today's spend too.
    spend_across(&apps[..2], 2).await;
    let r = apps[0]
        .patch("/api/budgets/team", json!({"period": "daily"}))
        .await;
    assert_eq!(r.status(), 200);
    for app in &apps[1..] {
        app.eventually("the others to follow the new period", || async {
            app.budget("team").await["period"] == "daily"
        })
        .await;
    }
    // $0.06 more fits the $0.20 daily cap; then $0.12 + $0.06 + $0.06 would not.
    spend_across(&apps[2..], 1).await;
    let b = body("claude-haiku-4-5", 12_000);
    let script = json!({"usage": {"input_tokens": 0, "output_tokens": 12_000}});
    let refused = apps[1].send(Some("team"), &b, Some(script)).await;
    assert_eq!(
        refused.status(),
        429,
        "today's $0.18 + $0.06 would pass the $0.20 daily cap"
    );
}
