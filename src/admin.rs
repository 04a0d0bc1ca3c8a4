//! Store administration: container lifecycle and settings, callable on an open store
//! whether or not it is mounted (the daemon runs these for the CLI while mounted).
//!
//! Every change commits atomically and then updates the in-memory registry.

use crate::chunks::Compression;
use crate::containers::lock::{self, Authority, LockMode, RetentionLock};
use crate::containers::{self, ContainerError, ContainerRecord, ContainerSettings, RootOwner};
use crate::store::{Store, StoreError};

/// Creates a container.
pub fn create_container(
    store: &Store,
    name: &str,
    settings: ContainerSettings,
    owner: RootOwner,
) -> Result<ContainerRecord, StoreError> {
    containers::validate_name(name)?;
    if store.registry().by_name(name).is_some() {
        return Err(ContainerError::Exists(name.into()).into());
    }
    // Checked again by the registry writer: two creators of one name cannot both win.
    let rec = store.commit_registry(|c, reg| {
        if reg.by_name(name).is_some() {
            return Err(ContainerError::Exists(name.into()).into());
        }
        let rec = containers::create_in(c, name, settings, owner).map_err(StoreError::from)?;
        reg.upsert(rec.clone(), Some(containers::head_branch_record(&rec)));
        Ok::<_, StoreError>(rec)
    })?;
    log::info!("container '{name}' created (id {})", rec.id);
    Ok(rec)
}

/// Changes of a container's settings.
#[derive(Clone, Debug, Default)]
pub struct SettingsChange {
    pub compression: Option<Compression>,
    /// `Some(None)` removes the retention policy (keep everything).
    pub retention: Option<Option<String>>,
    pub lock: Option<LockChange>,
}

/// A change of the retention lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockChange {
    /// Set or change it; an absent part keeps the current lock's (a new lock needs both).
    Set {
        mode: Option<LockMode>,
        secs: Option<i64>,
    },
    Remove,
}

/// Decides whether a retention policy keeps less than another: `Some(why)` if the second
/// keeps less than the first (the policy syntax belongs to the snapshot crate).
pub type KeepsLess<'a> = &'a dyn Fn(Option<&str>, Option<&str>) -> Option<String>;

/// Changes a container's settings. A change a retention lock guards is refused
/// ([`lock::check_settings`]) and changes nothing.
pub fn set_container(
    store: &Store,
    name: &str,
    change: &SettingsChange,
    who: Authority,
    keeps_less: KeepsLess<'_>,
) -> Result<ContainerRecord, StoreError> {
    store.commit_registry(|c, reg| {
        let ci = reg
            .by_name(name)
            .ok_or_else(|| ContainerError::NotFound(name.into()))?;
        let mut rec = ci.rec.clone();
        if let Some(c) = change.compression {
            rec.settings.compression = c;
        }
        if let Some(r) = &change.retention {
            rec.settings.retention = r.clone();
        }
        match change.lock {
            None => {}
            Some(LockChange::Remove) => rec.settings.lock = None,
            Some(LockChange::Set { mode, secs }) => {
                let cur = ci.rec.settings.lock;
                let (Some(mode), Some(secs)) =
                    (mode.or(cur.map(|l| l.mode)), secs.or(cur.map(|l| l.secs)))
                else {
                    return Err(ContainerError::BadLock(
                        "a new lock needs both --lock MODE and --lock-for DURATION".into(),
                    )
                    .into());
                };
                rec.settings.lock = Some(RetentionLock {
                    mode,
                    secs,
                    since: store.committer.clock().now().sec,
                });
            }
        }
        let why = if rec.settings.retention != ci.rec.settings.retention {
            keeps_less(
                ci.rec.settings.retention.as_deref(),
                rec.settings.retention.as_deref(),
            )
        } else {
            None
        };
        lock::check_settings(store, &ci.rec, &rec.settings, why, who)?;
        if rec.settings.lock != ci.rec.settings.lock {
            log::info!(
                "container '{name}': retention lock {}",
                match rec.settings.lock {
                    Some(l) => format!("{} for {}", l.mode.as_str(), lock::duration_text(l.secs)),
                    None => "removed".into(),
                }
            );
        }
        containers::put_container(c, &rec);
        reg.upsert(rec.clone(), None);
        Ok::<_, StoreError>(rec)
    })
}

pub fn rename_container(
    store: &Store,
    from: &str,
    to: &str,
) -> Result<ContainerRecord, StoreError> {
    containers::validate_name(to)?;
    store.commit_registry(|c, reg| {
        let ci = reg
            .by_name(from)
            .ok_or_else(|| ContainerError::NotFound(from.into()))?;
        if reg.by_name(to).is_some() {
            return Err(ContainerError::Exists(to.into()).into());
        }
        let mut rec = ci.rec.clone();
        rec.name = to.to_string();
        containers::put_container(c, &rec);
        let now = c.time;
        let mut root = containers::root_inode(c)?;
        root.mtime = now;
        root.ctime = now;
        containers::put_root_inode(c, &root);
        reg.upsert(rec.clone(), None);
        Ok::<_, StoreError>(rec)
    })
}

/// Deletes a container and releases its data. `progress` receives the number of extent
/// records released so far. Without `allow_nonempty`, refuses a container holding files.
pub fn delete_container(
    store: &Store,
    name: &str,
    allow_nonempty: bool,
    who: Authority,
    progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let ci = store
        .registry()
        .by_name(name)
        .ok_or_else(|| ContainerError::NotFound(name.into()))?;
    lock::check_delete(store, &ci.rec, who)?;
    if !allow_nonempty && crate::stats::tree_counters(store, &ci)?.files > 0 {
        return Err(ContainerError::NotEmpty { name: name.into() }.into());
    }
    store.commit_registry(|c, reg| {
        // The record as it is now (a rollback may have moved the head since).
        let rec = reg
            .by_name(name)
            .ok_or_else(|| ContainerError::NotFound(name.into()))?
            .rec
            .clone();
        // Again under the registry writer: a lock set meanwhile still counts.
        lock::check_delete(store, &rec, who).map_err(StoreError::from)?;
        let marked = containers::mark_deleting(c, &rec).map_err(StoreError::from)?;
        reg.upsert(marked, None);
        Ok::<_, StoreError>(())
    })?;
    store.finish_deletes(&mut |_, n| progress(n))?;
    Ok(())
}
