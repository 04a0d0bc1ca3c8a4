//! Failures that must never be silent, injected into the core: a failed sync of pack data
//! or of the metadata log halts the store (writers get EIO, reads go on, a reopen
//! recovers); a reference count that would go below zero stops the change.

use super::*;
use crate::chunker::ChunkParams;
use crate::ids::ChunkId;
use crate::kv::mem::MemKv;
use std::collections::HashMap;

const PARAMS: ChunkParams = ChunkParams {
    min: 1024,
    avg: 4096,
    max: 16384,
};

fn opts() -> FsOptions {
    FsOptions {
        background: false,
        ..Default::default()
    }
}

/// A container with one file holding `data`, fsynced.
fn setup(dir: &std::path::Path, kv: &MemKv) -> (Arc<Store>, Fs, u64, u64) {
    let store = Arc::new(Store::open_with_kv(dir, PARAMS, Arc::new(kv.clone())).unwrap());
    let fs = Fs::new(store.clone(), opts());
    let c = match fs.lookup(&Ctx::root(), ROOT_NODE, b"c") {
        Ok(a) => a.node,
        Err(_) => fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node,
    };
    let (a, fh) = match fs.lookup(&Ctx::root(), c, b"f") {
        Ok(a) => {
            let fh = fs
                .open(&Ctx::root(), a.node, OpenFlags::read_write())
                .unwrap();
            (a, fh)
        }
        Err(_) => fs
            .create(&Ctx::root(), c, b"f", 0o644, OpenFlags::read_write())
            .unwrap(),
    };
    (store, fs, a.node, fh)
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn check_halted_then_recovers(fail: impl FnOnce(&Store, &MemKv)) {
    let dir = tempfile::tempdir().unwrap();
    let kv = MemKv::new();
    let (store, fs, node, fh) = setup(dir.path(), &kv);
    let good = bytes(100_000, 1);
    fs.write(node, fh, 0, &good).unwrap();
    fs.fsync(node, fh, false).unwrap();

    fail(&store, &kv);
    fs.write(node, fh, 100_000, &bytes(50_000, 2)).unwrap();
    let e = fs.fsync(node, fh, false).unwrap_err();
    assert!(matches!(e, FsError::Io(_)), "a failed sync is EIO: {e:?}");
    // The fsyncgate lesson: the next sync must not succeed and bless what the failed
    // one may have lost.
    let e = fs.fsync(node, fh, false).unwrap_err();
    assert!(matches!(e, FsError::Io(_)), "and stays failed: {e:?}");
    let e = fs.write(node, fh, 0, b"more").unwrap_err();
    assert!(matches!(e, FsError::Io(_)), "writers get EIO: {e:?}");
    let e = fs
        .mkdir(&Ctx::root(), ROOT_NODE, b"other", 0o755)
        .unwrap_err();
    assert!(
        matches!(e, FsError::Io(_)),
        "so do namespace changes: {e:?}"
    );
    // Reads keep working.
    assert_eq!(fs.read(node, fh, 0, 100_000).unwrap(), good);
    let why = store.committer.halted().expect("halted").to_string();
    assert!(why.contains("sync"), "{why}");
    let st = crate::stats::store_stats(&store).unwrap();
    assert_eq!(st.health, "halted");
    assert!(st.halted.is_some_and(|h| h.contains("sync")));

    // Reopening recovers: what was fsynced before the failure is there, writes work.
    let _ = fs.release(fh);
    drop(fs);
    drop(store);
    let (store, fs, node, fh) = setup(dir.path(), &kv);
    assert!(store.committer.halted().is_none());
    assert_eq!(fs.read(node, fh, 0, 100_000).unwrap(), good);
    fs.write(node, fh, 0, b"after").unwrap();
    fs.fsync(node, fh, false).unwrap();
    let _ = fs.release(fh);
}

#[test]
fn a_failed_pack_sync_halts_the_store_until_it_is_reopened() {
    check_halted_then_recovers(|store, _| {
        let left = Arc::new(std::sync::atomic::AtomicU32::new(1));
        store
            .chunks
            .writer()
            .set_sync_hook(Some(Arc::new(move |pack| {
                // Fails the next sync, once; later ones would succeed — the store must not
                // believe them.
                if left
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok()
                {
                    return Err(std::io::Error::from_raw_os_error(libc::EIO));
                }
                let _ = pack;
                Ok(())
            })));
    });
}

#[test]
fn a_failed_metadata_log_sync_halts_the_store_until_it_is_reopened() {
    check_halted_then_recovers(|_, kv| kv.fail_sync_after(1));
}

#[test]
fn a_reference_count_that_would_go_negative_stops_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let kv = MemKv::new();
    let (store, fs, node, fh) = setup(dir.path(), &kv);
    fs.write(node, fh, 0, &bytes(20_000, 3)).unwrap();
    fs.fsync(node, fh, false).unwrap();
    let (_, first) = store.chunks.index_page(None, 1).unwrap()[0];
    let id: ChunkId = store.chunks.index_page(None, 1).unwrap()[0].0;
    let cid = crate::ids::ContainerId(1);
    let remove = first.refs as i64 + 1;
    let e = store
        .committer
        .commit(|c| {
            store
                .chunks
                .add_refs(c, cid, &HashMap::from([(id, -remove)]))
                .map_err(crate::store::StoreError::from)
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("corrupt") && e.to_string().contains(&id.to_string()),
        "names the chunk: {e}"
    );
    assert_eq!(
        store.chunks.lookup(id).unwrap().unwrap().refs,
        first.refs,
        "nothing was changed"
    );
    // A per-container count that would go negative is refused the same way.
    let e = store
        .committer
        .commit(|c| {
            store
                .chunks
                .add_refs(c, crate::ids::ContainerId(77), &HashMap::from([(id, -1)]))
                .map_err(crate::store::StoreError::from)
        })
        .unwrap_err();
    assert!(e.to_string().contains("container c77"), "{e}");
    let _ = fs.release(fh);
}
