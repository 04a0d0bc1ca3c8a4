//! Store commands executed against an open store, by the CLI directly (no daemon serves
//! the store) or by the daemon on the CLI's behalf (`control`). [`Request`] is what the
//! CLI asks, [`execute`] routes it to the module of its group — [`containers`],
//! [`history`] (bookmarks, snapshots, rollback, retention) or [`maint`] (ping, sync,
//! stats, gc, fsck) — and the answer is a JSON value that the CLI prints as text or passes
//! through with `--json`.
//!
//! Invariants: the serde shape of [`Request`], [`Progress`] and every answer is the
//! control protocol (`protocol::PROTOCOL_VERSION`); a request means the same with or
//! without a mount ([`Ctx::fs`] is `None` without one), and a mounted one also tells the
//! kernel to drop what it caches of anything the request changed behind its back.

mod containers;
mod error;
mod history;
mod maint;
mod replicate;

pub use error::{ErrorKind, OpError};

use dedupfs_core::containers::lock::Authority;
use dedupfs_core::fs::Fs;
use dedupfs_core::store::Store;
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
        #[serde(default)]
        lock: Option<String>,
        #[serde(default)]
        lock_for: Option<String>,
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
        /// `governance`, `compliance` or `none`.
        #[serde(default)]
        lock: Option<String>,
        #[serde(default)]
        lock_for: Option<String>,
        #[serde(default)]
        bypass_governance: bool,
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
        #[serde(default)]
        bypass_governance: bool,
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
        #[serde(default)]
        bypass_governance: bool,
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
        #[serde(default)]
        bypass_governance: bool,
    },
    Sync,
    Checkpoint {
        wait_secs: f64,
    },
    Gc {
        dry_run: bool,
        grace_secs: f64,
        min_reclaim: f64,
    },
    Fsck {
        scrub: bool,
        repair: bool,
    },
    /// Replicate a container; the stream's descriptors come with the request (interactive:
    /// read end, then write end; otherwise the write end only).
    ReplicaSend {
        container: String,
        target_container: String,
        #[serde(default)]
        failback: bool,
        #[serde(default)]
        bwlimit: Option<u64>,
        #[serde(default)]
        since: Option<String>,
        interactive: bool,
        /// Test hook: damage this many chunks in transit (see `SendOptions::corrupt`).
        #[serde(default)]
        corrupt: u32,
        #[serde(default)]
        verify: bool,
    },
    /// Receive a stream (interactive: read end, then write end; otherwise the read end).
    ReplicaReceive {
        container: Option<String>,
        interactive: bool,
    },
    ReplicaPromote {
        name: String,
    },
    ReplicaAbort {
        name: String,
    },
}

/// A step of a long operation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Progress {
    pub what: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// What a request runs against.
pub struct Ctx {
    pub store: Arc<Store>,
    /// Present when mounted: open files matter and the kernel's caches must be told.
    pub fs: Option<Arc<Fs>>,
    pub notifier: Option<fuser::Notifier>,
    /// The nodes the kernel holds (mounted only).
    pub known: Option<Arc<crate::fuse::KnownNodes>>,
    /// Set when the daemon starts unmounting: a long request (GC waiting out its grace
    /// period) stops early instead of holding the unmount up.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Ctx {
    /// Drops the kernel's cached entry `name` at the mount root (a container, or
    /// `.snapshots`, that appeared, went or changed).
    pub(super) fn invalidate_root_entry(&self, name: &str) {
        if let Some(n) = &self.notifier {
            let _ = n.inval_entry(fuser::INodeNo(1), std::ffi::OsStr::new(name));
        }
    }

