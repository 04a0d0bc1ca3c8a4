//! History on a real mount: bookmarks, time travel under `.at`, snapshots of every mode
//! (also mounted on their own mount point), tracked changes applied onto a newer snapshot,
//! rollback while mounted (with an open handle across it), and retention pruning.

use dedupfs_tests::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json output")
}

fn read(t: &TestStore, rel: &str) -> String {
    fs::read_to_string(t.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn bookmarks_and_time_travel_show_the_past_without_creating_anything() {
    let t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/f"), "one").unwrap();
    fs::create_dir(t.path("c/d")).unwrap();
    fs::write(t.path("c/d/g"), "deep").unwrap();
    let b = json(&t.cli(&[
        "--json", "bookmark", "create", "c", "first", "--kind", "app",
    ]));
    assert_eq!(b["kind"], "app");
    let after_first = b["time"].as_i64().unwrap() + 1;
    // Second-granular times: make sure the next change lands in a later second.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        <= after_first
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fs::write(t.path("c/f"), "two").unwrap();
    fs::remove_file(t.path("c/d/g")).unwrap();
    ok(&t.cli(&["bookmark", "create", "c", "second"]));

    assert_eq!(read(&t, ".at/c/first/f"), "one");
    assert_eq!(read(&t, ".at/c/first/d/g"), "deep");
    assert_eq!(read(&t, &format!(".at/c/@{after_first}/f")), "one");
    assert_eq!(read(&t, ".at/c/second/f"), "two");
    assert!(!t.path(".at/c/second/d/g").exists());
    assert_eq!(read(&t, ".at/c/now/f"), "two");
    // The views are read-only; the container is unchanged by browsing.
    let e = fs::write(t.path(".at/c/first/f"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert!(fs::create_dir(t.path(".at/x")).is_err());
    assert_eq!(read(&t, "c/f"), "two");
    // Bookmarks are listed under .at/CONTAINER and by the CLI.
    let mut names: Vec<String> = fs::read_dir(t.path(".at/c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["first", "second"]);
    let list = json(&t.cli(&["--json", "bookmark", "list", "c"]));
    assert_eq!(list.as_array().unwrap().len(), 2);
    // A time before the container existed, and nonsense, are not found.
    assert!(!t.path(".at/c/@1000000000").exists());
    assert!(!t.path(".at/c/not-a-time").exists());
    // Duplicate and bad names are refused clearly.
    let dup = t.cli(&["bookmark", "create", "c", "first"]);
    assert_eq!(dup.status.code(), Some(1), "{dup:?}");
    let bad = t.cli(&["bookmark", "create", "c", "now"]);
    assert_eq!(bad.status.code(), Some(2));
    ok(&t.cli(&["bookmark", "delete", "c", "second"]));
    assert!(!t.path(".at/c/second").exists());
}

#[test]
fn snapshots_ro_rw_and_their_own_mount_point() {
    let t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/f"), "base").unwrap();
    let s = json(&t.cli(&["--json", "snapshot", "create", "c", "s-ro"]));
    assert_eq!(s["mode"], "ro");
    ok(&t.cli(&["snapshot", "create", "c", "s-rw", "--mode", "rw"]));
    fs::write(t.path("c/f"), "later").unwrap();
    fs::write(t.path("c/new"), "n").unwrap();

    // ro: the old contents, and EROFS on any change.
    assert_eq!(read(&t, ".snapshots/s-ro/f"), "base");
    assert!(!t.path(".snapshots/s-ro/new").exists());
    let e = fs::write(t.path(".snapshots/s-ro/x"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // rw: its writes stay in it; it does not see the container's later writes.
    fs::write(t.path(".snapshots/s-rw/f"), "snap").unwrap();
    fs::create_dir(t.path(".snapshots/s-rw/sd")).unwrap();
    assert_eq!(read(&t, ".snapshots/s-rw/f"), "snap");
    assert!(!t.path(".snapshots/s-rw/new").exists());
    assert_eq!(read(&t, "c/f"), "later");
    assert!(!t.path("c/sd").exists());
    // Mounted on its own mount point.
    let mp = t.dir.path().join("vsnap");
    fs::create_dir(&mp).unwrap();
    ok(&t.cli(&["snapshot", "mount", "s-rw", mp.to_str().unwrap()]));
    assert_eq!(fs::read_to_string(mp.join("f")).unwrap(), "snap");
    fs::write(mp.join("g"), "via vsnap mount").unwrap();
    assert_eq!(read(&t, ".snapshots/s-rw/g"), "via vsnap mount");
    sh(&format!("umount {}", mp.display()));
    // A ro snapshot is mounted read-only in the kernel.
    ok(&t.cli(&["snapshot", "mount", "s-ro", mp.to_str().unwrap()]));
    let opts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
        .map(|l| l.split(' ').nth(5).unwrap_or("").to_string())
        .expect("the snapshot mount is listed");
    assert!(opts.split(',').any(|o| o == "ro"), "mount options {opts}");
    assert_eq!(fs::read_to_string(mp.join("f")).unwrap(), "base");
    sh(&format!("umount {}", mp.display()));
    // Deleting one snapshot changes nothing else.
    ok(&t.cli(&["snapshot", "delete", "s-rw"]));
    assert!(!t.path(".snapshots/s-rw").exists());
    assert_eq!(read(&t, ".snapshots/s-ro/f"), "base");
    assert_eq!(read(&t, "c/f"), "later");
    let list = json(&t.cli(&["--json", "snapshot", "list"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Snapshots survive a remount.
    let mut t = t;
    t.umount();
    t.mount("");
    assert_eq!(read(&t, ".snapshots/s-ro/f"), "base");
    let gone = t.cli(&["snapshot", "show", "s-rw"]);
    assert_eq!(gone.status.code(), Some(5));
}

#[test]
fn tracking_snapshot_changes_apply_onto_a_newer_snapshot_and_report_conflicts() {
    let t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/keep"), "k").unwrap();
    fs::write(t.path("c/big"), vec![b'a'; 1 << 20]).unwrap();
    fs::write(t.path("c/gone"), "g").unwrap();
    fs::write(t.path("c/both"), "base").unwrap();
    ok(&t.cli(&["snapshot", "create", "c", "old", "--mode", "rw-tracking"]));
    // The container moves on, then a newer snapshot is taken.
    fs::write(t.path("c/both"), "container changed it").unwrap();
    ok(&t.cli(&["snapshot", "create", "c", "newer", "--mode", "rw"]));
    // Writes into the tracking snapshot.
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(t.path(".snapshots/old/big"))
            .unwrap();
        f.seek(SeekFrom::Start(300_000)).unwrap();
        f.write_all(b"PATCH").unwrap();
    }
    fs::write(t.path(".snapshots/old/added"), "new file").unwrap();
    fs::remove_file(t.path(".snapshots/old/gone")).unwrap();
    fs::write(t.path(".snapshots/old/both"), "snapshot changed it").unwrap();

    let changes = json(&t.cli(&["--json", "snapshot", "changes", "old"]));
    let paths: Vec<(&str, &str)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), c["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/added", "added"),
            ("/big", "modified"),
            ("/both", "modified"),
            ("/gone", "removed")
        ]
    );
    let big = &changes[1]["ranges"];
    assert!(big.is_array(), "{changes}");
    let (lo, hi) = (big[0][0].as_u64().unwrap(), big[0][1].as_u64().unwrap());
    assert!(lo <= 300_000 && hi >= 300_005 && hi - lo < 400_000, "{big}");
    // rw (not tracking) snapshots refuse.
    assert_eq!(
        t.cli(&["snapshot", "changes", "newer"]).status.code(),
        Some(2)
    );

    let out = t.cli(&["--json", "snapshot", "apply", "old", "--onto", "newer"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a conflict is reported as a failure"
    );
    let r: serde_json::Value = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .next()
        .expect("a json report")
        .unwrap();
    let conflicts: Vec<&str> = r["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(conflicts, ["/both"]);
    assert_eq!(read(&t, ".snapshots/newer/both"), "container changed it");
    assert_eq!(read(&t, ".snapshots/newer/added"), "new file");
    assert!(!t.path(".snapshots/newer/gone").exists());
    let mut expect = vec![b'a'; 1 << 20];
    expect[300_000..300_005].copy_from_slice(b"PATCH");
    assert!(fs::read(t.path(".snapshots/newer/big")).unwrap() == expect);
    assert_eq!(read(&t, ".snapshots/newer/keep"), "k");
    // The container itself was not touched.
    assert_eq!(read(&t, "c/gone"), "g");
    assert!(!t.path("c/added").exists());
}

#[test]
fn rollback_while_mounted_is_non_destructive_and_invalidates_caches() {
    let t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/f"), "good").unwrap();
    fs::create_dir(t.path("c/d")).unwrap();
    fs::write(t.path("c/d/g"), "good too").unwrap();
    ok(&t.cli(&["bookmark", "create", "c", "good"]));
    ok(&t.cli(&["snapshot", "create", "c", "keep-me"]));
    // "It went wrong": overwrite, delete, add.
    fs::write(t.path("c/f"), "ransomware").unwrap();
    fs::remove_dir_all(t.path("c/d")).unwrap();
    fs::write(t.path("c/junk"), "x").unwrap();
    // Cache the bad contents in the kernel, and keep a handle open across the rollback.
    assert_eq!(read(&t, "c/f"), "ransomware");
    let mut held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t.path("c/f"))
        .unwrap();

    let dry = json(&t.cli(&["--json", "rollback", "c", "--to", "good", "--dry-run"]));
    assert_eq!(
        (
            dry["added"].as_u64(),
            dry["removed"].as_u64(),
            dry["modified"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{dry}"
    );
    assert_eq!(read(&t, "c/f"), "ransomware", "a dry run changes nothing");

    let r = json(&t.cli(&["--json", "rollback", "c", "--to", "good"]));
    let undo = r["undo_snapshot"].as_str().unwrap().to_string();
    assert_eq!(read(&t, "c/f"), "good");
    assert_eq!(read(&t, "c/d/g"), "good too");
    assert!(!t.path("c/junk").exists());
    // The handle opened before the rollback is stale: reads and writes fail with ESTALE.
    let mut s = String::new();
    held.seek(SeekFrom::Start(0)).unwrap();
    let r = held.read_to_string(&mut s);
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ESTALE));
    held.seek(SeekFrom::Start(0)).unwrap();
    let w = held.write_all(b"late write").and_then(|_| held.sync_all());
    assert_eq!(w.unwrap_err().raw_os_error(), Some(libc::ESTALE));
    drop(held);
    // Nothing was destroyed: the state before the rollback, later snapshots, bookmarks.
    assert_eq!(read(&t, &format!(".snapshots/{undo}/f")), "ransomware");
    assert!(t.path(&format!(".snapshots/{undo}/junk")).exists());
    assert_eq!(read(&t, ".snapshots/keep-me/f"), "good");
    assert_eq!(read(&t, ".at/c/good/f"), "good");
    // New writes go to the rolled-back container; the rollback can itself be undone.
    fs::write(t.path("c/after"), "a").unwrap();
    ok(&t.cli(&["rollback", "c", "--to", &undo]));
    assert_eq!(read(&t, "c/f"), "ransomware");
    assert!(!t.path("c/after").exists());
    // And survives a remount.
    let mut t = t;
    t.umount();
    t.mount("");
    assert_eq!(read(&t, "c/f"), "ransomware");
    assert_eq!(read(&t, ".at/c/good/f"), "good");
}

#[test]
fn retention_prunes_history_but_keeps_live_state_snapshots_and_bookmarks() {
    let t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    for i in 0..5u64 {
        fs::write(t.path("c/f"), pseudo_random(256 << 10, i)).unwrap();
        ok(&t.cli(&["--json", "stats"]));
    }
    ok(&t.cli(&["bookmark", "create", "c", "app-point", "--kind", "app"]));
    ok(&t.cli(&["snapshot", "create", "c", "pinned"]));
    for i in 5..8u64 {
        fs::write(t.path("c/f"), pseudo_random(256 << 10, i)).unwrap();
        ok(&t.cli(&["stats"]));
    }
    let before = json(&t.cli(&["--json", "retention", "show", "c"]));
    assert!(
        before["history_bytes"].as_u64().unwrap() >= 6 * (256 << 10),
        "{before}"
    );
    let bad = t.cli(&["container", "set", "c", "--retention", "all=soon"]);
    assert_eq!(bad.status.code(), Some(2));
    ok(&t.cli(&[
        "container",
        "set",
        "c",
        "--retention",
        "all=1s,bookmarks=app/1h",
    ]));
    // The window (1 s) starts where the newest state was committed, so that state must
    // come after the container's first seconds for a time there to lie below it: wait for
    // the clock, not for luck.
    let created = json(&t.cli(&["--json", "container", "show", "c"]))["created"]
        .as_i64()
        .unwrap();
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    while secs() < created + 3 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fs::write(t.path("c/f"), pseudo_random(256 << 10, 8)).unwrap();
    ok(&t.cli(&["stats"]));
    while secs() < created + 5 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let p = json(&t.cli(&["--json", "retention", "prune", "c"]));
    assert!(
        p["released_bytes"].as_u64().unwrap() >= 4 * (256 << 10),
        "{p}"
    );
    assert!(p["history_bytes"].as_u64().unwrap() < before["history_bytes"].as_u64().unwrap());
    assert!(p["store_reclaimable_bytes"].as_u64().unwrap() > 0, "{p}");
    // Live state, the snapshot and the kept bookmark read exactly as before.
    assert!(fs::read(t.path("c/f")).unwrap() == pseudo_random(256 << 10, 8));
    assert!(fs::read(t.path(".snapshots/pinned/f")).unwrap() == pseudo_random(256 << 10, 4));
    assert!(fs::read(t.path(".at/c/app-point/f")).unwrap() == pseudo_random(256 << 10, 4));
    // A time before the window is refused, not answered wrongly.
    assert!(!t.path(&format!(".at/c/@{}", created + 1)).exists());
    let out = t.cli(&[
        "rollback",
        "c",
        "--dry-run",
        "--to",
        &format!("@{}", created + 1),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outside the retention window"), "{err}");

    // The daemon prunes on its own at mount: new history older than the window goes.
    for i in 8..11u64 {
        fs::write(t.path("c/f"), pseudo_random(256 << 10, i)).unwrap();
        ok(&t.cli(&["stats"]));
    }
    let start = p["window_start"].as_i64().unwrap();
    let held = json(&t.cli(&["--json", "retention", "show", "c"]))["history_bytes"]
        .as_u64()
        .unwrap();
    let written = secs();
    while secs() < written + 2 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut t = t;
    t.umount();
    t.mount("");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = json(&t.cli(&["--json", "retention", "show", "c"]));
        if r["window_start"].as_i64().unwrap() > start
            && r["history_bytes"].as_u64().unwrap() < held
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no prune at mount: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(fs::read(t.path("c/f")).unwrap() == pseudo_random(256 << 10, 10));
    assert!(fs::read(t.path(".at/c/app-point/f")).unwrap() == pseudo_random(256 << 10, 4));
}

/// A bookmark includes writes still in the kernel's page cache (writeback cache, file still
/// open): the CLI pushes them to the daemon before the daemon commits and names the point.
#[test]
fn a_bookmark_includes_writes_still_in_the_kernels_cache() {
    use std::io::BufRead;
    let t = TestStore::mounted("");
    ok(&t.cli(&["container", "create", "c"]));
    // Another process holds the file open with its write in the page cache: any close of
    // a descriptor of it (even a forked child's) would write the pages back first.
    let script = format!(
        "import sys\nf = open({:?}, 'wb')\nf.write(b'written, not closed')\nf.flush()\n\
         print('ready', flush=True)\nsys.stdin.readline()\n",
        t.path("c/open").display().to_string()
    );
    let mut writer = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(writer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    ok(&t.cli(&["bookmark", "create", "c", "mark"]));
    let seen = fs::read(t.path(".at/c/mark/open")).unwrap();
    writer.stdin.take().unwrap().write_all(b"done\n").unwrap();
    writer.wait().unwrap();
    assert_eq!(seen, b"written, not closed");
}
