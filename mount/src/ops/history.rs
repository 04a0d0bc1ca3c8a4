//! The history requests: bookmarks, snapshots (create, list, show, delete, changes,
//! apply), rollback and retention.
//!
//! Invariants: each change made behind the kernel's back is followed by the invalidation
//! of what the kernel caches of it (`.snapshots` entries, a rolled-back tree, the paths an
//! apply wrote, a deleted snapshot's nodes); a dry-run rollback changes and invalidates
//! nothing. Answers are the library's records and reports as JSON, with a few fields added
//! here (`seconds` a creation took; `container_name` and `path` of a shown snapshot; a
//! rollback's `seconds` in the typed `protocol::RollbackAnswer`).

use super::error::hist;
use super::{flush_best_effort, to_json, Ctx, OpError};
use dedupfs_core::containers::lock::Authority;
use dedupfs_core::containers::SnapshotMode;
use dedupfs_core::ids::ContainerId;

type Answer = Result<serde_json::Value, OpError>;

pub fn bookmark_create(ctx: &Ctx, container: &str, name: &str, kind: &str) -> Answer {
    let fs = ctx.fs.as_deref().map(|f| &**f.core());
    let b =
        dedupfs_snapshot::bookmark::create(&ctx.store, fs, container, name, kind).map_err(hist)?;
    Ok(to_json(&b))
}

pub fn bookmark_list(ctx: &Ctx, container: &str) -> Answer {
    Ok(to_json(
        &dedupfs_snapshot::bookmark::list(&ctx.store, container).map_err(hist)?,
    ))
}

pub fn bookmark_delete(ctx: &Ctx, container: &str, name: String, who: Authority) -> Answer {
    dedupfs_snapshot::bookmark::delete(&ctx.store, container, &name, who).map_err(hist)?;
    Ok(serde_json::json!({ "deleted": name }))
}

pub fn snapshot_create(
    ctx: &Ctx,
    container: &str,
    name: &str,
    mode: &str,
    at: Option<&str>,
    no_flush: bool,
) -> Answer {
    let mode = SnapshotMode::parse(mode).ok_or_else(|| {
        OpError::invalid(format!(
            "snapshot mode '{mode}' is not ro, rw or rw-tracking"
        ))
    })?;
    let fs = ctx.fs.as_deref().map(|f| &**f.core());
    let t = std::time::Instant::now();
    let rec = dedupfs_snapshot::snapshot::create(
        &ctx.store,
        fs,
        &dedupfs_snapshot::snapshot::CreateRequest {
            container,
            name,
            mode,
            at,
            flush: !no_flush,
        },
    )
    .map_err(hist)?;
    let mut v = to_json(&rec);
    v["seconds"] = serde_json::json!(t.elapsed().as_secs_f64());
    ctx.invalidate_root_entry(".snapshots");
    Ok(v)
}

pub fn snapshot_list(ctx: &Ctx, container: Option<&str>) -> Answer {
    Ok(to_json(
        &dedupfs_snapshot::snapshot::list(&ctx.store, container).map_err(hist)?,
    ))
}

pub fn snapshot_show(ctx: &Ctx, name: &str) -> Answer {
    let store = &*ctx.store;
    let rec = dedupfs_snapshot::snapshot::record(store, name).map_err(hist)?;
    let mut v = to_json(&rec);
    v["container_name"] = serde_json::json!(store
        .registry()
        .get(ContainerId(rec.container))
        .map(|c| c.rec.name.clone()));
    v["path"] = serde_json::json!(format!(".snapshots/{}", rec.name));
    Ok(v)
}

pub fn snapshot_delete(ctx: &Ctx, name: String, who: Authority) -> Answer {
    let store = &*ctx.store;
    let view = dedupfs_snapshot::snapshot::record(store, &name)
        .map_err(hist)?
        .view();
    let fs = ctx.fs.as_deref().map(|f| &**f.core());
    dedupfs_snapshot::snapshot::delete(store, fs, &name, who).map_err(hist)?;
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

pub fn snapshot_changes(ctx: &Ctx, name: &str) -> Answer {
    let fs = ctx.fs.as_deref().map(|f| &**f.core());
    Ok(to_json(
        &dedupfs_snapshot::apply::changes(&ctx.store, fs, name).map_err(hist)?,
    ))
}

pub fn snapshot_apply(ctx: &Ctx, name: &str, onto: &str, force: bool) -> Answer {
    let fs = ctx.fs_core();
    let r =
        dedupfs_snapshot::apply::apply(&ctx.store, fs.core(), name, onto, force).map_err(hist)?;
    ctx.invalidate_applied(&r);
    if ctx.fs.is_none() {
        // A private core (no mount) may still buffer what the apply wrote: shutting it
        // down commits that before the answer says it was applied.
        fs.shutdown().map_err(|e| OpError::io(e.to_string()))?;
    }
    Ok(to_json(&r))
}

pub fn rollback(ctx: &Ctx, container: &str, to: &str, dry_run: bool) -> Answer {
    let store = &*ctx.store;
    let fs = ctx.fs.as_deref().map(|f| &**f.core());
    let old_view = store.registry().by_name(container).map(|c| c.view);
    let t = std::time::Instant::now();
    let r =
        dedupfs_snapshot::rollback::rollback(store, fs, container, to, dry_run).map_err(hist)?;
    let secs = t.elapsed().as_secs_f64();
    if !dry_run {
        if let Some(v) = old_view {
            ctx.invalidate_view(v, container);
        }
        ctx.invalidate_root_entry(".snapshots");
    }
    Ok(to_json(&crate::protocol::RollbackAnswer {
        outcome: r,
        seconds: secs,
    }))
}

pub fn retention_show(ctx: &Ctx, container: &str) -> Answer {
    Ok(to_json(
        &dedupfs_snapshot::retention::show(&ctx.store, container).map_err(hist)?,
    ))
}

pub fn retention_prune(ctx: &Ctx, container: &str) -> Answer {
    if let Some(fs) = &ctx.fs {
        flush_best_effort(fs);
    }
    Ok(to_json(
        &dedupfs_snapshot::retention::prune(
            &ctx.store,
            container,
            ctx.store.committer.clock().wall(),
        )
        .map_err(hist)?,
    ))
}
