//! The container requests: create, list, show, set, delete.
//!
//! Invariants: create, set and show answer with the same [`ContainerReport`] (so the CLI
//! prints all three alike); a delete is refused while the container holds files (unless
//! forced) or, mounted, while any of its files or directories is open; the kernel is told
//! of every container that appears or goes at the mount root.

use super::error::hist;
use super::{to_json, Ctx, ErrorKind, OpError, Progress};
use crate::protocol::{ContainerEntry, ContainerReport};
use dedupfs_core::admin::{self, LockChange, SettingsChange};
use dedupfs_core::chunks::Compression;
use dedupfs_core::containers::lock::{self, Authority, LockMode, RetentionLock};
use dedupfs_core::containers::{ContainerError, ContainerSettings, RootOwner};
use dedupfs_core::ids::ContainerId;
use dedupfs_core::stats;
use dedupfs_core::store::Store;

/// A compression setting as the user typed it, parsed (absent: leave it as it is).
fn compression(s: Option<&str>) -> Result<Option<Compression>, OpError> {
    s.map(|c| c.parse::<Compression>().map_err(OpError::invalid))
        .transpose()
}

pub fn show(store: &Store, name: &str) -> Result<serde_json::Value, OpError> {
    let ci = store
        .registry()
        .by_name(name)
        .ok_or_else(|| ContainerError::NotFound(name.into()))?;
    let stats = stats::container_stats(store, ci.id())?
        .ok_or_else(|| ContainerError::NotFound(name.into()))?;
    Ok(to_json(&ContainerReport {
        name: ci.rec.name.clone(),
        id: ci.rec.id,
        created: ci.rec.created,
        settings: ci.rec.settings.clone(),
        head_branch: ci.rec.head,
        rollbacks: ci.rec.prev_heads.len(),
        stats,
        replica: ci.rec.replica.clone(),
        promoted_from: ci.rec.promoted_from.clone(),
    }))
}

pub fn create(
    ctx: &Ctx,
    name: &str,
    c: Option<&str>,
    lock: Option<&str>,
    lock_for: Option<&str>,
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
    let lock = match lock_change(lock, lock_for)? {
        None => None,
        Some(LockChange::Set {
            mode: Some(mode),
            secs: Some(secs),
        }) => Some(RetentionLock {
            mode,
            secs,
            since: store.committer.clock().now().sec,
        }),
        Some(_) => {
            return Err(OpError::invalid(
                "a new container's lock needs --lock governance|compliance and --lock-for".into(),
            ))
        }
    };
    let settings = ContainerSettings {
        compression: compression(c)?.unwrap_or_default(),
        retention: None,
        lock,
    };
    admin::create_container(store, name, settings, RootOwner::default())?;
    ctx.invalidate_root_entry(name);
    show(store, name)
}

pub fn list(ctx: &Ctx) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
    let mut list = Vec::new();
    for ci in store.registry().list() {
        // A container deleted since the list was taken is left out.
        if let Some(stats) = stats::container_stats(store, ci.id())? {
            list.push(ContainerEntry {
                name: ci.rec.name.clone(),
                id: ci.rec.id,
                settings: ci.rec.settings.clone(),
                stats,
            });
        }
    }
    Ok(to_json(&list))
}

/// What `container set` may change (absent: leave it).
pub struct SetArgs<'a> {
    pub compression: Option<&'a str>,
    pub retention: Option<&'a str>,
    /// `governance`, `compliance`, or `none` to remove the lock.
    pub lock: Option<&'a str>,
    pub lock_for: Option<&'a str>,
}

/// The lock change the user asked for, parsed.
fn lock_change(mode: Option<&str>, dur: Option<&str>) -> Result<Option<LockChange>, OpError> {
    let secs = dur
        .map(|d| {
            lock::parse_duration(d).ok_or_else(|| {
                OpError::invalid(format!(
                    "invalid --lock-for '{d}': expected a positive duration such as 30d, 12w or 7y"
                ))
            })
        })
        .transpose()?;
    Ok(match (mode, secs) {
        (None, None) => None,
        (Some("none" | "off"), None) => Some(LockChange::Remove),
        (Some("none" | "off"), Some(_)) => {
            return Err(OpError::invalid(
                "--lock none removes the lock; it takes no --lock-for".into(),
            ))
        }
        (Some(m), secs) => Some(LockChange::Set {
            mode: Some(LockMode::parse(m).ok_or_else(|| {
                OpError::invalid(format!(
                    "invalid --lock '{m}': expected governance, compliance or none"
                ))
            })?),
            secs,
        }),
        (None, secs) => Some(LockChange::Set { mode: None, secs }),
    })
}

pub fn set(
    ctx: &Ctx,
    name: &str,
    a: SetArgs<'_>,
    who: Authority,
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
    let retention = a
        .retention
        .map(dedupfs_snapshot::retention::Policy::setting)
        .transpose()
        .map_err(hist)?;
    let change = SettingsChange {
        compression: compression(a.compression)?,
        retention,
        lock: lock_change(a.lock, a.lock_for)?,
    };
    admin::set_container(
        store,
        name,
        &change,
        who,
        &dedupfs_snapshot::retention::keeps_less,
    )?;
    show(store, name)
}

pub fn delete(
    ctx: &Ctx,
    name: &str,
    force: bool,
    who: Authority,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    let store = &*ctx.store;
    let ci = store
        .registry()
        .by_name(name)
        .ok_or_else(|| ContainerError::NotFound(name.to_string()))?;
    // Before anything else: a locked container is refused whether or not it is empty.
    lock::check_delete(store, &ci.rec, who)?;
    let files = stats::tree_counters(store, &ci)?.files;
    if files > 0 && !force {
        return Err(OpError {
            kind: ErrorKind::Busy,
            message: format!(
                "container '{name}' holds {files} files; pass --force to delete it with its data"
            ),
        });
    }
    if let Some(fs) = &ctx.fs {
        let open = fs.open_handles_in(ContainerId(ci.view));
        if open > 0 {
            return Err(OpError {
                kind: ErrorKind::Busy,
                message: format!(
                    "container '{name}' has {open} open files or directories; close them first"
                ),
            });
        }
        fs.flush_all().map_err(|e| OpError::io(e.to_string()))?;
    }
    admin::delete_container(store, name, true, who, &mut |n| {
        progress(&Progress {
            what: format!("deleting '{name}' (extent records released)"),
            done: n,
            total: None,
        })
    })?;
    ctx.invalidate_root_entry(name);
    Ok(serde_json::json!({ "deleted": name }))
}
