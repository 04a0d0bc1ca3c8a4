//! Store commands (containers, stats, sync) executed against an open store, by the CLI
//! directly or by the daemon on the CLI's behalf. Results are JSON values that the CLI
//! prints as text or passes through with `--json`.

use dedupfs_core::admin::{self, SettingsChange};
use dedupfs_core::chunks::Compression;
use dedupfs_core::containers::{ContainerError, ContainerSettings, RootOwner, SnapshotMode};
use dedupfs_core::fs::Fs;
use dedupfs_core::ids::ContainerId;
use dedupfs_core::stats;
use dedupfs_core::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// What the CLI asks for.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    Stats {
        container: Option<String>,
        /// Leave buffered writes alone (a refreshing display must not force commits).
        #[serde(default)]
        no_flush: bool,
    },
    ContainerCreate {
        name: String,
        compression: Option<String>,
    },
    ContainerList,
    ContainerShow {
        name: String,
    },
    ContainerSet {
        name: String,
        compression: Option<String>,
        #[serde(default)]
        retention: Option<String>,
    },
    BookmarkCreate {
        container: String,
        name: String,
        kind: String,
    },
    BookmarkList {
        container: String,
    },
    BookmarkDelete {
        container: String,
        name: String,
    },
    SnapshotCreate {
        container: String,
        name: String,
        mode: String,
        at: Option<String>,
        no_flush: bool,
    },
    SnapshotList {
        container: Option<String>,
    },
    SnapshotShow {
        name: String,
    },
    SnapshotDelete {
        name: String,
    },
    SnapshotChanges {
        name: String,
    },
    SnapshotApply {
        name: String,
        onto: String,
        #[serde(default)]
        force: bool,
    },
    Rollback {
        container: String,
        to: String,
        dry_run: bool,
    },
    RetentionShow {
        container: String,
    },
    RetentionPrune {
        container: String,
    },
    ContainerDelete {
        name: String,
        force: bool,
    },
    Sync,
    Gc {
        dry_run: bool,
        grace_secs: f64,
        min_reclaim: f64,
    },
    Fsck {
        scrub: bool,
        repair: bool,
    },
}

