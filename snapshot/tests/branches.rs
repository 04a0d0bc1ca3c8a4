//! History operations on the core without a kernel: partial overwrites in read-write
//! snapshots, and apply of tracked changes.

use dedupfs_core::chunker::ChunkParams;
use dedupfs_core::containers::SnapshotMode;
use dedupfs_core::fs::{Ctx, Fs, FsOptions, OpenFlags, ROOT_NODE};
use dedupfs_core::kv::mem::MemKv;
use dedupfs_core::store::Store;
use dedupfs_snapshot::snapshot::{self, CreateRequest};
use std::sync::Arc;

const PARAMS: ChunkParams = ChunkParams {
    min: 2048,
    avg: 8192,
    max: 32768,
};

fn setup() -> (tempfile::TempDir, Arc<Store>, Fs) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with_kv(dir.path(), PARAMS, Arc::new(MemKv::new())).unwrap());
    let fs = Fs::new(
        store.clone(),
        FsOptions {
            background: false,
            ..Default::default()
        },
    );
    (dir, store, fs)
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (a, fh) = fs
        .create(
            &Ctx::root(),
            parent,
            name.as_bytes(),
            0o644,
            OpenFlags::write_only(),
        )
        .unwrap();
    fs.write(a.node, fh, 0, data).unwrap();
    fs.release(fh).unwrap();
    fs.flush_all().unwrap();
    a.node
}

fn read_all(fs: &Fs, node: u64) -> Vec<u8> {
    let size = fs.getattr(node).unwrap().size;
    let fh = fs.open(&Ctx::root(), node, OpenFlags::read_only()).unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let d = fs.read(node, fh, out.len() as u64, 1 << 20).unwrap();
        assert!(!d.is_empty());
        out.extend(d);
    }
    fs.release(fh).unwrap();
    out
}

fn overwrite(fs: &Fs, node: u64, off: u64, data: &[u8]) {
    let fh = fs
        .open(&Ctx::root(), node, OpenFlags::write_only())
        .unwrap();
    fs.write(node, fh, off, data).unwrap();
    fs.release(fh).unwrap();
    fs.flush_all().unwrap();
}

fn snap_node(fs: &Fs, name: &str, file: &str) -> u64 {
    let snaps = fs
        .lookup(&Ctx::root(), ROOT_NODE, b".snapshots")
        .unwrap()
        .node;
    let root = fs
        .lookup(&Ctx::root(), snaps, name.as_bytes())
        .unwrap()
        .node;
    fs.lookup(&Ctx::root(), root, file.as_bytes()).unwrap().node
}

#[test]
fn partial_overwrite_in_a_rw_snapshot_reads_back_and_leaves_the_origin_alone() {
    let (_d, store, fs) = setup();
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    let data = noise(3 << 20, 1);
    let f = write_file(&fs, c, "big", &data);
    snapshot::create(
        &store,
        Some(fs.core()),
        &CreateRequest {
            container: "c",
            name: "s",
            mode: SnapshotMode::RwTracking,
            at: None,
            flush: true,
        },
    )
    .unwrap();
    let sf = snap_node(&fs, "s", "big");
    for (off, patch) in [
        (300_000u64, &b"PATCH"[..]),
        (2_500_000, &b"second patch"[..]),
    ] {
        overwrite(&fs, sf, off, patch);
    }
    let mut expect = data.clone();
    expect[300_000..300_005].copy_from_slice(b"PATCH");
    expect[2_500_000..2_500_012].copy_from_slice(b"second patch");
    assert!(read_all(&fs, sf) == expect, "snapshot reads its own writes");
    assert!(read_all(&fs, f) == data, "the origin is untouched");

    {
        let fh = fs.open(&Ctx::root(), sf, OpenFlags::read_only()).unwrap();
        let d = fs.read(sf, fh, 286_499, 17_307).unwrap();
        fs.release(fh).unwrap();
        assert!(
            d == expect[286_499..286_499 + 17_307],
            "unaligned read of the snapshot"
        );
    }
    // Changes name the two regions; apply onto a newer rw snapshot reproduces the bytes.
    let ch = dedupfs_snapshot::apply::changes(&store, Some(fs.core()), "s").unwrap();
    assert_eq!(ch.len(), 1);
    let ranges = ch[0].ranges.clone().expect("byte ranges");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges[0].0 <= 300_000 && ranges[0].1 >= 300_005);
    assert!(ranges[1].0 <= 2_500_000 && ranges[1].1 >= 2_500_012);
    snapshot::create(
        &store,
        Some(fs.core()),
        &CreateRequest {
            container: "c",
            name: "t",
            mode: SnapshotMode::Rw,
            at: None,
            flush: true,
        },
    )
    .unwrap();
    let r = dedupfs_snapshot::apply::apply(&store, fs.core(), "s", "t", false).unwrap();
    assert!(r.conflicts.is_empty());
    let tf = snap_node(&fs, "t", "big");
    let got = read_all(&fs, tf);
    let diffs: Vec<usize> = (0..expect.len())
        .filter(|&i| got.get(i) != expect.get(i))
        .collect();
    assert!(
        got == expect,
        "apply reproduced the snapshot's bytes: len {} vs {}, {} differ, first {:?} last {:?}",
        got.len(),
        expect.len(),
        diffs.len(),
        diffs.first(),
        diffs.last()
    );
    assert!(read_all(&fs, f) == data);
}

