//! The RocksDB backend: keyed state on local disk, so it can outgrow memory.
//!
//! Keys are laid out so that one key group is one contiguous, ordered range:
//!
//! ```text
//! value, list: key_group u16 BE | state u8 | key
//! map:         key_group u16 BE | state u8 | key_len u32 BE | key | user_key
//! ```
//!
//! A list is one value of length-prefixed items. Timers are kept on the heap (as Flink's
//! "heap timers" with RocksDB) and travel with every snapshot. Value-state writes collect in
//! a hash map bounded by bytes (64 MiB) in front of RocksDB; when it is full they are written
//! sorted, as an SST file ingested past the memtable, and at a checkpoint they are written
//! but stay cached. The write-ahead log is off:
//! durability comes from checkpoints, not from the local database, which lives in a
//! temporary directory and is deleted with the backend.
//!
//! It implements [`weir_state::KeyedStateBackend`], and checkpoints its own files
//! ([`weir_state::NativeSnapshots`]); it lives in its own crate so that only the crates that
//! open one link RocksDB.
//!
//! ```
//! use weir_core::{KeyGroupRange, StateDescriptor, StateKind};
//! use weir_state::{take_snapshot, KeyedStateBackend, NativeSnapshots};
//! use weir_state_rocksdb::RocksDbStateBackend;
//!
//! let states = vec![StateDescriptor { name: "count".into(), kind: StateKind::Value, version: 1, ttl: None }];
//! let dir = tempfile::tempdir()?;
//! let mut backend = RocksDbStateBackend::new(states, KeyGroupRange::new(0, 128), dir.path())?;
//! backend.put_value(0, 7, b"alice", b"3")?;
//! backend.with_value(0, 7, b"alice", &mut |v| assert_eq!(v, Some(&b"3"[..])))?;
//! // A canonical snapshot (a savepoint), or the database's own files (a checkpoint).
//! let canonical = take_snapshot(&backend)?;
//! let files = backend.native_checkpoint()?;
//! assert!(!canonical.is_empty() && !files.files.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::cell::RefCell;
use std::path::Path;

use rocksdb::{Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions, DB};
use weir_core::{KeyGroupRange, StateDescriptor, StateKind};
use weir_state::ttl::is_expired;
use weir_state::{
    KeyedStateBackend, NativeCheckpoint, NativeSnapshots, SnapshotWriter, StateError, StateIndex,
    StateResult, StateSize, TimeDomain, Timer, Timers,
};

/// Writes buffered before they are applied as one batch.
const BATCH_LIMIT: usize = 4096;
/// Bytes of writes buffered before they are applied as one batch.
const BATCH_BYTES: usize = 4 << 20;
/// Bytes of value-state writes kept in memory before they go to RocksDB (in place of
/// RocksDB's memtable, a skip list, which is slower): a key updated again and again (a
/// running count) costs RocksDB one write per flush, not one per update.
const DIRTY_BYTES: usize = 64 << 20;
/// What one dirty entry costs beyond its key and value (hash table slot, two vectors).
const DIRTY_OVERHEAD: usize = 64;
/// A flush this large is written as an SST file and ingested, bypassing the memtable.
const INGEST_AT: usize = 16 << 10;

/// Value-state entries by full key: the value (`None`: cleared) and whether it is dirty.
type Cache = hashbrown::HashMap<Vec<u8>, (Option<Vec<u8>>, bool)>;

/// Keeps keyed state in a local RocksDB database.
pub struct RocksDbStateBackend {
    db: DB,
    dir: tempfile::TempDir,
    /// Unique per database instance: SST names are only unique within one.
    instance: String,
    descriptors: Vec<StateDescriptor>,
    range: KeyGroupRange,
    timers: Timers,
    write_opts: WriteOptions,
    /// Writes not yet applied; applied before any read, so reads always see them.
    pending: RefCell<(WriteBatch, usize)>,
    /// Value-state writes not yet in the database, by full key (`None`: cleared).
    /// Entries are dirty (`true`: not yet in the database) or clean (written at a
    /// checkpoint, kept so that reads still find them here).
    dirty: RefCell<Cache>,
    /// Bytes added to `dirty` since it was last emptied (an upper bound of its size).
    dirty_bytes: std::cell::Cell<usize>,
    dirty_limit: usize,
    ingested: std::cell::Cell<u64>,
    key_buf: RefCell<Vec<u8>>,
    /// At the end of the last batch: RocksDB's own figures (live data on disk, memtables)
    /// and the writes not yet applied to it.
    measured: std::cell::Cell<(u64, u64, u64)>,
    /// Bytes of list and map writes since then.
    written: std::cell::Cell<u64>,
}

