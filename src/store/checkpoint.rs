//! Disaster recovery for stores with packs in object storage: metadata checkpoints
//! uploaded to the bucket, and a store rebuilt from the bucket alone.
//!
//! A checkpoint is a RocksDB checkpoint of `meta/`, archived (name, size, bytes per file)
//! and zstd-compressed, stored as `checkpoints/VVVVVVVVVVVVVVVV-TTTTTTTTTTTT.ckpt` (the store
//! version and Unix seconds when it was taken; named by version first, so the newest sorts
//! last whatever the wall clock did).
//!
//! Invariants:
//! - A checkpoint is uploaded only after every pack its metadata can name is in the bucket:
//!   the database copy is taken first, then the current pack is sealed and every pack up to
//!   it uploaded, then the archive goes up. A recovery from it never misses a pack for
//!   want of an upload.
//! - GC deletes an uploaded pack only if it was condemned before the newest checkpoint was
//!   taken (`MetaKey::LastCheckpoint`), so that checkpoint no longer names it.
//! - The newest three checkpoints are kept; older ones are deleted after an upload.
//! - Recovery refuses a non-empty directory, a bucket without a store, a store format newer
//!   than this build, and a damaged archive; it reports the checkpoint's time and version
//!   and the packs its metadata names that the bucket lacks (by id).

use super::config::{self, StoreConfig, CONFIG_FILE, FORMAT_VERSION};
use super::{io_err, perms, Store, StoreError, META_DIR, PACKS_DIR};
use crate::ids::PackId;
use crate::keys::MetaKey;
use crate::kv::rocks::{RocksKv, RocksTuning};
use crate::kv::{Batch, Cf, Kv};
use crate::pack::remote::{Remote, RemoteError, RemoteErrorKind, RemoteSpec, RemoteTuning};
use crate::pack::tier::{load_uploaded, put_floor, put_uploaded, read_floor, Uploaded};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAGIC: &[u8; 8] = b"DDFSCKP1";
const KEEP: usize = 3;
const DIR: &str = "checkpoints";

/// The newest checkpoint, as recorded in the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Unix seconds when the database copy was taken.
    pub at: i64,
    pub version: u64,
    pub key: String,
    /// Compressed size.
    pub bytes: u64,
}

/// What `init --recover-from` brought back.
#[derive(Clone, Debug, Serialize)]
pub struct Recovered {
    pub checkpoint: CheckpointRecord,
    pub packs_in_bucket: u64,
    pub bytes_in_bucket: u64,
    /// Packs the recovered metadata names that the bucket does not hold.
    pub missing_packs: Vec<u32>,
}

fn remote_err(e: RemoteError) -> StoreError {
    StoreError::Remote(e)
}

/// The newest checkpoint record, if any was uploaded.
pub fn last(store: &Store) -> Result<Option<CheckpointRecord>, StoreError> {
    match store.kv.get(Cf::Meta, &MetaKey::LastCheckpoint.encode())? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Meta {
                path: store.root.clone(),
                source: crate::kv::KvError::Corrupt(format!("last-checkpoint record: {e}")),
            }),
    }
}

/// Checks a new store's bucket at `init`: reachable, credentials accepted, the bucket
/// there, no store under the prefix yet. Then writes the store's identity there.
pub fn claim_bucket(spec: &RemoteSpec, config: &StoreConfig) -> Result<(), StoreError> {
    // Someone is waiting at a terminal: a dead endpoint is reported after 10 s of retries.
    let tuning = RemoteTuning {
        retry_timeout: Duration::from_secs(10),
    };
    let remote = Remote::connect(spec, tuning).map_err(remote_err)?;
    match remote.head(CONFIG_FILE) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(StoreError::BucketTaken {
                url: remote.url().to_string(),
            })
        }
        Err(e) => return Err(remote_err(e)),
    }
    let json = serde_json::to_vec_pretty(config).map_err(|e| StoreError::BadConfig {
        path: PathBuf::from(remote.location(CONFIG_FILE)),
        reason: e.to_string(),
    })?;
    remote.put_new(CONFIG_FILE, json).map_err(remote_err)
}

