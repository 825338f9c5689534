//! SQLite storage: WAL mode, embedded migrations, one batching writer thread, a few reader
//! connections. Queries are grouped per table in the submodules.

pub mod activity;
pub mod alerts;
pub mod budgets;
mod checkpoint;
pub mod keys;
pub mod pricing;
pub mod projects;
pub mod sessions;
pub mod stats;
pub mod subscriptions;
mod sums;
mod tally;
pub mod usage;
mod writer;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
pub use writer::{Handle as WriterHandle, Writer};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_alerts.sql"),
    include_str!("migrations/0003_derived_counts.sql"),
    include_str!("migrations/0004_usage_seq.sql"),
    include_str!("migrations/0005_admission.sql"),
    include_str!("migrations/0006_guardrails.sql"),
    include_str!("migrations/0007_virtual_keys.sql"),
    include_str!("migrations/0008_key_last_used.sql"),
    include_str!("migrations/0009_integer_totals.sql"),
    include_str!("migrations/0010_attribution.sql"),
    include_str!("migrations/0011_sign_ins.sql"),
    include_str!("migrations/0012_refresh.sql"),
    include_str!("migrations/0013_activity.sql"),
    include_str!("migrations/0014_parents.sql"),
    include_str!("migrations/0015_key_caps.sql"),
    include_str!("migrations/0016_subscriptions.sql"),
    include_str!("migrations/0017_key_lineage.sql"),
];
pub const FILE_NAME: &str = "agent-budget.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the database {path} is corrupt or not an agent-budget database; move it aside (or restore a backup) and start again"
    )]
    Corrupt { path: PathBuf },
    #[error(
        "cannot open the database {path}: {source}; check that the data directory is writable or choose another with --data-dir"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} was written by a newer agent-budget (schema {found}, this build knows {known}); upgrade agent-budget"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database writer has stopped")]
    Closed,
    #[error(
        "the change could not be saved to the database (is the disk full or the data directory read-only?)"
    )]
    NotSaved,
    #[error("{0}")]
    Conflict(String),
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
        },
        _ => StoreError::Open {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// How long a connection waits for another process's lock before it reports the database busy.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    sums::register(conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL: a commit survives the process being killed (it is in the OS's cache);
    // only a power cut can lose the last transactions.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(())
}

