//! Durable Raft storage: the vote, the log and the state machine of one node, in one redb file.
//!
//! Why fsync before acknowledging: Raft is only safe if a node never forgets what it promised.
//! A node that grants its vote in term T, crashes before the vote reaches the disk and restarts
//! can vote again in term T for another candidate: two leaders in one term, so two boxes holding
//! the VIP. The same goes for log entries: the leader counts an acknowledged entry towards a
//! quorum, so an entry that a restart loses can un-commit. Every write here therefore commits its
//! redb transaction with `Durability::Immediate` (fsync before `commit` returns), and `append`
//! tells openraft the entries are flushed only after that commit returned.
//!
//! Why redb: pure Rust (no C toolchain, no background threads), one file, ACID transactions
//! whose commit slots are checksummed, so a torn write falls back to the last good commit and a
//! damaged file is an error instead of an empty database. It takes an exclusive lock on the file,
//! so a second daemon on the same data dir is refused. The data is tiny (a handful of entries, a
//! vote, a map of maintenance flags), so a B-tree in one file is plenty.
//!
//! Layout of `data_dir/raft.redb`:
//! - table `meta`: `identity` (cluster, node id, format version), `vote`, `committed`,
//!   `last_purged`, `removed` (the leader that removed this node from the cluster), all JSON;
//! - table `log`: log index → JSON [`Entry`];
//! - table `state_machine`: `applied` (last applied log id, last membership, [`ClusterState`]),
//!   `snapshot_meta` and `snapshot_data` (the current snapshot).
//!
//! A new file is first written as `raft.redb.new` with its identity and then renamed into place,
//! so a `raft.redb` without an identity was never a complete raftvip database and is refused.
//!
//! redb calls block (they fsync), so the trait implementations run them on tokio's blocking pool
//! rather than stalling the runtime thread that also drives heartbeats.

use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    StorageIOError,
};
use redb::{Database, DatabaseError, Durability, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::typ::{
    Entry, ErrorSubject, LogFlushed, LogId, LogState, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig, Vote,
};
use super::{ClusterState, NodeId, Response};

/// The database file inside the data dir.
pub const DB_FILE: &str = "raft.redb";
/// Where a new database is prepared before it is renamed to [`DB_FILE`]; a leftover is an
/// interrupted first start and never holds anything acknowledged, so it is discarded.
const NEW_DB_FILE: &str = "raft.redb.new";
/// Version of the on-disk layout described in the module doc. Bump it on any incompatible
/// change: a file with an unknown version is refused instead of being misread.
pub const FORMAT_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");

const KEY_IDENTITY: &str = "identity";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_REMOVED: &str = "removed";
const KEY_APPLIED: &str = "applied";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";

/// A failure inside the store: redb, (de)serialization, or file system.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Boxed: `redb::Error` is large and would bloat every `Result` in this file.
    #[error(transparent)]
    Redb(Box<redb::Error>),
    #[error("stored value is not valid JSON for its type: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

macro_rules! redb_into_db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(Box::new(e.into()))
            }
        }
    )*};
}
redb_into_db_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why [`open`] failed. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error("cannot create data dir {path}: {source}")]
    CreateDataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is locked by another process: another raftvip is running with this data_dir? \
         Stop it, or give this instance its own data_dir"
    )]
    Locked {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    #[error(
        "{path} is not a readable raftvip database ({source}). Refusing to reset it: that would \
         make this node forget its vote and log. Move the file aside (keep it for inspection) and \
         restart; the node then starts empty and the leader sends it the log again"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    #[error("cannot open {path}: {source}")]
    OpenDatabase {
        path: PathBuf,
        #[source]
        source: DatabaseError,
    },
    #[error("cannot create a new Raft database at {path}: {source}")]
    Initialize {
        path: PathBuf,
        #[source]
        source: DbError,
    },
    #[error(
        "{path} is a redb database without a raftvip identity: not written by raftvip, or \
         damaged. Refusing to use it; move it aside and restart to start this node empty"
    )]
    MissingIdentity { path: PathBuf },
    #[error(
        "{path} has storage format version {found}, this raftvip reads only version {expected}: \
         it was written by another raftvip version. Run a matching version, or remove the data \
         dir if this node may start empty"
    )]
    UnknownFormat {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error(
        "{path} belongs to cluster {found_cluster:?} node {found_node_id}, but this node is \
         configured as cluster {expected_cluster:?} node {expected_node_id}. If the config is \
         wrong, fix it; if this node really changed identity, remove the data dir {} and restart",
        path.parent().unwrap_or(path).display()
    )]
    ForeignIdentity {
        path: PathBuf,
        expected_cluster: String,
        expected_node_id: NodeId,
        found_cluster: String,
        found_node_id: NodeId,
    },
    #[error("cannot read the stored {what} from {path}: {source}")]
    Read {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: DbError,
    },
}

