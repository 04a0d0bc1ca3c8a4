//! The store's packs as a whole, wherever they are: on local disk, or (with `--packs`) in
//! a bucket through the remote tier. GC and fsck list and delete packs only through here,
//! so neither needs to know where a pack lives.
//!
//! Invariant: a pack is deleted only through [`Store::delete_pack`], which removes it from
//! the bucket (object, local copy, cache entry, record) or from `packs/`, and forgets the
//! reader's handle.

use super::{io_err, Store, StoreError, PACKS_DIR};
use crate::pack::{self, PackError};
use std::time::Duration;

/// Where one pack is (see [`Store::pack_listing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackPlace {
    pub id: crate::ids::PackId,
    pub size: u64,
    pub local: bool,
    pub remote: bool,
}

impl Store {
    /// Seals the current pack if it went `idle` without an append, so that it is uploaded
    /// (a store with packs in a bucket; a local store never needs to).
    pub fn seal_idle_pack(&self, idle: Duration) -> Result<bool, StoreError> {
        if self.tier.is_none() || self.chunks.writer().idle_for().is_none_or(|d| d < idle) {
            return Ok(false);
        }
        self.seal_current_pack()?;
        Ok(true)
    }
    /// Closes the pack being written and makes it durable, so that (with packs in a
    /// bucket) it is queued for upload. The pack sync runs even when no commit is waiting
    /// (the committer's sync would skip it).
    pub fn seal_current_pack(&self) -> Result<(), StoreError> {
        self.chunks.writer().roll()?;
        match self.chunks.writer().sync() {
            Err(e @ PackError::SyncFailed { .. }) => {
                self.committer.halt(e.to_string());
                return Err(StoreError::from(e));
            }
            other => other?,
        }
        self.sync()
    }
    /// Every pack of the store with its size and where it is: on local disk (written, not
    /// yet uploaded, or a local store's), in the bucket, or both.
    pub fn pack_listing(&self) -> Result<Vec<PackPlace>, StoreError> {
        let dir = self.root.join(PACKS_DIR);
        let mut out: std::collections::BTreeMap<crate::ids::PackId, PackPlace> =
            std::collections::BTreeMap::new();
        for (id, size) in pack::list_packs(&dir).map_err(io_err(&dir))? {
            out.insert(
                id,
                PackPlace {
                    id,
                    size,
                    local: true,
                    remote: false,
                },
            );
        }
        if let Some(t) = &self.tier {
            let listed = t.list_remote()?;
            for (id, size) in listed {
                let e = out.entry(id).or_insert(PackPlace {
                    id,
                    size,
                    local: false,
                    remote: true,
                });
                e.remote = true;
                e.size = size;
            }
        }
        Ok(out.into_values().collect())
    }
    /// Deletes a pack wherever it is (GC and fsck's repair, after their checks).
    pub fn delete_pack(&self, id: crate::ids::PackId) -> Result<(), StoreError> {
        match &self.tier {
            Some(t) => t.delete(id)?,
            None => {
                let path = pack::pack_path(&self.root.join(PACKS_DIR), id);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        self.chunks.reader().forget(id);
        Ok(())
    }
    /// Bytes of pack files and their count (local, plus uploaded ones as recorded).
    pub fn pack_usage(&self) -> Result<(u64, u64), StoreError> {
        let dir = self.root.join(PACKS_DIR);
        let packs = pack::list_packs(&dir).map_err(io_err(&dir))?;
        let mut bytes: u64 = packs.iter().map(|(_, n)| n).sum();
        let mut count = packs.len() as u64;
        if let Some(t) = &self.tier {
            let local: std::collections::HashSet<_> = packs.iter().map(|(p, _)| *p).collect();
            for (id, size) in t.uploaded_packs() {
                if !local.contains(&id) {
                    bytes += size;
                    count += 1;
                }
            }
        }
        Ok((bytes, count))
    }
}
