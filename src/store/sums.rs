//! `ssum(x, …)` and `sadd(a, b)`: SQLite's `SUM` and `+` that cannot fail. `SUM` raises "integer overflow" past
//! i64, and `+` silently turns an overflowing integer into a REAL that the next read refuses
//! (`Invalid column type Real`): either bricked a data directory once an upstream reported an
//! absurd usage. `ssum` adds all its arguments of every row, saturating at the i64 bounds,
//! and reads a REAL a bad build left behind as the nearest integer (saturating too), so the
//! store always opens and its totals always read.

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Result};

struct SaturatingSum;

fn value(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        // `as` saturates (and maps NaN to 0): a leftover REAL is read as the nearest i64.
        ValueRef::Real(f) => f as i64,
        _ => 0,
    }
}

impl Aggregate<i64, Option<i64>> for SaturatingSum {
    fn init(&self, _: &mut Context<'_>) -> Result<i64> {
        Ok(0)
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut i64) -> Result<()> {
        for i in 0..ctx.len() {
            *acc = acc.saturating_add(value(ctx.get_raw(i)));
        }
        Ok(())
    }
    /// NULL over no rows, like `SUM`.
    fn finalize(&self, _: &mut Context<'_>, acc: Option<i64>) -> Result<Option<i64>> {
        Ok(acc)
    }
}

/// Registers `ssum` and `sadd` on a connection; every connection the store opens has them.
pub fn register(conn: &Connection) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_aggregate_function("ssum", -1, flags, SaturatingSum)?;
    conn.create_scalar_function("sadd", 2, flags, |ctx| {
        Ok(value(ctx.get_raw(0)).saturating_add(value(ctx.get_raw(1))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_and_read_leftover_reals() {
        let c = Connection::open_in_memory().unwrap();
        register(&c).unwrap();
        c.execute_batch(
            "CREATE TABLE t (a INTEGER, b INTEGER);
             INSERT INTO t VALUES (9223372036854775807, 5), (3, 4), (9.3e18, NULL);",
        )
        .unwrap();
        let one: i64 = c
            .query_row("SELECT ssum(a) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(one, i64::MAX);
        let small: i64 = c
            .query_row("SELECT ssum(a, b) FROM t WHERE a = 3", [], |r| r.get(0))
            .unwrap();
        assert_eq!(small, 7);
        let none: Option<i64> = c
            .query_row("SELECT ssum(a) FROM t WHERE a < 0", [], |r| r.get(0))
            .unwrap();
        assert_eq!(none, None);
        assert!(
            c.query_row(
                "SELECT SUM(a) FROM t WHERE a > 0 AND typeof(a) = 'integer'",
                [],
                |r| r.get::<_, i64>(0)
            )
            .is_err(),
            "SQLite's SUM fails here"
        );
        c.execute_batch(
            "CREATE TABLE d (k INTEGER PRIMARY KEY, n INTEGER);
             INSERT INTO d VALUES (1, 9223372036854775800);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO d VALUES (1, 100) ON CONFLICT (k) DO UPDATE SET n = sadd(n, excluded.n)",
            [],
        )
        .unwrap();
        let (n, kind): (i64, String) = c
            .query_row("SELECT n, typeof(n) FROM d", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, kind.as_str()), (i64::MAX, "integer"));
    }
}