/// The database cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open RocksDB state in {dir}: {message}")]
pub struct RocksDbError {
    dir: String,
    message: String,
}

fn prefix(key_group: u32, state: StateIndex, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(key_group as u16).to_be_bytes());
    out.push(state as u8);
}

impl RocksDbStateBackend {
    /// An empty backend in a new temporary directory under `parent`.
    pub fn new(
        descriptors: Vec<StateDescriptor>,
        range: KeyGroupRange,
        parent: &Path,
    ) -> Result<Self, RocksDbError> {
        let fail = |message: String| RocksDbError {
            dir: parent.display().to_string(),
            message,
        };
        assert!(
            range.end <= u32::from(u16::MAX) + 1 && descriptors.len() <= 256,
            "key groups fit in u16 and state indices in u8"
        );
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("weir-rocksdb-")
            .tempdir_in(parent)
            .map_err(|e| fail(e.to_string()))?;
        Self::open_in(descriptors, range, dir)
    }

    /// A backend over the database files of a native checkpoint (see
    /// [`RocksDbStateBackend::native_checkpoint`]) that were downloaded into `files`, with
    /// the timers of its timer snapshot. The files are moved into the backend's directory.
    pub fn from_native(
        descriptors: Vec<StateDescriptor>,
        range: KeyGroupRange,
        parent: &Path,
        files: &Path,
        timers: &[u8],
    ) -> Result<Self, RocksDbError> {
        let fail = |message: String| RocksDbError {
            dir: files.display().to_string(),
            message,
        };
        let dir = tempfile::Builder::new()
            .prefix("weir-rocksdb-")
            .tempdir_in(parent)
            .map_err(|e| fail(e.to_string()))?;
        for entry in std::fs::read_dir(files).map_err(|e| fail(e.to_string()))? {
            let entry = entry.map_err(|e| fail(e.to_string()))?;
            std::fs::rename(entry.path(), dir.path().join(entry.file_name()))
                .map_err(|e| fail(e.to_string()))?;
        }
        let mut b = Self::open_in(descriptors, range, dir)?;
        weir_state::restore_snapshot(&mut b, timers).map_err(|e| fail(e.to_string()))?;
        // Its state is charged from the start.
        b.measure();
        Ok(b)
    }

