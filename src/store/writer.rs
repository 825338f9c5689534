//! The single writer: a thread that commits whatever has queued up in one transaction, then
//! tells each waiter its change is durable. A usage record whose request is the only one in
//! flight is committed on its own task instead, when the writer is idle: waking the writer
//! thread and being woken by it cost several times the ~15 µs commit (docs/PERFORMANCE.md).

use super::checkpoint::Checkpointer;
use super::usage;
use super::{Health, StoreError};
use crate::record::UsageRow;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

/// Called after the batch's commit with whether it committed.
type Done = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Transaction<'_>) -> Done + Send>;

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a usage row; boxing it would allocate per request"
)]
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
    shared: Arc<Shared>,
}

/// The writer's connection, with what it remembers between transactions.
struct Db {
    conn: Connection,
    numbers: usage::Numbers,
}

/// What the writer thread and a task committing its own record share.
struct Shared {
    db: Mutex<Db>,
    /// Messages sent and not yet taken by the writer thread.
    queued: AtomicUsize,
    checkpointer: Checkpointer,
    health: Arc<Health>,
    /// How long each commit takes (the metrics' `writer_commit_seconds`).
    commits: prometheus_client::metrics::histogram::Histogram,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
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
    let shared = Arc::new(Shared {
        db: Mutex::new(Db {
            conn,
            numbers: usage::Numbers::default(),
        }),
        queued: AtomicUsize::new(0),
        checkpointer,
        health,
        commits: crate::metrics::histogram(&crate::metrics::DATABASE),
    });
    let on_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("agent-budget-writer".into())
        .spawn(move || run(&on_thread, rx))
        .ok();
    (Writer { tx, shared }, Handle(thread))
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

fn run(shared: &Shared, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    // Usage records whose commit failed. The ledger already counts them, so they are written
    // again until they are in: dropping them would make the database disagree with the ledger.
    let mut pending: Vec<UsageRow> = Vec::new();
    let taken = |m: Message| {
        shared.queued.fetch_sub(1, Ordering::AcqRel);
        m
    };
    loop {
        let closed = if pending.is_empty() {
            match next(&mut rx) {
                Some(m) => {
                    batch.push(taken(m));
                    false
                }
                None => true,
            }
        } else {
            // Failing: back off, then try again with whatever has come in.
            std::thread::sleep(RETRY);
            matches!(
                rx.try_recv().map(|m| batch.push(taken(m))),
                Err(mpsc::error::TryRecvError::Disconnected)
            )
        };
        if closed && pending.is_empty() {
            return;
        }
        let mut db = shared.lock();
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(taken(m)),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let committed = commit(&mut db, &mut batch, &mut pending);
        shared.commits.observe(started.elapsed().as_secs_f64());
        match committed {
            Ok(()) => {
                shared.health.set(None);
                shared.checkpointer.committed();
                shared.checkpointer.restart_if_due(&db.conn);
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
                    shared.health.set(Some(e.to_string()));
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
/// A transaction's inserts so far: their roll-up, and the storage failure that stops them.
#[derive(Default)]
struct Inserts {
    rollup: usage::RollUp,
    failure: Option<rusqlite::Error>,
}

impl Inserts {
    fn add(&mut self, tx: &Transaction<'_>, row: &UsageRow, numbers: &mut usage::Numbers) {
        if self.failure.is_some() {
            return;
        }
        match usage::insert(tx, row, &mut self.rollup, numbers) {
            Err(e) if is_storage_failure(&e) => self.failure = Some(e),
            Err(e) => tracing::error!(error = %e, "could not store a usage record"),
            Ok(()) => {}
        }
    }

    /// Adds the rows so far to the roll-up tables.
    fn roll_up(&mut self, tx: &Transaction<'_>) {
        if self.failure.is_none() {
            self.failure = roll_up(tx, &mut self.rollup).err();
        }
    }
}

fn commit(
    db: &mut Db,
    batch: &mut Vec<Message>,
    pending: &mut Vec<UsageRow>,
) -> Result<(), rusqlite::Error> {
    let mut acks: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    let mut rows = Vec::new();
    let Db { conn, numbers } = db;
    let result = (|| {
        // Immediate: the write lock is taken at BEGIN, where a busy database is waited for. A
        // deferred transaction that reads first (a budget's record number) and then finds the
        // lock held fails at once: SQLite cannot wait on an upgrade without risking deadlock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut inserts = Inserts::default();
        for row in pending.iter() {
            inserts.add(&tx, row, numbers);
        }
        for m in batch.drain(..) {
            match m {
                Message::Usage(row, ack) => {
                    acks.extend(ack);
                    inserts.add(&tx, &row, numbers);
                    rows.push(row);
                }
                // A job sees the totals of the rows before it (it may delete their budget).
                // After a failure the job still runs, and is told it was not saved.
                Message::Run(job) => {
                    inserts.roll_up(&tx);
                    dones.push(isolated(&tx, job));
                    // A job may delete records; the numbers are read again.
                    numbers.forget();
                }
            }
        }
        inserts.roll_up(&tx);
        if let Some(e) = inserts.failure {
            return Err(e); // dropping `tx` rolls back
        }
        tx.commit()
    })();
    let committed = result.is_ok();
    if committed {
        pending.clear();
    } else {
        numbers.forget();
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

/// Adds the rows so far to the daily totals; only a storage failure fails the batch.
fn roll_up(tx: &Transaction<'_>, rollup: &mut usage::RollUp) -> Result<(), rusqlite::Error> {
    match std::mem::take(rollup).write(tx) {
        Err(e) if is_storage_failure(&e) => Err(e),
        Err(e) => {
            tracing::error!(error = %e, "could not add usage records to the daily totals");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
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

/// Commits one record on the calling thread, never waiting for a lock: a locked database is
/// for the writer thread to wait on (and to report), not the runtime's thread.
fn commit_one(db: &mut Db, row: &UsageRow) -> rusqlite::Result<()> {
    let Db { conn, numbers } = db;
    conn.busy_timeout(std::time::Duration::ZERO)?;
    let result = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .and_then(|tx| {
            let mut rollup = usage::RollUp::default();
            usage::insert(&tx, row, &mut rollup, numbers)?;
            rollup.write(&tx)?;
            tx.commit()
        });
    if result.is_err() {
        numbers.forget();
    }
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    result
}

/// Most messages queued for the writer before new requests are refused (fail closed, like a
/// failing database): the channel cannot grow without bound while the disk stalls.
pub const MAX_QUEUED: usize = 100_000;

impl Writer {
    /// Why new requests should wait, if the writer is this far behind.
    pub fn overloaded(&self) -> Option<String> {
        let n = self.shared.queued.load(Ordering::Acquire);
        (n > MAX_QUEUED).then(|| format!("{n} usage records are waiting to be written"))
    }

    /// Queues a message; false if the writer thread is gone.
    fn send(&self, m: Message) -> bool {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(m).is_ok()
    }

    /// Queues a usage record; the receiver says `true` once it is committed.
    pub fn record(&self, row: UsageRow) -> oneshot::Receiver<bool> {
        let (ack, rx) = oneshot::channel();
        let _ = self.send(Message::Usage(row, Some(ack)));
        rx
    }

    /// Messages waiting for the writer thread.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// The histogram of commit times, to register with the metrics.
    pub fn commit_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.shared.commits.clone()
    }

    /// Saves a usage record: `None` when it is already committed, else the writer's answer to
    /// come. `alone` says no other request is in flight: then, if the writer has nothing to
    /// do, the record is committed here, on the caller's thread. Otherwise, or if that fails,
    /// it joins the writer's next batch, so that under load records share commits and a
    /// failing database is handled in one place.
    pub fn start_save(&self, row: UsageRow, alone: bool) -> Option<oneshot::Receiver<bool>> {
        if alone && self.commit_here(&row) {
            return None;
        }
        Some(self.record(row))
    }

    fn commit_here(&self, row: &UsageRow) -> bool {
        let s = &self.shared;
        if s.queued.load(Ordering::Acquire) != 0
            || s.health.failure().is_some()
            || s.checkpointer.wal_restarts_next()
        {
            return false;
        }
        let Ok(mut db) = s.db.try_lock() else {
            return false;
        };
        let started = std::time::Instant::now();
        let committed = commit_one(&mut db, row);
        s.commits.observe(started.elapsed().as_secs_f64());
        match committed {
            Ok(()) => {
                s.checkpointer.committed();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "usage record left to the writer thread");
                false
            }
        }
    }

    /// Queues a usage record without waiting for it (used from `Drop`, which cannot wait).
    pub fn record_detached(&self, row: UsageRow) {
        let _ = self.send(Message::Usage(row, None));
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
        if !self.send(Message::Run(job)) {
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests;
