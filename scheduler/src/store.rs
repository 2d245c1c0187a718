//! The data layer: task events, states, committed results and checkpoints in SQLite
//! (rusqlite, WAL journal).
//!
//! Each batch of [`Event`]s is written in one transaction: the event log, the task table
//! (spec, state, failures) and, for a commit, the result. `results.task` is the primary key,
//! so a result can be committed only once; replaying the task table after a restart gives
//! back every committed result and re-queues every task that was not done. In WAL mode with
//! `synchronous = NORMAL` a committed transaction survives the death of the process (SIGKILL);
//! `synchronous = FULL` ([`Store::open_durable`]) also survives power loss.

use crate::error::{Error, Result};
use crate::scheduler::{Event, Scheduler};
use crate::task::{TaskId, TaskSpec};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::Path;

/// A connection to the store.
pub struct Store {
    conn: Connection,
}

/// What a replay restored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Tasks queued again (they were queued or running).
    pub requeued: usize,
    /// Tasks already done.
    pub done: usize,
    /// Tasks that had failed for good.
    pub failed: usize,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events(task);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS results (
    task INTEGER PRIMARY KEY,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job TEXT NOT NULL,
    step INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job, step)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

fn kind(e: &Event) -> (&'static str, TaskId) {
    match e {
        Event::Submitted { task, .. } => ("submitted", *task),
        Event::Dispatched { task, .. } => ("dispatched", *task),
        Event::Returned { task, .. } => ("returned", *task),
        Event::Retry { task, .. } => ("retry", *task),
        Event::Reassigned { task, .. } => ("reassigned", *task),
        Event::Committed { task, .. } => ("committed", *task),
        Event::Exception { task, .. } => ("exception", *task),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        what: what.into(),
        source,
    })
}

impl Store {
    /// Open (or create) the store at `path`: WAL, `synchronous = NORMAL`.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, "NORMAL")
    }

    /// Open with `synchronous = FULL`: every commit is on disk before it returns.
    pub fn open_durable(path: &Path) -> Result<Store> {
        Store::open_with(path, "FULL")
    }

    fn open_with(path: &Path, sync: &str) -> Result<Store> {
        let conn = Connection::open(path)
            .map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", sync)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// A store in memory (tests).
    pub fn in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Write a batch of events in one transaction.
    pub fn append(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut log =
                tx.prepare_cached("INSERT INTO events (task, kind, body) VALUES (?1, ?2, ?3)")?;
            for e in events {
                let (k, task) = kind(e);
                log.execute(params![task as i64, k, json(e)])?;
                match e {
                    Event::Submitted { task, spec } => {
                        tx.prepare_cached(
                            "INSERT INTO tasks (id, spec, state) VALUES (?1, ?2, 'queued')",
                        )?
                        .execute(params![*task as i64, json(spec)])?;
                    }
                    Event::Dispatched { task, .. } => {
                        tx.prepare_cached(
                            "UPDATE tasks SET state = 'running' WHERE id = ?1 AND state = 'queued'",
                        )?
                        .execute(params![*task as i64])?;
                    }
                    Event::Retry { task, failures, .. } => {
                        tx.prepare_cached("UPDATE tasks SET failures = ?2 WHERE id = ?1")?
                            .execute(params![*task as i64, *failures as i64])?;
                    }
                    Event::Committed { task, result } => {
                        tx.prepare_cached("INSERT INTO results (task, result) VALUES (?1, ?2)")?
                            .execute(params![*task as i64, json(result)])
                            .map_err(|e| Error::Store(format!("committing task {task}: {e}")))?;
                        tx.prepare_cached("UPDATE tasks SET state = 'done' WHERE id = ?1")?
                            .execute(params![*task as i64])?;
                    }
                    Event::Exception { task, reason } => {
                        tx.prepare_cached(
                            "UPDATE tasks SET state = 'failed', reason = ?2 WHERE id = ?1",
                        )?
                        .execute(params![*task as i64, reason])?;
                    }
                    Event::Returned { .. } | Event::Reassigned { .. } => {}
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rebuild `sched` from the task table: done and failed tasks as they were, every other
    /// task queued again with its failures so far.
    pub fn replay(&self, sched: &mut Scheduler) -> Result<Replayed> {
        let mut st = self.conn.prepare(
            "SELECT t.id, t.spec, t.state, t.failures, t.reason, r.result
             FROM tasks t LEFT JOIN results r ON r.task = t.id ORDER BY t.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut out = Replayed::default();
        for row in rows {
            let (id, spec, state, failures, reason, result) = row?;
            let id = id as TaskId;
            let spec: TaskSpec = parse(&format!("task {id}'s spec"), &spec)?;
            match (state.as_str(), result) {
                ("done", Some(r)) => {
                    sched.restore_done(id, spec, parse(&format!("task {id}'s result"), &r)?);
                    out.done += 1;
                }
                ("failed", _) => {
                    sched.restore_failed(id, spec, reason.unwrap_or_default());
                    out.failed += 1;
                }
                _ => {
                    sched.restore(id, spec, failures as u32);
                    out.requeued += 1;
                }
            }
        }
        tracing::info!(
            requeued = out.requeued,
            done = out.done,
            failed = out.failed,
            "replayed the task log"
        );
        Ok(out)
    }

    /// The committed result of `task`.
    pub fn result(&self, task: TaskId) -> Result<Option<Value>> {
        let r: Option<String> = self
            .conn
            .query_row(
                "SELECT result FROM results WHERE task = ?1",
                [task as i64],
                |r| r.get(0),
            )
            .optional()?;
        r.map(|t| parse("a result", &t)).transpose()
    }

    /// Every committed result, by task.
    pub fn results(&self) -> Result<Vec<(TaskId, Value)>> {
        let mut st = self
            .conn
            .prepare("SELECT task, result FROM results ORDER BY task")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (t, v) = row?;
            Ok((t as TaskId, parse("a result", &v)?))
        })
        .collect()
    }

    /// How many events of `kind` the log holds for each task.
    pub fn event_counts(&self, kind: &str) -> Result<Vec<(TaskId, u64)>> {
        let mut st = self.conn.prepare(
            "SELECT task, COUNT(*) FROM events WHERE kind = ?1 GROUP BY task ORDER BY task",
        )?;
        let rows = st.query_map([kind], |r| {
            Ok((r.get::<_, i64>(0)? as TaskId, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Tasks dispatched again after their commit (must be none).
    pub fn dispatched_after_commit(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM events d JOIN events c ON c.task = d.task
             WHERE c.kind = 'committed' AND d.kind = 'dispatched' AND d.seq > c.seq",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Save a checkpoint of `job` at `step`.
    pub fn put_checkpoint(&mut self, job: &str, step: u64, data: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO checkpoints (job, step, data) VALUES (?1, ?2, ?3)",
            params![job, step as i64, data],
        )?;
        Ok(())
    }

    /// The latest checkpoint of `job`: (step, data).
    pub fn latest_checkpoint(&self, job: &str) -> Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT step, data FROM checkpoints WHERE job = ?1 ORDER BY step DESC LIMIT 1",
                [job],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?)
    }

    /// The checkpoint of `job` at exactly `step`.
    pub fn checkpoint_at(&self, job: &str, step: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT data FROM checkpoints WHERE job = ?1 AND step = ?2",
                params![job, step as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Set a metadata value.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }
}