    fn open_in(
        descriptors: Vec<StateDescriptor>,
        range: KeyGroupRange,
        dir: tempfile::TempDir,
    ) -> Result<Self, RocksDbError> {
        let fail = |message: String| RocksDbError {
            dir: dir.path().display().to_string(),
            message,
        };
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Values of states with a TTL carry their access time: compaction drops expired ones.
        let ttls: Vec<Option<(StateKind, u64)>> = descriptors
            .iter()
            .map(|d| d.ttl.map(|t| (d.kind, t.ttl_ms)))
            .collect();
        if ttls.iter().any(Option::is_some) {
            opts.set_compaction_filter("weir-state-ttl", move |_level, key, value| {
                let Some(Some((kind, ttl_ms))) =
                    key.get(2).map(|&s| ttls.get(s as usize).copied().flatten())
                else {
                    return rocksdb::compaction_filter::Decision::Keep;
                };
                let now = weir_core::now_ms();
                let expired = match kind {
                    StateKind::List => decode_list(value)
                        .iter()
                        .all(|item| is_expired(item, ttl_ms, now)),
                    _ => is_expired(value, ttl_ms, now),
                };
                if expired {
                    rocksdb::compaction_filter::Decision::Remove
                } else {
                    rocksdb::compaction_filter::Decision::Keep
                }
            });
        }
        opts.set_write_buffer_size(64 << 20);
        opts.set_max_write_buffer_number(3);
        opts.increase_parallelism(2);
        let mut bbo = rocksdb::BlockBasedOptions::default();
        bbo.set_bloom_filter(10.0, false);
        // Point lookups: a hash index inside each data block saves the binary search.
        bbo.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        let cache = rocksdb::Cache::new_lru_cache(64 << 20).map_err(|e| fail(e.to_string()))?;
        bbo.set_block_cache(&cache);
        opts.set_block_based_table_factory(&bbo);
        let db = DB::open(&opts, dir.path()).map_err(|e| fail(e.to_string()))?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        let instance = dir
            .path()
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("weir-rocksdb-")
                    .to_string()
            })
            .unwrap_or_default();
        Ok(RocksDbStateBackend {
            db,
            dir,
            instance,
            descriptors,
            range,
            timers: Timers::default(),
            write_opts,
            pending: RefCell::new((WriteBatch::default(), 0)),
            dirty: RefCell::new(hashbrown::HashMap::new()),
            dirty_bytes: std::cell::Cell::new(0),
            dirty_limit: DIRTY_BYTES,
            ingested: std::cell::Cell::new(0),
            key_buf: RefCell::new(Vec::with_capacity(64)),
            measured: std::cell::Cell::new((0, 0, 0)),
            written: std::cell::Cell::new(0),
        })
    }

    /// Compacts the whole database now (RocksDB also compacts by itself).
    pub fn compact(&self) -> StateResult<()> {
        // Compaction may drop expired values: the cache must not keep them.
        self.flush_dirty(true)?;
        self.apply_pending()?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }

    /// Flushes and hard-links the database's current files into a new directory under the
    /// backend's own: immutable `*.sst` files (an incremental checkpoint uploads only those
    /// it has not uploaded before) and the small files that describe the database. The
    /// timers come as a canonical snapshot holding only timers.
    fn checkpoint_files(&self) -> StateResult<NativeCheckpoint> {
        self.sync()?;
        let fail = |e: &dyn std::fmt::Display| StateError::new("checkpoint", e);
        let scratch = tempfile::Builder::new()
            .prefix("checkpoint-")
            .tempdir_in(self.dir.path().parent().unwrap_or(self.dir.path()))
            .map_err(|e| fail(&e))?;
        let path = scratch.path().join("db");
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&path))
            .map_err(|e| fail(&format!("RocksDB checkpoint: {e}")))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| fail(&e))? {
            let entry = entry.map_err(|e| fail(&e))?;
            files.push(entry.file_name().to_string_lossy().into_owned());
        }
        files.sort();
        let mut w = SnapshotWriter::new(&self.descriptors);
        for (i, ts) in self.timers.by_key_group(self.range).iter().enumerate() {
            if !ts.is_empty() {
                w.begin_group(self.range.start + i as u32);
                for (d, t) in ts {
                    w.timer(*d, t.timestamp, &t.key);
                }
            }
        }
        Ok(NativeCheckpoint {
            path,
            scratch,
            files,
            timers: w.finish(),
        })
    }

    fn check(&self, key_group: u32) {
        assert!(
            self.range.contains(key_group),
            "key group {key_group} is not in this backend's range {:?}",
            self.range
        );
    }

    /// Reads RocksDB's own figures for [`KeyedStateBackend::size`]: once a batch, and when
    /// the database is opened (a restored one already holds its state).
    fn measure(&self) {
        // RocksDB's estimates, once a batch: cheap next to the batch itself.
        let property = |name: &str| self.db.property_int_value(name).ok().flatten();
        if let (Some(disk), Some(memtables)) = (
            property("rocksdb.live-sst-files-size"),
            property("rocksdb.cur-size-all-mem-tables"),
        ) {
            let pending = self.pending.borrow().0.size_in_bytes() as u64;
            self.measured.set((disk, memtables, pending));
            self.written.set(0);
        }
    }

    /// Everything written so far is in the database (before it is scanned or copied); the
    /// written entries stay cached.
    fn sync(&self) -> StateResult<()> {
        self.flush_dirty(false)?;
        self.apply_pending()
    }

    /// Writes the dirty value-state entries, sorted: as an ingested SST file when there are
    /// many, else as a batch.
    fn flush_dirty(&self, evict: bool) -> StateResult<()> {
        let mut dirty = self.dirty.borrow_mut();
        let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = if evict {
            self.dirty_bytes.set(0);
            dirty
                .drain()
                .filter(|(_, (_, d))| *d)
                .map(|(k, (v, _))| (k, v))
                .collect()
        } else {
            dirty
                .iter_mut()
                .filter(|(_, (_, d))| *d)
                .map(|(k, (v, d))| {
                    *d = false;
                    (k.clone(), v.clone())
                })
                .collect()
        };
        drop(dirty);
        if entries.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let count = entries.len();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let fail = |e: rocksdb::Error| StateError::new("write", format!("RocksDB: {e}"));
        if entries.len() < INGEST_AT {
            let mut batch = WriteBatch::default();
            for (k, v) in &entries {
                match v {
                    Some(v) => batch.put(k, v),
                    None => batch.delete(k),
                }
            }
            self.db.write_opt(batch, &self.write_opts).map_err(fail)?;
            tracing::debug!(entries = count, evict, elapsed = ?started.elapsed(), "state cache written");
            return Ok(());
        }
        // Lists and maps in the memtable may sit in the same key range: their batch first.
        self.apply_pending()?;
        let n = self.ingested.get();
        self.ingested.set(n + 1);
        let path = self.dir.path().join(format!("ingest-{n}.sst"));
        let opts = Options::default();
        let mut w = rocksdb::SstFileWriter::create(&opts);
        w.open(&path).map_err(fail)?;
        for (k, v) in &entries {
            match v {
                Some(v) => w.put(k, v),
                None => w.delete(k),
            }
            .map_err(fail)?;
        }
        w.finish().map_err(fail)?;
        let mut ingest = rocksdb::IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        self.db
            .ingest_external_file_opts(&ingest, vec![&path])
            .map_err(fail)?;
        tracing::debug!(entries = count, evict, elapsed = ?started.elapsed(), "state cache ingested");
        Ok(())
    }

    fn apply_pending(&self) -> StateResult<()> {
        let mut p = self.pending.borrow_mut();
        if p.1 > 0 {
            let batch = std::mem::take(&mut p.0);
            p.1 = 0;
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| StateError::new("write", format!("RocksDB: {e}")))?;
        }
        Ok(())
    }

    /// Caches a value-state write for the key in `key_buf`; an entry already cached is
    /// updated in place (no allocation for a key written again).
    fn set_dirty(&mut self, v: Option<&[u8]>) -> StateResult<()> {
        let k = self.key_buf.get_mut();
        let mut dirty = self.dirty.borrow_mut();
        let mut bytes = self.dirty_bytes.get();
        match dirty.get_mut(k.as_slice()) {
            Some(entry) => {
                match (&mut entry.0, v) {
                    (Some(old), Some(new)) if old.capacity() >= new.len() => {
                        old.clear();
                        old.extend_from_slice(new);
                    }
                    (old, new) => {
                        bytes += new.map_or(0, <[u8]>::len);
                        *old = new.map(<[u8]>::to_vec);
                    }
                }
                entry.1 = true;
            }
            None => {
                bytes += k.len() + v.map_or(0, <[u8]>::len) + DIRTY_OVERHEAD;
                dirty.insert(k.clone(), (v.map(<[u8]>::to_vec), true));
            }
        }
        drop(dirty);
        self.dirty_bytes.set(bytes);
        if bytes >= self.dirty_limit {
            self.flush_dirty(true)?;
        }
        Ok(())
    }

    /// Queues a write of about `bytes` bytes.
    fn write(&mut self, bytes: usize, f: impl FnOnce(&mut WriteBatch)) -> StateResult<()> {
        self.written.set(self.written.get() + bytes as u64);
        let full = {
            let mut p = self.pending.borrow_mut();
            f(&mut p.0);
            p.1 += 1;
            p.1 >= BATCH_LIMIT || p.0.size_in_bytes() >= BATCH_BYTES
        };
        if full {
            self.apply_pending()?;
        }
        Ok(())
    }

    fn get(&self, k: &[u8]) -> StateResult<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.apply_pending()?;
        self.db
            .get_pinned(k)
            .map_err(|e| StateError::new("read", format!("RocksDB: {e}")))
    }

    fn value_key(&self, state: StateIndex, key_group: u32, key: &[u8]) -> Vec<u8> {
        self.build_key(state, key_group, key);
        self.key_buf.borrow().clone()
    }

    /// The full key of a value or list entry, in `key_buf`.
    fn build_key(&self, state: StateIndex, key_group: u32, key: &[u8]) {
        self.check(key_group);
        let mut k = self.key_buf.borrow_mut();
        prefix(key_group, state, &mut k);
        k.extend_from_slice(key);
    }

    fn map_prefix(&self, state: StateIndex, key_group: u32, key: &[u8]) -> Vec<u8> {
        let mut k = self.value_key(state, key_group, &[]);
        k.extend_from_slice(&(key.len() as u32).to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Every (full key, value) with the given prefix, in key order.
    fn scan(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> StateResult<()> {
        self.apply_pending()?;
        let mut opts = ReadOptions::default();
        let mut upper = prefix.to_vec();
        // The smallest key after every key with this prefix.
        while let Some(last) = upper.pop() {
            if last < u8::MAX {
                upper.push(last + 1);
                break;
            }
        }
        if !upper.is_empty() {
            opts.set_iterate_upper_bound(upper);
        }
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(prefix, Direction::Forward), opts);
        for item in iter {
            let (k, v) = item.map_err(|e| StateError::new("read", format!("RocksDB: {e}")))?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, &v);
        }
        Ok(())
    }
}