/// Who a database belongs to, written once when the file is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    format: u32,
    cluster: String,
    node_id: NodeId,
}

/// What the state machine has applied; persisted as one value so it is always consistent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: ClusterState,
}

/// Opens (or creates) `data_dir/raft.redb` for `node_id` of `cluster`.
///
/// Refuses, with an error saying how to fix it, a file of another cluster or node, of an
/// unknown format version, a damaged file, and a file another process has open.
pub fn open(
    data_dir: &Path,
    cluster: &str,
    node_id: NodeId,
) -> Result<(LogStore, StateMachine), OpenStoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OpenStoreError::CreateDataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let expected = Identity {
        format: FORMAT_VERSION,
        cluster: cluster.to_owned(),
        node_id,
    };

    // A link whose target is gone is a file lost, not a fresh node: creating a database would
    // replace the link and forget this node's vote and log without a word.
    if path.is_symlink() && !path.exists() {
        return Err(OpenStoreError::OpenDatabase {
            path: path.clone(),
            source: DatabaseError::Storage(redb::StorageError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                "it is a symbolic link to a file that does not exist: restore the file, or \
                 remove the link to start this node empty",
            ))),
        });
    }
    let exists = path
        .try_exists()
        .map_err(|e| OpenStoreError::OpenDatabase {
            path: path.clone(),
            source: DatabaseError::Storage(redb::StorageError::Io(e)),
        })?;
    if !exists {
        create_new(data_dir, &expected).map_err(|source| OpenStoreError::Initialize {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), cluster, node_id, "created a new Raft database");
    }

    // redb starts repairing a damaged file before it gives up on it. A refused file is the
    // operator's evidence: it is put back as it was (the store is small; the copy is cheap).
    let before = std::fs::read(&path).ok();
    // redb asserts instead of returning an error on some damaged files (a truncated one, for
    // instance): a panic while opening or reading is reported as corruption too, and only so
    // (the panic hook's report with its backtrace would read as a crash of raftvip).
    let opened = quietly(|| open_existing(&path, &expected)).unwrap_or_else(|message| {
        Err(OpenStoreError::Corrupt {
            path: path.clone(),
            source: DatabaseError::Storage(redb::StorageError::Corrupted(format!(
                "redb panicked while opening: {message}"
            ))),
        })
    });
    if let (Err(refused), Some(before)) = (&opened, &before) {
        // Locked: another raftvip owns the file; never write to it.
        if !matches!(refused, OpenStoreError::Locked { .. })
            && std::fs::read(&path).ok().as_ref() != Some(before)
        {
            match std::fs::write(&path, before) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "put the refused database back as it was")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot put the refused database back as it was")
                }
            }
        }
    }
    let (db, applied) = opened?;
    let db = Arc::new(db);
    let (tx, _) = watch::channel(applied.state.clone());
    Ok((
        LogStore { db: db.clone() },
        StateMachine {
            db,
            applied,
            tx,
            created_at_open: !exists,
        },
    ))
}

