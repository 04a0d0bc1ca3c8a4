//! Inline dedup across containers, measured by the stats, and a differential test of real
//! programs (cp, tar) copying the standard backup corpus into the mount.

use dedupfs_tests::*;
use std::path::Path;

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn the_same_data_in_two_containers_is_stored_once() {
    let t = TestStore::mounted("");
    let src = t.dir.path().join("src.bin");
    // 100 MiB: 60 % random, 40 % text-like, so compression and dedup both show.
    let mut data = pseudo_random(60 << 20, 9);
    data.extend((0..40 << 20).map(|i: usize| b"backup record line\n"[i % 19]));
    std::fs::write(&src, &data).unwrap();
    std::fs::create_dir(t.path("a")).unwrap();
    std::fs::create_dir(t.path("b")).unwrap();
    sh(&format!(
        "cp {} {} && sync",
        src.display(),
        t.path("a/data.bin").display()
    ));
    let s1 = t.stats();
    sh(&format!(
        "cp {} {} && sync",
        src.display(),
        t.path("b/data.bin").display()
    ));
    let s2 = t.stats();
    let logical = n(&s2, "logical_bytes");
    assert_eq!(logical, 200 << 20);
    let first = n(&s1, "stored_bytes");
    let added = n(&s2, "stored_bytes") - first;
    assert!(added < 1 << 20, "the second copy stored {added} more bytes");
    assert!(
        first < 75 << 20,
        "compression: first copy stored {first} bytes"
    );
    assert!(n(&s2, "pack_bytes") < 80 << 20);
    let dedup = s2["dedup_ratio"].as_f64().unwrap();
    assert!(dedup > 1.9, "store dedup ratio {dedup}");
    let b = s2["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "b")
        .unwrap()
        .clone();
    assert!(
        n(&b, "added_bytes") < 1 << 20,
        "container b added almost nothing: {b}"
    );
    assert!(b["savings_pct"].as_f64().unwrap() > 99.0);
    assert_eq!(std::fs::read(t.path("b/data.bin")).unwrap(), data);
}

fn corpus(dir: &Path, format: &str) {
    sh(&format!(
        "{} --out {} --versions 3 --size-mb 48 --files 400 --format {format} --seed 7 > /dev/null",
        backup_corpus().display(),
        dir.display()
    ));
}

fn stored(t: &TestStore) -> u64 {
    n(&t.stats(), "stored_bytes")
}

#[test]
fn backup_corpus_copied_with_cp_and_tar_reads_back_identical() {
    let mut t = TestStore::mounted("");
    let tree = t.dir.path().join("tree");
    let tars = t.dir.path().join("tars");
    corpus(&tree, "tree");
    corpus(&tars, "tar");
    std::fs::create_dir(t.path("cp")).unwrap();
    std::fs::create_dir(t.path("tar")).unwrap();
    std::fs::create_dir(t.path("images")).unwrap();
    let versions = ["v001", "v002", "v003"];
    // A tree copied file by file, version after version...
    let mut added = Vec::new();
    for v in versions {
        let before = stored(&t);
        sh(&format!(
            "cp -a {} {}",
            tree.join(v).display(),
            t.path("cp").display()
        ));
        added.push(stored(&t) - before);
    }
    let v1 = added[0];
    assert!(
        v1 > 20 << 20,
        "the first version stores its data ({v1} bytes)"
    );
    for (i, a) in added.iter().enumerate().skip(1) {
        assert!(
            *a < v1 / 8,
            "version {} added {a} bytes, the first {v1}",
            i + 1
        );
    }
    // ...the same trees extracted by tar into another container add nothing...
    let before = stored(&t);
    for v in versions {
        sh(&format!(
            "mkdir {d} && tar -C {d} -xf {}",
            tars.join(format!("{v}.tar")).display(),
            d = t.path(&format!("tar/{v}")).display()
        ));
    }
    let tar_added = stored(&t) - before;
    assert!(
        tar_added < 1 << 20,
        "identical files in another container added {tar_added} bytes"
    );
    // ...and nightly tar streams (one large file each) mostly deduplicate against each other.
    let mut img = Vec::new();
    for v in versions {
        let before = stored(&t);
        sh(&format!(
            "cp {} {}",
            tars.join(format!("{v}.tar")).display(),
            t.path("images").display()
        ));
        img.push(stored(&t) - before);
    }
    for (i, a) in img.iter().enumerate().skip(1) {
        assert!(*a < v1 / 8, "tar stream {} added {a} bytes", i + 1);
    }
    let s = t.stats();
    // Remount so the comparison reads from the store, not from caches.
    t.umount();
    t.mount("");
    for v in versions {
        sh(&format!(
            "diff -r {} {}",
            tree.join(v).display(),
            t.path(&format!("cp/{v}")).display()
        ));
        sh(&format!(
            "diff -r {} {}",
            tree.join(v).display(),
            t.path(&format!("tar/{v}")).display()
        ));
        sh(&format!(
            "cmp {} {}",
            tars.join(format!("{v}.tar")).display(),
            t.path(&format!("images/{v}.tar")).display()
        ));
    }
    assert!(s["dedup_ratio"].as_f64().unwrap() > 4.0, "{s}");
}
