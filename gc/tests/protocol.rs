//! The GC protocol against writers, at the chunk-store level (no kernel): a chunk a writer
//! has deduplicated against survives a GC that runs before the writer commits, and a chunk
//! nothing holds is collected, its pack deleted and its bytes gone.

use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::chunks::{ChunkError, Compression, NewChunk};
use dedupfs_core::ids::{ChunkId, ContainerId};
use dedupfs_core::store::{Store, StoreError};
use dedupfs_gc::plan::Options;
use dedupfs_gc::{fsck, sweep};
use std::collections::HashMap;

const C: ContainerId = ContainerId(1);

fn refs(store: &Store, id: ChunkId, delta: i64) {
    store
        .committer
        .commit(|c| {
            store
                .chunks
                .add_refs(c, C, &HashMap::from([(id, delta)]))
                .map_err(StoreError::from)
        })
        .unwrap();
}

/// The chunks `prepare` takes for `blobs` with their `ids`, in order.
fn new_chunks<'a>(blobs: &'a [Vec<u8>], ids: &[ChunkId]) -> Vec<NewChunk<'a>> {
    blobs
        .iter()
        .zip(ids)
        .map(|(b, id)| NewChunk {
            id: *id,
            data: b,
            next: None,
        })
        .collect()
}

fn gc(store: &Store) -> sweep::Report {
    let opts = Options {
        grace: std::time::Duration::ZERO,
        ..Default::default()
    };
    sweep::run(store, &opts, &mut |_, _, _| {}).unwrap()
}

#[test]
fn a_held_chunk_survives_gc_and_an_unheld_one_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_memory(dir.path(), ChunkParams::default()).unwrap();
    let data = vec![7u8; 20_000];
    let id = store.chunks.hasher().id(&data);
    let chunk = [NewChunk {
        id,
        data: &data,
        next: None,
    }];
    // Stored, referenced, then dead; its pack closed so GC may delete it.
    let claim = store.chunks.prepare(&chunk, Compression::Off, 1).unwrap();
    refs(&store, id, 1);
    store.chunks.release(claim);
    refs(&store, id, -1);
    store.chunks.writer().roll().unwrap();
    assert_eq!(store.committer.store_counters().dead_chunks, 1);

    // A writer deduplicates against the dead chunk; GC runs before the writer commits.
    let held = store.chunks.prepare(&chunk, Compression::Off, 1).unwrap();
    let r = gc(&store);
    assert_eq!(
        r.dead_chunks_removed, 0,
        "a held chunk is not collected: {r:?}"
    );
    // Its pack held nothing else live, so GC moved the chunk and deleted the pack.
    assert!(store.chunks.lookup(id).unwrap().is_some(), "{r:?}");
    refs(&store, id, 1); // would fail with `Vanished` had GC deleted it
    store.chunks.release(held);
    assert_eq!(&**store.chunks.read(id).unwrap(), &data);

    // Nothing holds it any more: collected, pack deleted, reads say so.
    refs(&store, id, -1);
    store.chunks.writer().roll().unwrap();
    let r = gc(&store);
    assert_eq!(r.dead_chunks_removed, 1, "{r:?}");
    assert_eq!(r.packs_deleted, 1, "{r:?}");
    assert!(r.reclaimed_bytes >= data.len() as u64, "{r:?}");
    store.chunks.cache().remove(id);
    assert!(matches!(
        store.chunks.read(id),
        Err(ChunkError::NotIndexed { .. })
    ));
    let c = store.committer.store_counters();
    assert_eq!((c.chunks, c.dead_chunks, c.stored_bytes), (0, 0, 0));
    let report = fsck::run(&store, &Default::default(), &mut |_, _, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn rewrite_moves_live_chunks_and_fsck_finds_and_repairs_refcount_drift() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_memory(dir.path(), ChunkParams::default()).unwrap();
    let blobs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 30_000]).collect();
    let ids: Vec<ChunkId> = blobs.iter().map(|b| store.chunks.hasher().id(b)).collect();
    let chunks = new_chunks(&blobs, &ids);
    let claim = store.chunks.prepare(&chunks, Compression::Off, 1).unwrap();
    for id in &ids {
        refs(&store, *id, 1);
    }
    store.chunks.release(claim);
    store.chunks.writer().roll().unwrap();
    // 8 of 10 die: the pack is mostly dead and gets rewritten.
    for id in &ids[2..] {
        refs(&store, *id, -1);
    }
    let before = store.chunks.lookup(ids[0]).unwrap().unwrap();
    let r = gc(&store);
    assert_eq!((r.packs_rewritten, r.packs_deleted), (1, 1), "{r:?}");
    let after = store.chunks.lookup(ids[0]).unwrap().unwrap();
    assert_ne!(before.pack, after.pack, "the live chunk moved");
    store.chunks.cache().remove(ids[0]);
    store.chunks.cache().remove(ids[1]);
    assert_eq!(&**store.chunks.read(ids[0]).unwrap(), &blobs[0]);
    assert_eq!(&**store.chunks.read(ids[1]).unwrap(), &blobs[1]);

    // Drift: the index says 5 references where no extent names the chunk.
    refs(&store, ids[0], 4);
    let report = fsck::run(&store, &Default::default(), &mut |_, _, _| {}).unwrap();
    assert!(
        report.problems.iter().any(|p| p.kind == "refcount_drift"),
        "{:?}",
        report.problems
    );
    assert!(report.unrepaired > 0);
    let opts = fsck::Options {
        scrub: true,
        repair: true,
    };
    let report = fsck::run(&store, &opts, &mut |_, _, _| {}).unwrap();
    assert_eq!(report.unrepaired, 0, "{:?}", report.problems);
    let report = fsck::run(&store, &Default::default(), &mut |_, _, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(store.chunks.lookup(ids[0]).unwrap().unwrap().refs, 0);
}

