//! `dedupfs gc`, `fsck`, `sync` and `stats` (`stats --watch` is [`crate::watch`]).
//!
//! Invariants: `fsck` fails (exit 1) whenever a problem is left unrepaired, with or without
//! `--json` (then after printing the report, which says why); `sync` hands the kernel's
//! dirty pages to the daemon before it asks the store to sync, so it covers every write
//! that completed before the command.

use super::common::{decode_show, resolve_store, show_as, store_cmd, sync_mount};
use crate::ops::Request;
use crate::print;
use crate::{watch, CliError, ExitKind};
use std::path::PathBuf;

pub fn gc(
    store: Option<PathBuf>,
    dry_run: bool,
    grace: f64,
    min_reclaim: f64,
    verbose: bool,
    json: bool,
) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    let v = store_cmd(
        &store,
        Request::Gc {
            dry_run,
            grace_secs: grace,
            min_reclaim,
        },
        "gc",
    )?;
    show_as(v, "gc", json, |r: &dedupfs_gc::sweep::Report| {
        print::maint::gc(r, verbose || dry_run)
    })
}

pub fn fsck(store: Option<PathBuf>, scrub: bool, repair: bool, json: bool) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    let v = store_cmd(&store, Request::Fsck { scrub, repair }, "fsck")?;
    let r: dedupfs_gc::fsck::Report<String> = decode_show(v, "fsck", json, print::maint::fsck)?;
    let left = r.unrepaired;
    if left > 0 {
        if json {
            // The report printed above is the answer; an error object after it would
            // make the output two JSON documents.
            std::process::exit(ExitKind::Failed.code());
        }
        return Err(CliError::new(
            ExitKind::Failed,
            format!("fsck found {left} problem(s) it could not repair"),
        ));
    }
    Ok(())
}

pub fn sync(store: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    sync_mount(&store);
    let v = store_cmd(&store, Request::Sync, "sync")?;
    if json {
        println!("{v}");
    }
    Ok(())
}

pub fn checkpoint(store: Option<PathBuf>, wait: f64, json: bool) -> Result<(), CliError> {
    if !(wait.is_finite() && wait >= 0.0) {
        return Err(CliError::usage(format!("--wait {wait}: expected seconds")));
    }
    let store = resolve_store(store)?;
    sync_mount(&store);
    let v = store_cmd(
        &store,
        Request::Checkpoint { wait_secs: wait },
        "checkpoint",
    )?;
    show_as(
        v,
        "checkpoint",
        json,
        |c: &dedupfs_core::store::checkpoint::CheckpointRecord| {
            println!(
                "checkpoint {} uploaded: store version {}, {} compressed, taken {}",
                c.key,
                c.version,
                crate::output::size(c.bytes),
                dedupfs_core::points::format_time(c.at)
            )
        },
    )
}

pub fn stats(
    store: Option<PathBuf>,
    container: Option<String>,
    watch: Option<f64>,
    json: bool,
) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    if let Some(every) = watch {
        return watch::run(&store, container, every, json);
    }
    let v = store_cmd(
        &store,
        Request::Stats {
            container: container.clone(),
            no_flush: false,
        },
        "stats",
    )?;
    match container {
        Some(_) => show_as(v, "stats", json, print::stats::container_stats),
        None => show_as(v, "stats", json, print::stats::store),
    }
}
