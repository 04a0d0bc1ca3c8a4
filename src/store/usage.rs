//! What a store occupies on disk, counted the way `du` counts it: allocated blocks
//! (`st_blocks` × 512) of every file under the store directory, split by what they hold.
//!
//! Invariant: the figures add up to what `du -sB1 STORE` would print at the same moment
//! (directories included), so `dedupfs stats` and `du` never disagree on a definition.
//! RocksDB preallocates its log and manifest files, so their allocated size is far above
//! their length while the store is open (and shrinks when it is closed and the log is
//! turned into tables): the figure changes at unmount exactly as `du`'s does.

use super::{io_err, StoreError, META_DIR, PACKS_DIR};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Allocated bytes of `packs/` (pack files and their shard directories).
    pub packs: u64,
    /// Allocated bytes of `meta/` (the metadata database, its log included).
    pub metadata: u64,
    /// Everything else: the store directory itself, its configuration, lock and log.
    pub other: u64,
}

impl DiskUsage {
    pub fn total(&self) -> u64 {
        self.packs + self.metadata + self.other
    }
}

/// Walks `root`. Entries that vanish during the walk (a compaction deleting a table, GC
/// deleting a pack) are skipped; any other error is returned.
pub fn measure(root: &Path) -> Result<DiskUsage, StoreError> {
    let mut u = DiskUsage::default();
    let md = std::fs::symlink_metadata(root).map_err(io_err(root))?;
    u.other += md.blocks() * 512;
    for e in std::fs::read_dir(root).map_err(io_err(root))? {
        let e = e.map_err(io_err(root))?;
        let name = e.file_name();
        let bytes = walk(&e.path())?;
        if name == PACKS_DIR {
            u.packs += bytes;
        } else if name == META_DIR {
            u.metadata += bytes;
        } else {
            u.other += bytes;
        }
    }
    Ok(u)
}

/// Allocated bytes under `p` (itself included).
fn walk(p: &Path) -> Result<u64, StoreError> {
    let md = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(p)(e)),
    };
    let mut bytes = md.blocks() * 512;
    if md.is_dir() {
        let rd = match std::fs::read_dir(p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(p)(e)),
        };
        for e in rd {
            bytes += walk(&e.map_err(io_err(p))?.path())?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_what_du_says() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("packs/00000")).unwrap();
        std::fs::create_dir_all(root.join("meta")).unwrap();
        std::fs::write(root.join("packs/00000/00000001.pack"), vec![1u8; 100_000]).unwrap();
        std::fs::write(root.join("meta/000001.log"), vec![2u8; 5000]).unwrap();
        std::fs::write(root.join("dedupfs.json"), b"{}").unwrap();
        let u = measure(root).unwrap();
        assert!(u.packs >= 100_000, "{u:?}");
        let du = std::process::Command::new("du")
            .args(["-sB1"])
            .arg(root)
            .output()
            .unwrap();
        let du: u64 = String::from_utf8_lossy(&du.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(u.total(), du, "{u:?}");
    }
}
