//! Rollback: a container's live contents become exactly what they were at a time,
//! bookmark or snapshot.
//!
//! The container's head moves to a new branch forked from the target point, in one commit
//! that costs the same whatever the container holds. Nothing is destroyed: the state just
//! before the rollback becomes a read-only snapshot (so the rollback can be undone by
//! rolling back to it), and later snapshots and bookmarks stay as they were. The old head
//! is remembered in the container record, so reading the container "as of" a moment before
//! the rollback still shows what it was then.

use crate::diff::{self, Change, ChangeKind, Tree};
use crate::snapshot::write_snapshot;
use crate::{container, HistoryError, Result};
use dedupfs_core::containers::{self, BranchRecord, SnapshotMode, SNAPSHOT_VIEW_BASE};
use dedupfs_core::fs::FsCore;
use dedupfs_core::ids::Version;
use dedupfs_core::points::{self, format_time};
use dedupfs_core::store::Store;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct RollbackOutcome {
    pub container: String,
    /// What it was rolled back to.
    pub to: String,
    pub to_version: u64,
    pub dry_run: bool,
    /// The read-only snapshot holding the state just before the rollback (none for a dry
    /// run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_snapshot: Option<String>,
    pub added: usize,
    pub removed: usize,
    pub modified: usize,
    /// What changes in the live tree (dry run; also filled for a real run when asked).
    pub changes: Vec<Change>,
}

pub fn rollback(
    store: &Store,
    fs: Option<&FsCore>,
    container_name: &str,
    to: &str,
    dry_run: bool,
) -> Result<RollbackOutcome> {
    let _history = crate::history_lock();
    let ci = container(store, container_name)?;
    if let Some(r) = &ci.rec.replica {
        // Its head must stay the state its source last sent, or the next delta would
        // apply to another tree.
        return Err(HistoryError::Invalid(format!(
            "container '{container_name}' is a read-only replica of '{}'; promote it \
             (`dedupfs container promote {container_name}`) before rolling it back",
            r.source_container
        )));
    }
    let point = points::resolve(store, &ci.rec, to)?;
    let mut out = RollbackOutcome {
        container: container_name.to_string(),
        to: point.label.clone(),
        to_version: point.version.0,
        dry_run,
        undo_snapshot: None,
        added: 0,
        removed: 0,
        modified: 0,
        changes: Vec::new(),
    };
    if dry_run {
        if let Some(fs) = fs {
            fs.flush_container(ci.id())?;
        }
        let then = Tree::at(store, &ci, point.branch, point.version);
        out.changes = diff::diff(store, &Tree::of(&ci), &then)?;
        for c in &out.changes {
            match c.kind {
                ChangeKind::Added => out.added += 1,
                ChangeKind::Removed => out.removed += 1,
                ChangeKind::Modified => out.modified += 1,
            }
        }
        return Ok(out);
    }
    // From here to the switch, writers of the container wait (the barrier): a write that
    // reached the daemon before is flushed now and kept in the state the rollback
    // preserves; one that comes after finds its tree switched and fails with ESTALE. No
    // write can fall between the two.
    let quiet = fs.map(|f| f.quiesce(ci.id()));
    if let Some(fs) = fs {
        fs.flush_container(ci.id())?;
    }
    // The target's live-file counters come with it (they are versioned); a point from
    // before the store recorded them (an upgraded store) is counted now.
    let target = store.registry().read_point(point.branch, point.version);
    let counted = match dedupfs_core::stats::tree_counters_at(store, &target)? {
        Some(_) => None,
        None => Some(dedupfs_core::tree::count(store, &target, ci.root())?),
    };
    let now = dedupfs_core::records::Timestamp::now();
    let stamp = format_time(now.sec).replace([':', '-'], "");
    let snap = store.commit_registry(|c, reg| {
        let ci = reg.get(ci.id()).ok_or_else(|| {
            HistoryError::NotFound(format!("no container named '{container_name}'"))
        })?;
        let mut undo = format!("{container_name}@before-rollback-{stamp}");
        let mut n = 1;
        while reg.snapshot_by_name(&undo).is_some() {
            n += 1;
            undo = format!("{container_name}@before-rollback-{stamp}-{n}");
        }
        let (snap, _) = write_snapshot(
            c,
            &ci,
            &undo,
            SnapshotMode::Ro,
            None,
            &format!("before rollback to {}", point.label),
        )?;
        let b = c.alloc_branch();
        let branch = BranchRecord {
            id: b.0,
            container: ci.rec.id,
            parent: Some((point.branch.0, point.version.0)),
            created_version: c.version.0,
            created: c.time.sec,
            purpose: format!("rollback to {}", point.label),
        };
        containers::put_branch(c, &branch);
        let mut rec = ci.rec.clone();
        rec.prev_heads.push((rec.head, c.version.0 - 1));
        rec.head = b.0;
        rec.live_view = SNAPSHOT_VIEW_BASE + containers::alloc_snapshot_id(c)?;
        containers::put_container(c, &rec);
        reg.add_branch(branch);
        if let Some(t) = counted {
            c.set_tree_counters(&reg.read_point(b, Version::LATEST), t);
        }
        reg.upsert(rec, None);
        reg.insert_snapshot(snap.clone());
        Ok::<_, HistoryError>(snap)
    })?;
    drop(quiet);
    store.sync()?;
    log::info!(
        "container '{container_name}' rolled back to {} (v{}); the previous state is snapshot '{}'",
        point.label,
        point.version.0,
        snap.name
    );
    out.undo_snapshot = Some(snap.name);
    Ok(out)
}
