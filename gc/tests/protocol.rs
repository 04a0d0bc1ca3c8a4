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
            let (txn, st, cont) = c.split(C);
            store
                .chunks
                .add_refs(txn, C, &HashMap::from([(id, delta)]), st, cont)
                .map_err(StoreError::from)
        })
        .unwrap();
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
    let chunks: Vec<NewChunk<'_>> = blobs
        .iter()
        .zip(&ids)
        .map(|(b, id)| NewChunk {
            id: *id,
            data: b,
            next: None,
        })
        .collect();
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