/// Gives back a prefix claimed by [`claim_bucket`] (an `init` that failed after it).
pub fn unclaim_bucket(spec: &RemoteSpec) -> Result<(), StoreError> {
    let remote = Remote::connect(spec, RemoteTuning::default()).map_err(remote_err)?;
    remote.delete(CONFIG_FILE).map_err(remote_err)
}

fn archive(src: &Path, out: &Path) -> std::io::Result<u64> {
    let f = std::fs::File::create(out)?;
    let mut z = zstd::stream::write::Encoder::new(f, 3)?;
    z.write_all(MAGIC)?;
    let mut names: Vec<_> = std::fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let name = n.to_string_lossy().into_owned();
        let data = std::fs::read(src.join(&n))?;
        z.write_all(&(name.len() as u16).to_be_bytes())?;
        z.write_all(name.as_bytes())?;
        z.write_all(&(data.len() as u64).to_be_bytes())?;
        z.write_all(&data)?;
    }
    z.write_all(&0u16.to_be_bytes())?;
    let f = z.finish()?;
    f.sync_all()?;
    Ok(f.metadata()?.len())
}

fn unarchive(file: &Path, dst: &Path) -> std::io::Result<()> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut z = zstd::stream::read::Decoder::new(std::fs::File::open(file)?)?;
    let mut magic = [0u8; 8];
    z.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("not a dedupfs checkpoint (bad magic)"));
    }
    loop {
        let mut l = [0u8; 2];
        z.read_exact(&mut l)?;
        let l = u16::from_be_bytes(l) as usize;
        if l == 0 {
            return Ok(());
        }
        let mut name = vec![0u8; l];
        z.read_exact(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| bad("file name not UTF-8"))?;
        if name.contains('/') || name == "." || name == ".." {
            return Err(bad("file name with a path in it"));
        }
        let mut n = [0u8; 8];
        z.read_exact(&mut n)?;
        let n = u64::from_be_bytes(n);
        let mut out = std::fs::File::create(dst.join(&name))?;
        let copied = std::io::copy(&mut (&mut z).take(n), &mut out)?;
        if copied != n {
            return Err(bad("archive cut short"));
        }
        out.sync_all()?;
    }
}

/// Takes a checkpoint and uploads it (see the module invariants for the order). Waits up
/// to `upload_wait` for the packs it names to reach the bucket.
pub fn take(store: &Store, upload_wait: Duration) -> Result<CheckpointRecord, StoreError> {
    take_until(store, upload_wait, None)
}

