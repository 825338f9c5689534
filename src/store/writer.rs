//! The single writer: a thread that owns the write connection and commits whatever has
//! queued up in one transaction, then tells each waiter its change is durable.

use super::checkpoint::Checkpointer;
use super::usage::{self, UsageRow};
use super::{Health, StoreError};
use rusqlite::{Connection, Transaction};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Called after the batch's commit with whether it committed.
type Done = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Transaction<'_>) -> Done + Send>;

enum Message {
    Usage(UsageRow, Option<oneshot::Sender<bool>>),
    Run(Job),
}

/// Most jobs one transaction takes; enough to amortise the commit, small enough to keep latency flat.
const BATCH: usize = 1024;

/// Sends changes to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Message>,
}

/// Joins the writer thread once every `Writer` is dropped and the queue is drained.
pub struct Handle(Option<std::thread::JoinHandle<()>>);

impl Handle {
    /// Waits for the writer to commit everything queued and exit.
    pub fn join(mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn start(
    conn: Connection,
    checkpointer: Checkpointer,
    health: Arc<Health>,
) -> (Writer, Handle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("agent-budget-writer".into())
        .spawn(move || run(conn, rx, checkpointer, health))
        .ok();
    (Writer { tx }, Handle(thread))
}

/// How long the writer polls for more work before it sleeps. Waking a sleeping thread costs
/// tens of microseconds on a VM, about as much as a commit; under load the next record is
/// usually this close. It yields while polling, so runtime threads with work go first.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Option<Message> {
    let until = std::time::Instant::now() + SPIN;
    while std::time::Instant::now() < until {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    rx.blocking_recv()
}

/// How long the writer waits between attempts while the database is failing.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Most failed usage records kept for another attempt (about 30 MB); the oldest go first.
const MAX_PENDING: usize = 100_000;

fn run(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Message>,
    checkpointer: Checkpointer,
    health: Arc<Health>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // Usage records whose commit failed. The ledger already counts them, so they are written
    // again until they are in: dropping them would make the database disagree with the ledger.
    let mut pending: Vec<UsageRow> = Vec::new();
    loop {
        let closed = if pending.is_empty() {
            match next(&mut rx) {
                Some(m) => {
                    batch.push(m);
                    false
                }
                None => true,
            }
        } else {
            // Failing: back off, then try again with whatever has come in.
            std::thread::sleep(RETRY);
            matches!(
                rx.try_recv().map(|m| batch.push(m)),
                Err(mpsc::error::TryRecvError::Disconnected)
            )
        };
        if closed && pending.is_empty() {
            return;
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        match commit(&mut conn, &mut batch, &mut pending) {
            Ok(()) => {
                health.set(None);
                checkpointer.wal_grew();
                checkpointer.restart_if_due(&conn);
            }
            Err(e) => {
                tracing::error!(error = %e, pending = pending.len(), "could not commit usage records; will retry");
                if pending.len() > MAX_PENDING {
                    let dropped = pending.len() - MAX_PENDING;
                    pending.drain(..dropped);
                    tracing::error!(
                        dropped,
                        "usage records dropped: the database has been failing too long"
                    );
                }
                // Only lost usage makes the proxy fail closed (and is retried until saved); a
                // failed job has told its caller, and nothing would clear the state after it.
                if !pending.is_empty() {
                    health.set(Some(e.to_string()));
                }
                if closed {
                    tracing::error!(
                        lost = pending.len(),
                        "shutting down with usage records that could not be saved"
                    );
                    return;
                }
            }
        }
    }
}

/// Whether an error is the database's (disk full, read-only, locked, I/O) rather than this
/// record's: then the whole batch is kept for another attempt.
fn is_storage_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(
        e.sqlite_error_code(),
        Some(
            C::DiskFull
                | C::ReadOnly
                | C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::CannotOpen
                | C::OutOfMemory
        )
    )
}

/// Commits the pending records and the batch, and answers the batch's waiters. On failure
/// the batch's usage records join `pending`.
fn commit(
    conn: &mut Connection,
    batch: &mut Vec<Message>,
    pending: &mut Vec<UsageRow>,
) -> Result<(), rusqlite::Error> {
    let mut acks: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    let mut rows = Vec::new();
    let result = (|| {
        let tx = conn.transaction()?;
        let mut failure = None;
        let insert = |row: &UsageRow, failure: &mut Option<rusqlite::Error>| {
            if failure.is_some() {
                return;
            }
            match usage::insert(&tx, row) {
                Err(e) if is_storage_failure(&e) => *failure = Some(e),
                Err(e) => tracing::error!(error = %e, "could not store a usage record"),
                Ok(()) => {}
            }
        };
        for row in pending.iter() {
            insert(row, &mut failure);
        }
        for m in batch.drain(..) {
            match m {
                Message::Usage(row, ack) => {
                    acks.extend(ack);
                    insert(&row, &mut failure);
                    rows.push(row);
                }
                // After a failure the job still runs, and is told it was not saved.
                Message::Run(job) => dones.push(isolated(&tx, job)),
            }
        }
        match failure {
            Some(e) => Err(e), // dropping `tx` rolls back
            None => tx.commit(),
        }
    })();
    let committed = result.is_ok();
    if committed {
        pending.clear();
    } else {
        // If the transaction could not even begin, the batch is still here.
        for m in batch.drain(..) {
            if let Message::Usage(row, ack) = m {
                acks.extend(ack);
                rows.push(row);
            }
        }
        pending.append(&mut rows);
    }
    for a in acks {
        let _ = a.send(committed);
    }
    for d in dones {
        d(committed);
    }
    result
}

/// Runs one job inside a savepoint so its failure rolls back only its own changes.
fn isolated(tx: &Transaction<'_>, job: Job) -> Done {
    if tx.execute_batch("SAVEPOINT job").is_err() {
        return Box::new(|_| {});
    }
    let done = job(tx);
    // The job reports its own result; a failed job has already rolled back to the savepoint.
    let _ = tx.execute_batch("RELEASE job");
    done
}

impl Writer {
    /// Queues a usage record; the receiver says `true` once it is committed.
    pub fn record(&self, row: UsageRow) -> oneshot::Receiver<bool> {
        let (ack, rx) = oneshot::channel();
        let _ = self.tx.send(Message::Usage(row, Some(ack)));
        rx
    }

    /// Queues a usage record without waiting for it (used from `Drop`, which cannot wait).
    pub fn record_detached(&self, row: UsageRow) {
        let _ = self.tx.send(Message::Usage(row, None));
    }

    /// Runs `f` in the writer's transaction; returns its result once committed. If `f` fails,
    /// its changes are rolled back and the error is returned; other jobs in the batch commit.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |t| {
            let out = f(t);
            if out.is_err() {
                let _ = t.execute_batch("ROLLBACK TO job");
            }
            Box::new(move |committed| {
                let _ = tx.send(if committed {
                    out
                } else {
                    Err(StoreError::NotSaved)
                });
            })
        });
        self.tx
            .send(Message::Run(job))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}
