//! Zero-copy clones on a real mount: `copy_file_range` (and `cp --reflink=auto`, which
//! uses it) shares chunk references inside a container — byte-equal copies that store
//! nothing, that stay independent of their source through writes and rollbacks of either,
//! and that fsck, retention pruning and GC count exactly.

use dedupfs_tests::*;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn stored(t: &TestStore) -> u64 {
    t.stats()["stored_bytes"].as_u64().expect("stored_bytes")
}

/// `copy_file_range(2)` until `len` bytes are copied or the source ends.
fn copy_range(from: &Path, off_in: u64, to: &Path, off_out: u64, len: u64) -> u64 {
    let src = File::open(from).unwrap();
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(to)
        .unwrap();
    let (mut oi, mut oo) = (off_in as libc::loff_t, off_out as libc::loff_t);
    let mut done = 0u64;
    while done < len {
        // SAFETY: both descriptors are open for the call; the offsets are ours.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut oi,
                dst.as_raw_fd(),
                &mut oo,
                (len - done) as usize,
                0,
            )
        };
        assert!(
            n >= 0,
            "copy_file_range: {}",
            std::io::Error::last_os_error()
        );
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    dst.sync_all().unwrap();
    done
}

fn fsck_clean(t: &TestStore) {
    let out = t.cli(&["fsck", "--json"]);
    let f: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(f["unrepaired"], 0, "fsck: {f}");
}

#[test]
fn copies_share_chunks_store_nothing_and_stay_independent() {
    let t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    let data = pseudo_random((24 << 20) + 12_345, 41);
    fs::write(t.path("c/full.bak"), &data).unwrap();
    let other = pseudo_random(4 << 20, 42);
    fs::write(t.path("c/other"), &other).unwrap();
    ok(&t.cli(&["sync"]));
    ok(&t.cli(&["bookmark", "create", "c", "before"]));
    let s0 = stored(&t);

    // A whole-file copy the way backup software and admins make it.
    sh(&format!(
        "cp --reflink=auto {} {}",
        t.path("c/full.bak").display(),
        t.path("c/synthetic.bak").display()
    ));
    // Ranges that line up with no chunk boundary: a copy through the write path would
    // re-chunk from the new offset and store new chunks; a clone trims extents instead.
    let n = copy_range(&t.path("c/full.bak"), 1_000, &t.path("c/part"), 0, 5 << 20);
    assert_eq!(n, 5 << 20);
    let n = copy_range(
        &t.path("c/full.bak"),
        (24 << 20) - 777,
        &t.path("c/other"),
        333,
        1 << 30,
    );
    assert_eq!(n, 12_345 + 777, "the copy stops where the source ends");
    ok(&t.cli(&["sync"]));
    assert_eq!(stored(&t), s0, "the clones stored no bytes");

    assert_eq!(fs::read(t.path("c/synthetic.bak")).unwrap(), data);
    assert_eq!(
        fs::read(t.path("c/part")).unwrap(),
        &data[1_000..1_000 + (5 << 20)]
    );
    let mut want_other = other.clone();
    want_other[333..333 + 12_345 + 777].copy_from_slice(&data[(24 << 20) - 777..]);
    assert_eq!(fs::read(t.path("c/other")).unwrap(), want_other);
    ok(&t.cli(&["bookmark", "create", "c", "cloned"]));
    fsck_clean(&t);

    // Writing to the copy never changes the source, nor the source the copy.
    let f = OpenOptions::new()
        .write(true)
        .open(t.path("c/synthetic.bak"))
        .unwrap();
    f.write_all_at(b"changed in the copy", 3 << 20).unwrap();
    f.sync_all().unwrap();
    let g = OpenOptions::new()
        .write(true)
        .open(t.path("c/full.bak"))
        .unwrap();
    g.write_all_at(b"changed in the source", 7 << 20).unwrap();
    g.sync_all().unwrap();
    drop((f, g));
    let mut want_copy = data.clone();
    want_copy[3 << 20..(3 << 20) + 19].copy_from_slice(b"changed in the copy");
    let mut want_src = data.clone();
    want_src[7 << 20..(7 << 20) + 21].copy_from_slice(b"changed in the source");
    assert_eq!(fs::read(t.path("c/synthetic.bak")).unwrap(), want_copy);
    assert_eq!(fs::read(t.path("c/full.bak")).unwrap(), want_src);
    assert_eq!(
        fs::read(t.path("c/part")).unwrap(),
        &data[1_000..1_000 + (5 << 20)]
    );

    // Rollback to just after the clone: both are the clone's bytes again, and still
    // independent.
    ok(&t.cli(&["rollback", "c", "--to", "cloned"]));
    assert_eq!(fs::read(t.path("c/synthetic.bak")).unwrap(), data);
    assert_eq!(fs::read(t.path("c/full.bak")).unwrap(), data);
    let f = OpenOptions::new()
        .write(true)
        .open(t.path("c/full.bak"))
        .unwrap();
    f.write_all_at(b"after the rollback", 1 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(t.path("c/synthetic.bak")).unwrap(), data);
    // Back to before the clones: they are gone, the source is as written.
    ok(&t.cli(&["rollback", "c", "--to", "before"]));
    assert!(!t.path("c/synthetic.bak").exists());
    assert!(!t.path("c/part").exists());
    assert_eq!(fs::read(t.path("c/full.bak")).unwrap(), data);
    assert_eq!(fs::read(t.path("c/other")).unwrap(), other);
    fsck_clean(&t);
}

#[test]
fn a_clone_outlives_its_source_through_pruning_and_gc() {
    let t = TestStore::mounted("gc_idle=0");
    fs::create_dir(t.path("c")).unwrap();
    let data = pseudo_random(16 << 20, 43);
    fs::write(t.path("c/src"), &data).unwrap();
    // Buffered writes of the source are part of what is cloned (no sync in between).
    let f = OpenOptions::new()
        .write(true)
        .open(t.path("c/src"))
        .unwrap();
    f.write_all_at(b"unflushed", 9 << 20).unwrap();
    let mut want = data.clone();
    want[9 << 20..(9 << 20) + 9].copy_from_slice(b"unflushed");
    assert_eq!(
        copy_range(&t.path("c/src"), 0, &t.path("c/dst"), 0, 16 << 20),
        16 << 20
    );
    drop(f);
    assert_eq!(fs::read(t.path("c/dst")).unwrap(), want);
    fs::remove_file(t.path("c/src")).unwrap();
    ok(&t.cli(&["container", "set", "c", "--retention", "all=1s"]));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1 s window
    ok(&t.cli(&["retention", "prune", "c"]));
    let g: serde_json::Value =
        serde_json::from_str(&ok(&t.cli(&["gc", "--grace", "0", "--json"]))).unwrap();
    assert!(g["reclaimed_bytes"].is_u64(), "{g}");
    assert_eq!(fs::read(t.path("c/dst")).unwrap(), want);
    fsck_clean(&t);
    let mut t = t;
    t.umount();
    t.mount("");
    assert_eq!(fs::read(t.path("c/dst")).unwrap(), want);
}
