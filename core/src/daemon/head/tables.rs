//! What the head keeps across restarts: the nodes it has seen, the jobs, the named
//! actors and the KV, each change committed to an embedded database (redb) before the
//! head answers the request that made it. A head killed and started again in the same
//! session opens the same file and takes the cluster back; the nodes still running
//! reconnect to it on their own.
//!
//! Each table maps a key to a value in prism's binary encoding. Every write is its own
//! transaction with redb's default durability (synced to disk at commit), and the head
//! answers the request only after it, so what a client was told is never lost with the
//! head's process; a write that fails is answered as a failure, and memory is left as
//! it was. A head without a session (tests, an embedded head) keeps the same tables in
//! memory.

use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::state::JobSubmission;
use crate::wire::{JobInfo, NamedActor, NodeView};

const JOBS: TableDefinition<u32, &[u8]> = TableDefinition::new("jobs");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const ACTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("named_actors");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const SUBMISSIONS: TableDefinition<u32, &[u8]> = TableDefinition::new("submissions");

/// The head's tables as read back when it starts.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Saved {
    /// Jobs, in the order they registered.
    pub jobs: Vec<JobInfo>,
    /// Nodes that had registered, in the order they first joined, each as it last
    /// registered (not alive until it reconnects).
    pub nodes: Vec<NodeView>,
    pub named_actors: Vec<(String, NamedActor)>,
    pub kv: Vec<(String, Vec<u8>)>,
    /// Submitted jobs (`prism job submit`), in the order submitted.
    pub submissions: Vec<JobSubmission>,
}

/// The head's tables in a redb database.
pub(crate) struct Tables {
    db: redb::Database,
    /// The file, for error messages (`None` in memory).
    file: Option<PathBuf>,
}

impl Tables {
    /// Opens the tables kept in `file`, creating it if it does not exist. Fails if the
    /// file is not a head's database, or another head has it open.
    pub fn open(file: &Path) -> Result<Tables, Error> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE)
            .create(file)
            .map_err(|e| Error::Cluster(format!("the head's tables in {}: {e}", file.display())))?;
        let tables = Tables {
            db,
            file: Some(file.to_path_buf()),
        };
        tables.create()?;
        Ok(tables)
    }

    /// Tables kept in memory only, gone with the head.
    pub fn in_memory() -> Tables {
        let db = redb::Builder::new()
            .set_cache_size(CACHE)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database opens");
        let tables = Tables { db, file: None };
        tables.create().expect("in-memory tables are created");
        tables
    }

    /// Creates the tables that do not exist yet, so that reads find them all.
    fn create(&self) -> Result<(), Error> {
        self.write(|tx| {
            tx.open_table(JOBS)?;
            tx.open_table(NODES)?;
            tx.open_table(ACTORS)?;
            tx.open_table(KV)?;
            tx.open_table(SUBMISSIONS)?;
            Ok(())
        })
    }

    /// Everything kept.
    pub fn load(&self) -> Result<Saved, Error> {
        let tx = self.db.begin_read().map_err(|e| self.failed(e))?;
        let read = || -> Result<Saved, Failure> {
            let mut saved = Saved::default();
            for entry in tx.open_table(JOBS)?.iter()? {
                saved.jobs.push(decode(entry?.1.value())?);
            }
            let mut nodes: Vec<(u64, NodeView)> = Vec::new();
            for entry in tx.open_table(NODES)?.iter()? {
                nodes.push(decode(entry?.1.value())?);
            }
            nodes.sort_by_key(|(seq, _)| *seq);
            saved.nodes = nodes
                .into_iter()
                .map(|(_, mut n)| {
                    n.alive = false;
                    n
                })
                .collect();
            for entry in tx.open_table(ACTORS)?.iter()? {
                let (k, v) = entry?;
                saved
                    .named_actors
                    .push((k.value().to_string(), decode(v.value())?));
            }
            for entry in tx.open_table(KV)?.iter()? {
                let (k, v) = entry?;
                saved.kv.push((k.value().to_string(), v.value().to_vec()));
            }
            // Keyed by their number: read in the order submitted.
            for entry in tx.open_table(SUBMISSIONS)?.iter()? {
                saved.submissions.push(decode(entry?.1.value())?);
            }
            Ok(saved)
        };
        read().map_err(|e| self.failed(e))
    }

    /// Records a job.
    pub fn put_job(&self, job: &JobInfo) -> Result<(), Error> {
        let value = encode(job)?;
        self.write(|tx| {
            tx.open_table(JOBS)?.insert(job.job, value.as_slice())?;
            Ok(())
        })
    }

    /// Records a node as it registered, the `seq`-th to join.
    pub fn put_node(&self, seq: u64, node: &NodeView) -> Result<(), Error> {
        let value = encode(&(seq, node))?;
        self.write(|tx| {
            tx.open_table(NODES)?
                .insert(node.node_id.as_str(), value.as_slice())?;
            Ok(())
        })
    }

    /// Records an actor's name.
    pub fn put_actor(&self, name: &str, entry: &NamedActor) -> Result<(), Error> {
        let value = encode(entry)?;
        self.write(|tx| {
            tx.open_table(ACTORS)?.insert(name, value.as_slice())?;
            Ok(())
        })
    }

    /// Forgets actors' names.
    pub fn remove_actors(&self, names: &[String]) -> Result<(), Error> {
        self.write(|tx| {
            let mut table = tx.open_table(ACTORS)?;
            for name in names {
                table.remove(name.as_str())?;
            }
            Ok(())
        })
    }

    /// Records a key's value.
    pub fn put_kv(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.write(|tx| {
            tx.open_table(KV)?.insert(key, value)?;
            Ok(())
        })
    }

    /// Records the `n`-th submitted job as it stands.
    pub fn put_submission(&self, n: u32, job: &JobSubmission) -> Result<(), Error> {
        let value = encode(job)?;
        self.write(|tx| {
            tx.open_table(SUBMISSIONS)?.insert(n, value.as_slice())?;
            Ok(())
        })
    }

    /// Runs `f` in a write transaction and commits it.
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), Failure>,
    ) -> Result<(), Error> {
        let run = || -> Result<(), Failure> {
            let tx = self.db.begin_write()?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| self.failed(e))
    }

    fn failed(&self, e: impl Into<Failure>) -> Error {
        let where_ = match &self.file {
            Some(f) => format!("in {}", f.display()),
            None => "in memory".to_string(),
        };
        Error::Cluster(format!("the head's tables {where_}: {}", e.into().0))
    }
}