#[test]
fn two_distant_writes_through_one_handle_of_a_live_file() {
    let (_d, _store, fs) = setup();
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    let data = noise(3 << 20, 1);
    let f = write_file(&fs, c, "big", &data);
    let patch = noise(3 << 20, 2);
    let mut expect = data.clone();
    let fh = fs.open(&Ctx::root(), f, OpenFlags::write_only()).unwrap();
    for (a, b) in [(286_499usize, 303_806usize), (2_499_990, 2_509_237)] {
        fs.write(f, fh, a as u64, &patch[a..b]).unwrap();
        expect[a..b].copy_from_slice(&patch[a..b]);
        assert!(
            read_all(&fs, f) == expect,
            "buffered, after writing {a}..{b}"
        );
    }
    fs.release(fh).unwrap();
    assert!(read_all(&fs, f) == expect, "after release");
    fs.flush_all().unwrap();
    assert!(read_all(&fs, f) == expect, "after flush");
}

#[test]
fn writes_in_a_rw_snapshot_never_reach_the_origin_open_at_the_same_time() {
    let (_d, store, fs) = setup();
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    let data = noise(3 << 20, 1);
    write_file(&fs, c, "big", &data);
    snapshot::create(
        &store,
        Some(fs.core()),
        &CreateRequest {
            container: "c",
            name: "u",
            mode: SnapshotMode::Rw,
            at: None,
            flush: true,
        },
    )
    .unwrap();
    let f = snap_node(&fs, "u", "big");
    let patch = noise(3 << 20, 2);
    let mut expect = data.clone();
    // The origin file open at the same time must stay a separate file (same inode
    // number, other tree).
    let origin = fs.lookup(&Ctx::root(), c, b"big").unwrap().node;
    let rfh = fs
        .open(&Ctx::root(), origin, OpenFlags::read_only())
        .unwrap();
    let fh = fs.open(&Ctx::root(), f, OpenFlags::write_only()).unwrap();
    for (a, b) in [(286_499usize, 303_806usize), (2_499_990, 2_509_237)] {
        assert!(fs.read(origin, rfh, a as u64, (b - a) as u32).unwrap() == data[a..b]);
        fs.write(f, fh, a as u64, &patch[a..b]).unwrap();
        expect[a..b].copy_from_slice(&patch[a..b]);
        let got = read_all(&fs, f);
        let diffs: Vec<usize> = (0..expect.len()).filter(|&i| got[i] != expect[i]).collect();
        assert!(
            diffs.is_empty(),
            "buffered, after writing {a}..{b}: {} differ, first {:?}",
            diffs.len(),
            diffs.first()
        );
    }
    fs.release(rfh).unwrap();
    fs.release(fh).unwrap();
    let got = read_all(&fs, f);
    let diffs: Vec<usize> = (0..expect.len()).filter(|&i| got[i] != expect[i]).collect();
    assert!(
        diffs.is_empty(),
        "after release: {} bytes differ",
        diffs.len()
    );
    assert!(read_all(&fs, origin) == data, "the origin is untouched");
    fs.flush_all().unwrap();
    assert!(read_all(&fs, f) == expect, "after flush");
}

