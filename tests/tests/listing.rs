//! Directory listings with attributes (READDIRPLUS): what `find`/`ls -l`/`du` see through
//! a fresh listing is what a lookup by name says, in a whole mount and with `container=`
//! (where node ids are translated), and stays so after changes and a rollback.

use dedupfs_tests::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// `find` over `dir` on cold caches: the kernel lists with attributes, then prints
/// inode, size, links and mode of every entry from what the listing brought.
fn listed(dir: &Path) -> Vec<String> {
    drop_caches();
    let out = sh(&format!(
        "find {} -mindepth 1 -printf '%P %i %s %n %m %y\\n' | sort",
        dir.display()
    ));
    out.lines().map(str::to_string).collect()
}

/// The same figures by lookups of each name on cold caches, no listing involved.
fn looked_up(dir: &Path, names: &[String]) -> Vec<String> {
    drop_caches();
    let mut v: Vec<String> = names
        .iter()
        .map(|n| {
            let m = std::fs::symlink_metadata(dir.join(n)).unwrap();
            let y = if m.is_dir() {
                "d"
            } else if m.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            format!(
                "{n} {} {} {} {:o} {y}",
                m.ino(),
                m.size(),
                m.nlink(),
                m.mode() & 0o7777
            )
        })
        .collect();
    v.sort();
    v
}

fn populate(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for d in 0..3 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        names.push(format!("d{d}"));
        for f in 0..300 {
            let n = format!("d{d}/f{f}");
            std::fs::write(root.join(&n), vec![b'x'; (f * 37 + d) % 5000]).unwrap();
            names.push(n);
        }
    }
    std::fs::hard_link(root.join("d0/f1"), root.join("d1/link")).unwrap();
    std::os::unix::fs::symlink("d0/f2", root.join("sym")).unwrap();
    names.push("d1/link".into());
    names.push("sym".into());
    names
}

fn agree(dir: &Path, names: &[String]) {
    let l = listed(dir);
    let s = looked_up(dir, names);
    assert_eq!(
        l.len(),
        names.len(),
        "find listed {} of {} entries",
        l.len(),
        names.len()
    );
    assert!(
        l == s,
        "listing and lookups disagree:\n{:?}",
        l.iter().zip(&s).find(|(a, b)| a != b)
    );
}

#[test]
fn a_listing_with_attributes_agrees_with_lookups() {
    let mut t = TestStore::mounted("");
    std::fs::create_dir(t.path("c")).unwrap();
    let names = populate(&t.path("c"));
    agree(&t.path("c"), &names);
    ok(&t.cli(&["bookmark", "create", "c", "before"]));
    // Changes made after a listing cached attributes show in the next one.
    let _ = listed(&t.path("c"));
    std::fs::write(t.path("c/d2/f7"), vec![b'y'; 12345]).unwrap();
    std::fs::remove_file(t.path("c/d2/f8")).unwrap();
    let names2: Vec<String> = names.iter().filter(|n| *n != "d2/f8").cloned().collect();
    agree(&t.path("c"), &names2);
    // A rollback changes the tree behind the kernel's back: the next listing shows the
    // rolled-back tree.
    let _ = listed(&t.path("c"));
    ok(&t.cli(&["rollback", "c", "--to", "before"]));
    agree(&t.path("c"), &names);
    t.umount();
    // With container=, the kernel sees translated node ids (the root is 1).
    t.mount("container=c");
    agree(&t.mnt.clone(), &names);
}
