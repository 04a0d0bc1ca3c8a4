//! Stores made by earlier formats still open and read: `tests/fixtures/store-formatN.tar.gz`
//! was written by a format-N build (see `make-old-store.sh` there) — a container with a
//! hard link, a symlink, an xattr, a bookmark, a read-write snapshot and a rollback. The
//! current build upgrades it at open (format 2: versioned tree counters; format 3:
//! compression frames; format 4: ingest figures, counted from the first write after the
//! upgrade; format 5: the compliance clock and retention locks; format 6: replica
//! containers and replication keys; format 7: packs in object storage) and reads every file of the live tree, of the
//! bookmark and of the snapshot exactly as the old build wrote them; compressible data
//! written after the upgrade reads back and the store, holding old and new records,
//! scrubs clean.

use dedupfs_tests::*;
use std::fs;

fn check_sums(dir: &std::path::Path, list: &std::path::Path) {
    let out = sh(&format!(
        "cd {} && sha256sum --quiet -c {}",
        dir.display(),
        list.display()
    ));
    assert!(out.trim().is_empty(), "{out}");
    let want = fs::read_to_string(list).unwrap().lines().count();
    let have = sh(&format!("cd {} && find . -type f | wc -l", dir.display()));
    assert_eq!(
        have.trim().parse::<usize>().unwrap(),
        want,
        "no file more or less"
    );
}

/// The format this build writes.
const CURRENT_FORMAT: u64 = 7;

#[test]
fn a_format_1_store_opens_upgrades_and_reads_back_exactly() {
    old_store_opens_upgrades_and_reads_back(1);
}

#[test]
fn a_format_2_store_opens_upgrades_and_reads_back_exactly() {
    old_store_opens_upgrades_and_reads_back(2);
}

#[test]
fn a_format_3_store_opens_upgrades_and_reads_back_exactly() {
    old_store_opens_upgrades_and_reads_back(3);
}

#[test]
fn a_format_4_store_opens_upgrades_and_reads_back_exactly() {
    old_store_opens_upgrades_and_reads_back(4);
}

#[test]
fn a_format_5_store_opens_upgrades_and_reads_back_exactly() {
    old_store_opens_upgrades_and_reads_back(5);
}

#[test]
fn a_format_6_store_opens_upgrades_and_reads_back_exactly() {
    old_store_opens_upgrades_and_reads_back(6);
}

fn old_store_opens_upgrades_and_reads_back(format: u64) {
    let fixture = manifest_dir().join(format!("fixtures/store-format{format}.tar.gz"));
    let t = TestStore::new();
    let work = t.dir.path().join("old");
    fs::create_dir(&work).unwrap();
    sh(&format!(
        "tar -C {} -xzf {}",
        work.display(),
        fixture.display()
    ));
    let store = work.join("store");
    let mnt = &t.mnt;
    let cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(store.join("dedupfs.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["format"], format,
        "the fixture is a format-{format} store"
    );
    let created = cfg["created"].as_i64().unwrap();

    mount_store(&store, mnt, "gc_idle=0,prune_interval=0");
    let cli = |args: &[&str]| {
        let mut a = vec!["--store", store.to_str().unwrap()];
        a.extend_from_slice(args);
        dedupfs(&a)
    };
    check_sums(&mnt.join("c"), &work.join("live.sha256"));
    check_sums(&mnt.join(".at/c/b1"), &work.join("b1.sha256"));
    check_sums(&mnt.join(".snapshots/rws"), &work.join("rws.sha256"));
    assert_eq!(
        sh(&format!(
            "getfattr --only-values -n user.note {}",
            mnt.join("c/hello.txt").display()
        )),
        "kept"
    );
    assert_eq!(
        fs::read_link(mnt.join("c/sym")).unwrap().to_str(),
        Some("dir/numbers.txt")
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(store.join("dedupfs.json")).unwrap()).unwrap();
    assert_eq!(cfg["format"], CURRENT_FORMAT, "upgraded at open");
    // Format 1 kept live-file counts per container, and its rollback left them stale;
    // fsck recounts the trees and repairs them.
    let _ = cli(&["fsck", "--repair", "--json"]);
    let f: serde_json::Value = serde_json::from_str(&ok(&cli(&["fsck", "--json"]))).unwrap();
    assert_eq!(
        f["unrepaired"], 0,
        "clean after the upgrade and one repair: {f}"
    );
    let s: serde_json::Value = serde_json::from_str(&ok(&cli(&["stats", "c", "--json"]))).unwrap();
    let files = sh(&format!(
        "find {} -type f -links 1 | wc -l",
        mnt.join("c").display()
    ));
    // hello.txt and hello-link are one file.
    assert_eq!(
        s["files"].as_u64().unwrap(),
        files.trim().parse::<u64>().unwrap() + 1
    );
    // Ingest figures did not exist before format 4: nothing counted yet, no start date.
    let written_before = s["ingest"]["written_bytes"].as_u64().unwrap();
    if format < 4 {
        assert_eq!(s["ingest"]["since"], 0, "{s}");
        assert_eq!(written_before, 0, "{s}");
    }
    // Format 5: the compliance clock starts at the first open, from the system clock and
    // never before the old store's last commit; a lock then covers the old history too.
    // A format-5 store has its clock already: it carries on from there (behind the system
    // clock by the time the fixture lay unopened, less the bounded catch-up).
    let st: serde_json::Value = serde_json::from_str(&ok(&cli(&["stats", "--json"]))).unwrap();
    let (comp, sys) = (
        st["clock"]["compliance"].as_i64().unwrap(),
        st["clock"]["system"].as_i64().unwrap(),
    );
    if format < 5 {
        assert!(
            (sys - comp).abs() <= 60,
            "started from the system clock: {st}"
        );
    } else {
        assert!(
            comp >= created && comp <= sys,
            "the old store's clock, carried on: {st}"
        );
    }
    ok(&cli(&[
        "container",
        "set",
        "c",
        "--lock",
        "governance",
        "--lock-for",
        "100y",
    ]));
    let out = cli(&["bookmark", "delete", "c", "b1"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "b1, written by the old build, is locked"
    );
    // And it takes writes, in the new layout (compressible data spanning several frames).
    fs::write(mnt.join("c/after-upgrade"), "new").unwrap();
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i} of a log written after the upgrade\n").into_bytes())
        .collect();
    fs::write(mnt.join("c/log.txt"), &text).unwrap();
    ok(&dedupfs(&["umount", mnt.to_str().unwrap()]));
    mount_store(&store, mnt, "gc_idle=0,prune_interval=0");
    assert_eq!(
        fs::read_to_string(mnt.join("c/after-upgrade")).unwrap(),
        "new"
    );
    assert!(fs::read(mnt.join("c/log.txt")).unwrap() == text);
    // Counted from the first write after the upgrade.
    let s: serde_json::Value = serde_json::from_str(&ok(&cli(&["stats", "c", "--json"]))).unwrap();
    assert!(s["ingest"]["since"].as_i64().unwrap() > 0, "{s}");
    assert_eq!(
        s["ingest"]["written_bytes"].as_u64(),
        Some(written_before + text.len() as u64 + 3),
        "{s}"
    );
    check_sums(&mnt.join(".at/c/b1"), &work.join("b1.sha256"));
    let f: serde_json::Value =
        serde_json::from_str(&ok(&cli(&["fsck", "--scrub", "--json"]))).unwrap();
    assert_eq!(f["unrepaired"], 0, "old and new records scrub clean: {f}");
    ok(&dedupfs(&["umount", mnt.to_str().unwrap()]));
}