/// A step of a long operation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Progress {
    pub what: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// Kinds of failure, which decide the CLI's exit code.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Exists,
    Invalid,
    Busy,
    Store,
    Io,
    /// The caller may not do this (another user's store or daemon).
    Denied,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn io(message: String) -> OpError {
        OpError {
            kind: ErrorKind::Io,
            message,
        }
    }
    pub fn invalid(message: String) -> OpError {
        OpError {
            kind: ErrorKind::Invalid,
            message,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        let kind = match &e {
            StoreError::Container(ContainerError::NotFound(_)) => ErrorKind::NotFound,
            StoreError::Container(ContainerError::Exists(_)) => ErrorKind::Exists,
            StoreError::Container(ContainerError::InvalidName { .. }) => ErrorKind::Invalid,
            StoreError::Container(ContainerError::Busy { .. })
            | StoreError::Container(ContainerError::NotEmpty { .. }) => ErrorKind::Busy,
            StoreError::NotFound(_)
            | StoreError::NotAStore(_)
            | StoreError::NewerFormat { .. }
            | StoreError::BadConfig { .. }
            | StoreError::NotEmpty { .. }
            | StoreError::AlreadyAStore { .. }
            | StoreError::Locked { .. } => ErrorKind::Store,
            StoreError::NotPermitted { .. } => ErrorKind::Denied,
            _ => ErrorKind::Io,
        };
        OpError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<dedupfs_gc::GcError> for OpError {
    fn from(e: dedupfs_gc::GcError) -> Self {
        match e {
            dedupfs_gc::GcError::Store(s) => s.into(),
            dedupfs_gc::GcError::Busy => OpError {
                kind: ErrorKind::Busy,
                message: e.to_string(),
            },
            other => OpError::io(other.to_string()),
        }
    }
}

impl From<dedupfs_core::kv::KvError> for OpError {
    fn from(e: dedupfs_core::kv::KvError) -> Self {
        StoreError::from(e).into()
    }
}

impl From<ContainerError> for OpError {
    fn from(e: ContainerError) -> Self {
        StoreError::from(e).into()
    }
}

/// What a request runs against.
pub struct Ctx {
    pub store: Arc<Store>,
    /// Present when mounted: open files matter and the kernel's caches must be told.
    pub fs: Option<Arc<Fs>>,
    pub notifier: Option<fuser::Notifier>,
    /// The nodes the kernel holds (mounted only).
    pub known: Option<Arc<crate::fuse::KnownNodes>>,
}

impl Ctx {
    fn invalidate_root_entry(&self, name: &str) {
        if let Some(n) = &self.notifier {
            let _ = n.inval_entry(fuser::INodeNo(1), std::ffi::OsStr::new(name));
        }
    }

    /// Drops what the kernel caches of a tree that was replaced (by a rollback): the name
    /// of its root at once, so paths resolve to the new tree; the pages and attributes of
    /// inodes with open handles at once, so those handles see ESTALE rather than cached
    /// pages; every other cached inode of the old tree in the background (no path leads to
    /// them any more), so the rollback costs the same whatever the kernel has cached.
    fn invalidate_view(&self, view: u32, root_name: &str) {
        let (Some(n), Some(k)) = (&self.notifier, &self.known) else {
            return;
        };
        let _ = n.inval_entry(fuser::INodeNo(1), std::ffi::OsStr::new(root_name));
        let open = self
            .fs
            .as_ref()
            .map(|f| f.open_nodes_in(view))
            .unwrap_or_default();
        for node in &open {
            let _ = n.inval_inode(fuser::INodeNo(*node), 0, 0);
        }
        let (n, k) = (n.clone(), k.clone());
        let _ = std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || {
                let nodes = k.of_view(view);
                for node in &nodes {
                    let _ = n.inval_inode(fuser::INodeNo(*node), 0, 0);
                }
                log::debug!("invalidated {} cached inodes of view {view}", nodes.len());
            });
    }

    /// Drops what the kernel caches of the paths an apply changed (it changed them behind
    /// the kernel's back, through the core): each path's directory entry, and the pages
    /// and attributes of every cached inode of the target tree.
    fn invalidate_applied(&self, r: &dedupfs_snapshot::apply::ApplyReport) {
        let (Some(n), Some(k)) = (&self.notifier, &self.known) else {
            return;
        };
        for (parent, name) in &r.touched {
            let _ = n.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::from_bytes(name));
        }
        for node in k.of_view(r.target_view) {
            let _ = n.inval_inode(fuser::INodeNo(node), 0, 0);
        }
    }

    /// The filesystem core: the mounted one, or a private one over the open store.
    fn fs_core(&self) -> Arc<Fs> {
        match &self.fs {
            Some(fs) => fs.clone(),
            None => Arc::new(Fs::new(
                self.store.clone(),
                dedupfs_core::fs::FsOptions {
                    background: false,
                    ..Default::default()
                },
            )),
        }
    }
}

