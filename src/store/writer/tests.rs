use super::super::{FILE_NAME, Store};
use super::UsageRow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn row(model: &str) -> UsageRow {
    let now = crate::budget::period::now();
    UsageRow {
        created_at: now,
        day: now.date_naive(),
        budget_id: 1,
        model: model.into(),
        status: crate::record::UsageStatus::Ok,
        estimated: false,
        priced_as: crate::pricing::PricedAs::Table,
        http_status: 200,
        stream: false,
        tokens: Default::default(),
        cost: Default::default(),
        duration_ms: 1,
        upstream_request_id: None,
        worst_case: Default::default(),
        clamped_max_tokens: None,
        session: None,
        attribution: Default::default(),
        alerts: vec![],
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    store
        .writer
        .run(|tx| {
            Ok(tx.execute_batch(
                "INSERT INTO budgets (id, name, period, thresholds, created_at) VALUES (1, 'b', 'monthly', '[]', 0)",
            )?)
        })
        .await
        .unwrap();
    // The job's caller is answered before the writer thread lets go of the connection.
    drop(store.writer.shared.lock());
    (dir, store)
}

#[tokio::test]
async fn a_batch_adds_each_row_to_the_daily_totals_and_counts_once() {
    let (_dir, store) = store().await;
    let mut rows = Vec::new();
    for (model, cost, output, blocked, days_ago, budget) in [
        ("a", 5, 10, false, 0, 1),
        ("a", 7, 20, false, 0, 1),
        ("a", 11, 30, false, 1, 1),
        ("b", 0, 0, true, 0, 1),
        ("a", 13, 40, false, 0, 99), // no such budget: left out of everything
    ] {
        let mut r = row(model);
        r.cost = crate::money::Money::from_picos(cost);
        r.tokens.output = output;
        r.day = r.day - chrono::Days::new(days_ago);
        r.budget_id = budget;
        if blocked {
            r.status = crate::record::UsageStatus::Blocked;
        }
        rows.push(r);
    }
    // Queued while the connection is held, so the writer takes them as one batch.
    let acks: Vec<_> = {
        let _held = store.writer.shared.lock();
        rows.into_iter().map(|r| store.writer.record(r)).collect()
    };
    for a in acks {
        assert!(a.await.unwrap());
    }
    let today = crate::budget::period::now().date_naive();
    let (daily, count) = store
        .read(|c| {
            let mut st = c.prepare(
                "SELECT budget_id, day, model, requests, blocked, output_tokens, dollars FROM daily ORDER BY day, model",
            )?;
            let daily: Vec<(i64, String, String, i64, i64, i64, i64)> = st
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })?
                .collect::<Result<_, _>>()?;
            let zone = crate::budget::period::Zone::parse("UTC").unwrap();
            let (_, count) = super::super::usage::page(c, 1, 1, 0, zone)?;
            Ok((daily, count))
        })
        .await
        .unwrap();
    let yesterday = (today - chrono::Days::new(1)).to_string();
    let today = today.to_string();
    assert_eq!(
        daily,
        vec![
            (1, yesterday, "a".into(), 1, 0, 30, 11),
            (1, today.clone(), "a".into(), 2, 0, 30, 12),
            (1, today, "b".into(), 0, 1, 0, 0),
        ]
    );
    assert_eq!(count, 4, "budget 1's usage page counts its rows");
    assert_eq!(models(&store).await, ["a", "a", "a", "b"]);
}

#[tokio::test]
async fn a_job_that_deletes_a_budget_leaves_no_totals_for_it() {
    use futures_util::FutureExt;
    let (_dir, store) = store().await;
    let ack = {
        let _held = store.writer.shared.lock();
        let ack = store.writer.record(row("a"));
        // Queued in the same batch, after the row (the first poll sends it).
        let _ = store
            .writer
            .run(|tx| super::super::budgets::delete(tx, 1))
            .now_or_never();
        ack
    };
    assert!(ack.await.unwrap());
    let daily: i64 = store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM daily", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(daily, 0, "the deleted budget's totals came back");
}

