//! Failures that used to be silent, on real mounts: a daemon hang under `stats` polling,
//! writes racing a rollback, false conflicts after a rollback, counters that did not follow
//! a rollback, an unmount that did not close the store or hid a failed final flush, and a
//! full disk that GC could not bring back on its first run.

use dedupfs_tests::*;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn container_stats(t: &TestStore, c: &str) -> serde_json::Value {
    json(&t.cli(&["stats", c, "--json"]))
}

#[test]
fn stats_polled_while_containers_come_and_go_never_hangs_the_daemon() {
    let mut t = TestStore::mounted("gc_idle=0");
    // Many containers, so that every `stats` reads the registry many times over (each
    // read a chance to meet a queued writer) ...
    for i in 0..300 {
        fs::create_dir(t.path(&format!("keep{i}"))).unwrap();
    }
    // ... while containers are created and removed at the mount root, as backup software
    // does.
    let churn = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt 100000 ]; do mkdir {m}/job$i && rmdir {m}/job$i; i=$((i+1)); done",
            m = t.mnt.display()
        ))
        .spawn()
        .unwrap();
    let mut hung = None;
    for i in 0..100 {
        // A monitoring script polling stats; 20 s is forever for it.
        let o = Command::new("timeout")
            .args(["20", bin().to_str().unwrap(), "--store"])
            .arg(&t.store)
            .args(["stats", "--json"])
            .output()
            .unwrap();
        if !o.status.success() {
            hung = Some((i, text(&o), o.status.code()));
            break;
        }
    }
    let root_lists = Command::new("timeout")
        .arg("20")
        .arg("ls")
        .arg(&t.mnt)
        .status()
        .unwrap()
        .success();
    if hung.is_some() || !root_lists {
        // Free the processes stuck in the dead daemon before failing.
        t.kill9();
    }
    let mut churn = churn;
    let _ = churn.kill();
    let _ = churn.wait();
    assert!(hung.is_none(), "stats hung or failed: {hung:?}");
    assert!(root_lists, "the mount root stopped answering");
}