fn hist(e: dedupfs_snapshot::HistoryError) -> OpError {
    use dedupfs_snapshot::HistoryError as H;
    let kind = match e {
        H::Store(se) => return se.into(),
        H::Container(ce) => return ce.into(),
        H::NotFound(_) => ErrorKind::NotFound,
        H::Exists(_) => ErrorKind::Exists,
        H::Invalid(_) | H::Point(_) => ErrorKind::Invalid,
        H::Busy(_) => ErrorKind::Busy,
        _ => ErrorKind::Io,
    };
    OpError {
        kind,
        message: e.to_string(),
    }
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn compression(s: &Option<String>) -> Result<Option<Compression>, OpError> {
    s.as_deref()
        .map(|c| c.parse::<Compression>().map_err(OpError::invalid))
        .transpose()
}

fn show(store: &Store, name: &str) -> Result<serde_json::Value, OpError> {
    let ci = store
        .registry()
        .by_name(name)
        .ok_or_else(|| ContainerError::NotFound(name.into()))?;
    let stats = stats::container_stats(store, ci.id())?
        .ok_or_else(|| ContainerError::NotFound(name.into()))?;
    Ok(to_json(&crate::protocol::ContainerReport {
        name: ci.rec.name.clone(),
        id: ci.rec.id,
        created: ci.rec.created,
        settings: ci.rec.settings.clone(),
        head_branch: ci.rec.head,
        rollbacks: ci.rec.prev_heads.len(),
        stats,
    }))
}

/// Commits buffered writes before an operation that reads committed state (stats, prune,
/// GC, fsck) but does not need them: a file that cannot be flushed (its writer already got
/// the error, e.g. ENOSPC) must not stop the very operations that free space.
fn flush_best_effort(fs: &Fs) {
    if let Err(e) = fs.flush_all() {
        log::warn!("some buffered writes could not be committed first: {e}");
    }
}

pub fn execute(
    ctx: &Ctx,
    req: Request,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
    match req {
        Request::Ping => Ok(to_json(&crate::protocol::Health {
            store: store.root().to_path_buf(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: crate::protocol::PROTOCOL_VERSION,
            pid: std::process::id(),
            halted: store.committer.halted().map(str::to_string),
            buffered_bytes: ctx.fs.as_ref().map_or(0, |f| f.buffered_bytes() as u64),
            unflushed: ctx.fs.as_ref().map(|f| f.unflushed()).unwrap_or_default(),
        })),
        Request::Sync => {
            if let Some(fs) = &ctx.fs {
                fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
            }
            store.sync()?;
            Ok(serde_json::json!({}))
        }
        Request::Stats {
            container,
            no_flush,
        } => {
            // Figures describe committed data: commit what is buffered first.
            if let (Some(fs), false) = (&ctx.fs, no_flush) {
                flush_best_effort(fs);
            }
            match container {
                Some(name) => {
                    let ci = store
                        .registry()
                        .by_name(&name)
                        .ok_or_else(|| ContainerError::NotFound(name.clone()))?;
                    Ok(
                        serde_json::to_value(stats::container_stats(store, ci.id())?)
                            .unwrap_or_default(),
                    )
                }
                None => Ok(to_json(&crate::protocol::StoreReport {
                    stats: stats::store_stats(store)?,
                    gc: dedupfs_gc::state::status(store)?,
                })),
            }
        }
        Request::Gc {
            dry_run,
            grace_secs,
            min_reclaim,
        } => {
            if !(0.0..=1.0).contains(&min_reclaim) {
                return Err(OpError::invalid(format!(
                    "--min-reclaim {min_reclaim}: expected a fraction between 0 and 1"
                )));
            }
            if !dry_run {
                // Commit buffered writes first, so that what they replaced counts as dead.
                if let Some(fs) = &ctx.fs {
                    flush_best_effort(fs);
                }
            }
            let opts = dedupfs_gc::plan::Options {
                min_reclaim,
                grace: std::time::Duration::from_secs_f64(grace_secs.max(0.0)),
                dry_run,
                cancel: None,
            };
            let t0 = std::time::Instant::now();
            let mut pr = |what: &str, done: u64, total: Option<u64>| {
                progress(&Progress {
                    what: what.to_string(),
                    done,
                    total,
                })
            };
            let res = dedupfs_gc::sweep::run(store, &opts, &mut pr);
            if !dry_run {
                dedupfs_gc::state::record_run(
                    store,
                    dedupfs_gc::sweep::run_record(&res, t0, false),
                )?;
            }
            Ok(serde_json::to_value(res?).unwrap_or_default())
        }
        Request::Fsck { scrub, repair } => {
            if let Some(fs) = &ctx.fs {
                flush_best_effort(fs);
            }
            let opts = dedupfs_gc::fsck::Options { scrub, repair };
            let mut pr = |what: &str, done: u64, total: Option<u64>| {
                progress(&Progress {
                    what: what.to_string(),
                    done,
                    total,
                })
            };
            let r = dedupfs_gc::fsck::run(store, &opts, &mut pr)?;
            Ok(serde_json::to_value(r).unwrap_or_default())
        }
        Request::ContainerCreate {
            name,
            compression: c,
        } => {
            let settings = ContainerSettings {
                compression: compression(&c)?.unwrap_or_default(),
                retention: None,
            };
            admin::create_container(store, &name, settings, RootOwner::default())?;
            ctx.invalidate_root_entry(&name);
            show(store, &name)
        }
        Request::ContainerList => {
            let mut list = Vec::new();
            for ci in store.registry().list() {
                // A container deleted since the list was taken is left out.
                if let Some(stats) = stats::container_stats(store, ci.id())? {
                    list.push(crate::protocol::ContainerEntry {
                        name: ci.rec.name.clone(),
                        id: ci.rec.id,
                        settings: ci.rec.settings.clone(),
                        stats,
                    });
                }
            }
            Ok(to_json(&list))
        }
        Request::ContainerShow { name } => show(store, &name),
        Request::ContainerSet {
            name,
            compression: c,
            retention,
        } => {
            let retention = retention
                .as_deref()
                .map(dedupfs_snapshot::retention::Policy::setting)
                .transpose()
                .map_err(hist)?;
            let change = SettingsChange {
                compression: compression(&c)?,
                retention,
            };
            admin::set_container(store, &name, &change)?;
            show(store, &name)
        }
        Request::BookmarkCreate {
            container,
            name,
            kind,
        } => {
            let fs = ctx.fs.as_deref().map(|f| &**f.core());
            let b = dedupfs_snapshot::bookmark::create(store, fs, &container, &name, &kind)
                .map_err(hist)?;
            Ok(to_json(&b))
        }
        Request::BookmarkList { container } => Ok(to_json(
            &dedupfs_snapshot::bookmark::list(store, &container).map_err(hist)?,
        )),
        Request::BookmarkDelete { container, name } => {
            dedupfs_snapshot::bookmark::delete(store, &container, &name).map_err(hist)?;
            Ok(serde_json::json!({ "deleted": name }))
        }
        Request::SnapshotCreate {
            container,
            name,
            mode,
            at,
            no_flush,
        } => {
            let mode = SnapshotMode::parse(&mode).ok_or_else(|| {
                OpError::invalid(format!(
                    "snapshot mode '{mode}' is not ro, rw or rw-tracking"
                ))
            })?;
            let fs = ctx.fs.as_deref().map(|f| &**f.core());
            let t = std::time::Instant::now();
            let rec = dedupfs_snapshot::snapshot::create(
                store,
                fs,
                &dedupfs_snapshot::snapshot::CreateRequest {
                    container: &container,
                    name: &name,
                    mode,
                    at: at.as_deref(),
                    flush: !no_flush,
                },
            )
            .map_err(hist)?;
            let mut v = to_json(&rec);
            v["seconds"] = serde_json::json!(t.elapsed().as_secs_f64());
            ctx.invalidate_root_entry(".snapshots");
            Ok(v)
        }
        Request::SnapshotList { container } => Ok(to_json(
            &dedupfs_snapshot::snapshot::list(store, container.as_deref()).map_err(hist)?,
        )),
        Request::SnapshotShow { name } => {
            let rec = dedupfs_snapshot::snapshot::record(store, &name).map_err(hist)?;
            let mut v = to_json(&rec);
            v["container_name"] = serde_json::json!(store
                .registry()
                .get(ContainerId(rec.container))
                .map(|c| c.rec.name.clone()));
            v["path"] = serde_json::json!(format!(".snapshots/{}", rec.name));
            Ok(v)
        }
        Request::SnapshotDelete { name } => {
            let view = dedupfs_snapshot::snapshot::record(store, &name)
                .map_err(hist)?
                .view();
            let fs = ctx.fs.as_deref().map(|f| &**f.core());
            dedupfs_snapshot::snapshot::delete(store, fs, &name).map_err(hist)?;
            if let (Some(n), Some(k)) = (&ctx.notifier, &ctx.known) {
                let _ = n.inval_entry(
                    fuser::INodeNo(
                        dedupfs_core::fs::NodeRef::Virtual(dedupfs_core::fs::VirtualDir::Snapshots)
                            .encode(),
                    ),
                    std::ffi::OsStr::new(&name),
                );
                for node in k.of_view(view) {
                    let _ = n.inval_inode(fuser::INodeNo(node), 0, 0);
                }
            }
            Ok(serde_json::json!({ "deleted": name }))
        }
        Request::SnapshotChanges { name } => {
            let fs = ctx.fs.as_deref().map(|f| &**f.core());
            Ok(to_json(
                &dedupfs_snapshot::apply::changes(store, fs, &name).map_err(hist)?,
            ))
        }
        Request::SnapshotApply { name, onto, force } => {
            let fs = ctx.fs_core();
            let r = dedupfs_snapshot::apply::apply(store, fs.core(), &name, &onto, force)
                .map_err(hist)?;
            ctx.invalidate_applied(&r);
            if ctx.fs.is_none() {
                fs.shutdown().map_err(|e| OpError::io(e.to_string()))?;
            }
            Ok(to_json(&r))
        }
        Request::Rollback {
            container,
            to,
            dry_run,
        } => {
            let fs = ctx.fs.as_deref().map(|f| &**f.core());
            let old_view = store.registry().by_name(&container).map(|c| c.view);
            let t = std::time::Instant::now();
            let r = dedupfs_snapshot::rollback::rollback(store, fs, &container, &to, dry_run)
                .map_err(hist)?;
            let secs = t.elapsed().as_secs_f64();
            if !dry_run {
                if let Some(v) = old_view {
                    ctx.invalidate_view(v, &container);
                }
                ctx.invalidate_root_entry(".snapshots");
            }
            let mut v = to_json(&r);
            v["seconds"] = serde_json::json!(secs);
            Ok(v)
        }
        Request::RetentionShow { container } => Ok(to_json(
            &dedupfs_snapshot::retention::show(store, &container).map_err(hist)?,
        )),
        Request::RetentionPrune { container } => {
            if let Some(fs) = &ctx.fs {
                flush_best_effort(fs);
            }
            Ok(to_json(
                &dedupfs_snapshot::retention::prune(
                    store,
                    &container,
                    dedupfs_core::records::Timestamp::now(),
                )
                .map_err(hist)?,
            ))
        }
        Request::ContainerDelete { name, force } => {
            let ci = store
                .registry()
                .by_name(&name)
                .ok_or_else(|| ContainerError::NotFound(name.clone()))?;
            let files = stats::tree_counters(store, &ci)?.files;
            if files > 0 && !force {
                return Err(OpError {
                    kind: ErrorKind::Busy,
                    message: format!("container '{name}' holds {files} files; pass --force to delete it with its data"),
                });
            }
            if let Some(fs) = &ctx.fs {
                let open = fs.open_handles_in(ContainerId(ci.view));
                if open > 0 {
                    return Err(OpError {
                        kind: ErrorKind::Busy,
                        message: format!("container '{name}' has {open} open files or directories; close them first"),
                    });
                }
                fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
            }
            admin::delete_container(store, &name, true, &mut |n| {
                progress(&Progress {
                    what: format!("deleting '{name}' (extent records released)"),
                    done: n,
                    total: None,
                })
            })?;
            ctx.invalidate_root_entry(&name);
            Ok(serde_json::json!({ "deleted": name }))
        }
    }
}
