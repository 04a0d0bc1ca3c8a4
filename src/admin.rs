//! Store administration: container lifecycle and settings, callable on an open store
//! whether or not it is mounted (the daemon runs these for the CLI while mounted).
//!
//! Every change commits atomically and then updates the in-memory registry.

use crate::chunks::Compression;
use crate::containers::{self, ContainerError, ContainerRecord, ContainerSettings, RootOwner};
use crate::ids::ContainerId;
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
    // The registry is updated while still holding its write lock, so two creators of the
    // same name cannot both pass the check above and both win.
    let mut reg = store.registry_mut();
    if reg.by_name(name).is_some() {
        return Err(ContainerError::Exists(name.into()).into());
    }
    let rec = store
        .committer
        .commit(|c| containers::create_in(c, name, settings, owner).map_err(StoreError::from))?;
    containers::registry_upsert(
        &mut reg,
        rec.clone(),
        Some(containers::head_branch_record(&rec)),
    );
    log::info!("container '{name}' created (id {})", rec.id);
    Ok(rec)
}

/// Changes of a container's settings.
#[derive(Clone, Debug, Default)]
pub struct SettingsChange {
    pub compression: Option<Compression>,
    /// `Some(None)` removes the retention policy (keep everything).
    pub retention: Option<Option<String>>,
}

pub fn set_container(
    store: &Store,
    name: &str,
    change: &SettingsChange,
) -> Result<ContainerRecord, StoreError> {
    let mut reg = store.registry_mut();
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
    store.committer.commit(|c| {
        containers::put_container(c, &rec);
        Ok::<_, StoreError>(())
    })?;
    containers::registry_upsert(&mut reg, rec.clone(), None);
    Ok(rec)
}

pub fn rename_container(
    store: &Store,
    from: &str,
    to: &str,
) -> Result<ContainerRecord, StoreError> {
    containers::validate_name(to)?;
    let mut reg = store.registry_mut();
    let ci = reg
        .by_name(from)
        .ok_or_else(|| ContainerError::NotFound(from.into()))?;
    if reg.by_name(to).is_some() {
        return Err(ContainerError::Exists(to.into()).into());
    }
    let mut rec = ci.rec.clone();
    rec.name = to.to_string();
    store.committer.commit(|c| {
        containers::put_container(c, &rec);
        let now = c.time;
        let mut root = containers::root_inode(c)?;
        root.mtime = now;
        root.ctime = now;
        containers::put_root_inode(c, &root);
        Ok::<_, StoreError>(())
    })?;
    containers::registry_upsert(&mut reg, rec.clone(), None);
    Ok(rec)
}

/// Deletes a container and releases its data. `progress` receives the number of extent
/// records released so far. Without `allow_nonempty`, refuses a container holding files.
pub fn delete_container(
    store: &Store,
    name: &str,
    allow_nonempty: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let rec = {
        let reg = store.registry();
        let ci = reg
            .by_name(name)
            .ok_or_else(|| ContainerError::NotFound(name.into()))?;
        ci.rec.clone()
    };
    if !allow_nonempty
        && store
            .committer
            .container_counters(ContainerId(rec.id))
            .files
            > 0
    {
        return Err(ContainerError::NotEmpty { name: name.into() }.into());
    }
    {
        let mut reg = store.registry_mut();
        let marked = store
            .committer
            .commit(|c| containers::mark_deleting(c, &rec).map_err(StoreError::from))?;
        containers::registry_upsert(&mut reg, marked, None);
    }
    store.finish_deletes(&mut |_, n| progress(n))?;
    Ok(())
}