/// A store on a memory backend the test keeps a handle to (to damage records directly),
/// with a container `c` holding a 100 KB file.
fn store_with_a_file(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<Store>,
    dedupfs_core::kv::mem::MemKv,
    std::sync::Arc<dedupfs_core::containers::ContainerInfo>,
) {
    use dedupfs_core::fs::{Ctx, Fs, FsOptions, OpenFlags, ROOT_NODE};
    let kv = dedupfs_core::kv::mem::MemKv::new();
    let store = std::sync::Arc::new(
        Store::open_with_kv(dir, ChunkParams::default(), std::sync::Arc::new(kv.clone())).unwrap(),
    );
    let fs = Fs::new(
        store.clone(),
        FsOptions {
            background: false,
            ..Default::default()
        },
    );
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    let (a, fh) = fs
        .create(&Ctx::root(), c, b"f", 0o644, OpenFlags::write_only())
        .unwrap();
    fs.write(a.node, fh, 0, &vec![3u8; 100_000]).unwrap();
    fs.release(fh).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let ci = store.registry().by_name("c").unwrap();
    (store, kv, ci)
}

fn fsck_run(store: &Store, repair: bool) -> fsck::Report {
    let opts = fsck::Options {
        scrub: false,
        repair,
    };
    fsck::run(store, &opts, &mut |_, _, _| {}).unwrap()
}

