//! Virtual snapshots: create, list, show, delete.
//!
//! A snapshot is one record: read-only ones pin `(branch, version)` of the container's
//! history; read-write ones also get a branch of their own whose parent is that point, so
//! their writes never reach the container and the container's later writes never reach
//! them. Creating either costs the same for an empty container and for a huge one.
//!
//! Invariant: deleting a snapshot never changes another snapshot or the container. A
//! read-write snapshot's branch is purged only when no other branch forks from it.

use crate::{container, validate_point_name, HistoryError, Result};
use dedupfs_core::commit::Commit;
use dedupfs_core::containers::lock::{self, Authority};
use dedupfs_core::containers::{
    self, BranchRecord, ContainerInfo, PurgeProgress, SnapshotMode, SnapshotRecord,
};
use dedupfs_core::fs::FsCore;
use dedupfs_core::ids::{BranchId, ContainerId, Version};
use dedupfs_core::points::{self, Point, PointKind};
use dedupfs_core::store::Store;
use std::sync::Arc;

/// What `create` was asked for.
pub struct CreateRequest<'a> {
    pub container: &'a str,
    pub name: &'a str,
    pub mode: SnapshotMode,
    /// A time, bookmark or snapshot; `None` = now.
    pub at: Option<&'a str>,
    /// Commit the container's buffered writes first (the default for "now").
    pub flush: bool,
}

/// Writes a snapshot record (and for read-write modes its branch) into a commit. `base`
/// is the point it shows; `None` means "everything committed before this commit".
pub(crate) fn write_snapshot(
    c: &mut Commit<'_>,
    ci: &ContainerInfo,
    name: &str,
    mode: SnapshotMode,
    base: Option<&Point>,
    origin: &str,
) -> Result<(SnapshotRecord, Option<BranchRecord>)> {
    let id = containers::alloc_snapshot_id(c)?;
    let (base_branch, base_version, at_time) = match base {
        Some(p) => (p.branch, p.version, p.time),
        None => (ci.branch(), Version(c.version.0 - 1), c.time.sec),
    };
    let branch = match mode {
        SnapshotMode::Ro => None,
        SnapshotMode::Rw | SnapshotMode::RwTracking => {
            let b = c.alloc_branch();
            Some(BranchRecord {
                id: b.0,
                container: ci.rec.id,
                parent: Some((base_branch.0, base_version.0)),
                created_version: c.version.0,
                created: c.time.sec,
                purpose: format!("snapshot {name}"),
            })
        }
    };
    if let Some(b) = &branch {
        containers::put_branch(c, b);
    }
    let rec = SnapshotRecord {
        id,
        name: name.to_string(),
        container: ci.rec.id,
        mode,
        base_branch: base_branch.0,
        base_version: base_version.0,
        branch: branch.as_ref().map(|b| b.id),
        created: c.time.sec,
        created_version: c.version.0,
        at_time,
        origin: origin.to_string(),
    };
    containers::put_snapshot(c, &rec);
    Ok((rec, branch))
}

pub fn create(
    store: &Store,
    fs: Option<&FsCore>,
    req: &CreateRequest<'_>,
) -> Result<SnapshotRecord> {
    validate_point_name(req.name)?;
    let _history = crate::history_lock();
    let ci = container(store, req.container)?;
    if store.registry().snapshot_by_name(req.name).is_some() {
        return Err(HistoryError::Exists(format!(
            "a snapshot named '{}' already exists",
            req.name
        )));
    }
    let point = match req.at {
        Some(spec) => Some(points::resolve(store, &ci.rec, spec)?),
        None => {
            if let (Some(fs), true) = (fs, req.flush) {
                fs.flush_container(ci.id())?;
            }
            None
        }
    };
    let rec = store.commit_registry(|c, reg| {
        if reg.snapshot_by_name(req.name).is_some() {
            return Err(HistoryError::Exists(format!(
                "a snapshot named '{}' already exists",
                req.name
            )));
        }
        // The head may have moved (rollback) since `ci` was read.
        let ci = reg.get(ci.id()).ok_or_else(|| {
            HistoryError::NotFound(format!("no container named '{}'", req.container))
        })?;
        let origin = match &point {
            Some(p) if p.kind != PointKind::Time => format!("user, at {}", p.label),
            _ => "user".to_string(),
        };
        let (rec, branch) = write_snapshot(c, &ci, req.name, req.mode, point.as_ref(), &origin)?;
        if let Some(b) = branch {
            reg.add_branch(b);
        }
        reg.insert_snapshot(rec.clone());
        Ok(rec)
    })?;
    log::info!(
        "snapshot '{}' ({}) of container '{}' at v{}",
        rec.name,
        rec.mode.as_str(),
        req.container,
        rec.base_version
    );
    Ok(rec)
}

