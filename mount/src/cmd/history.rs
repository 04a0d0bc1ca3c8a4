//! `dedupfs bookmark`, `snapshot`, `rollback` and `retention`: the requests, the kernel's
//! dirty pages handed to the daemon before a consistency point is taken or compared, and
//! `snapshot mount` (a bind mount of the snapshot's directory in the live mount).
//!
//! Invariants: a bookmark, a snapshot (unless `--at` or `--no-flush`), rollback, changes
//! or apply first syncs the mount ([`sync_mount`]), so it includes every write that
//! completed before the command, also one still in the kernel's page cache; an apply that
//! left conflicts fails (exit 1) after printing what it did.

use super::common::{
    decode_show, mountpoint_of, resolve_store, show_as, store_cmd, sync_mount, to_instant,
};
use crate::cli::{BookmarkCmd, RetentionCmd, SnapshotCmd};
use crate::ops::Request;
use crate::print::history as print;
use crate::protocol;
use crate::{mountpoint, CliError, ExitKind};
use dedupfs_core::containers::SnapshotMode;
use dedupfs_snapshot::apply::ApplyReport;
use dedupfs_snapshot::diff::Change;
use dedupfs_snapshot::retention::RetentionReport;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Prints an answer that has no printer of its own (a deletion's `{"deleted": …}`) as
/// its one-line JSON.
fn raw(v: &Value) {
    println!("{v}");
}

pub fn bookmark(b: BookmarkCmd, store: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    match b {
        BookmarkCmd::Create {
            container,
            name,
            kind,
        } => {
            // The kernel's dirty pages of files still open belong to the moment too.
            sync_mount(&store);
            let req = Request::BookmarkCreate {
                container,
                name,
                kind,
            };
            let v = store_cmd(&store, req, "bookmark create")?;
            show_as(v, "bookmark create", json, print::bookmark)
        }
        BookmarkCmd::List { container } => {
            let v = store_cmd(&store, Request::BookmarkList { container }, "bookmark list")?;
            show_as(v, "bookmark list", json, |l: &Vec<_>| print::bookmarks(l))
        }
        BookmarkCmd::Delete {
            container,
            name,
            bypass_governance,
        } => {
            let req = Request::BookmarkDelete {
                container,
                name,
                bypass_governance,
            };
            let v = store_cmd(&store, req, "bookmark delete")?;
            show_as(v, "bookmark delete", json, raw)
        }
    }
}

pub fn snapshot(sc: SnapshotCmd, store: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    match sc {
        SnapshotCmd::Mount { name, mountpoint } => {
            let v = store_cmd(
                &store,
                Request::SnapshotShow { name: name.clone() },
                "snapshot show",
            )?;
            let a: print::SnapshotAnswer =
                protocol::decode(v, "snapshot show").map_err(CliError::from_op)?;
            let read_only = a.record.mode == SnapshotMode::Ro;
            mount_snapshot(&store, &name, &mountpoint, read_only)
        }
        SnapshotCmd::Create {
            container,
            name,
            mode,
            at,
            no_flush,
        } => {
            if !no_flush && at.is_none() {
                sync_mount(&store);
            }
            let req = Request::SnapshotCreate {
                container,
                name,
                mode,
                at: at.map(|a| to_instant(&a)),
                no_flush,
            };
            let v = store_cmd(&store, req, "snapshot create")?;
            show_as(v, "snapshot create", json, print::snapshot)
        }
        SnapshotCmd::List { container } => {
            let v = store_cmd(&store, Request::SnapshotList { container }, "snapshot list")?;
            show_as(v, "snapshot list", json, |l: &Vec<_>| print::snapshots(l))
        }
        SnapshotCmd::Show { name } => {
            let v = store_cmd(&store, Request::SnapshotShow { name }, "snapshot show")?;
            show_as(v, "snapshot show", json, print::snapshot)
        }
        SnapshotCmd::Delete {
            name,
            bypass_governance,
        } => {
            let req = Request::SnapshotDelete {
                name,
                bypass_governance,
            };
            let v = store_cmd(&store, req, "snapshot delete")?;
            show_as(v, "snapshot delete", json, raw)
        }
        SnapshotCmd::Changes { name } => {
            sync_mount(&store);
            let req = Request::SnapshotChanges { name };
            let v = store_cmd(&store, req, "snapshot changes")?;
            show_as(v, "snapshot changes", json, |l: &Vec<Change>| {
                print::changes(l)
            })
        }
        SnapshotCmd::Apply { name, onto, force } => {
            sync_mount(&store);
            let req = Request::SnapshotApply { name, onto, force };
            let v = store_cmd(&store, req, "snapshot apply")?;
            let r: ApplyReport = decode_show(v, "snapshot apply", json, print::apply)?;
            // A conflict is a failure the caller must see.
            if !r.conflicts.is_empty() {
                return Err(CliError::new(
                    ExitKind::Failed,
                    "some changes conflicted with the target and were not applied".into(),
                ));
            }
            Ok(())
        }
    }
}

pub fn rollback(
    container: String,
    to: &str,
    dry_run: bool,
    store: Option<PathBuf>,
    json: bool,
) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    sync_mount(&store);
    let req = Request::Rollback {
        container,
        to: to_instant(to),
        dry_run,
    };
    let v = store_cmd(&store, req, "rollback")?;
    show_as(v, "rollback", json, print::rollback)
}

pub fn retention(r: RetentionCmd, store: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let store = resolve_store(store)?;
    let (req, what) = match r {
        RetentionCmd::Show { container } => {
            (Request::RetentionShow { container }, "retention show")
        }
        RetentionCmd::Prune { container } => {
            (Request::RetentionPrune { container }, "retention prune")
        }
    };
    let pruned = matches!(req, Request::RetentionPrune { .. });
    let v = store_cmd(&store, req, what)?;
    show_as(v, what, json, |r: &RetentionReport| {
        print::retention(r, pruned)
    })
}

/// Bind-mounts `MOUNT/.snapshots/NAME` on `target`, read-only for ro snapshots (a
/// read-only bind mount refuses writes in the kernel, before they reach the daemon).
fn mount_snapshot(
    store: &Path,
    name: &str,
    target: &Path,
    read_only: bool,
) -> Result<(), CliError> {
    let mnt = mountpoint_of(store).ok_or_else(|| {
        CliError::new(
            ExitKind::Mount,
            format!(
                "the store {} is not mounted; mount it first",
                store.display()
            ),
        )
    })?;
    let src = mnt.join(".snapshots").join(name);
    let meta = std::fs::metadata(&src)
        .map_err(|_| CliError::new(ExitKind::NotFound, format!("no snapshot named '{name}'")))?;
    if !meta.is_dir() {
        return Err(CliError::new(
            ExitKind::NotFound,
            format!("no snapshot named '{name}'"),
        ));
    }
    mountpoint::check_mountpoint(target)?;
    mountpoint::bind_mount(&src, target, read_only)?;
    println!(
        "snapshot '{name}' mounted on {}{} (unmount with: umount {})",
        target.display(),
        if read_only { " read-only" } else { "" },
        target.display()
    );
    Ok(())
}