fn migrate(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    if version > 0 && version < known {
        tracing::info!(
            from = version,
            to = known,
            "upgrading the database (once; a few seconds per million usage records)"
        );
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Creates the data directory (and its parents) readable by the user only; an existing
/// directory is left as it is (it may be one the user chose and shares).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the database file readable and writable by the user only (it holds webhook URLs,
/// whose tokens are secrets); SQLite gives its `-wal` and `-shm` files the same mode.
fn make_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    options.open(path)?;
    Ok(())
}

/// Whether usage records are being saved: set by the writer after each commit of usage.
#[derive(Default)]
pub struct Health {
    failing: Mutex<Option<String>>,
}

impl Health {
    fn set(&self, failure: Option<String>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    /// Why the last commit failed, while records are waiting to be saved.
    pub fn failure(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The database: a writer for all changes, readers for queries.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    readers: Arc<Mutex<Vec<Connection>>>,
    pub writer: Writer,
    pub health: Arc<Health>,
}

impl Store {
    /// Opens (creating if needed) `<dir>/agent-budget.db`, migrates it, starts the writer thread.
    pub fn open(dir: &Path) -> Result<(Store, writer::Handle), StoreError> {
        let path = dir.join(FILE_NAME);
        if let Err(e) = make_private(&path) {
            tracing::warn!(error = %e, path = %path.display(), "could not make the database private to this user");
        }
        let mut conn = Connection::open(&path).map_err(|e| classify(&path, e))?;
        configure(&conn).map_err(|e| classify(&path, e))?;
        migrate(&path, &mut conn)?;
        let checkpointer = checkpoint::Checkpointer::start(&path, &conn);
        let health = Arc::new(Health::default());
        let (writer, handle) = writer::start(conn, checkpointer, health.clone());
        Ok((
            Store {
                path,
                readers: Arc::new(Mutex::new(Vec::new())),
                writer,
                health,
            },
            handle,
        ))
    }

    /// Runs a read query on a pooled connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_now(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// The same, on the calling thread (start-up).
    pub fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| classify(&self.path, e))?;
                c.busy_timeout(BUSY_TIMEOUT)?;
                sums::register(&c)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upgrading_numbers_each_budgets_records_after_those_swept() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A version-3 database: budget 1 has had 4 records swept by retention.
            let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            for m in &MIGRATIONS[..3] {
                conn.execute_batch(m).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 3;
                 INSERT INTO budgets (id, name, period, thresholds, created_at)
                     VALUES (1, 'a', 'monthly', '[]', 0), (2, 'b', 'monthly', '[]', 0);
                 INSERT INTO usage_swept (budget_id, n) VALUES (1, 4);",
            )
            .unwrap();
            for budget in [1, 2, 1, 1, 2, 1] {
                conn.execute(
                    "INSERT INTO usage (created_at, budget_id, model, status, estimated, priced_as, http_status,
                         stream, input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
                         output_tokens, web_search_requests, cost, duration_ms)
                     VALUES (0, ?1, 'm', 'ok', 0, 'table', 200, 0, 1, 0, 0, 0, 1, 0, 1, 1)",
                    [budget],
                )
                .unwrap();
            }
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let zone = crate::budget::period::Zone::parse("UTC").unwrap();
        let (numbers, page) = store
            .read(move |c| {
                let numbers = c
                    .prepare("SELECT budget_id, seq FROM usage ORDER BY id")?
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let page = usage::page(c, 1, 2, 1, zone)?.0;
                Ok((numbers, page.iter().map(|r| r.id).collect::<Vec<_>>()))
            })
            .await
            .unwrap();
        assert_eq!(numbers, [(1, 5), (2, 1), (1, 6), (1, 7), (2, 2), (1, 8)]);
        assert_eq!(
            page,
            [4, 3],
            "budget 1's records newest first, from the second"
        );
    }

    #[test]
    fn a_sweep_counts_only_the_records_it_deletes() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        sums::register(&conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", usage::COUNT_SWEPT))
            .unwrap()
            .query_map([1], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH usage USING INTEGER PRIMARY KEY")),
            "the batch's id range, not a walk over an index: {plan:?}"
        );
    }

    #[tokio::test]
    async fn upgrading_keeps_each_budgets_usage_count() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A version-2 database: budget 1 had 6 rows written and 4 swept by retention,
            // budget 2 had 1 row and none swept.
            let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO budgets (id, name, period, thresholds, created_at)
                     VALUES (1, 'a', 'monthly', '[]', 0), (2, 'b', 'monthly', '[]', 0);
                 INSERT INTO usage (created_at, budget_id, model, status, estimated, priced_as, http_status,
                     stream, input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
                     output_tokens, web_search_requests, cost, duration_ms)
                     VALUES (0, 1, 'm', 'ok', 0, 'table', 200, 0, 1, 0, 0, 0, 1, 0, 1, 1),
                            (0, 1, 'm', 'ok', 0, 'table', 200, 0, 1, 0, 0, 0, 1, 0, 1, 1),
                            (0, 2, 'm', 'ok', 0, 'table', 200, 0, 1, 0, 0, 0, 1, 0, 1, 1);
                 INSERT INTO daily (budget_id, day, model, requests, blocked)
                     VALUES (1, '2026-01-01', 'm', 3, 1), (1, '2026-01-02', 'n', 2, 0),
                            (2, '2026-01-02', 'm', 1, 0);
                 DELETE FROM usage_counts;
                 INSERT INTO usage_counts (budget_id, n) VALUES (1, 2), (2, 1);",
            )
            .unwrap();
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let zone = crate::budget::period::Zone::parse("UTC").unwrap();
        let totals = store
            .read(move |c| {
                Ok((
                    usage::page(c, 1, 1, 0, zone)?.1,
                    usage::page(c, 2, 1, 0, zone)?.1,
                ))
            })
            .await
            .unwrap();
        assert_eq!(totals, (2, 1));
    }
}