/// The database's page cache: the tables are small.
const CACHE: usize = 4 << 20;

/// A failure of the database or of decoding what it holds, as text.
struct Failure(String);

macro_rules! failure_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure(e.to_string())
            }
        }
    )*};
}

failure_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    Error
);

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(Error::from)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    postcard::from_bytes(bytes).map_err(|e| Failure(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;

    fn node(id: &str) -> NodeView {
        NodeView {
            node_id: id.into(),
            address: "127.0.0.2:1".into(),
            total: vec![("CPU".into(), 2.0)],
            available: vec![("CPU".into(), 1.0)],
            queued: 0,
            running: 1,
            alive: true,
            pending: Vec::new(),
        }
    }

    #[test]
    fn what_is_written_is_read_back_after_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("prism-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("head.redb");
        let _ = std::fs::remove_file(&file);
        let job = JobInfo {
            job: 1,
            hash: "ab".repeat(32),
            args: vec!["--x".into()],
            driver_node: "127.0.0.2:1".into(),
        };
        let actor = NamedActor {
            actor: ObjectId::new(7, 1),
            class: "Counter".into(),
            home: "127.0.0.2:1".into(),
        };
        {
            let t = Tables::open(&file).unwrap();
            t.put_job(&job).unwrap();
            t.put_node(1, &node("a-joined-second")).unwrap();
            t.put_node(0, &node("b-joined-first")).unwrap();
            t.put_actor("a", &actor).unwrap();
            t.put_actor("b", &actor).unwrap();
            t.remove_actors(&["b".into()]).unwrap();
            t.put_kv("k", b"v1").unwrap();
            t.put_kv("k", b"v2").unwrap();
            // A second head on the same file is refused while the first has it.
            let second = Tables::open(&file).err().expect("the file is taken");
            assert!(second.to_string().contains("head.redb"), "{second}");
        }
        let saved = Tables::open(&file).unwrap().load().unwrap();
        assert_eq!(saved.jobs, vec![job]);
        let (mut first, mut second) = (node("b-joined-first"), node("a-joined-second"));
        first.alive = false;
        second.alive = false;
        // In the order they joined, not their ids'.
        assert_eq!(saved.nodes, vec![first, second]);
        assert_eq!(saved.named_actors, vec![("a".to_string(), actor)]);
        assert_eq!(saved.kv, vec![("k".to_string(), b"v2".to_vec())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_head_database_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("prism-tables-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("head.redb");
        std::fs::write(&file, b"not a database, just some bytes of text").unwrap();
        let err = Tables::open(&file).err().expect("refused");
        assert!(matches!(err, Error::Cluster(_)), "{err:?}");
        assert!(err.to_string().contains("head.redb"), "{err}");
        // Nothing was overwritten.
        assert!(std::fs::read(&file).unwrap().starts_with(b"not a database"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn in_memory_tables_start_empty() {
        let t = Tables::in_memory();
        assert_eq!(t.load().unwrap(), Saved::default());
        t.put_kv("k", b"v").unwrap();
        assert_eq!(t.load().unwrap().kv.len(), 1);
    }
}
