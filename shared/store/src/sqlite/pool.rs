//! The writer thread with group commit, and the pool of read connections.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::{SqliteSettings, connect, sql_error};
use crate::StoreError;
use crate::sql::raise;

/// Jobs that may wait for the writer, per job it commits at most: past that, writers wait to queue.
const QUEUE_PER_GROUP: usize = 4;

/// How a job's run ended.
pub(crate) enum Ran {
    /// It failed: its savepoint is rolled back.
    Failed,
    /// It succeeded and its writes are kept; the position of the last event it wrote, if it wrote any.
    Kept(Option<u64>),
}

/// One write: runs inside its own savepoint, then answers once the group's fate is known.
pub(crate) trait WriteJob: Send {
    /// Runs the job.
    fn run(&mut self, conn: &Connection) -> Ran;

    /// Sends the answer: the job's own outcome if the group committed (or the job failed by
    /// itself), `commit`'s error otherwise.
    fn answer(self: Box<Self>, commit: Result<(), &StoreError>);
}

/// A job computing a `T`, answered on a oneshot channel.
struct Typed<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    /// The last event position a successful outcome stands for (only an append's does).
    position: fn(&T) -> Option<u64>,
}

impl<T, F> WriteJob for Typed<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> Ran {
        let outcome = match self.work.take() {
            // A panicking job fails alone, like any failing job: its savepoint is rolled back and the
            // writer thread goes on with the rest of the group.
            Some(work) => std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(StoreError::Unavailable("a sqlite write job panicked".to_owned()))),
            None => Err(StoreError::Unavailable("sqlite write job ran twice".to_owned())),
        };
        let ran = match &outcome {
            Ok(value) => Ran::Kept((self.position)(value)),
            Err(_) => Ran::Failed,
        };
        self.outcome = Some(outcome);
        ran
    }

    fn answer(self: Box<Self>, commit: Result<(), &StoreError>) {
        let this = *self;
        let answer = match (this.outcome, commit) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (Some(Ok(_)), Err(e)) => Err(StoreError::Unavailable(format!("sqlite commit failed: {e}"))),
            (None, Err(e)) => Err(StoreError::Unavailable(format!("sqlite write not run: {e}"))),
            (None, Ok(())) => Err(StoreError::Unavailable("sqlite write not run".to_owned())),
        };
        // The caller may have stopped waiting; the write stands either way.
        let _ = this.reply.send(answer);
    }
}

/// What the writer thread and the async side share.
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
}

/// The handle to the writer thread: queues jobs, and stops and joins the thread when dropped.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    head: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("commits", &self.commits())
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread over `conn`, the only write connection; the feed head starts at
    /// `head`.
    pub(crate) fn start(conn: Connection, group_max: usize, head: u64) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel(group_max.saturating_mul(QUEUE_PER_GROUP));
        let counters = Arc::new(Counters::default());
        let head = Arc::new(watch::Sender::new(head));
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn({
                let counters = counters.clone();
                let head = head.clone();
                move || run(conn, queue, group_max, &counters, &head)
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sqlite writer: {e}")))?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), counters, head })
    }

    /// Runs `work` in the next group and answers once that group is committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit_typed(work, |_| None).await
    }

    /// [`Writer::write`] for a job that appends events: it answers the position of the last event it
    /// wrote, which the feed head moves to once the group is committed.
    pub(crate) async fn write_events<F>(&self, work: F) -> Result<u64, StoreError>
    where
        F: FnOnce(&Connection) -> Result<u64, StoreError> + Send + 'static,
    {
        self.submit_typed(work, |position| Some(*position)).await
    }

    async fn submit_typed<T, F>(&self, work: F, position: fn(&T) -> Option<u64>) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(Typed { work: Some(work), outcome: None, reply, position })).await?;
        answer.await.map_err(|_| StoreError::Unavailable("the sqlite writer stopped".to_owned()))?
    }

    pub(crate) async fn submit(&self, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job).await.map_err(|_| stopped())
    }

    /// Jobs waiting for the writer (for tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.jobs.as_ref().map_or(0, |j| j.max_capacity() - j.capacity())
    }

    pub(crate) fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    pub(crate) fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the sqlite writer stopped".to_owned())
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what it holds.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // A writer that panicked has nothing left to flush.
            let _ = thread.join();
        }
    }
}

