//! The store-wide requests: `Ping` (the daemon's health), `Sync`, `Stats`, `Gc`, `Fsck`.
//!
//! Invariants: figures, GC and fsck describe committed data, so buffered writes are
//! committed first — best effort ([`flush_best_effort`]), so a file that cannot be
//! flushed never blocks what frees space — except where the caller asked not to
//! (`no_flush` for `stats --watch`, a GC dry run); `Sync` alone fails when a buffered
//! write cannot be committed, since making everything durable is its whole point. Every
//! GC run that may have changed the store is recorded, failed ones included.

use super::{flush_best_effort, to_json, Ctx, OpError, Progress};
use dedupfs_core::containers::ContainerError;
use dedupfs_core::stats;

pub fn ping(ctx: &Ctx) -> serde_json::Value {
    let store = &*ctx.store;
    to_json(&crate::protocol::Health {
        store: store.root().to_path_buf(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: crate::protocol::PROTOCOL_VERSION,
        pid: std::process::id(),
        halted: store.committer.halted().map(str::to_string),
        buffered_bytes: ctx.fs.as_ref().map_or(0, |f| f.buffered_bytes() as u64),
        unflushed: ctx.fs.as_ref().map(|f| f.unflushed()).unwrap_or_default(),
    })
}

pub fn sync(ctx: &Ctx) -> Result<serde_json::Value, OpError> {
    if let Some(fs) = &ctx.fs {
        fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
    }
    ctx.store.sync()?;
    Ok(serde_json::json!({}))
}

pub fn checkpoint(ctx: &Ctx, wait_secs: f64) -> Result<serde_json::Value, OpError> {
    if let Some(fs) = &ctx.fs {
        fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
    }
    let wait = std::time::Duration::from_secs_f64(wait_secs.clamp(0.0, 86_400.0));
    let rec = dedupfs_core::store::checkpoint::take(&ctx.store, wait)?;
    serde_json::to_value(rec).map_err(|e| OpError::io(e.to_string()))
}

pub fn stats(
    ctx: &Ctx,
    container: Option<String>,
    no_flush: bool,
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
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
            // Deleted between the lookup and the figures: as if never found.
            let st = stats::container_stats(store, ci.id())?
                .ok_or_else(|| ContainerError::NotFound(name.clone()))?;
            Ok(to_json(&st))
        }
        None => Ok(to_json(&crate::protocol::StoreReport {
            stats: stats::store_stats(store)?,
            gc: dedupfs_gc::state::status(store)?,
        })),
    }
}

pub fn gc(
    ctx: &Ctx,
    dry_run: bool,
    grace_secs: f64,
    min_reclaim: f64,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
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
        cancel: ctx.cancel.clone(),
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
    // A run stopped by the unmount is not a failed run (the idle cleaner does the same).
    if !dry_run && !matches!(res, Err(dedupfs_gc::GcError::Cancelled)) {
        dedupfs_gc::state::record_run(store, dedupfs_gc::sweep::run_record(&res, t0, false))?;
    }
    Ok(to_json(&res?))
}

pub fn fsck(
    ctx: &Ctx,
    scrub: bool,
    repair: bool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
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
    let r = dedupfs_gc::fsck::run(&ctx.store, &opts, &mut pr)?;
    Ok(to_json(&r))
}