async fn models(store: &Store) -> Vec<String> {
    store
        .read(|c| {
            let mut st = c.prepare("SELECT model FROM usage ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_writer_too_far_behind_says_so() {
    let (_dir, store) = store().await;
    assert_eq!(store.writer.overloaded(), None);
    store
        .writer
        .shared
        .queued
        .store(super::MAX_QUEUED + 1, Ordering::Release);
    let why = store.writer.overloaded().unwrap();
    assert!(why.contains("100001 usage records"), "{why}");
    store.writer.shared.queued.store(0, Ordering::Release);
}

#[tokio::test]
async fn a_lone_record_is_committed_on_the_callers_thread() {
    let (_dir, store) = store().await;
    assert!(store.writer.commit_here(&row("here")));
    assert_eq!(models(&store).await, ["here"]);
}

#[tokio::test]
async fn only_a_lone_record_skips_the_writer_thread() {
    let (_dir, store) = store().await;
    // A stream's relay cannot wait where it settles: alone, its record is already in.
    assert!(store.writer.start_save(row("alone"), true).is_none());
    assert_eq!(models(&store).await, ["alone"]);
    // With other requests in flight it joins the writer's batch, and hears when it is in.
    let ack = store.writer.start_save(row("crowded"), false).unwrap();
    assert!(ack.await.unwrap());
    assert_eq!(models(&store).await, ["alone", "crowded"]);
}

#[tokio::test]
async fn a_lone_record_never_waits_for_a_locked_database() {
    let (dir, store) = store().await;
    let other = rusqlite::Connection::open(dir.path().join(FILE_NAME)).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    assert!(!store.writer.commit_here(&row("locked")));
    // The writer's connection waits up to 5 s for a lock; the caller's thread must not.
    assert!(started.elapsed() < Duration::from_secs(1));
    // Declined, the record goes to the writer thread, which waits for the lock: it takes
    // the record and holds its connection, without answering, until the lock is free.
    let mut ack = store.writer.start_save(row("locked"), true).unwrap();
    let s = &store.writer.shared;
    let took = Instant::now() + Duration::from_secs(4);
    let mut held = None;
    // Watched for a while after it took the record: long enough to reach its first write.
    while held.is_none_or(|since: Instant| since.elapsed() < Duration::from_millis(200)) {
        let answer = ack.try_recv();
        assert!(
            answer.is_err(),
            "the writer gave up on a locked database: {answer:?}"
        );
        assert!(Instant::now() < took, "the writer never took the record");
        if held.is_none() && s.queued.load(Ordering::Acquire) == 0 && s.db.try_lock().is_err() {
            held = Some(Instant::now());
        }
        std::thread::yield_now();
    }
    other.execute_batch("COMMIT").unwrap();
    assert!(ack.await.unwrap());
    assert_eq!(models(&store).await, ["locked"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_record_steps_aside_when_the_wal_is_about_to_start_over() {
    let (_dir, store) = store().await;
    let w = &store.writer;
    // One commit of ~1,100 pages: the WAL is long, so the checkpoint thread copies it back.
    w.run(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE scratch(b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100)
             INSERT INTO scratch SELECT zeroblob(4000) FROM n;",
        )?)
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.shared.checkpointer.wal_restarts_next() {
        assert!(Instant::now() < deadline, "no checkpoint caught up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The next commit starts the WAL over and fsyncs: that is the writer thread's to pay.
    let ack = w.start_save(row("after checkpoint"), true).unwrap();
    assert!(ack.await.unwrap());
    drop(w.shared.lock());
    assert!(!w.shared.checkpointer.wal_restarts_next());
    assert!(w.commit_here(&row("then here")));
    assert_eq!(models(&store).await, ["after checkpoint", "then here"]);
}

#[tokio::test]
async fn a_failing_database_is_left_to_the_writer_thread() {
    let (_dir, store) = store().await;
    store.health.set(Some("disk full".into()));
    assert!(!store.writer.commit_here(&row("x")));
    store.health.set(None);
    assert!(store.writer.commit_here(&row("x")));
}