/// The writer thread: a group per loop, until every handle is gone.
fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Box<dyn WriteJob>>,
    group_max: usize,
    counters: &Counters,
    head: &watch::Sender<u64>,
) {
    let mut group: Vec<Box<dyn WriteJob>> = Vec::with_capacity(group_max);
    // Blocks for the first job, then takes every job already waiting, up to `group_max`; 0 once
    // every sender is gone and the queue is drained.
    while queue.blocking_recv_many(&mut group, group_max) > 0 {
        let outcome = commit_group(&mut conn, &mut group);
        if let Ok(last) = &outcome {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(position) = *last {
                raise(head, position);
            }
        }
        for job in group.drain(..) {
            job.answer(outcome.as_ref().map(|_| ()));
        }
    }
}

/// Runs `group` in one transaction, each job in its own savepoint, and commits; returns the highest
/// event position a kept job wrote, if any wrote events. Any failure outside a job's own work (a savepoint that
/// cannot be rolled back, a transaction SQLite rolled back by itself, a failed commit) fails the group.
fn commit_group(conn: &mut Connection, group: &mut [Box<dyn WriteJob>]) -> Result<Option<u64>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sql_error(&e))?;
    let mut last: Option<u64> = None;
    for job in group.iter_mut() {
        step(&tx, SAVEPOINT)?;
        if let Ran::Kept(position) = job.run(&tx) {
            step(&tx, RELEASE)?;
            last = last.max(position);
        } else {
            // A failed statement may have ended the whole transaction (a full disk, an I/O error):
            // then there is no savepoint to roll back to and the group cannot commit.
            if tx.is_autocommit() {
                return Err(StoreError::Unavailable(
                    "sqlite rolled the transaction back after a failed write".to_owned(),
                ));
            }
            step(&tx, ROLLBACK_TO)?;
            step(&tx, RELEASE)?;
        }
    }
    tx.commit().map_err(|e| sql_error(&e))?;
    Ok(last)
}

/// Each job's savepoint. The three statements are prepared once and kept (a savepoint's name is
/// part of its SQL, so it is the same name every time; jobs never nest).
const SAVEPOINT: &str = "SAVEPOINT job";
const RELEASE: &str = "RELEASE job";
const ROLLBACK_TO: &str = "ROLLBACK TO job";

fn step(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
    statement.execute([]).map(|_| ()).map_err(|e| sql_error(&e))
}

/// Read connections, each used by one blocking task at a time.
#[derive(Debug)]
pub(crate) struct Readers {
    shared: Arc<ReadersShared>,
}

#[derive(Debug)]
struct ReadersShared {
    settings: SqliteSettings,
    idle: Mutex<Vec<ConnectionBox>>,
    permits: Arc<Semaphore>,
}

/// A connection in the pool (`Connection` has no `Debug` worth printing).
struct ConnectionBox(Connection);

impl std::fmt::Debug for ConnectionBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded list is valid whatever a panicking holder was doing.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn reader(settings: &SqliteSettings) -> Result<ConnectionBox, StoreError> {
    let conn = connect(settings)?;
    conn.pragma_update(None, "query_only", "ON").map_err(|e| sql_error(&e))?;
    Ok(ConnectionBox(conn))
}

impl Readers {
    /// Opens `settings.readers` read connections.
    pub(crate) fn open(settings: SqliteSettings) -> Result<Self, StoreError> {
        let idle = (0..settings.readers).map(|_| reader(&settings)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            shared: Arc::new(ReadersShared {
                permits: Arc::new(Semaphore::new(settings.readers)),
                settings,
                idle: Mutex::new(idle),
            }),
        })
    }

    /// Runs a point read (a row or a few, found through a key): in place on the calling thread when
    /// a read connection is idle at once, else as [`Readers::read`] does. Such a read takes a few
    /// microseconds, less than handing it to the blocking pool and back; a read that may walk many
    /// rows goes through [`Readers::read`], so it never holds an async worker.
    pub(crate) async fn lookup<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Ok(permit) = self.shared.permits.clone().try_acquire_owned() else {
            return self.read(work).await;
        };
        let Some(conn) = lock(&self.shared.idle).pop() else {
            // Only a read that panicked holding a connection leaves a permit without one.
            drop(permit);
            return self.read(work).await;
        };
        let result = work(&conn.0);
        lock(&self.shared.idle).push(conn);
        drop(permit);
        result
    }

    /// Runs `work` on a read connection on the blocking pool.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the sqlite readers are closed".to_owned()))?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A permit guarantees an idle connection, unless a panicking read took one with it: then
            // a new one replaces it.
            let conn = match lock(&shared.idle).pop() {
                Some(conn) => conn,
                None => reader(&shared.settings)?,
            };
            let result = work(&conn.0);
            lock(&shared.idle).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite read task failed: {e}")))?
    }
}
