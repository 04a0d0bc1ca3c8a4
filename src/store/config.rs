//! The store's identity file, `dedupfs.json`: format version, chunking parameters and the
//! keyed-hash secret, fixed at `init`.
//!
//! Invariant: a store whose `format` is newer than [`FORMAT_VERSION`] is never opened.

use crate::chunker::ChunkParams;
use serde::{Deserialize, Serialize};

/// The on-disk format this build reads and writes. History:
/// - 1: the first format.
/// - 2: live-file counters are versioned per branch (`tree_counters` family), so a
///   rollback or a snapshot has its own counts; stores of format 1 are upgraded at open.
/// - 3 to 6: see ARCHITECTURE.md "On-disk format".
/// - 7: packs may live in object storage (`packs` here; upload records, the pack-id floor
///   and the last checkpoint in the meta family). A format-6 build would look for such a
///   store's packs on local disk only, so it must refuse it; stores of format 6 open as
///   they are (nothing to convert).
pub const FORMAT_VERSION: u32 = 7;
pub const CONFIG_FILE: &str = "dedupfs.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    /// On-disk format version.
    pub format: u32,
    /// Random store identity, hex.
    pub store_id: String,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    pub chunking: ChunkParams,
    /// Seed of the chunker's gear table.
    pub gear_seed: u64,
    /// Secret keying chunk identities, hex (192 bytes).
    pub secret: String,
    /// Packs roll over at this size.
    pub pack_target_size: u64,
    /// Compare bytes when a chunk matches an existing one (costs a read per duplicate).
    #[serde(default)]
    pub verify_dedup: bool,
    /// Where sealed packs are uploaded (`init --packs s3://…`); `None`: local disk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packs: Option<crate::pack::remote::RemoteSpec>,
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl StoreConfig {
    pub fn secret_bytes(&self) -> Option<Vec<u8>> {
        from_hex(&self.secret)
    }
    pub fn store_id_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Some(b) = from_hex(&self.store_id) {
            for (o, v) in out.iter_mut().zip(b) {
                *o = v;
            }
        }
        out
    }
}

/// Writes `dedupfs.json` atomically (temporary file, fsync, rename, fsync of the directory),
/// readable by its owner only.
pub fn write(dir: &std::path::Path, config: &StoreConfig) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(CONFIG_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hex_roundtrip() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 255])).unwrap(), vec![0, 1, 255]);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