#[test]
fn fsck_recounts_live_trees_and_repairs_drifted_counters() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _kv, ci) = store_with_a_file(dir.path());
    assert!(fsck_run(&store, false).problems.is_empty());
    store
        .committer
        .commit(|c| {
            c.set_tree_counters(
                &ci.read_point,
                dedupfs_core::records::TreeCounters {
                    files: 7,
                    logical_bytes: 1,
                },
            );
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let r = fsck_run(&store, false);
    let p = r
        .problems
        .iter()
        .find(|p| p.kind == "tree_counter_drift")
        .unwrap_or_else(|| panic!("drift not reported: {:?}", r.problems));
    assert!(
        p.message.contains("7 files") && p.message.contains("1 files of 100000"),
        "{}",
        p.message
    );
    assert_eq!(fsck_run(&store, true).unrepaired, 0);
    assert!(fsck_run(&store, false).problems.is_empty());
    let s = dedupfs_core::stats::tree_counters(&store, &ci).unwrap();
    assert_eq!((s.files, s.logical_bytes), (1, 100_000));
}

#[test]
fn fsck_names_malformed_records_instead_of_reading_them_as_zero() {
    use dedupfs_core::kv::{Batch, Cf, Kv};
    let dir = tempfile::tempdir().unwrap();
    let (store, kv, _ci) = store_with_a_file(dir.path());
    let mut b = Batch::new();
    // A per-container count of 3 bytes (was read as 0), and an inode key too short to hold
    // a version.
    b.put(
        Cf::ContainerRefs,
        vec![0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9],
        vec![1, 2, 3],
    );
    b.put(Cf::Inodes, vec![0, 1, 2], vec![1]);
    kv.write(b, false).unwrap();
    let r = fsck_run(&store, false);
    let bad: Vec<&str> = r
        .problems
        .iter()
        .filter(|p| p.kind == "malformed_record")
        .map(|p| p.message.as_str())
        .collect();
    assert!(
        bad.iter()
            .any(|m| m.starts_with("container_refs record 0000000109")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|m| m.starts_with("inodes record 000102")),
        "{bad:?}"
    );
    assert!(r.unrepaired >= 2);
    // The bad count is dropped and recounted; the bad inode key cannot be guessed at.
    let r = fsck_run(&store, true);
    assert!(
        r.problems.iter().any(|p| p.kind == "malformed_record"
            && p.message.starts_with("inodes")
            && !p.repaired),
        "{:?}",
        r.problems
    );
    let left: Vec<_> = fsck_run(&store, false)
        .problems
        .into_iter()
        .map(|p| p.message)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// Compressible, distinct chunk contents (text-like, so they are framed together).
fn text_blob(i: u32, len: usize) -> Vec<u8> {
    (0..)
        .flat_map(|n: u32| format!("chunk {i} line {n}: the quick brown fox\n").into_bytes())
        .take(len)
        .collect()
}

/// Text blobs `range` stored in one `prepare`, each referenced once, in a closed pack.
fn stored_and_referenced(
    store: &Store,
    range: std::ops::Range<u32>,
    compression: Compression,
    threads: usize,
) -> (Vec<Vec<u8>>, Vec<ChunkId>) {
    let blobs: Vec<Vec<u8>> = range.map(|i| text_blob(i, 20_000)).collect();
    let ids: Vec<ChunkId> = blobs.iter().map(|b| store.chunks.hasher().id(b)).collect();
    let claim = store
        .chunks
        .prepare(&new_chunks(&blobs, &ids), compression, threads)
        .unwrap();
    for id in &ids {
        refs(store, *id, 1);
    }
    store.chunks.release(claim);
    store.chunks.writer().roll().unwrap();
    (blobs, ids)
}

#[test]
fn a_frame_with_dead_members_is_rewritten_with_only_the_live_ones() {
    use dedupfs_core::records::COMPRESSION_FRAME;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_memory(dir.path(), ChunkParams::default()).unwrap();
    let (blobs, ids) = stored_and_referenced(&store, 0..4, Compression::Zstd(1), 2);
    let recs: Vec<_> = ids
        .iter()
        .map(|id| store.chunks.lookup(*id).unwrap().unwrap())
        .collect();
    assert!(
        recs.iter()
            .all(|r| r.compression == COMPRESSION_FRAME && r.offset == recs[0].offset),
        "the four chunks share one frame: {recs:?}"
    );
    let frame_bytes: u64 = recs.iter().map(|r| r.disk_bytes()).sum();
    assert_eq!(
        store.committer.store_counters().stored_bytes,
        frame_bytes,
        "the shares add up to the frame record"
    );
    assert!(
        frame_bytes < 80_000 / 10,
        "text compresses as a whole: {frame_bytes} bytes"
    );

    // Three of four die: GC rewrites the pack, carrying only the live member's bytes.
    for id in &ids[1..] {
        refs(&store, *id, -1);
    }
    let r = gc(&store);
    assert_eq!((r.packs_rewritten, r.packs_deleted), (1, 1), "{r:?}");
    let moved = store.chunks.lookup(ids[0]).unwrap().unwrap();
    assert_ne!(moved.pack, recs[0].pack);
    for id in &ids {
        store.chunks.cache().remove(*id);
    }
    assert_eq!(&**store.chunks.read(ids[0]).unwrap(), &blobs[0]);
    for id in &ids[1..] {
        assert!(
            store.chunks.lookup(*id).unwrap().is_none(),
            "dead: forgotten"
        );
    }
    let c = store.committer.store_counters();
    assert_eq!(
        (c.chunks, c.stored_bytes),
        (1, moved.disk_bytes()),
        "counters follow the re-framed chunk"
    );
    assert!(moved.disk_bytes() < frame_bytes, "{moved:?}");
    let opts = fsck::Options {
        scrub: true,
        repair: false,
    };
    // The references here are counted without extents (so fsck reports them as drift);
    // what must not show is damage: every indexed chunk scrubs clean.
    let damage = |store: &Store| {
        let report = fsck::run(store, &opts, &mut |_, _, _| {}).unwrap();
        report
            .problems
            .into_iter()
            .filter(|p| {
                !matches!(
                    p.kind,
                    "refcount_drift" | "container_refcount_drift" | "counter_drift"
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(damage(&store).is_empty(), "{:?}", damage(&store));

    // Two live members of one frame stay framed together through a rewrite.
    let (more, mids) = stored_and_referenced(&store, 10..16, Compression::Zstd(1), 1);
    for i in [1, 3, 4, 5] {
        refs(&store, mids[i], -1);
    }
    let r = gc(&store);
    assert!(r.packs_rewritten >= 1, "{r:?}");
    let a = store.chunks.lookup(mids[0]).unwrap().unwrap();
    let b = store.chunks.lookup(mids[2]).unwrap().unwrap();
    assert_eq!(
        (a.compression, a.pack, a.offset),
        (COMPRESSION_FRAME, b.pack, b.offset),
        "re-framed together"
    );
    for id in &mids {
        store.chunks.cache().remove(*id);
    }
    assert_eq!(&**store.chunks.read(mids[2]).unwrap(), &more[2]);
    assert_eq!(&**store.chunks.read(mids[0]).unwrap(), &more[0]);
    assert!(damage(&store).is_empty(), "{:?}", damage(&store));
}

#[test]
fn zstd_chunk_compresses_each_chunk_alone() {
    use dedupfs_core::records::COMPRESSION_ZSTD;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_memory(dir.path(), ChunkParams::default()).unwrap();
    let (blobs, ids) = stored_and_referenced(&store, 0..4, Compression::ZstdChunk(3), 2);
    let recs: Vec<_> = ids
        .iter()
        .map(|id| store.chunks.lookup(*id).unwrap().unwrap())
        .collect();
    assert!(
        recs.iter()
            .all(|r| r.compression == COMPRESSION_ZSTD && r.frame.is_none()),
        "{recs:?}"
    );
    assert_ne!(recs[0].offset, recs[1].offset);
    for (id, b) in ids.iter().zip(&blobs) {
        store.chunks.cache().remove(*id);
        assert_eq!(&**store.chunks.read(*id).unwrap(), b);
    }
}