    /// Drops what the kernel caches of a tree that was replaced (by a rollback): the name
    /// of its root at once, so paths resolve to the new tree; the pages and attributes of
    /// inodes with open handles at once, so those handles see ESTALE rather than cached
    /// pages; every other cached inode of the old tree in the background (no path leads to
    /// them any more), so the rollback costs the same whatever the kernel has cached.
    pub(super) fn invalidate_view(&self, view: u32, root_name: &str) {
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

/// An answer as JSON. The answer types are plain structs and lists (no maps with
/// non-string keys), whose serialization cannot fail: a `Null` here would be a bug, never
/// something a user or the disk caused.
fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Commits buffered writes before an operation that reads committed state (stats, prune,
/// GC, fsck) but does not need them: a file that cannot be flushed (its writer already got
/// the error, e.g. ENOSPC) must not stop the very operations that free space.
fn flush_best_effort(fs: &Fs) {
    if let Err(e) = fs.flush_all() {
        log::warn!("some buffered writes could not be committed first: {e}");
    }
}

/// What `--bypass-governance` grants the caller: only root on this machine may override a
/// governance lock (the control socket tells the daemon the caller's uid; the CLI running
/// on the store itself checks its own).
fn authority(caller_uid: u32, bypass: bool) -> Result<Authority, OpError> {
    match (bypass, caller_uid) {
        (false, _) => Ok(Authority::Normal),
        (true, 0) => Ok(Authority::BypassGovernance),
        (true, uid) => Err(OpError {
            kind: ErrorKind::Denied,
            message: format!(
                "--bypass-governance needs root on this machine (the caller is uid {uid})"
            ),
        }),
    }
}

/// Runs one request for the user `caller_uid`; `progress` hears of the steps of a long one
/// (GC, fsck, a delete).
/// Runs a request (`fds`: descriptors that came with it, a replication's stream).
pub fn execute(
    ctx: &Ctx,
    caller_uid: u32,
    req: Request,
    fds: Vec<std::os::fd::OwnedFd>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    match req {
        Request::ReplicaSend {
            container,
            target_container,
            failback,
            bwlimit,
            since,
            interactive,
            corrupt,
            verify,
        } => replicate::send(
            ctx,
            replicate::SendArgs {
                container,
                target_container,
                failback,
                bwlimit,
                since,
                interactive,
                corrupt,
                verify,
            },
            fds,
            progress,
        ),
        Request::ReplicaReceive {
            container,
            interactive,
        } => replicate::receive(ctx, container, interactive, fds, progress),
        Request::ReplicaPromote { name } => replicate::promote(ctx, &name),
        Request::ReplicaAbort { name } => replicate::abort(ctx, &name),
        Request::Ping => Ok(maint::ping(ctx)),
        Request::Sync => maint::sync(ctx),
        Request::Checkpoint { wait_secs } => maint::checkpoint(ctx, wait_secs),
        Request::Stats {
            container,
            no_flush,
        } => maint::stats(ctx, container, no_flush),
        Request::Gc {
            dry_run,
            grace_secs,
            min_reclaim,
        } => maint::gc(ctx, dry_run, grace_secs, min_reclaim, progress),
        Request::Fsck { scrub, repair } => maint::fsck(ctx, scrub, repair, progress),
        Request::ContainerCreate {
            name,
            compression,
            lock,
            lock_for,
        } => containers::create(
            ctx,
            &name,
            compression.as_deref(),
            lock.as_deref(),
            lock_for.as_deref(),
        ),
        Request::ContainerList => containers::list(ctx),
        Request::ContainerShow { name } => containers::show(&ctx.store, &name),
        Request::ContainerSet {
            name,
            compression,
            retention,
            lock,
            lock_for,
            bypass_governance,
        } => containers::set(
            ctx,
            &name,
            containers::SetArgs {
                compression: compression.as_deref(),
                retention: retention.as_deref(),
                lock: lock.as_deref(),
                lock_for: lock_for.as_deref(),
            },
            authority(caller_uid, bypass_governance)?,
        ),
        Request::ContainerDelete {
            name,
            force,
            bypass_governance,
        } => containers::delete(
            ctx,
            &name,
            force,
            authority(caller_uid, bypass_governance)?,
            progress,
        ),
        Request::BookmarkCreate {
            container,
            name,
            kind,
        } => history::bookmark_create(ctx, &container, &name, &kind),
        Request::BookmarkList { container } => history::bookmark_list(ctx, &container),
        Request::BookmarkDelete {
            container,
            name,
            bypass_governance,
        } => history::bookmark_delete(
            ctx,
            &container,
            name,
            authority(caller_uid, bypass_governance)?,
        ),
        Request::SnapshotCreate {
            container,
            name,
            mode,
            at,
            no_flush,
        } => history::snapshot_create(ctx, &container, &name, &mode, at.as_deref(), no_flush),
        Request::SnapshotList { container } => history::snapshot_list(ctx, container.as_deref()),
        Request::SnapshotShow { name } => history::snapshot_show(ctx, &name),
        Request::SnapshotDelete {
            name,
            bypass_governance,
        } => history::snapshot_delete(ctx, name, authority(caller_uid, bypass_governance)?),
        Request::SnapshotChanges { name } => history::snapshot_changes(ctx, &name),
        Request::SnapshotApply { name, onto, force } => {
            history::snapshot_apply(ctx, &name, &onto, force)
        }
        Request::Rollback {
            container,
            to,
            dry_run,
        } => history::rollback(ctx, &container, &to, dry_run),
        Request::RetentionShow { container } => history::retention_show(ctx, &container),
        Request::RetentionPrune { container } => history::retention_prune(ctx, &container),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_may_bypass_governance() {
        assert_eq!(authority(1000, false).unwrap(), Authority::Normal);
        assert_eq!(authority(0, true).unwrap(), Authority::BypassGovernance);
        let e = authority(1000, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied);
        assert!(e.message.contains("uid 1000"), "{}", e.message);
    }
}
