//! The single writer: a thread that owns the write connection and commits whatever has
//! queued up in one transaction, then tells each waiter its change is durable.

use super::StoreError;
use super::checkpoint::Checkpointer;
use super::usage::{self, UsageRow};
use rusqlite::{Connection, Transaction};
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

pub(super) fn start(conn: Connection, checkpointer: Checkpointer) -> (Writer, Handle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("agent-budget-writer".into())
        .spawn(move || run(conn, rx, checkpointer))
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

fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Message>, checkpointer: Checkpointer) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = next(&mut rx) {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if commit(&mut conn, &mut batch) {
            checkpointer.wal_grew();
            checkpointer.restart_if_due(&conn);
        }
    }
}

/// Commits the batch and answers its waiters; returns whether it committed.
fn commit(conn: &mut Connection, batch: &mut Vec<Message>) -> bool {
    let mut acks: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    let committed = match conn.transaction() {
        Ok(tx) => {
            for m in batch.drain(..) {
                match m {
                    Message::Usage(row, ack) => {
                        if let Err(e) = usage::insert(&tx, &row) {
                            tracing::error!(error = %e, "could not store a usage record");
                        }
                        acks.extend(ack);
                    }
                    Message::Run(job) => dones.push(isolated(&tx, job)),
                }
            }
            match tx.commit() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "could not commit to the database");
                    false
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start a database transaction");
            batch.clear();
            false
        }
    };
    for a in acks {
        let _ = a.send(committed);
    }
    for d in dones {
        d(committed);
    }
    committed
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
