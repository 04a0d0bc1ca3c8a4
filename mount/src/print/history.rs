//! Text output of `bookmark`, `snapshot`, `rollback` and `retention` answers, each from
//! its typed answer, decoded by the caller: the records of `dedupfs_core::containers`
//! (`BookmarkRecord`, `SnapshotRecord`, the latter in a [`SnapshotAnswer`]), the reports of
//! `dedupfs-snapshot` (`Change`, `ApplyReport`, `RetentionReport`) and
//! `protocol::RollbackAnswer`.

use crate::output::{size, table};
use crate::protocol::RollbackAnswer;
use dedupfs_core::containers::{BookmarkRecord, SnapshotRecord};
use dedupfs_snapshot::apply::ApplyReport;
use dedupfs_snapshot::diff::{Change, ChangeKind};
use dedupfs_snapshot::retention::RetentionReport;
use serde::Deserialize;

/// The answer to `snapshot create` and `snapshot show`: the record, plus what the
/// request adds to it (`ops::history`).
#[derive(Deserialize, Debug)]
pub struct SnapshotAnswer {
    #[serde(flatten)]
    pub record: SnapshotRecord,
    /// The container's name (`show`; null when the container is gone).
    #[serde(default)]
    pub container_name: Option<String>,
    /// How long creating it took (`create`).
    #[serde(default)]
    pub seconds: Option<f64>,
}

pub fn bookmark(b: &BookmarkRecord) {
    println!(
        "bookmark '{}' ({}) at {} (version {})",
        b.name,
        b.kind,
        dedupfs_core::points::format_local(b.time),
        b.version
    );
}

pub fn bookmarks(list: &[BookmarkRecord]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.kind.clone(),
                dedupfs_core::points::format_local(b.time),
                b.version.to_string(),
            ]
        })
        .collect();
    table(&["NAME", "KIND", "TIME", "VERSION"], &rows);
}

pub fn snapshot(a: &SnapshotAnswer) {
    let r = &a.record;
    println!(
        "snapshot '{}' ({}) of container {} as of {}{}",
        r.name,
        r.mode.as_str(),
        a.container_name
            .as_deref()
            .map(|x| format!("'{x}'"))
            .unwrap_or_else(|| r.container.to_string()),
        dedupfs_core::points::format_local(r.at_time),
        a.seconds
            .map(|x| format!(" (created in {:.1} ms)", x * 1000.0))
            .unwrap_or_default()
    );
}

pub fn snapshots(list: &[SnapshotRecord]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                x.mode.as_str().to_string(),
                x.container.to_string(),
                dedupfs_core::points::format_local(x.at_time),
                x.origin.clone(),
            ]
        })
        .collect();
    table(&["NAME", "MODE", "CONTAINER", "AS OF", "ORIGIN"], &rows);
}

/// One line per change (`snapshot changes`, an apply, a dry-run rollback): `+`, `-` or
/// `M`, the path, its type and the byte ranges written (a modified file without ranges was
/// rewritten whole).
pub fn changes(list: &[Change]) {
    for c in list {
        let ranges = match &c.ranges {
            Some(r) if r.is_empty() => String::new(),
            Some(r) => format!(
                " bytes {}",
                r.iter()
                    .map(|(a, b)| format!("{a}-{b}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None if c.kind == ChangeKind::Modified && c.file_type == "file" => " whole file".into(),
            None => String::new(),
        };
        let sign = match c.kind {
            ChangeKind::Added => "+",
            ChangeKind::Removed => "-",
            ChangeKind::Modified => "M",
        };
        println!("{sign} {} ({}){ranges}", c.path, c.file_type);
    }
}

/// `snapshot apply`: what was applied, each conflict, and the totals.
pub fn apply(r: &ApplyReport) {
    changes(&r.applied);
    for c in &r.conflicts {
        println!("CONFLICT {}: {}", c.path, c.reason);
    }
    println!(
        "{} changes applied, {} copied, {} conflicts",
        r.applied.len(),
        size(r.bytes_copied),
        r.conflicts.len()
    );
}

/// `rollback`: the changes a dry run would make, or what was done and how to undo it.
pub fn rollback(a: &RollbackAnswer) {
    let r = &a.outcome;
    if r.dry_run {
        changes(&r.changes);
        println!(
            "dry run: rolling '{}' back to {} would add {}, remove {}, modify {} paths",
            r.container, r.to, r.added, r.removed, r.modified
        );
    } else if let Some(undo) = &r.undo_snapshot {
        println!(
            "'{}' rolled back to {}; the previous state is snapshot '{undo}' (undo: dedupfs rollback {} --to '{undo}')",
            r.container, r.to, r.container
        );
    } else {
        // Every rollback that is not a dry run keeps the previous state; say what is known.
        println!("'{}' rolled back to {}", r.container, r.to);
    }
}

/// `retention show` and (with `pruned`) `retention prune`.
pub fn retention(r: &RetentionReport, pruned: bool) {
    println!("container     {}", r.container);
    println!(
        "policy        {}",
        r.policy.as_deref().unwrap_or("keep everything")
    );
    println!(
        "window        from {}",
        dedupfs_core::points::format_local(r.window_start)
    );
    println!("bookmarks     {}", r.bookmarks);
    println!("snapshots     {}", r.snapshots);
    println!(
        "history       {} of superseded data kept",
        size(r.history_bytes)
    );
    if pruned {
        println!(
            "pruned        {} versions, {} of extents released",
            r.pruned_versions,
            size(r.released_bytes)
        );
    }
    if let Some(w) = &r.lock {
        println!("lock          {}", super::stats::lock_text(w));
    }
    if let Some(v) = r.held_by_lock {
        println!(
            "held by lock  the policy would have pruned up to v{v}; the lock kept everything from v{} on",
            r.lock.map(|w| w.floor).unwrap_or(0)
        );
    }
    if let Some(h) = r.history_held_bytes {
        println!(
            "only history  {} of packs at the last gc (what pruning could release)",
            size(h)
        );
    }
    println!(
        "reclaimable   {} in the whole store, now (`dedupfs gc` frees it)",
        size(r.store_reclaimable_bytes)
    );
}
