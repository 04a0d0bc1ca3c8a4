//! A store on disk: its layout, lifecycle and the services every operation uses.
//!
//! Owns `STORE/` — `dedupfs.json` (identity, format, chunking), `meta/` (RocksDB), `packs/`
//! and `lock`. Opening checks, in order: the directory exists, it is a store, its format is
//! one this build reads, no other process holds it; each failure is a distinct
//! [`StoreError`] whose message names the problem and the path.
//!
//! After opening, interrupted container deletes are finished and inodes that were unlinked
//! while open when the previous process died are removed.
//!
//! Permissions: the store directory and every directory in it are 0700, every file 0600,
//! whatever the umask — a store holds every backed-up byte (small chunks are stored raw or
//! lightly compressed), so no other local user may read any of it. `init` creates it so;
//! `open` checks every entry and tightens what is looser (logging what it changed), so a
//! store copied or restored with other modes is closed again. RocksDB creates its files
//! with 0644 minus the umask (its own option for this is not wired up), so the `dedupfs`
//! binary runs with umask 077 and the 0700 directory keeps them private in any case.

pub mod checkpoint;
pub mod config;
mod create;
pub mod lock;
mod migrate;
mod packs;
pub mod perms;
pub mod usage;

pub use packs::PackPlace;

use crate::chunker::{ChunkHasher, ChunkParams, Chunker};
use crate::chunks::{ChunkError, ChunkStore};
use crate::clock::{SystemTime, TimeSource};
use crate::commit::Commit;
use crate::commit::Committer;
use crate::containers::{self, ContainerError, Registry, RegistryCell, ROOT_BRANCH, ROOT_INO};
use crate::ids::{ContainerId, Version};
use crate::kv::rocks::{RocksKv, RocksTuning};
use crate::kv::{mem::MemKv, Cf, Kv, KvError};
use crate::mvcc::{self, ReadPoint};
use crate::pack::{self, PackError, PackReader, PackWriter};
use crate::records::InodeRec;
use config::{to_hex, StoreConfig, CONFIG_FILE, FORMAT_VERSION};
use lock::{LockFailure, StoreLock};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

pub const META_DIR: &str = "meta";
pub const PACKS_DIR: &str = "packs";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}: no such directory")]
    NotFound(PathBuf),
    #[error(
        "{0} is not a dedupfs store or mount (no {CONFIG_FILE}); `dedupfs init DIR` makes a \
         new store in a new or empty directory"
    )]
    NotAStore(PathBuf),
    #[error("{path} is not empty; `dedupfs init` needs a new or empty directory")]
    NotEmpty { path: PathBuf },
    #[error("{path} is already a dedupfs store")]
    AlreadyAStore { path: PathBuf },
    #[error(
        "{url} already holds a dedupfs store; `dedupfs init DIR --recover-from {url}` brings \
         it back, or choose another prefix"
    )]
    BucketTaken { url: String },
    #[error("{path} uses store format {found}, newer than this dedupfs supports ({supported}); upgrade dedupfs")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: bad store configuration: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("store {path} is in use by {holder}")]
    Locked { path: PathBuf, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source}")]
    Meta { path: PathBuf, source: KvError },
    #[error("{path}: permission denied; the store belongs to uid {owner} and only that user or root may use it")]
    NotPermitted { path: PathBuf, owner: u32 },
    #[error(transparent)]
    Pack(#[from] PackError),
    /// Object storage (the bucket of a store with packs there) refused or failed a request.
    #[error(transparent)]
    Remote(#[from] crate::pack::remote::RemoteError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        StoreError::Meta {
            path: PathBuf::new(),
            source: e,
        }
    }
}

/// How `init` lays out a new store.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunking: ChunkParams,
    pub pack_target_size: u64,
    pub verify_dedup: bool,
    /// The chunker's gear seed (`None`: random). A replication target made with the
    /// source's seed and chunk sizes (`init --like`) cuts the same bytes into the same
    /// chunks, so what it stores itself dedupes with what it receives.
    pub gear_seed: Option<u64>,
    /// Upload sealed packs to this bucket and prefix (`None`: packs stay on local disk).
    pub packs: Option<crate::pack::remote::RemoteSpec>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunking: ChunkParams::default(),
            pack_target_size: 64 << 20,
            verify_dedup: false,
            gear_seed: None,
            packs: None,
        }
    }
}

