//! Bookmarks: named consistency points of a container (InMage's application,
//! file-system and user tags). Creating one first commits the container's buffered writes
//! and makes them durable, so the bookmark names a state that includes everything written
//! before it was asked for.

use crate::{container, validate_point_name, HistoryError, Result};
use dedupfs_core::containers::lock::{self, Authority};
use dedupfs_core::containers::{self, BookmarkRecord};
use dedupfs_core::fs::FsCore;
use dedupfs_core::ids::{ContainerId, Version};
use dedupfs_core::store::Store;

pub const KINDS: [&str; 3] = ["app", "fs", "user"];

pub fn create(
    store: &Store,
    fs: Option<&FsCore>,
    container_name: &str,
    name: &str,
    kind: &str,
) -> Result<BookmarkRecord> {
    validate_point_name(name)?;
    if !KINDS.contains(&kind) {
        return Err(HistoryError::Invalid(format!(
            "bookmark kind '{kind}' is not one of app, fs, user"
        )));
    }
    let ci = container(store, container_name)?;
    if let Some(fs) = fs {
        fs.flush_container(ci.id())?;
    }
    let cid = ci.id();
    // Through the registry writer: a concurrent rollback cannot move the head between
    // reading it and committing.
    let rec = store.commit_registry(|c, reg| {
        if containers::bookmark(c, cid, name)?.is_some() {
            return Err(HistoryError::Exists(format!(
                "container '{container_name}' already has a bookmark named '{name}'"
            )));
        }
        let branch = reg.get(cid).map(|ci| ci.rec.head).unwrap_or(ci.rec.head);
        let rec = BookmarkRecord {
            name: name.to_string(),
            container: cid.0,
            kind: kind.to_string(),
            version: c.version.0,
            time: c.time.sec,
            time_nsec: c.time.nsec,
            branch,
        };
        containers::put_bookmark(c, &rec);
        Ok(rec)
    })?;
    store.sync()?;
    log::info!(
        "bookmark '{name}' ({kind}) of container '{container_name}' at v{}",
        rec.version
    );
    Ok(rec)
}

pub fn list(store: &Store, container_name: &str) -> Result<Vec<BookmarkRecord>> {
    let ci = container(store, container_name)?;
    Ok(containers::bookmarks(store, ci.id())?)
}

/// Deletes a bookmark; one inside a retention lock's window is refused (governance:
/// unless `who` bypasses it).
pub fn delete(store: &Store, container_name: &str, name: &str, who: Authority) -> Result<()> {
    let ci = container(store, container_name)?;
    store.committer.commit(|c| {
        let Some(bm) = containers::bookmark(c, ci.id(), name)? else {
            return Err(HistoryError::NotFound(format!(
                "container '{container_name}' has no bookmark named '{name}'"
            )));
        };
        lock::check_point_delete(
            store,
            &ci.rec,
            &format!("bookmark '{name}'"),
            Version(bm.version),
            who,
        )?;
        containers::delete_bookmark(c, ci.id(), name);
        Ok(())
    })
}

/// Deletes bookmarks by record (retention).
pub(crate) fn delete_records(
    c: &mut dedupfs_core::commit::Commit<'_>,
    cid: ContainerId,
    names: &[String],
) {
    for n in names {
        containers::delete_bookmark(c, cid, n);
    }
}