pub fn get(store: &Store, name: &str) -> Result<Arc<ContainerInfo>> {
    store
        .registry()
        .snapshot_by_name(name)
        .ok_or_else(|| HistoryError::NotFound(format!("no snapshot named '{name}'")))
}

pub fn record(store: &Store, name: &str) -> Result<SnapshotRecord> {
    get(store, name)?
        .snapshot
        .clone()
        .ok_or_else(|| HistoryError::NotFound(format!("no snapshot named '{name}'")))
}

/// Snapshots, optionally of one container, in name order.
pub fn list(store: &Store, container_name: Option<&str>) -> Result<Vec<SnapshotRecord>> {
    let only = match container_name {
        Some(n) => Some(container(store, n)?.id()),
        None => None,
    };
    Ok(store
        .registry()
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot.clone())
        .filter(|s| only.is_none_or(|c| c.0 == s.container))
        .collect())
}

/// Deletes a snapshot. Its own writes (read-write modes) are released unless another
/// branch forks from it, in which case the branch stays for that branch's sake.
///
/// A snapshot inside a retention lock's window is refused (governance: unless `who`
/// bypasses it): a read-only one created or showing a moment inside it, and every
/// read-write one (its tree is live).
pub fn delete(store: &Store, fs: Option<&FsCore>, name: &str, who: Authority) -> Result<()> {
    let s = get(store, name)?;
    let rec = s
        .snapshot
        .clone()
        .ok_or_else(|| HistoryError::NotFound(name.into()))?;
    let cid = ContainerId(rec.container);
    let locked = |reg: &dedupfs_core::containers::Registry| -> Result<()> {
        let Some(ci) = reg.get(cid) else {
            return Ok(());
        };
        // A read-write snapshot's own tree is live (readable now), so it is always inside
        // the window; a read-only one holds the moment it shows.
        let newest = match rec.branch {
            Some(_) => store.committer.head().0,
            None => rec.created_version.max(rec.base_version),
        };
        lock::check_point_delete(
            store,
            &ci.rec,
            &format!("snapshot '{name}'"),
            Version(newest),
            who,
        )?;
        Ok(())
    };
    // Checked before anything is flushed or changed, and again under the registry writer
    // (a lock set meanwhile still counts).
    locked(&store.registry())?;
    if let Some(fs) = fs {
        let open = fs.open_handles_in(ContainerId(rec.view()));
        if open > 0 {
            return Err(HistoryError::Busy(format!(
                "snapshot '{name}' has {open} open files or directories; close them first"
            )));
        }
        fs.flush_container(ContainerId(rec.container))?;
    }
    let purge = store.commit_registry(|c, reg| {
        locked(reg)?;
        let purge = rec.branch.map(BranchId).filter(|b| {
            !reg.branches_of(ContainerId(rec.container)).iter().any(|o| {
                reg.branch(*o)
                    .and_then(|r| r.parent)
                    .is_some_and(|p| p.0 == b.0)
            })
        });
        containers::delete_snapshot(c, rec.id);
        reg.remove_snapshot(rec.id);
        Ok::<_, HistoryError>(purge)
    })?;
    if let Some(b) = purge {
        let cid = ContainerId(rec.container);
        loop {
            let step = store.commit_registry(|c, reg| {
                let n = containers::release_branch_extents(c, &store.chunks, cid, b)?;
                if n == 0 {
                    containers::drop_branch_records(c, b);
                    reg.forget_branch(b);
                    return Ok::<_, HistoryError>(PurgeProgress::Done);
                }
                Ok(PurgeProgress::Released(n))
            })?;
            if step == PurgeProgress::Done {
                break;
            }
        }
    }
    log::info!("snapshot '{name}' deleted");
    Ok(())
}