/// How `open` behaves.
#[derive(Clone)]
pub struct OpenOptions {
    /// Wait this long for another process to release the store.
    pub lock_wait: Duration,
    /// Shown to a process refused by the lock.
    pub purpose: String,
    /// Budget of the decompressed-chunk cache.
    pub cache_bytes: usize,
    pub tuning: RocksTuning,
    /// The wall and monotonic clocks (the system's; tests fake them).
    pub time: Arc<dyn TimeSource>,
    /// The remote tier's cache, upload backlog and wait (stores with packs in a bucket).
    pub tier: crate::pack::tier::TierOptions,
    /// How long one request to the bucket may take with its retries.
    pub remote: crate::pack::remote::RemoteTuning,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("lock_wait", &self.lock_wait)
            .field("purpose", &self.purpose)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            lock_wait: Duration::ZERO,
            purpose: "dedupfs".into(),
            cache_bytes: 32 << 20,
            tuning: RocksTuning::default(),
            time: Arc::new(SystemTime::default()),
            tier: Default::default(),
            remote: Default::default(),
        }
    }
}

pub struct Store {
    root: PathBuf,
    config: StoreConfig,
    kv: Arc<dyn Kv>,
    pub chunks: ChunkStore,
    pub committer: Committer,
    pub chunker: Chunker,
    /// Containers, branches and snapshots (see [`RegistryCell`] for its two locks).
    registry: RegistryCell,
    /// The store lock file. Protects: the holder note. Lock order: a leaf.
    lock: parking_lot::Mutex<Option<StoreLock>>,
    /// The remote tier (stores with packs in object storage).
    tier: Option<Arc<crate::pack::tier::RemoteTier>>,
    /// One checkpoint at a time (the schedule, GC, `dedupfs checkpoint`). Protects: the
    /// checkpoint's temporary directory and its order of steps. Lock order: taken before
    /// any other; held across the whole checkpoint, uploads included (a background task,
    /// never on a read or write path).
    checkpoint_lock: parking_lot::Mutex<()>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Stops the uploader after its upload in flight; queued packs stay local and are
        // queued again at the next open.
        if let Some(t) = &self.tier {
            t.stop();
        }
    }
}

fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut v)?;
    Ok(v)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn fsync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