#[test]
fn space_based_retention_keeps_history_within_the_limit_and_the_live_state_intact() {
    let (_d, store, fs) = setup();
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    let f = write_file(&fs, c, "f", &noise(256 << 10, 1));
    for i in 2..=6u64 {
        overwrite(&fs, f, 0, &noise(256 << 10, i));
    }
    let before = dedupfs_snapshot::retention::show(&store, "c").unwrap();
    assert!(before.history_bytes >= 5 * (256 << 10), "{before:?}");
    dedupfs_core::admin::set_container(
        &store,
        "c",
        &dedupfs_core::admin::SettingsChange {
            retention: Some(Some("max=600K".into())),
            ..Default::default()
        },
        dedupfs_core::containers::lock::Authority::Normal,
        &dedupfs_snapshot::retention::keeps_less,
    )
    .unwrap();
    let now = dedupfs_core::records::Timestamp::now();
    let r = dedupfs_snapshot::retention::prune(&store, "c", now).unwrap();
    assert!(r.history_bytes <= 600 << 10, "{r:?}");
    assert!(
        r.history_bytes >= 256 << 10,
        "the newest superseded versions stay: {r:?}"
    );
    assert!(r.released_bytes >= 3 * (256 << 10), "{r:?}");
    let created = store.registry().by_name("c").unwrap().rec.created;
    assert!(
        (created..=now.sec).contains(&r.window_start),
        "the window starts when its oldest kept version was committed: {r:?}"
    );
    assert!(read_all(&fs, f) == noise(256 << 10, 6));
    // Reading before the new floor is refused, not answered from half-pruned history.
    let ci = store.registry().by_name("c").unwrap();
    assert!(ci.rec.history_floor > 0);
    let err = dedupfs_core::points::resolve(&store, &ci.rec, &format!("@{}", ci.rec.created));
    assert!(err.is_err());
}

#[test]
fn tiered_retention_keeps_one_point_per_interval_and_times_below_the_window_read_them() {
    let (_d, store, fs) = setup();
    let c = fs.mkdir(&Ctx::root(), ROOT_NODE, b"c", 0o755).unwrap().node;
    let f = write_file(&fs, c, "f", &noise(64 << 10, 0));
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // Three writes in each of three consecutive seconds: (version, content) after each.
    let mut states: Vec<(u64, Vec<u8>)> = Vec::new();
    let first = secs();
    let mut seed = 1;
    for s in first..first + 3 {
        while secs() < s {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for _ in 0..3 {
            let data = noise(64 << 10, seed);
            seed += 1;
            overwrite(&fs, f, 0, &data);
            states.push((store.committer.head().0, data));
        }
    }
    dedupfs_core::admin::set_container(
        &store,
        "c",
        &dedupfs_core::admin::SettingsChange {
            retention: Some(Some("all=1s,every=1s/1h".into())),
            ..Default::default()
        },
        dedupfs_core::containers::lock::Authority::Normal,
        &dedupfs_snapshot::retention::keeps_less,
    )
    .unwrap();
    let now = dedupfs_core::records::Timestamp {
        sec: secs() + 5,
        nsec: 0,
    };
    let r = dedupfs_snapshot::retention::prune(&store, "c", now).unwrap();
    assert!(
        r.pruned_versions > 0,
        "versions between tier points go: {r:?}"
    );
    let ci = store.registry().by_name("c").unwrap();
    // The last time asked for must have passed: times in the future are refused.
    while secs() < first + 3 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for t in first + 1..=first + 3 {
        let v = store
            .committer
            .version_at(dedupfs_core::records::Timestamp { sec: t, nsec: 0 })
            .unwrap()
            .unwrap();
        let expect = &states.iter().rev().find(|(sv, _)| *sv <= v.0).unwrap().1;
        let p = dedupfs_core::points::resolve(&store, &ci.rec, &format!("@{t}")).unwrap();
        assert_eq!(p.version, v, "@{t} resolves to its tier point");
        let view = fs.time_view(&ci, p.version).unwrap();
        let root = dedupfs_core::fs::NodeRef::Tree {
            view: view.view,
            ino: view.root(),
        }
        .encode();
        let node = fs.lookup(&Ctx::root(), root, b"f").unwrap().node;
        assert!(read_all(&fs, node) == *expect, "content as of @{t}");
    }
    assert!(read_all(&fs, f) == states.last().unwrap().1);
}