/// Runs `f` at start-up, before any other thread, turning a panic into its message without
/// the panic hook's report.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic")
            .to_owned()
    })
}

/// Opens an existing database and reads what the state machine needs, after checking that the
/// file is this node's. Every log entry is read once here: a damaged page found now is a
/// refused file with advice, found later by openraft it would be a panic in the daemon.
fn open_existing(path: &Path, expected: &Identity) -> Result<(Database, Applied), OpenStoreError> {
    let db = Database::builder()
        .open(path)
        .map_err(|e| classify_open_error(path, e))?;
    check_identity(&db, path, expected)?;
    read_whole_log(&db).map_err(|e| OpenStoreError::Corrupt {
        path: path.to_path_buf(),
        source: DatabaseError::Storage(redb::StorageError::Corrupted(format!(
            "its log cannot be read: {e}"
        ))),
    })?;
    let applied: Applied = read_value(&db, SM, KEY_APPLIED)
        .map_err(|source| OpenStoreError::Read {
            path: path.to_path_buf(),
            what: "state machine",
            source,
        })?
        .unwrap_or_default();
    Ok((db, applied))
}

/// Prepares a database holding only `identity` and empty tables, then renames it to
/// [`DB_FILE`], so that file never exists without an identity.
fn create_new(data_dir: &Path, identity: &Identity) -> Result<(), DbError> {
    let tmp = data_dir.join(NEW_DB_FILE);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::warn!(path = %tmp.display(), "removed a leftover of an interrupted first start")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    {
        let db = Database::builder().create(&tmp)?;
        let txn = begin_durable_write(&db)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_IDENTITY, serde_json::to_vec(identity)?.as_slice())?;
            txn.open_table(LOG)?;
            txn.open_table(SM)?;
        }
        txn.commit()?;
    }
    std::fs::rename(&tmp, data_dir.join(DB_FILE))?;
    // The rename itself must be durable, or a crash could bring back an empty data dir.
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

fn classify_open_error(path: &Path, e: DatabaseError) -> OpenStoreError {
    let path = path.to_path_buf();
    match &e {
        DatabaseError::DatabaseAlreadyOpen => OpenStoreError::Locked { path, source: e },
        DatabaseError::Storage(redb::StorageError::Corrupted(_))
        | DatabaseError::RepairAborted
        | DatabaseError::UpgradeRequired(_) => OpenStoreError::Corrupt { path, source: e },
        // redb reports a missing magic number (and an empty file) as InvalidData, and reading
        // past the end of a truncated file as UnexpectedEof.
        DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            OpenStoreError::Corrupt { path, source: e }
        }
        _ => OpenStoreError::OpenDatabase { path, source: e },
    }
}

fn check_identity(db: &Database, path: &Path, expected: &Identity) -> Result<(), OpenStoreError> {
    let read_err = |source: DbError| OpenStoreError::Read {
        path: path.to_path_buf(),
        what: "identity",
        source,
    };
    let raw: Option<serde_json::Value> = match read_value(db, META, KEY_IDENTITY) {
        Ok(v) => v,
        // A redb file without our tables was not created by raftvip.
        Err(DbError::Redb(e)) if matches!(*e, redb::Error::TableDoesNotExist(_)) => None,
        Err(e) => return Err(read_err(e)),
    };
    let Some(raw) = raw else {
        return Err(OpenStoreError::MissingIdentity {
            path: path.to_path_buf(),
        });
    };
    // Check the version before the rest: another version may lay the rest out differently.
    let found_format = raw.get("format").and_then(serde_json::Value::as_u64);
    if found_format != Some(u64::from(expected.format)) {
        return Err(OpenStoreError::UnknownFormat {
            path: path.to_path_buf(),
            expected: expected.format,
            found: found_format
                .and_then(|f| u32::try_from(f).ok())
                .unwrap_or(u32::MAX),
        });
    }
    let found: Identity = serde_json::from_value(raw).map_err(|e| read_err(e.into()))?;
    if found != *expected {
        return Err(OpenStoreError::ForeignIdentity {
            path: path.to_path_buf(),
            expected_cluster: expected.cluster.clone(),
            expected_node_id: expected.node_id,
            found_cluster: found.cluster,
            found_node_id: found.node_id,
        });
    }
    Ok(())
}