impl Store {
    /// Reads and checks `dedupfs.json` without opening anything else.
    pub fn read_config(path: &Path) -> Result<StoreConfig, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound(path.to_path_buf()));
        }
        if !path.is_dir() {
            return Err(StoreError::NotAStore(path.to_path_buf()));
        }
        let cfg_path = path.join(CONFIG_FILE);
        let raw = match std::fs::read(&cfg_path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotAStore(path.to_path_buf()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(StoreError::NotPermitted {
                    path: path.to_path_buf(),
                    owner: perms::owner(path).unwrap_or(0),
                })
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: cfg_path,
                    source: e,
                })
            }
        };
        #[derive(serde::Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let f: FormatOnly = serde_json::from_slice(&raw).map_err(|e| StoreError::BadConfig {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        if f.format > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                path: path.to_path_buf(),
                found: f.format,
                supported: FORMAT_VERSION,
            });
        }
        let config: StoreConfig =
            serde_json::from_slice(&raw).map_err(|e| StoreError::BadConfig {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
        config
            .chunking
            .validate()
            .map_err(|reason| StoreError::BadConfig {
                path: cfg_path.clone(),
                reason,
            })?;
        if config.secret_bytes().is_none_or(|s| s.len() < 136) {
            return Err(StoreError::BadConfig {
                path: cfg_path,
                reason: "secret missing or too short".into(),
            });
        }
        Ok(config)
    }

    /// Opens the store at `path` for exclusive use by this process.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Store, StoreError> {
        let path = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(StoreError::NotPermitted {
                    path: path.to_path_buf(),
                    owner: 0,
                })
            }
            Err(_) => return Err(StoreError::NotFound(path.to_path_buf())),
        };
        let config = Self::read_config(&path)?;
        let tightened = perms::tighten(&path).map_err(io_err(&path))?;
        if !tightened.is_empty() {
            log::warn!(
                "{}: {} entries were readable or writable by other users; made them private \
                 (directories 0700, files 0600): {}",
                path.display(),
                tightened.len(),
                perms::summary(&tightened)
            );
        }
        let lock =
            StoreLock::acquire(&path, &opts.purpose, opts.lock_wait).map_err(|f| match f {
                LockFailure::Held { holder } => StoreError::Locked {
                    path: path.clone(),
                    holder,
                },
                LockFailure::Io(e) => StoreError::Io {
                    path: path.join(lock::LOCK_FILE),
                    source: e,
                },
            })?;
        let meta = path.join(META_DIR);
        if !meta.is_dir() {
            return Err(StoreError::Meta {
                path: path.clone(),
                source: KvError::Corrupt(format!("{} is missing", meta.display())),
            });
        }
        let kv = RocksKv::open(&meta, false, opts.tuning).map_err(|e| StoreError::Meta {
            path: path.clone(),
            source: e,
        })?;
        let mut store = Self::assemble(path, config, Arc::new(kv), opts, Some(lock))?;
        migrate::to_current(&mut store)?;
        store.finish_deletes(&mut |_, _| {})?;
        store.clean_orphans()?;
        Ok(store)
    }

    /// A store whose metadata lives in memory (packs still go to `dir`). For tests.
    pub fn open_in_memory(dir: &Path, chunking: ChunkParams) -> Result<Store, StoreError> {
        Self::open_with_kv(dir, chunking, Arc::new(MemKv::new()))
    }

    /// A store on a given metadata backend (a fresh one is initialised). For tests that
    /// reopen an in-memory store.
    pub fn open_with_kv(
        dir: &Path,
        chunking: ChunkParams,
        kv: Arc<dyn Kv>,
    ) -> Result<Store, StoreError> {
        Self::open_with_kv_opts(dir, chunking, kv, &OpenOptions::default())
    }

    /// [`Store::open_with_kv`] with options (tests that fake the clocks).
    pub fn open_with_kv_opts(
        dir: &Path,
        chunking: ChunkParams,
        kv: Arc<dyn Kv>,
        opts: &OpenOptions,
    ) -> Result<Store, StoreError> {
        let config = StoreConfig {
            format: FORMAT_VERSION,
            store_id: to_hex(&[7; 16]),
            created: 0,
            chunking,
            gear_seed: 12345,
            secret: to_hex(&(0..192u32).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>()),
            pack_target_size: 8 << 20,
            verify_dedup: true,
            packs: None,
        };
        std::fs::create_dir_all(dir.join(PACKS_DIR)).map_err(io_err(dir))?;
        if mvcc::get(
            &*kv,
            Cf::Inodes,
            &ReadPoint::single(ROOT_BRANCH, Version::LATEST),
            ROOT_INO,
            &[],
        )?
        .is_none()
        {
            Self::write_root(&kv, opts.time.clone())?;
        }
        let store = Self::assemble(dir.to_path_buf(), config, kv, opts, None)?;
        store.finish_deletes(&mut |_, _| {})?;
        store.clean_orphans()?;
        Ok(store)
    }

    fn assemble(
        root: PathBuf,
        config: StoreConfig,
        kv: Arc<dyn Kv>,
        opts: &OpenOptions,
        lock: Option<StoreLock>,
    ) -> Result<Store, StoreError> {
        let packs = root.join(PACKS_DIR);
        let tier = match &config.packs {
            None => None,
            Some(spec) => {
                let remote = crate::pack::remote::Remote::connect(spec, opts.remote)?;
                Some(crate::pack::tier::RemoteTier::open(
                    remote,
                    &root,
                    kv.clone(),
                    opts.tier,
                )?)
            }
        };
        let mut next_pack = pack::list_packs(&packs)
            .map_err(io_err(&packs))?
            .last()
            .map(|(id, _)| id.0 + 1)
            .unwrap_or(1);
        if let Some(t) = &tier {
            next_pack = next_pack.max(t.id_floor()?);
        }
        let secret = config.secret_bytes().unwrap_or_default();
        let hasher = ChunkHasher::new(secret).ok_or_else(|| StoreError::BadConfig {
            path: root.join(CONFIG_FILE),
            reason: "secret too short".into(),
        })?;
        let writer = PackWriter::new(
            &packs,
            config.store_id_bytes(),
            config.pack_target_size,
            next_pack,
        );
        let chunks = ChunkStore::new(
            kv.clone(),
            writer,
            PackReader::new(&packs),
            opts.cache_bytes,
            hasher,
            config.verify_dedup,
        );
        let committer =
            Committer::open(kv.clone(), opts.time.clone()).map_err(|e| StoreError::Meta {
                path: root.clone(),
                source: e,
            })?;
        if let Some(t) = &tier {
            chunks.writer().set_tier(t.clone());
            chunks.reader().set_tier(t.clone());
        }
        let registry = Registry::load(&*kv)?;
        let chunker = Chunker::new(config.chunking, config.gear_seed);
        let store = Store {
            root,
            config,
            kv,
            chunks,
            committer,
            chunker,
            registry: RegistryCell::new(registry),
            lock: parking_lot::Mutex::new(lock),
            tier,
            checkpoint_lock: parking_lot::Mutex::new(()),
        };
        // Last: a failed open leaves no uploader running without a store to stop it.
        if let Some(t) = &store.tier {
            t.start()?;
        }
        Ok(store)
    }

    /// Writes the compliance clock now (the daemon does every minute; see [`crate::clock`]).
    /// A halted store writes nothing (its last good state stays as it was).
    pub fn persist_clock(&self) -> Result<(), KvError> {
        if self.committer.halted().is_some() {
            return Ok(());
        }
        self.committer.clock().persist(&*self.kv)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The remote tier, for stores whose packs live in object storage.
    pub fn tier(&self) -> Option<&Arc<crate::pack::tier::RemoteTier>> {
        self.tier.as_ref()
    }

    pub(crate) fn checkpoint_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.checkpoint_lock.lock()
    }

    pub(crate) fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// What the store directory occupies on disk, as `du` counts it.
    pub fn disk_usage(&self) -> Result<usage::DiskUsage, StoreError> {
        usage::measure(&self.root)
    }

    /// The current registry: a snapshot that stays valid (and unchanged) however long it
    /// is held; it never blocks a writer.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.get()
    }

    /// Runs a commit that changes the registry: `f` gets the commit and a private copy of
    /// the registry to change (writers are serialised from here to the end of the commit),
    /// and the copy is published when the commit is applied, still under the commit lock,
    /// so every later commit sees it. If `f` or the commit fails, nothing is published.
    pub fn commit_registry<R, E: From<KvError>>(
        &self,
        f: impl FnOnce(&mut Commit<'_>, &mut Registry) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut edit = self.registry.edit();
        self.committer.commit(|c| {
            let r = f(c, &mut edit)?;
            c.after_commit(edit.publisher());
            Ok(r)
        })
    }

    /// Updates the note telling other processes who holds the store.
    pub fn describe_holder(&self, purpose: &str) {
        if let Some(l) = self.lock.lock().as_mut() {
            l.describe(purpose);
        }
    }

    /// Makes everything committed so far durable: pack bytes first, then the metadata log.
    /// A failed sync of either halts the store (see [`Committer`]): every later change and
    /// sync fails, naming that failure, until the store is opened again.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.committer.sync(|| match self.chunks.writer().sync() {
            Err(e @ PackError::SyncFailed { .. }) => {
                self.committer.halt(e.to_string());
                Err(StoreError::from(e))
            }
            other => other.map_err(StoreError::from),
        })
    }

    /// Runs interrupted container deletes to completion.
    pub fn finish_deletes(&self, progress: &mut dyn FnMut(&str, u64)) -> Result<(), StoreError> {
        let pending = self.registry().pending_deletes();
        for rec in pending {
            let branches = self.registry().branches_of(ContainerId(rec.id));
            let mut released = 0u64;
            loop {
                let step = self.commit_registry(|c, reg| {
                    let step = containers::purge_step(c, &self.chunks, &rec, &branches)?;
                    if step == containers::PurgeProgress::Done {
                        reg.forget(ContainerId(rec.id));
                    }
                    Ok::<_, StoreError>(step)
                })?;
                match step {
                    containers::PurgeProgress::Released(n) => {
                        released += n;
                        progress(&rec.name, released);
                    }
                    containers::PurgeProgress::Done => break,
                }
            }
            log::info!(
                "container '{}' deleted ({} extent records released)",
                rec.name,
                released
            );
        }
        Ok(())
    }

    /// Removes inodes that were unlinked while open when the previous process stopped.
    fn clean_orphans(&self) -> Result<(), StoreError> {
        let orphans = crate::kv::collect_range(&*self.kv, Cf::Orphans, vec![], None)?;
        if orphans.is_empty() {
            return Ok(());
        }
        let reg = self.registry();
        self.committer.commit(|c| {
            for (k, v) in &orphans {
                let bad = |e: crate::codec::CodecError| {
                    KvError::Corrupt(format!("orphan record {}: {e}", containers::purge::hex(k)))
                };
                let (branch, ino) = crate::keys::orphan_from(k).map_err(bad)?;
                crate::keys::orphan_value_from(v).map_err(bad)?;
                c.txn.delete(Cf::Orphans, k.clone());
                if reg.branch(branch).is_none() {
                    // Its tree was deleted meanwhile; the purge removed the inode too.
                    continue;
                }
                let rp = reg.read_point(branch, Version::LATEST);
                let Some(raw) = mvcc::txn_get_live(&c.txn, Cf::Inodes, &rp, ino, &[], c.version)?
                else {
                    continue;
                };
                let rec = InodeRec::decode(&raw).map_err(|e| {
                    KvError::Corrupt(format!("inode {ino} of branch {branch}: {e}"))
                })?;
                // Counters already left the file out when its last name went away.
                if rec.nlink == 0 {
                    let v = c.version;
                    mvcc::put(&mut c.txn, Cf::Inodes, &rp, ino, &[], v, None);
                }
            }
            Ok::<_, StoreError>(())
        })?;
        log::info!(
            "removed {} inodes unlinked while open before the last shutdown",
            orphans.len()
        );
        Ok(())
    }
}