/// Incremental checkpoints of the database's own files.
impl NativeSnapshots for RocksDbStateBackend {
    fn instance(&self) -> &str {
        &self.instance
    }

    /// Flushes and hard-links the database's current files into a new directory under
    /// the backend's own: immutable `*.sst` files (an incremental checkpoint uploads only
    /// those it has not uploaded before) and the small files that describe the database.
    /// The timers come as a canonical snapshot holding only timers.
    fn native_checkpoint(&self) -> StateResult<NativeCheckpoint> {
        self.checkpoint_files()
    }
}

/// The items of a stored list; a malformed tail (never written by this backend) is ignored
/// rather than trusted (this also runs inside RocksDB's compaction filter).
fn decode_list(mut v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while v.len() >= 4 {
        let n = u32::from_le_bytes(v[..4].try_into().expect("4")) as usize;
        let Some(item) = v.get(4..4 + n) else {
            break;
        };
        out.push(item.to_vec());
        v = &v[4 + n..];
    }
    out
}

impl KeyedStateBackend for RocksDbStateBackend {
    fn descriptors(&self) -> &[StateDescriptor] {
        &self.descriptors
    }

    fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    fn with_value(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> StateResult<()> {
        self.build_key(state, key_group, key);
        let k = self.key_buf.borrow();
        if let Some((v, _)) = self.dirty.borrow().get(k.as_slice()) {
            f(v.as_deref());
            return Ok(());
        }
        match self.get(&k)? {
            Some(v) => f(Some(&v)),
            None => f(None),
        }
        Ok(())
    }

    fn put_value(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        self.build_key(state, key_group, key);
        self.set_dirty(Some(value))
    }

    fn clear_value(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        self.build_key(state, key_group, key);
        self.set_dirty(None)
    }

    fn list_get(&self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<Vec<Vec<u8>>> {
        let k = self.value_key(state, key_group, key);
        Ok(self.get(&k)?.map(|v| decode_list(&v)).unwrap_or_default())
    }

    fn list_add(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        let k = self.value_key(state, key_group, key);
        let mut v = self.get(&k)?.map(|v| v.to_vec()).unwrap_or_default();
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        v.extend_from_slice(value);
        // The state grew by the item (the list is rewritten, but RocksDB keeps one copy).
        let grown = if v.len() == value.len() + 4 {
            k.len() + v.len()
        } else {
            value.len() + 4
        };
        self.write(grown, |b| b.put(&k, &v))
    }

    fn list_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        let k = self.value_key(state, key_group, key);
        self.write(0, |b| b.delete(&k))
    }

    fn map_get(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<Option<Vec<u8>>> {
        let mut k = self.map_prefix(state, key_group, key);
        k.extend_from_slice(user_key);
        Ok(self.get(&k)?.map(|v| v.to_vec()))
    }

    fn map_put(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> StateResult<()> {
        let mut k = self.map_prefix(state, key_group, key);
        k.extend_from_slice(user_key);
        self.write(k.len() + value.len(), |b| b.put(&k, value))
    }

    fn map_remove(
        &mut self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
        user_key: &[u8],
    ) -> StateResult<()> {
        let mut k = self.map_prefix(state, key_group, key);
        k.extend_from_slice(user_key);
        self.write(0, |b| b.delete(&k))
    }

    fn map_entries(
        &self,
        state: StateIndex,
        key_group: u32,
        key: &[u8],
    ) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let p = self.map_prefix(state, key_group, key);
        let mut out = Vec::new();
        self.scan(&p, |k, v| out.push((k[p.len()..].to_vec(), v.to_vec())))?;
        Ok(out)
    }

    fn map_clear(&mut self, state: StateIndex, key_group: u32, key: &[u8]) -> StateResult<()> {
        let p = self.map_prefix(state, key_group, key);
        let mut keys = Vec::new();
        self.scan(&p, |k, _| keys.push(k.to_vec()))?;
        for k in keys {
            self.write(0, |b| b.delete(&k))?;
        }
        Ok(())
    }

    fn register_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64) {
        self.check(key_group);
        self.timers.register(domain, key_group, key, timestamp);
    }

    fn delete_timer(&mut self, domain: TimeDomain, key_group: u32, key: &[u8], timestamp: i64) {
        self.timers.delete(domain, key_group, key, timestamp);
    }

    fn pop_due_timers(&mut self, domain: TimeDomain, upto: i64, out: &mut Vec<Timer>) {
        self.timers.pop_due(domain, upto, out);
    }

    fn next_timer(&self, domain: TimeDomain) -> Option<i64> {
        self.timers.next(domain)
    }

    fn native_snapshots(&self) -> Option<&dyn NativeSnapshots> {
        Some(self)
    }

    fn size(&self) -> StateSize {
        let (disk, memtables, pending) = self.measured.get();
        let heap = memtables + pending + self.written.get() + self.dirty_bytes.get() as u64;
        let heap = heap + self.timers.bytes();
        StateSize {
            total: disk + heap,
            memory: heap,
        }
    }

    fn end_batch(&mut self) -> StateResult<()> {
        self.measure();
        Ok(())
    }

    fn export(&self, w: &mut SnapshotWriter) -> StateResult<()> {
        // Keys are ordered by key group, then state: one pass writes ascending sections.
        let timers = self.timers.by_key_group(self.range);
        let mut current: Option<u32> = None;
        let emit_timers_upto = |w: &mut SnapshotWriter, current: &mut Option<u32>, kg: u32| {
            // Sections for key groups with timers but no state, and the current one's timers.
            let from = current.map_or(self.range.start, |c| c + 1);
            for g in from..kg {
                let ts = &timers[(g - self.range.start) as usize];
                if !ts.is_empty() {
                    w.begin_group(g);
                    for (d, t) in ts {
                        w.timer(*d, t.timestamp, &t.key);
                    }
                }
            }
            if kg < self.range.end {
                w.begin_group(kg);
                for (d, t) in &timers[(kg - self.range.start) as usize] {
                    w.timer(*d, t.timestamp, &t.key);
                }
            }
            *current = Some(kg);
        };
        let mut start = Vec::new();
        prefix(self.range.start, 0, &mut start);
        self.sync()?;
        let mut opts = ReadOptions::default();
        if self.range.end <= u32::from(u16::MAX) {
            let mut upper = Vec::new();
            prefix(self.range.end, 0, &mut upper);
            opts.set_iterate_upper_bound(upper);
        }
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), opts);
        for item in iter {
            let (k, v) = item.map_err(|e| StateError::new("snapshot", format!("RocksDB: {e}")))?;
            let kg = u32::from(u16::from_be_bytes([k[0], k[1]]));
            let state = u32::from(k[2]);
            if current != Some(kg) {
                emit_timers_upto(w, &mut current, kg);
            }
            let rest = &k[3..];
            match self.descriptors[state as usize].kind {
                StateKind::Value => w.value(state, rest, &v),
                StateKind::List => w.list(state, rest, &decode_list(&v)),
                StateKind::Map => {
                    // One entry per map entry: the restore merges them.
                    let n = u32::from_be_bytes(rest[..4].try_into().expect("4")) as usize;
                    let (key, user_key) = rest[4..].split_at(n);
                    w.map(state, key, std::iter::once((user_key, &v[..])));
                }
            }
        }
        emit_timers_upto(w, &mut current, self.range.end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_state::{restore_snapshot, take_snapshot, MemoryStateBackend};

    /// A value, a list and a map state (`v`, `l`, `m`), as `weir-state`'s backend tests use.
    fn descriptors() -> Vec<StateDescriptor> {
        let d = |name: &str, kind| StateDescriptor {
            name: name.into(),
            kind,
            version: 1,
            ttl: None,
        };
        vec![
            d("v", StateKind::Value),
            d("l", StateKind::List),
            d("m", StateKind::Map),
        ]
    }

    #[test]
    fn size_grows_with_every_kind_of_write_past_flushes() {
        let tmp = tempfile::tempdir().unwrap();
        let range = KeyGroupRange::new(0, 16);
        let mut b = RocksDbStateBackend::new(descriptors(), range, tmp.path()).unwrap();
        // Incompressible values: on disk, state is measured as RocksDB stores it (compressed).
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut value = || -> Vec<u8> {
            (0..(64 << 10) / 8)
                .flat_map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()
                })
                .collect()
        };
        // 200 MiB of map entries: past several memtables.
        for i in 0u32..3200 {
            b.map_put(2, i % 16, b"k", &i.to_be_bytes(), &value())
                .unwrap();
            if i % 100 == 99 {
                b.end_batch().unwrap();
                let size = b.size();
                assert!(
                    size.total >= u64::from(i) * (64 << 10) * 9 / 10,
                    "after {i} entries: {size:?}"
                );
            }
        }
        // A list appended to in one batch counts its items, not every rewrite of it.
        let before = b.size().total;
        for _ in 0..300 {
            b.list_add(1, 0, b"hot", &[1u8; 1000]).unwrap();
        }
        let grown = b.size().total - before;
        assert!((300_000..400_000).contains(&grown), "{grown}");
        for i in 0u32..1000 {
            b.put_value(0, i % 16, &i.to_be_bytes(), &value()).unwrap();
        }
        b.end_batch().unwrap();
        assert!(b.size().total >= 4200 * (64 << 10) * 9 / 10);
    }

    /// A database whose files are gone (a full or failed disk) answers with errors that
    /// say so; nothing panics.
    #[test]
    fn storage_failures_are_errors_not_panics() {
        let tmp = tempfile::tempdir().unwrap();
        let range = KeyGroupRange::new(0, 16);
        let mut b = RocksDbStateBackend::new(descriptors(), range, tmp.path()).unwrap();
        // Enough value writes that writing them out takes an SST file.
        for i in 0..(INGEST_AT as u32 + 10) {
            b.put_value(0, i % 16, &i.to_le_bytes(), b"v").unwrap();
        }
        std::fs::remove_dir_all(tmp.path()).unwrap();
        let e = b
            .export(&mut SnapshotWriter::new(&descriptors()))
            .unwrap_err();
        assert_eq!(e.op, "write", "{e}");
        assert!(
            e.to_string().starts_with("state write failed: RocksDB: "),
            "{e}"
        );
        let e = b
            .native_checkpoint()
            .err()
            .expect("no directory to copy into");
        assert!(e.to_string().contains("failed"), "{e}");
    }

    #[test]
    fn large_flushes_are_ingested_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let range = KeyGroupRange::new(0, 16);
        let mut b = RocksDbStateBackend::new(descriptors(), range, tmp.path()).unwrap();
        b.dirty_limit = 4 << 20;
        let n = (b.dirty_limit / (DIRTY_OVERHEAD + 12)) as u32 * 2 + 7;
        for i in 0..n {
            b.put_value(0, i % 16, &i.to_le_bytes(), &(i * 2).to_le_bytes())
                .unwrap();
            b.list_add(1, i % 16, &i.to_le_bytes(), b"l").unwrap();
        }
        for i in (0..n).step_by(3) {
            b.clear_value(0, i % 16, &i.to_le_bytes()).unwrap();
        }
        assert!(b.ingested.get() >= 2, "large flushes are ingested");
        for i in [0, 1, 2, 3, n / 2, n - 1] {
            let mut got = None;
            b.with_value(0, i % 16, &i.to_le_bytes(), &mut |v| {
                got = v.map(<[u8]>::to_vec)
            })
            .unwrap();
            let want = (i % 3 != 0).then(|| (i * 2).to_le_bytes().to_vec());
            assert_eq!(got, want, "key {i}");
            assert_eq!(b.list_get(1, i % 16, &i.to_le_bytes()).unwrap().len(), 1);
        }
        let mut copy = MemoryStateBackend::new(descriptors(), range);
        restore_snapshot(&mut copy, &take_snapshot(&b).unwrap()).unwrap();
        let mut values = 0;
        for i in 0..n {
            copy.with_value(0, i % 16, &i.to_le_bytes(), &mut |v| {
                values += v.is_some() as u32
            })
            .unwrap();
        }
        assert_eq!(values, n - n.div_ceil(3));
    }

    #[test]
    fn state_round_trips_through_canonical_snapshots_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b =
            RocksDbStateBackend::new(descriptors(), KeyGroupRange::new(0, 16), tmp.path()).unwrap();
        for kg in 0..16u32 {
            let key = format!("k{kg}");
            b.put_value(0, kg, key.as_bytes(), &kg.to_le_bytes())
                .unwrap();
            b.list_add(1, kg, key.as_bytes(), b"a").unwrap();
            b.list_add(1, kg, key.as_bytes(), b"b").unwrap();
            b.map_put(2, kg, key.as_bytes(), b"x", b"1").unwrap();
            b.map_put(2, kg, key.as_bytes(), b"y", b"2").unwrap();
            if kg % 3 == 0 {
                b.register_timer(TimeDomain::EventTime, kg, key.as_bytes(), 7);
            }
        }
        b.map_remove(2, 5, b"k5", b"y").unwrap();
        b.clear_value(0, 6, b"k6").unwrap();
        b.register_timer(TimeDomain::ProcessingTime, 15, b"only-a-timer", 9);
        assert_eq!(
            b.list_get(1, 3, b"k3").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(b.map_entries(2, 4, b"k4").unwrap().len(), 2);

        // RocksDB → memory, at two subtasks.
        let snap = take_snapshot(&b).unwrap();
        let mut low = MemoryStateBackend::new(descriptors(), KeyGroupRange::new(0, 8));
        let mut high = MemoryStateBackend::new(descriptors(), KeyGroupRange::new(8, 16));
        restore_snapshot(&mut low, &snap).unwrap();
        restore_snapshot(&mut high, &snap).unwrap();
        assert_eq!(low.map_entries(2, 5, b"k5").unwrap().len(), 1);
        high.with_value(0, 9, b"k9", &mut |v| {
            assert_eq!(v, Some(&9u32.to_le_bytes()[..]))
        })
        .unwrap();
        low.with_value(0, 6, b"k6", &mut |v| assert_eq!(v, None))
            .unwrap();
        assert_eq!(high.next_timer(TimeDomain::ProcessingTime), Some(9));

        // Memory → RocksDB gives the same snapshot content back.
        let mut again =
            RocksDbStateBackend::new(descriptors(), KeyGroupRange::new(0, 16), tmp.path()).unwrap();
        restore_snapshot(&mut again, &take_snapshot(&low).unwrap()).unwrap();
        restore_snapshot(&mut again, &take_snapshot(&high).unwrap()).unwrap();
        assert_eq!(take_snapshot(&again).unwrap(), snap);
        let mut due = Vec::new();
        again.pop_due_timers(TimeDomain::EventTime, 100, &mut due);
        assert_eq!(due.len(), 6);

        // Native checkpoint: the files open as the same database elsewhere.
        let native = b.native_checkpoint().unwrap();
        assert!(native.files.iter().any(|f| f.ends_with(".sst")));
        let copy = tmp.path().join("download");
        std::fs::create_dir(&copy).unwrap();
        for f in &native.files {
            std::fs::copy(native.path.join(f), copy.join(f)).unwrap();
        }
        let reopened = RocksDbStateBackend::from_native(
            descriptors(),
            KeyGroupRange::new(0, 16),
            tmp.path(),
            &copy,
            &native.timers,
        )
        .unwrap();
        assert_eq!(take_snapshot(&reopened).unwrap(), snap);
    }
}