/// A write transaction that fsyncs on commit. `Immediate` is redb's default; it is spelled out
/// because Raft's safety depends on it (see the module doc).
fn begin_durable_write(db: &Database) -> Result<WriteTransaction, DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    Ok(txn)
}

fn read_value<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<T>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    get_json(&table, key)
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, DbError> {
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Writes `values` (key, JSON bytes) into `table` in one durable transaction.
fn write_values(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    values: &[(&str, &[u8])],
) -> Result<(), DbError> {
    let txn = begin_durable_write(db)?;
    {
        let mut t = txn.open_table(table)?;
        for (k, v) in values {
            t.insert(*k, *v)?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn storage_error(
    subject: ErrorSubject,
    verb: ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

/// Runs blocking redb work on tokio's blocking pool.
async fn blocking<T, F>(subject: ErrorSubject, verb: ErrorVerb, f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(storage_error(subject, verb, &e)),
        Err(join) => Err(storage_error(subject, verb, &join)),
    }
}

/// The vote and the log. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The id of the last log entry, read at once (one small read transaction): what a
    /// pre-vote compares, since openraft's metrics give the last index but not its term.
    pub fn last_log_id(&self) -> Result<Option<LogId>, DbError> {
        Ok(read_log_state(&self.db)?.last_log_id)
    }

    /// This node's vote, read at once: a handover names the leader's term from it.
    pub fn vote(&self) -> Result<Option<Vote>, DbError> {
        read_value(&self.db, META, KEY_VOTE)
    }

    /// The leader that removed this node from its cluster, if one did: a removal outlives a
    /// restart (the removed node may lack the log entry that removed it, so its own log
    /// could still list it as a voter).
    pub fn removed_by(&self) -> Result<Option<NodeId>, DbError> {
        read_value(&self.db, META, KEY_REMOVED)
    }

    /// Records, durably and on the blocking pool, that leader `by` removed this node.
    pub async fn mark_removed(&self, by: NodeId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Write, move || {
            let value = serde_json::to_vec(&by)?;
            write_values(&db, META, &[(KEY_REMOVED, &value)])
        })
        .await
    }
}

/// Reads and decodes every log entry and the log's bounds.
fn read_whole_log(db: &Database) -> Result<(), DbError> {
    read_log_state(db)?;
    let txn = db.begin_read()?;
    for item in txn.open_table(LOG)?.iter()? {
        let (_, v) = item?;
        let _: Entry = serde_json::from_slice(v.value())?;
    }
    Ok(())
}

fn read_log_state(db: &Database) -> Result<LogState, DbError> {
    let txn = db.begin_read()?;
    let last_purged: Option<LogId> = get_json(&txn.open_table(META)?, KEY_LAST_PURGED)?;
    let last_entry: Option<Entry> = match txn.open_table(LOG)?.last()? {
        Some((_, v)) => Some(serde_json::from_slice(v.value())?),
        None => None,
    };
    Ok(LogState {
        last_purged_log_id: last_purged,
        last_log_id: last_entry.map(|e| e.log_id).or(last_purged),
    })
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            let txn = db.begin_read()?;
            let log = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in log.range::<u64>(bounds)? {
                let (_, v) = item?;
                entries.push(serde_json::from_slice(v.value())?);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            read_log_state(&db)
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        let db = self.db.clone();
        blocking(ErrorSubject::Vote, ErrorVerb::Write, move || {
            write_values(&db, META, &[(KEY_VOTE, &bytes)])
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Vote, ErrorVerb::Read, move || {
            read_value(&db, META, KEY_VOTE)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&committed)
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let db = self.db.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Write, move || {
            write_values(&db, META, &[(KEY_COMMITTED, &bytes)])
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Read, move || {
            Ok(read_value::<Option<LogId>>(&db, META, KEY_COMMITTED)?.flatten())
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| {
                storage_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e)
            })?;
            rows.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Write, move || {
            let txn = begin_durable_write(&db)?;
            {
                let mut log = txn.open_table(LOG)?;
                for (index, bytes) in &rows {
                    log.insert(*index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await?;
        // Only now, with the commit fsynced, may openraft count these entries as stored.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            let txn = begin_durable_write(&db)?;
            txn.open_table(LOG)?
                .retain_in::<u64, _>(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            let txn = begin_durable_write(&db)?;
            {
                let mut meta = txn.open_table(META)?;
                let previous: Option<LogId> = get_json(&meta, KEY_LAST_PURGED)?;
                if previous.is_some_and(|p| p >= log_id) {
                    return Ok(());
                }
                meta.insert(KEY_LAST_PURGED, serde_json::to_vec(&log_id)?.as_slice())?;
                txn.open_table(LOG)?
                    .retain_in::<u64, _>(..=log_id.index, |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// The state machine: what the log has applied, and the current snapshot.
pub struct StateMachine {
    db: Arc<Database>,
    /// In-memory copy of what is persisted under `applied`; replaced only after a commit.
    applied: Applied,
    /// Publishes [`ClusterState`] to the rest of the daemon.
    tx: watch::Sender<ClusterState>,
    /// The database file did not exist before this open: any vote this node cast before (a
    /// wiped data_dir) is forgotten, see [`StateMachine::created_at_open`].
    created_at_open: bool,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("last_applied", &self.applied.last_applied)
            .field("state", &self.applied.state)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// The replicated [`ClusterState`]; it changes after an apply or a snapshot install changed
    /// it. Take it before the state machine is handed to openraft.
    pub fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.tx.subscribe()
    }

    /// True when this open created the database (a new node, or a wiped data_dir): the node
    /// cannot know whom it voted for in the current term, so the daemon withholds its vote for
    /// a while (docs/design.md, "Votes after a wiped data_dir").
    pub fn created_at_open(&self) -> bool {
        self.created_at_open
    }

    /// Persists `next` (and a snapshot with it, if given), then makes it current.
    async fn commit_applied(
        &mut self,
        next: Applied,
        snapshot: Option<(&SnapshotMeta, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let subject = match &snapshot {
            Some((meta, _)) => ErrorSubject::Snapshot(Some(meta.signature())),
            None => ErrorSubject::StateMachine,
        };
        let applied_bytes = serde_json::to_vec(&next)
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, &e))?;
        let snapshot = match snapshot {
            Some((meta, data)) => Some((
                serde_json::to_vec(meta)
                    .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, &e))?,
                data,
            )),
            None => None,
        };
        let db = self.db.clone();
        blocking(subject, ErrorVerb::Write, move || {
            let mut values: Vec<(&str, &[u8])> = vec![(KEY_APPLIED, &applied_bytes)];
            if let Some((meta, data)) = &snapshot {
                values.push((KEY_SNAPSHOT_META, meta));
                values.push((KEY_SNAPSHOT_DATA, data));
            }
            write_values(&db, SM, &values)
        })
        .await?;
        let state = next.state.clone();
        self.applied = next;
        self.tx.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut next = self.applied.clone();
        let mut responses = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(request) => next.state.apply(&request),
                EntryPayload::Membership(membership) => {
                    next.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::default()
                }
            };
            responses.push(response);
        }
        if responses.is_empty() {
            return Ok(responses);
        }
        self.commit_applied(next, None).await?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            applied: self.applied.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: ClusterState = serde_json::from_slice(&data).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &e,
            )
        })?;
        let next = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            state,
        };
        self.commit_applied(next, Some((meta, data))).await?;
        tracing::info!(snapshot = %meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let db = self.db.clone();
        blocking(ErrorSubject::Snapshot(None), ErrorVerb::Read, move || {
            let txn = db.begin_read()?;
            let sm = txn.open_table(SM)?;
            let Some(meta) = get_json::<SnapshotMeta>(&sm, KEY_SNAPSHOT_META)? else {
                return Ok(None);
            };
            let data = sm
                .get(KEY_SNAPSHOT_DATA)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
        })
        .await
    }
}

/// Builds a snapshot of the state as it was when openraft asked for the builder (openraft runs
/// it while the state machine keeps applying).
pub struct SnapshotBuilder {
    db: Arc<Database>,
    applied: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Unique per build, as openraft requires; the time suffix avoids persisting a counter.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let snapshot_id = match &self.applied.last_applied {
            Some(id) => format!("{}-{}-{nanos}", id.leader_id, id.index),
            None => format!("none-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.last_membership.clone(),
            snapshot_id,
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = serde_json::to_vec(&self.applied.state)
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, &e))?;
        let meta_bytes = serde_json::to_vec(&meta)
            .map_err(|e| storage_error(subject.clone(), ErrorVerb::Write, &e))?;
        let db = self.db.clone();
        let stored_data = data.clone();
        let last_log_id = meta.last_log_id;
        blocking(subject, ErrorVerb::Write, move || {
            let txn = begin_durable_write(&db)?;
            {
                let mut sm = txn.open_table(SM)?;
                // Never replace a newer snapshot (one installed while this one was built).
                let current: Option<SnapshotMeta> = get_json(&sm, KEY_SNAPSHOT_META)?;
                if current.is_some_and(|c| c.last_log_id > last_log_id) {
                    return Ok(());
                }
                sm.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())?;
                sm.insert(KEY_SNAPSHOT_DATA, stored_data.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};
    use tempfile::TempDir;

    use super::*;
    use crate::raft::Request;

    struct TempStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStoreBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir()
                .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            let (log, sm) = open(dir.path(), "suite", 0)
                .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, &e))?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        if let Err(e) = Suite::test_all(TempStoreBuilder) {
            panic!("openraft storage suite failed: {e}");
        }
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership(term: u64, index: u64, voters: &[NodeId]) -> Entry {
        let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], ())),
        }
    }

    fn maintenance(term: u64, index: u64, node_id: NodeId, on: bool) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Request::SetMaintenance { node_id, on }),
        }
    }

    fn as_json(entries: &[Entry]) -> serde_json::Value {
        serde_json::to_value(entries).unwrap()
    }

    fn expected_state() -> ClusterState {
        let mut state = ClusterState::default();
        state.maintenance.insert(2, true);
        state
    }

    #[tokio::test]
    async fn vote_log_and_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new_committed(4, 1);
        let entries = vec![
            blank(1, 1),
            membership(1, 2, &[1, 2, 3]),
            maintenance(1, 3, 2, true),
            maintenance(4, 4, 3, true),
            maintenance(4, 5, 3, false),
        ];
        let snapshot_meta = {
            let (mut log, mut sm) = open(dir.path(), "c", 1).unwrap();
            let rx = sm.subscribe();
            log.save_vote(&vote).await.unwrap();
            log.blocking_append(entries.clone()).await.unwrap();
            log.save_committed(Some(log_id(4, 5))).await.unwrap();
            let responses = sm.apply(entries.clone()).await.unwrap();
            assert_eq!(responses.len(), entries.len());
            assert_eq!(*rx.borrow(), expected_state());
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            log.purge(log_id(1, 2)).await.unwrap();
            snapshot.meta
        };

        let (mut log, mut sm) = open(dir.path(), "c", 1).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(4, 5)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(4, 5)));
        // What a pre-vote compares: the same end of the log, read at once.
        assert_eq!(log.last_log_id().unwrap(), Some(log_id(4, 5)));
        let stored = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(as_json(&stored), as_json(&entries[2..]));

        let (last_applied, last_membership) = sm.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(4, 5)));
        assert_eq!(last_membership.log_id(), &Some(log_id(1, 2)));
        assert_eq!(
            last_membership.membership().voter_ids().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(*sm.subscribe().borrow(), expected_state());

        let snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snapshot.meta, snapshot_meta);
        let data: ClusterState = serde_json::from_slice(snapshot.snapshot.get_ref()).unwrap();
        assert_eq!(data, expected_state());
    }

    #[tokio::test]
    async fn a_removal_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _sm) = open(dir.path(), "c", 4).unwrap();
            assert_eq!(log.removed_by().unwrap(), None);
            log.mark_removed(2).await.unwrap();
        }
        let (log, _sm) = open(dir.path(), "c", 4).unwrap();
        assert_eq!(log.removed_by().unwrap(), Some(2));
    }

    #[tokio::test]
    async fn installed_snapshot_survives_reopen() {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let (_leader_log, mut leader) = open(leader_dir.path(), "c", 1).unwrap();
        leader
            .apply(vec![membership(1, 1, &[1, 2]), maintenance(1, 2, 2, true)])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        {
            let (_log, mut follower) = open(follower_dir.path(), "c", 2).unwrap();
            let rx = follower.subscribe();
            let mut received = follower.begin_receiving_snapshot().await.unwrap();
            *received = *snapshot.snapshot;
            follower
                .install_snapshot(&snapshot.meta, received)
                .await
                .unwrap();
            assert_eq!(*rx.borrow(), expected_state());
        }

        let (_log, mut follower) = open(follower_dir.path(), "c", 2).unwrap();
        let (last_applied, last_membership) = follower.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(1, 2)));
        assert_eq!(last_membership, snapshot.meta.last_membership);
        assert_eq!(*follower.subscribe().borrow(), expected_state());
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
    }

    /// Opens and closes a fresh database, so `raft.redb` exists with identity "a"/1.
    fn create(dir: &TempDir) -> PathBuf {
        drop(open(dir.path(), "a", 1).unwrap());
        dir.path().join(DB_FILE)
    }

    fn assert_corrupt_and_untouched(dir: &TempDir, content: &[u8]) {
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, content).unwrap();
        let err = open(dir.path(), "a", 1).unwrap_err();
        assert!(
            matches!(err, OpenStoreError::Corrupt { .. }),
            "{} bytes: expected Corrupt, got {err:?}",
            content.len()
        );
        assert!(err.to_string().contains("Refusing to reset"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "file was modified");
    }

    #[test]
    fn garbage_file_is_corrupt_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = create(&dir);
        let garbage: Vec<u8> = b"not a redb file\n".repeat(1000);
        assert_corrupt_and_untouched(&dir, &garbage);

        let valid = {
            let dir = tempfile::tempdir().unwrap();
            std::fs::read(create(&dir)).unwrap()
        };
        // Truncated at several points, including inside the header and to nothing.
        for len in [0, 5, 100, valid.len() / 2] {
            assert_corrupt_and_untouched(&dir, &valid[..len]);
        }
        assert!(path.exists());
    }

    #[test]
    fn a_link_to_a_lost_database_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::os::unix::fs::symlink(dir.path().join("gone/raft.redb"), &path).unwrap();
        let err = open(dir.path(), "a", 1).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(path.is_symlink(), "the link was replaced");
    }

    #[test]
    fn foreign_identity_names_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        create(&dir);

        let err = open(dir.path(), "b", 1).unwrap_err();
        match &err {
            OpenStoreError::ForeignIdentity {
                expected_cluster,
                found_cluster,
                ..
            } => assert_eq!(
                (expected_cluster.as_str(), found_cluster.as_str()),
                ("b", "a")
            ),
            other => panic!("expected ForeignIdentity, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"a\"") && msg.contains("\"b\""), "{msg}");
        assert!(msg.contains("remove the data dir"), "{msg}");

        let err = open(dir.path(), "a", 2).unwrap_err();
        match &err {
            OpenStoreError::ForeignIdentity {
                expected_node_id,
                found_node_id,
                ..
            } => assert_eq!((*expected_node_id, *found_node_id), (2, 1)),
            other => panic!("expected ForeignIdentity, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("node 1") && msg.contains("node 2"), "{msg}");

        // The refused opens changed nothing.
        open(dir.path(), "a", 1).unwrap();
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = create(&dir);
        {
            let db = Database::open(&path).unwrap();
            let identity = br#"{"format":99,"cluster":"a","node_id":1}"#;
            write_values(&db, META, &[(KEY_IDENTITY, identity)]).unwrap();
        }
        match open(dir.path(), "a", 1).unwrap_err() {
            OpenStoreError::UnknownFormat {
                expected, found, ..
            } => assert_eq!((expected, found), (FORMAT_VERSION, 99)),
            other => panic!("expected UnknownFormat, got {other:?}"),
        }
    }

    #[test]
    fn redb_file_without_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::create(dir.path().join(DB_FILE)).unwrap());
        match open(dir.path(), "a", 1).unwrap_err() {
            OpenStoreError::MissingIdentity { .. } => {}
            other => panic!("expected MissingIdentity, got {other:?}"),
        }
    }

    #[test]
    fn second_open_of_same_data_dir_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), "a", 1).unwrap();
        let err = open(dir.path(), "a", 1).unwrap_err();
        assert!(matches!(err, OpenStoreError::Locked { .. }), "{err:?}");
        assert!(
            err.to_string().contains("another raftvip is running"),
            "{err}"
        );
    }

    #[test]
    fn knows_whether_it_created_the_database_now() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, created) = open(dir.path(), "a", 1).unwrap();
        assert!(created.created_at_open());
        drop((_log, created));
        let (_log, reopened) = open(dir.path(), "a", 1).unwrap();
        assert!(!reopened.created_at_open());
    }

    #[test]
    fn creates_missing_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("x").join("y");
        open(&nested, "a", 1).unwrap();
        assert!(nested.join(DB_FILE).exists());
        assert!(!nested.join(NEW_DB_FILE).exists());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        /// The bytes of a database with a log of a few pages (so that damage can hit the log
        /// too, which openraft reads only after the open), made once.
        fn valid_file() -> &'static [u8] {
            static VALID: OnceLock<Vec<u8>> = OnceLock::new();
            VALID.get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let path = create(&dir);
                let db = Database::builder().open(&path).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut log = txn.open_table(LOG).unwrap();
                    for index in 1..=300 {
                        let entry = serde_json::to_vec(&blank(1, index)).unwrap();
                        log.insert(index, entry.as_slice()).unwrap();
                    }
                }
                txn.commit().unwrap();
                drop(db);
                std::fs::read(&path).unwrap()
            })
        }

        /// Opens `bytes` as raft.redb: a named error or a store, never a panic; a refused file
        /// is left as it was.
        fn open_bytes(bytes: &[u8]) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(DB_FILE);
            std::fs::write(&path, bytes).unwrap();
            if let Err(e) = open(dir.path(), "a", 1) {
                assert!(!e.to_string().is_empty());
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    bytes,
                    "{e}: file was modified"
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn arbitrary_bytes_as_the_database_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..8192)
            ) {
                open_bytes(&bytes);
            }

            #[test]
            fn a_damaged_database_never_panics(
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut bytes = valid_file().to_vec();
                for (at, value) in flips {
                    let at = at.index(bytes.len());
                    bytes[at] = value;
                }
                if truncate {
                    bytes.truncate(cut.index(bytes.len()));
                }
                open_bytes(&bytes);
            }
        }
    }
}