#[test]
fn every_write_acknowledged_by_fsync_during_rollbacks_is_kept() {
    let t = TestStore::mounted("gc_idle=0");
    fs::create_dir(t.path("c")).unwrap();
    ok(&t.cli(&["bookmark", "create", "c", "base"]));
    let stop = Arc::new(AtomicBool::new(false));
    type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let acked: Acked = Arc::default();
    let writer = {
        let (stop, acked, dir) = (stop.clone(), acked.clone(), t.path("c"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = format!("w{i}");
                let data = pseudo_random(4096 + (i as usize % 7) * 1000, i);
                let r = File::create(dir.join(&name))
                    .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()));
                // ESTALE and ENOENT are expected for files opened across a rollback; only
                // what fsync acknowledged must be kept.
                if r.is_ok() {
                    acked.lock().unwrap().push((name, data));
                }
            }
        })
    };
    let mut rollbacks = 0;
    while rollbacks < 15 {
        ok(&t.cli(&["rollback", "c", "--to", "base"]));
        rollbacks += 1;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes to race with: {}",
        acked.len()
    );
    // Where acknowledged files can be: the live tree, or a state a rollback kept.
    let snaps: Vec<String> = json(&t.cli(&["snapshot", "list", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .filter(|n| n.starts_with("c@before-rollback"))
        .collect();
    assert_eq!(snaps.len(), rollbacks);
    let mut places: Vec<PathBuf> = vec![t.path("c")];
    places.extend(snaps.iter().map(|s| t.path(&format!(".snapshots/{s}"))));
    let mut lost = Vec::new();
    for (name, data) in &acked {
        let found = places
            .iter()
            .filter(|p| fs::read(p.join(name)).is_ok_and(|d| d == *data))
            .count();
        if found != 1 {
            lost.push((name.clone(), found));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} fsynced files not found exactly once: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn apply_after_a_rollback_sees_no_false_conflicts_and_force_takes_the_snapshots_side() {
    let t = TestStore::mounted("gc_idle=0");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/app.conf"), "v1").unwrap();
    fs::write(t.path("c/other"), "o1").unwrap();
    ok(&t.cli(&["bookmark", "create", "c", "good"]));
    ok(&t.cli(&[
        "snapshot",
        "create",
        "c",
        "fix",
        "--mode",
        "rw-tracking",
        "--at",
        "good",
    ]));
    // The fix is tested on the tracking snapshot.
    fs::write(t.path(".snapshots/fix/app.conf"), "v1-fixed").unwrap();
    fs::write(t.path(".snapshots/fix/other"), "o-fixed").unwrap();
    fs::write(t.path(".snapshots/fix/new"), "n").unwrap();
    // Production is encrypted by ransomware, then recovered by a rollback ...
    fs::write(t.path("c/app.conf"), "ENCRYPTED").unwrap();
    fs::write(t.path("c/other"), "ENCRYPTED").unwrap();
    ok(&t.cli(&["rollback", "c", "--to", "good"]));
    // ... and the admin checks a restored file (under relatime the read moves its atime)
    // and edits another one.
    assert_eq!(fs::read_to_string(t.path("c/app.conf")).unwrap(), "v1");
    ok(&t.cli(&["sync"]));
    fs::write(t.path("c/other"), "admin-edit").unwrap();

    let out = t.cli(&["--json", "snapshot", "apply", "fix", "--onto", "c"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a real conflict fails: {}",
        text(&out)
    );
    let r: serde_json::Value = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let conflicts: Vec<&str> = r["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(conflicts, ["/other"], "only the edited file conflicts: {r}");
    // The rest is applied even so.
    assert_eq!(
        fs::read_to_string(t.path("c/app.conf")).unwrap(),
        "v1-fixed"
    );
    assert_eq!(fs::read_to_string(t.path("c/new")).unwrap(), "n");
    assert_eq!(fs::read_to_string(t.path("c/other")).unwrap(), "admin-edit");
    // --force takes the snapshot's side.
    let r = json(&t.cli(&[
        "--json", "snapshot", "apply", "fix", "--onto", "c", "--force",
    ]));
    assert!(r["conflicts"].as_array().unwrap().is_empty(), "{r}");
    assert!(
        r["forced"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "/other"),
        "{r}"
    );
    assert_eq!(fs::read_to_string(t.path("c/other")).unwrap(), "o-fixed");
    assert_eq!(
        fs::read_to_string(t.path("c/app.conf")).unwrap(),
        "v1-fixed"
    );
}

#[test]
fn counters_follow_the_live_tree_through_rollback_and_snapshots() {
    let mut t = TestStore::mounted("gc_idle=0");
    fs::create_dir(t.path("c")).unwrap();
    for (n, size) in [("a", 1000usize), ("b", 2000), ("d", 3000)] {
        fs::write(t.path(&format!("c/{n}")), pseudo_random(size, size as u64)).unwrap();
    }
    ok(&t.cli(&["bookmark", "create", "c", "three"]));
    fs::remove_file(t.path("c/a")).unwrap();
    fs::remove_file(t.path("c/b")).unwrap();
    let s = container_stats(&t, "c");
    assert_eq!(
        (s["files"].as_u64(), s["logical_bytes"].as_u64()),
        (Some(1), Some(3000))
    );
    ok(&t.cli(&["rollback", "c", "--to", "three"]));
    let s = container_stats(&t, "c");
    assert_eq!(
        (s["files"].as_u64(), s["logical_bytes"].as_u64()),
        (Some(3), Some(6000)),
        "counters after the rollback: {s}"
    );
    // A read-write snapshot's writes count on the snapshot, not on the container.
    ok(&t.cli(&["snapshot", "create", "c", "s", "--mode", "rw"]));
    fs::write(t.path(".snapshots/s/e"), vec![1u8; 500]).unwrap();
    ok(&t.cli(&["sync"]));
    let s = container_stats(&t, "c");
    assert_eq!(
        (s["files"].as_u64(), s["logical_bytes"].as_u64()),
        (Some(3), Some(6000))
    );
    let f = json(&t.cli(&["fsck", "--json"]));
    assert_eq!(f["unrepaired"], 0, "fsck recounts every tree: {f}");
    t.umount();
    t.mount("gc_idle=0");
    let s = container_stats(&t, "c");
    assert_eq!(
        (s["files"].as_u64(), s["logical_bytes"].as_u64()),
        (Some(3), Some(6000)),
        "after a remount: {s}"
    );
}

#[test]
fn unmount_stops_background_work_and_closes_the_store() {
    let mut t = TestStore::mounted("gc_idle=1,prune_interval=1");
    fs::create_dir(t.path("c")).unwrap();
    ok(&t.cli(&["container", "set", "c", "--retention", "all=1s"]));
    fs::write(t.path("c/f"), pseudo_random(1 << 20, 5)).unwrap();
    fs::remove_file(t.path("c/f")).unwrap();
    ok(&t.cli(&["sync"]));
    t.umount();
    let log = fs::read_to_string(t.store.join("meta/LOG")).unwrap();
    assert!(
        log.contains("Shutdown complete"),
        "RocksDB was not closed: the background threads still held the store"
    );
}

/// A store on a small tmpfs, mounted; unmounted (lazily if need be) on drop.
struct FullDisk {
    _base: tempfile::TempDir,
    _small: SmallFs,
    store: PathBuf,
    mnt: PathBuf,
}

impl FullDisk {
    fn new(mib: u64) -> FullDisk {
        let base = tempfile::Builder::new()
            .prefix("dedupfs-full-")
            .tempdir_in(test_root())
            .unwrap();
        let small = SmallFs::new(base.path().join("fs"), mib);
        let store = small.0.join("store");
        let mnt = base.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        ok(&dedupfs(&["init", store.to_str().unwrap()]));
        mount_store(&store, &mnt, "gc_idle=0,prune_interval=0");
        FullDisk {
            _base: base,
            _small: small,
            store,
            mnt,
        }
    }
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["--store", self.store.to_str().unwrap()];
        a.extend_from_slice(args);
        dedupfs(&a)
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        drop(Unmount(self.mnt.clone()));
    }
}

#[test]
fn umount_says_so_when_the_final_flush_fails() {
    let d = FullDisk::new(100);
    fs::create_dir(d.mnt.join("c")).unwrap();
    // 150 MiB into 100: the tail cannot be stored.
    let _ = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=150"])
        .arg(format!("of={}", d.mnt.join("c/big").display()))
        .output()
        .unwrap();
    let o = dedupfs(&["umount", d.mnt.to_str().unwrap()]);
    assert!(!is_mounted(&d.mnt), "unmounted anyway");
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed final flush is an error: {}",
        text(&o)
    );
    let msg = text(&o);
    assert!(
        msg.contains("could not be committed") && msg.contains("c/big"),
        "names what was lost: {msg}"
    );
}

#[test]
fn a_full_disk_is_recovered_by_the_first_gc_and_gc_says_what_history_holds() {
    let d = FullDisk::new(100);
    fs::create_dir(d.mnt.join("c")).unwrap();
    let mut filled = false;
    for i in 0..20u64 {
        let p = d.mnt.join(format!("c/f{i}"));
        let r = File::create(&p).and_then(|mut f| {
            f.write_all(&pseudo_random(8 << 20, i))
                .and_then(|_| f.sync_all())
        });
        if let Err(e) = r {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            filled = true;
            break;
        }
    }
    assert!(filled, "the disk never filled");
    for e in fs::read_dir(d.mnt.join("c")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    // History (retention keeps everything by default) still holds it: gc frees nothing,
    // and says why and what to do.
    let g = json(&d.cli(&["gc", "--grace", "0", "--json"]));
    let held = g["plan"]["history_held_bytes"].as_u64().unwrap();
    assert!(held > 40 << 20, "history holds the deleted data: {g}");
    // Only the garbage of the write that failed comes back.
    assert!(g["reclaimed_bytes"].as_u64().unwrap() < held / 4, "{g}");
    let o = d.cli(&["gc", "--grace", "0"]);
    let out = text(&o);
    assert!(
        out.contains("held by history") && out.contains("--retention") && out.contains("c"),
        "gc says what holds the space and how to release it: {out}"
    );
    let st = text(&d.cli(&["stats"]));
    assert!(st.contains("held by history"), "stats shows it too: {st}");
    // Release it; the first gc must bring the space back.
    ok(&d.cli(&["container", "set", "c", "--retention", "all=1s"]));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1 s window
    ok(&d.cli(&["retention", "prune", "c"]));
    let g = d.cli(&["gc", "--grace", "0", "--json"]);
    assert!(
        g.status.success(),
        "the first gc on a full disk succeeds: {}",
        text(&g)
    );
    let g: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert!(g["reclaimed_bytes"].as_u64().unwrap() > 40 << 20, "{g}");
    let p = d.mnt.join("c/after");
    let data = pseudo_random(16 << 20, 99);
    File::create(&p)
        .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()))
        .expect("writing works again");
    assert!(fs::read(&p).unwrap() == data);
    let f = d.cli(&["fsck", "--json"]);
    assert!(f.status.success(), "{}", text(&f));
}