/// [`take`], giving up early when `cancel` is set (the daemon stopping).
pub fn take_until(
    store: &Store,
    upload_wait: Duration,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<CheckpointRecord, StoreError> {
    let _one_at_a_time = store.checkpoint_lock();
    let Some(tier) = store.tier() else {
        return Err(StoreError::BadConfig {
            path: store.root.clone(),
            reason: "checkpoints are for stores with packs in object storage (init --packs)".into(),
        });
    };
    let tmp = store.root.join("checkpoint.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    perms::create_private_dir(&tmp).map_err(io_err(&tmp))?;
    let result = (|| {
        let at = crate::records::Timestamp::now().sec;
        let version = store.committer.head().0;
        store.kv.checkpoint(&tmp.join("db"))?;
        // Everything the copy can name is in packs handed out so far: seal the one being
        // written, and wait for all of them.
        store.seal_current_pack()?;
        let upto = store.chunks.writer().last_allocated();
        tier.wait_uploaded(upto, upload_wait, cancel)
            .map_err(|reason| StoreError::BadConfig {
                path: PathBuf::from(tier.remote().url()),
                reason: format!("checkpoint not uploaded: {reason}"),
            })?;
        // Not only the queue's word for it: every local pack the copy can name has an
        // upload record.
        let dir = store.root.join(PACKS_DIR);
        let local = crate::pack::list_packs(&dir).map_err(io_err(&dir))?;
        if let Some((p, _)) = local
            .iter()
            .find(|(p, _)| upto.is_some_and(|u| *p <= u) && !tier.is_uploaded(*p))
        {
            return Err(StoreError::BadConfig {
                path: PathBuf::from(tier.remote().url()),
                reason: format!("checkpoint not uploaded: pack {p} is not in the bucket yet"),
            });
        }
        let file = tmp.join("ckpt");
        let bytes = archive(&tmp.join("db"), &file).map_err(io_err(&file))?;
        // Named by version first: the newest checkpoint sorts last whatever the wall clock
        // did.
        let key = format!("{DIR}/{version:016x}-{at:012}.ckpt");
        let remote = tier.remote();
        remote.put_file(&key, &file).map_err(remote_err)?;
        // The identity file follows format upgrades.
        let json = serde_json::to_vec_pretty(&store.config).map_err(|e| StoreError::BadConfig {
            path: store.root.join(CONFIG_FILE),
            reason: e.to_string(),
        })?;
        remote.put(CONFIG_FILE, json).map_err(remote_err)?;
        let rec = CheckpointRecord {
            at,
            version,
            key,
            bytes,
        };
        let mut b = Batch::new();
        b.put(
            Cf::Meta,
            MetaKey::LastCheckpoint.encode(),
            serde_json::to_vec(&rec).unwrap_or_default(),
        );
        store.kv.write(b, true)?;
        let mut all = remote.list(DIR).map_err(remote_err)?;
        all.retain(|(k, _)| parse_key(k).is_some());
        all.sort_by_key(|(k, _)| parse_key(k));
        if all.len() > KEEP {
            for (k, _) in &all[..all.len() - KEEP] {
                if let Err(e) = remote.delete(k) {
                    log::warn!("could not delete old checkpoint {k}: {e}");
                }
            }
        }
        Ok::<_, StoreError>(rec)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let rec = result?;
    log::info!(
        "checkpoint {} uploaded ({} bytes, store version {})",
        rec.key,
        rec.bytes,
        rec.version
    );
    Ok(rec)
}

/// (version, time) of a checkpoint's key.
fn parse_key(key: &str) -> Option<(u64, i64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".ckpt")?;
    let (v, t) = name.split_once('-')?;
    Some((u64::from_str_radix(v, 16).ok()?, t.parse().ok()?))
}

/// Rebuilds a store at `path` (new or empty) from the bucket alone, up to its newest
/// checkpoint.
pub fn recover(path: &Path, spec: &RemoteSpec) -> Result<Recovered, StoreError> {
    if path.exists()
        && std::fs::read_dir(path)
            .map_err(io_err(path))?
            .next()
            .is_some()
    {
        return Err(StoreError::NotEmpty {
            path: path.to_path_buf(),
        });
    }
    let remote = Remote::connect(spec, RemoteTuning::default()).map_err(remote_err)?;
    let raw = match remote.get(CONFIG_FILE) {
        Ok(r) => r,
        Err(e) if e.kind() == RemoteErrorKind::NotFound => {
            return Err(StoreError::NotAStore(PathBuf::from(
                remote.location(CONFIG_FILE),
            )))
        }
        Err(e) => return Err(remote_err(e)),
    };
    let mut config: StoreConfig =
        serde_json::from_slice(&raw).map_err(|e| StoreError::BadConfig {
            path: PathBuf::from(remote.location(CONFIG_FILE)),
            reason: e.to_string(),
        })?;
    if config.format > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path: PathBuf::from(remote.url()),
            found: config.format,
            supported: FORMAT_VERSION,
        });
    }
    let mut ckpts: Vec<(u64, i64, String, u64)> = remote
        .list(DIR)
        .map_err(remote_err)?
        .into_iter()
        .filter_map(|(k, n)| parse_key(&k).map(|(v, t)| (v, t, k, n)))
        .collect();
    ckpts.sort();
    if ckpts.is_empty() {
        return Err(StoreError::BadConfig {
            path: PathBuf::from(remote.location(DIR)),
            reason: "the bucket holds this store's packs but no metadata checkpoint yet \
                     (one is uploaded at every unmount and on the checkpoint schedule)"
                .into(),
        });
    }
    std::fs::create_dir_all(path).map_err(io_err(path))?;
    perms::make_private_dir(path).map_err(io_err(path))?;
    let meta = path.join(META_DIR);
    perms::create_private_dir(&path.join(PACKS_DIR)).map_err(io_err(path))?;
    let file = path.join("checkpoint.download");
    // The newest that downloads and unpacks whole; a damaged one is reported and the one
    // before it tried.
    let mut chosen = None;
    let mut damaged = Vec::new();
    while let Some((version, at, key, bytes)) = ckpts.pop() {
        if meta.exists() {
            std::fs::remove_dir_all(&meta).map_err(io_err(&meta))?;
        }
        perms::create_private_dir(&meta).map_err(io_err(path))?;
        let got = remote
            .get_to_file(&key, &file)
            .map_err(|e| e.to_string())
            .and_then(|_| unarchive(&file, &meta).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&file);
        match got {
            Ok(()) => {
                chosen = Some((at, version, key, bytes));
                break;
            }
            Err(e) => {
                log::error!("checkpoint {key} is damaged ({e}); trying the one before it");
                damaged.push(format!("{key}: {e}"));
            }
        }
    }
    let Some((at, version, key, bytes)) = chosen else {
        return Err(StoreError::BadConfig {
            path: PathBuf::from(remote.location(DIR)),
            reason: format!("every checkpoint is damaged: {}", damaged.join("; ")),
        });
    };
    // The packs uploaded after the checkpoint was taken are in the bucket too: record
    // every pack there as uploaded, and find what the metadata names but the bucket lacks.
    let listed = remote.list_packs().map_err(remote_err)?;
    let kv = RocksKv::open(&meta, false, RocksTuning::default()).map_err(|e| StoreError::Meta {
        path: path.to_path_buf(),
        source: e,
    })?;
    let known: std::collections::HashMap<PackId, Uploaded> =
        load_uploaded(&kv)?.into_iter().collect();
    let mut b = Batch::new();
    let now = crate::records::Timestamp::now().sec;
    for (id, size) in &listed {
        if known.get(id).is_none_or(|u| u.size != *size) {
            let rec = Uploaded {
                size: *size,
                at: now,
            };
            put_uploaded(&mut b, *id, rec);
        }
    }
    let floor = listed.iter().map(|(p, _)| p.0 + 1).max().unwrap_or(0);
    put_floor(&mut b, floor.max(read_floor(&kv)?));
    let in_bucket: std::collections::HashSet<PackId> = listed.iter().map(|(p, _)| *p).collect();
    for id in known.keys() {
        if !in_bucket.contains(id) {
            b.delete(Cf::Meta, MetaKey::PackUploaded(*id).encode());
        }
    }
    let rec = CheckpointRecord {
        at,
        version,
        key: key.clone(),
        bytes,
    };
    b.put(
        Cf::Meta,
        MetaKey::LastCheckpoint.encode(),
        serde_json::to_vec(&rec).unwrap_or_default(),
    );
    kv.write(b, true)?;
    let named = crate::chunks::packs_named(&kv)?;
    drop(kv);
    let missing: Vec<u32> = named
        .into_iter()
        .filter(|p| !in_bucket.contains(p))
        .map(|p| p.0)
        .collect();
    config.packs = Some(spec.clone());
    config::write(path, &config).map_err(io_err(path))?;
    perms::tighten(path).map_err(io_err(path))?;
    Ok(Recovered {
        checkpoint: rec,
        packs_in_bucket: listed.len() as u64,
        bytes_in_bucket: listed.iter().map(|(_, n)| n).sum(),
        missing_packs: missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_round_trip_and_damage_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("CURRENT"), b"MANIFEST-1\n").unwrap();
        std::fs::write(src.join("000001.sst"), vec![7u8; 100_000]).unwrap();
        let a = d.path().join("a.ckpt");
        archive(&src, &a).unwrap();
        let dst = d.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        unarchive(&a, &dst).unwrap();
        assert_eq!(
            std::fs::read(dst.join("000001.sst")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(std::fs::read(dst.join("CURRENT")).unwrap(), b"MANIFEST-1\n");
        let mut bytes = std::fs::read(&a).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&a, &bytes).unwrap();
        let dst2 = d.path().join("dst2");
        std::fs::create_dir(&dst2).unwrap();
        assert!(unarchive(&a, &dst2).is_err());
        assert_eq!(
            parse_key("checkpoints/00000000000000ff-000000000123.ckpt"),
            Some((255, 123))
        );
        assert_eq!(parse_key("checkpoints/junk.ckpt"), None);
    }
}
