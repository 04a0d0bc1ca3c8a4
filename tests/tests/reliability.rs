//! What survives what, under garbage collection: a crash loop (kill -9 at a random moment of
//! a mixed workload with snapshots, bookmarks, rollbacks, pruning and GC), a full disk,
//! a corruption corpus, and many writers and readers while GC runs. Every run ends with
//! `fsck` (and `--scrub` where data was read back) reporting a clean store.

use dedupfs_tests::*;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn fsck_clean(t: &TestStore, scrub: bool) -> serde_json::Value {
    let mut args = vec!["--json", "fsck"];
    if scrub {
        args.push("--scrub");
    }
    let out = t.cli(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("fsck json: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success() && v["problems"].as_array().is_some_and(|p| p.is_empty()),
        "fsck is not clean: {}",
        serde_json::to_string_pretty(&v).unwrap()
    );
    v
}

fn gc(t: &TestStore) -> serde_json::Value {
    let out = ok(&t.cli(&["--json", "gc", "--grace", "0"]));
    serde_json::from_str(&out).expect("gc json")
}

/// What the test knows of a path: exact content, or unknown (an operation on it was in
/// flight at the kill, or its data was written without fsync).
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Exact(Vec<u8>),
    Unknown,
}

type Model = BTreeMap<String, Known>;

/// Re-reads what is on disk for paths the model does not know, so the next round starts
/// from certainty.
fn resync(model: &mut Model, root: &Path) -> std::io::Result<()> {
    let unknown: Vec<String> = model
        .iter()
        .filter(|(_, k)| **k == Known::Unknown)
        .map(|(p, _)| p.clone())
        .collect();
    for p in unknown {
        match fs::read(root.join(&p)) {
            Ok(d) => {
                model.insert(p, Known::Exact(d));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                model.remove(&p);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the daemon still serves the mount (a killed one answers ENOTCONN, and after the
/// lazy unmount the plain directory has no `.at`).
fn alive(mnt: &Path) -> bool {
    fs::metadata(mnt.join(".at")).is_ok()
}

/// `resync` through a live mount only: reads racing the kill must not teach the model that
/// files are gone.
fn resync_live(model: &Mutex<Model>, root: &Path, mnt: &Path) -> Option<Model> {
    if !alive(mnt) {
        return None;
    }
    let mut copy = model.lock().unwrap().clone();
    resync(&mut copy, root).ok()?;
    if !alive(mnt) {
        return None;
    }
    *model.lock().unwrap() = copy.clone();
    Some(copy)
}

fn verify(model: &Model, root: &Path, round: usize) {
    for (p, k) in model {
        if let Known::Exact(want) = k {
            let got = fs::read(root.join(p))
                .unwrap_or_else(|e| panic!("round {round}: {p} unreadable after kill -9: {e}"));
            assert!(
                got == *want,
                "round {round}: {p} differs after kill -9 ({} vs {} bytes)",
                got.len(),
                want.len()
            );
        }
    }
    // Nothing exists that the model says was removed for sure.
    for e in fs::read_dir(root).unwrap() {
        let name = format!("{}", e.unwrap().file_name().to_string_lossy());
        assert!(
            model.contains_key(&name),
            "round {round}: {name} exists but was never created or was removed"
        );
    }
}

/// One round's workload: applies random operations, keeping `model` true after each one
/// that returned, until an operation fails (the daemon was killed).
fn workload(
    mnt: PathBuf,
    root: PathBuf,
    model: Arc<Mutex<Model>>,
    bookmarks: Arc<Mutex<Vec<(String, Model)>>>,
    seed: u64,
    done: Arc<AtomicU64>,
    round: usize,
) {
    let mut rng = Rng(seed | 1);
    let cli = |args: &[&str]| -> bool {
        let mut a = vec!["--store", mnt.to_str().unwrap()];
        a.extend_from_slice(args);
        dedupfs(&a).status.success()
    };
    for i in 0.. {
        let names: Vec<String> = model.lock().unwrap().keys().cloned().collect();
        let pick = |rng: &mut Rng| -> Option<String> {
            (!names.is_empty()).then(|| names[rng.below(names.len() as u64) as usize].clone())
        };
        let op = rng.below(100);
        let ok = if op < 35 {
            // New file, fsynced.
            let name = format!("r{round}-f{i}");
            let data = pseudo_random(1 + rng.below(600_000) as usize, rng.next_u64());
            model.lock().unwrap().insert(name.clone(), Known::Unknown);
            let r = File::create(root.join(&name))
                .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()));
            if r.is_ok() {
                model.lock().unwrap().insert(name, Known::Exact(data));
            }
            r.is_ok()
        } else if op < 50 {
            // Overwrite a range of an existing file, fsynced.
            let Some(name) = pick(&mut rng) else { continue };
            let cur = model.lock().unwrap().get(&name).cloned();
            let Some(Known::Exact(mut data)) = cur else {
                continue;
            };
            let off = rng.below(data.len() as u64 + 1) as usize;
            let patch = pseudo_random(1 + rng.below(200_000) as usize, rng.next_u64());
            model.lock().unwrap().insert(name.clone(), Known::Unknown);
            let r = OpenOptions::new()
                .write(true)
                .open(root.join(&name))
                .and_then(|f| {
                    f.write_all_at(&patch, off as u64)
                        .and_then(|_| f.sync_data())
                });
            if r.is_ok() {
                if data.len() < off + patch.len() {
                    data.resize(off + patch.len(), 0);
                }
                data[off..off + patch.len()].copy_from_slice(&patch);
                model.lock().unwrap().insert(name, Known::Exact(data));
            }
            r.is_ok()
        } else if op < 58 {
            // Written but not synced: content unknown after a kill.
            let name = format!("r{round}-u{i}");
            model.lock().unwrap().insert(name.clone(), Known::Unknown);
            fs::write(root.join(&name), pseudo_random(300_000, rng.next_u64())).is_ok()
        } else if op < 68 {
            let Some(from) = pick(&mut rng) else { continue };
            let to = format!("r{round}-m{i}");
            let k = model.lock().unwrap().get(&from).cloned();
            {
                let mut m = model.lock().unwrap();
                m.insert(from.clone(), Known::Unknown);
                m.insert(to.clone(), Known::Unknown);
            }
            let r = fs::rename(root.join(&from), root.join(&to));
            if std::env::var_os("DEDUPFS_CRASH_TRACE").is_some() {
                eprintln!("rename {from} {to}: {r:?}");
            }
            if r.is_ok() {
                let mut m = model.lock().unwrap();
                m.remove(&from);
                m.insert(to, k.unwrap_or(Known::Unknown));
            }
            r.is_ok()
        } else if op < 78 {
            let Some(name) = pick(&mut rng) else { continue };
            model.lock().unwrap().insert(name.clone(), Known::Unknown);
            let r = fs::remove_file(root.join(&name));
            if std::env::var_os("DEDUPFS_CRASH_TRACE").is_some() {
                eprintln!("remove {name}: {r:?}");
            }
            if r.is_ok() {
                model.lock().unwrap().remove(&name);
            }
            r.is_ok()
        } else if op < 86 {
            // A bookmark commits everything buffered: unknown content becomes what is there.
            let name = format!("b{round}-{i}");
            if !cli(&["bookmark", "create", "c", &name]) {
                return;
            }
            match resync_live(&model, &root, &mnt) {
                Some(state) => {
                    bookmarks.lock().unwrap().push((name, state));
                    true
                }
                None => false,
            }
        } else if op < 89 {
            cli(&["snapshot", "create", "c", &format!("s{round}-{i}")])
        } else if op < 92 {
            // Deleting snapshots (the oldest first) is what lets their data die.
            let out = dedupfs(&[
                "--store",
                mnt.to_str().unwrap(),
                "--json",
                "snapshot",
                "list",
            ]);
            let list: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let first = list
                .as_array()
                .or_else(|| list["snapshots"].as_array())
                .and_then(|a| a.first())
                .and_then(|s| s["name"].as_str())
                .map(String::from);
            match first {
                Some(n) => cli(&["snapshot", "delete", &n]),
                None => out.status.success(),
            }
        } else if op < 96 {
            let Some((b, state)) = bookmarks.lock().unwrap().last().cloned() else {
                continue;
            };
            let before = model.lock().unwrap().clone();
            *model.lock().unwrap() = before.keys().map(|k| (k.clone(), Known::Unknown)).collect();
            for k in state.keys() {
                model.lock().unwrap().insert(k.clone(), Known::Unknown);
            }
            let r = cli(&["rollback", "c", "--to", &b]);
            if std::env::var_os("DEDUPFS_CRASH_TRACE").is_some() {
                eprintln!("rollback to {b}: {r}");
            }
            if r {
                *model.lock().unwrap() = state;
            }
            r
        } else {
            cli(&["gc", "--grace", "0", "--min-reclaim", "0.05"])
        };
        if std::env::var_os("DEDUPFS_CRASH_TRACE").is_some() {
            eprintln!("round {round} op {i}: kind {op} ok {ok}");
        }
        if !ok {
            return;
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn crash_loop_keeps_every_fsynced_file_and_fsck_clean() {
    let rounds: usize = std::env::var("DEDUPFS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    // Small packs, so that packs fill and die within a round.
    let mut t = TestStore::new_with(&["--pack-size", "2M"]);
    // Pruning every second and history of 1 s make GC find dead data in every round.
    let opts = "prune_interval=1,gc_idle=1,gc_grace=0";
    t.mount(opts);
    fs::create_dir(t.path("c")).unwrap();
    ok(&t.cli(&[
        "container",
        "set",
        "c",
        "--retention",
        "all=1s,bookmarks=user/1d",
    ]));
    let model = Arc::new(Mutex::new(Model::new()));
    let bookmarks = Arc::new(Mutex::new(Vec::new()));
    let mut total_ops = 0;
    let mut rng = Rng(0x5eed);
    for round in 0..rounds {
        let done = Arc::new(AtomicU64::new(0));
        let kill_after = 5 + rng.below(40);
        let w = {
            // Commands go through the mount point: once the daemon is killed they fail,
            // instead of opening the store directly and running on after the kill.
            let (s, r, m, b, d) = (
                t.mnt.clone(),
                t.path("c"),
                model.clone(),
                bookmarks.clone(),
                done.clone(),
            );
            let seed = rng.next_u64();
            std::thread::spawn(move || workload(s, r, m, b, seed, d, round))
        };
        // A GC running alongside, until the kill stops it.
        let stop = Arc::new(AtomicBool::new(false));
        let g = {
            let (s, stop) = (t.mnt.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = dedupfs(&[
                        "--store",
                        s.to_str().unwrap(),
                        "gc",
                        "--grace",
                        "0",
                        "--min-reclaim",
                        "0.05",
                    ]);
                }
            })
        };
        while done.load(Ordering::SeqCst) < kill_after && !w.is_finished() {
            std::thread::yield_now();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        t.kill9();
        stop.store(true, Ordering::SeqCst);
        w.join().unwrap();
        g.join().unwrap();
        total_ops += done.load(Ordering::SeqCst);
        t.mount(opts);
        let mut m = model.lock().unwrap();
        verify(&m, &t.path("c"), round);
        fsck_clean(&t, false);
        resync(&mut m, &t.path("c")).unwrap();
    }
    gc(&t);
    verify(&model.lock().unwrap(), &t.path("c"), rounds);
    fsck_clean(&t, true);
    let g = &t.stats()["gc"];
    eprintln!(
        "crash loop: {rounds} rounds, {total_ops} operations, every fsynced file intact; \
         {} GC runs reclaimed {} bytes",
        g["runs"], g["total_reclaimed_bytes"]
    );
    assert!(total_ops >= rounds as u64 * 5);
    assert!(
        g["total_reclaimed_bytes"].as_u64().unwrap_or(0) > 0,
        "GC never reclaimed anything, so the loop did not exercise it: {g}"
    );
}

#[test]
fn a_full_disk_gives_enospc_damages_nothing_and_gc_makes_room() {
    let base = tempfile::Builder::new()
        .prefix("dedupfs-full-")
        .tempdir_in(test_root())
        .unwrap();
    let small = SmallFs::new(base.path().join("fs"), 96);
    let store = small.0.join("store");
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // Small packs, as an admin would pick for a small disk: GC deletes whole dead packs
    // without needing room for copies.
    ok(&dedupfs(&[
        "init",
        store.to_str().unwrap(),
        "--pack-size",
        "8M",
    ]));
    let mount = || mount_store(&store, &mnt, "gc_idle=0,prune_interval=0");
    mount();
    let _unmount = Unmount(mnt.clone());
    let cli = |args: &[&str]| {
        let mut a = vec!["--store", store.to_str().unwrap()];
        a.extend_from_slice(args);
        dedupfs(&a)
    };
    fs::create_dir(mnt.join("c")).unwrap();
    ok(&cli(&["container", "set", "c", "--retention", "all=1s"]));
    let mut kept: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut enospc = None;
    for i in 0..64u64 {
        let p = mnt.join(format!("c/f{i}"));
        let data = pseudo_random(8 << 20, i);
        let r = File::create(&p).and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()));
        match r {
            Ok(()) => kept.push((p, data)),
            Err(e) => {
                enospc = Some(e);
                break;
            }
        }
    }
    let e = enospc.expect("96 MiB filled without an error");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(kept.len() >= 4, "only {} files fit", kept.len());
    for (p, want) in &kept {
        assert!(fs::read(p).unwrap() == *want, "{} damaged", p.display());
    }
    // Make room: delete, drop history, collect.
    for (p, _) in kept.drain(2..) {
        fs::remove_file(p).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1 s history window
    ok(&cli(&["retention", "prune", "c"]));
    let r: serde_json::Value =
        serde_json::from_str(&ok(&cli(&["--json", "gc", "--grace", "0"]))).unwrap();
    assert!(
        r["reclaimed_bytes"].as_u64().unwrap() > 16 << 20,
        "gc reclaimed too little: {r}"
    );
    let data = pseudo_random(16 << 20, 999);
    let p = mnt.join("c/after");
    File::create(&p)
        .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()))
        .expect("writing works again after gc");
    kept.push((p, data));
    for (p, want) in &kept {
        assert!(fs::read(p).unwrap() == *want, "{} damaged", p.display());
    }
    let out = cli(&["--json", "fsck", "--scrub"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    ok(&dedupfs(&["umount", mnt.to_str().unwrap()]));
    mount();
    for (p, want) in &kept {
        assert!(
            fs::read(p).unwrap() == *want,
            "{} damaged after remount",
            p.display()
        );
    }
    ok(&dedupfs(&["umount", mnt.to_str().unwrap()]));
}

fn pack_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(store.join("packs")).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for f in fs::read_dir(shard).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn problems(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["message"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn corruption_corpus_gives_clear_errors_and_fsck_names_the_files() {
    let mut t = TestStore::mounted("gc_idle=0");
    fs::create_dir(t.path("c")).unwrap();
    // Three sessions: three packs, one file in each.
    let files: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(3 << 20, 40 + i)).collect();
    for (i, d) in files.iter().enumerate() {
        fs::write(t.path(&format!("c/f{i}")), d).unwrap();
        t.umount();
        t.mount("gc_idle=0");
    }
    t.umount();
    let packs = pack_files(&t.store);
    assert_eq!(packs.len(), 3, "{packs:?}");

    // Flipped bits in the first pack.
    let mut b = fs::read(&packs[0]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    fs::write(&packs[0], &b).unwrap();
    // A truncated second pack.
    let f = OpenOptions::new().write(true).open(&packs[1]).unwrap();
    f.set_len(f.metadata().unwrap().len() / 3).unwrap();
    drop(f);

    // Offline scrub names both damaged files, exits non-zero, and panics nowhere.
    let out = t.cli(&["--json", "fsck", "--scrub"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msgs = problems(&v);
    for name in ["/f0", "/f1"] {
        assert!(
            msgs.iter().any(|m| m.contains(name) && m.contains("pack")),
            "fsck --scrub does not name {name}: {msgs:#?}"
        );
    }
    assert!(
        !msgs.iter().any(|m| m.contains("/f2")),
        "the intact file is not blamed: {msgs:#?}"
    );
    // Without scrub, the truncation is still found (the record runs past the pack's end).
    let v: serde_json::Value = serde_json::from_slice(&t.cli(&["--json", "fsck"]).stdout).unwrap();
    assert!(
        problems(&v).iter().any(|m| m.contains("/f1")),
        "{:#?}",
        problems(&v)
    );
    // Repair cannot invent data: it says so and still exits non-zero.
    let out = t.cli(&["fsck", "--repair"]);
    assert_eq!(out.status.code(), Some(1));

    // Reads of damaged files fail with EIO; the intact one reads back; writes work.
    t.mount("gc_idle=0");
    for i in 0..2 {
        assert_eq!(
            fs::read(t.path(&format!("c/f{i}")))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EIO)
        );
    }
    assert!(fs::read(t.path("c/f2")).unwrap() == files[2]);
    fs::write(t.path("c/new"), b"still writable").unwrap();
    // GC keeps packs with damaged live chunks rather than copying garbage.
    let r = gc(&t);
    assert!(fs::read(t.path("c/f2")).unwrap() == files[2], "{r}");
    t.umount();

    // A missing pack: named too.
    fs::remove_file(&packs[2]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&t.cli(&["--json", "fsck"]).stdout).unwrap();
    assert!(
        problems(&v)
            .iter()
            .any(|m| m.contains("/f2") && m.contains("missing")),
        "{:#?}",
        problems(&v)
    );

    // A wrong store format version: a clear refusal.
    let cfg = t.store.join("dedupfs.json");
    let orig = fs::read_to_string(&cfg).unwrap();
    let mut newer: serde_json::Value = serde_json::from_str(&orig).unwrap();
    newer["format"] = serde_json::json!(99);
    fs::write(&cfg, newer.to_string()).unwrap();
    let out = t.cli(&["fsck"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("format"), "{err}");
    fs::write(&cfg, &orig).unwrap();

    // A damaged metadata database file: a clear error naming the metadata, no panic.
    let db = t.store.join("meta");
    let manifest = fs::read_to_string(db.join("CURRENT")).unwrap();
    let manifest = db.join(manifest.trim());
    let mut m = fs::read(&manifest).unwrap();
    for b in m.iter_mut().skip(10).step_by(7) {
        *b ^= 0x5a;
    }
    fs::write(&manifest, &m).unwrap();
    let out = t.cli(&["fsck"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    assert!(
        err.contains("metadata") && err.contains("corrupt"),
        "unclear error: {err}"
    );
    let out = dedupfs(&["mount", t.store.to_str().unwrap(), t.mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(101));
}

#[test]
fn many_writers_and_readers_while_gc_runs() {
    let t = TestStore::mounted("gc_idle=0,prune_interval=0");
    for c in ["fio", "copies", "tars", "churn"] {
        fs::create_dir(t.path(c)).unwrap();
    }
    ok(&t.cli(&["container", "set", "churn", "--retention", "all=1s"]));
    let src = t.dir.path().join("src");
    sh(&format!(
        "{} --out {} --versions 1 --size-mb 16 --files 200 --seed 7 >/dev/null",
        backup_corpus().display(),
        src.display()
    ));
    let night = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .expect("a night of the corpus");
    let stop = Arc::new(AtomicBool::new(false));
    // Churn: files written and deleted, history pruned, GC collecting — in a loop.
    let churn = {
        let (root, store, stop) = (t.path("churn"), t.store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) || runs < 2 {
                for k in 0..4 {
                    fs::write(root.join(format!("x{k}")), pseudo_random(2 << 20, i)).unwrap();
                    i += 1;
                }
                let s = store.to_str().unwrap();
                ok(&dedupfs(&["--store", s, "retention", "prune", "churn"]));
                ok(&dedupfs(&[
                    "--store",
                    s,
                    "gc",
                    "--grace",
                    "0",
                    "--min-reclaim",
                    "0.2",
                ]));
                runs += 1;
            }
            runs
        })
    };
    let fio = {
        let dir = t.path("fio");
        std::thread::spawn(move || {
            sh(&format!(
                "fio --name=w --directory={} --numjobs=4 --size=24m --bs=64k --rw=randwrite \
                 --ioengine=psync --fsync=16 --verify=crc32c --verify_state_save=0 --verify_fatal=1 \
                 --do_verify=1 --group_reporting --output-format=terse >/dev/null",
                dir.display()
            ))
        })
    };
    let copies: Vec<_> = (0..2)
        .map(|k| {
            let (from, to) = (night.clone(), t.path(&format!("copies/{k}")));
            std::thread::spawn(move || sh(&format!("cp -a {} {}", from.display(), to.display())))
        })
        .collect();
    let tar = {
        let (from, to) = (night.clone(), t.path("tars"));
        std::thread::spawn(move || {
            sh(&format!(
                "tar -C {} -cf - . | tar -C {} -xf -",
                from.display(),
                to.display()
            ))
        })
    };
    fio.join().unwrap();
    for c in copies {
        c.join().unwrap();
    }
    tar.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let runs = churn.join().unwrap();
    assert!(runs >= 2);
    sh("sync; echo 3 > /proc/sys/vm/drop_caches");
    for k in 0..2 {
        sh(&format!(
            "diff -r {} {}",
            night.display(),
            t.path(&format!("copies/{k}")).display()
        ));
    }
    sh(&format!(
        "diff -r {} {}",
        night.display(),
        t.path("tars").display()
    ));
    // fio re-verifies what it wrote, now read through a cold cache.
    sh(&format!(
        "fio --name=w --directory={} --numjobs=4 --size=24m --bs=64k --rw=randwrite \
         --ioengine=psync --verify=crc32c --verify_state_save=0 --verify_fatal=1 --verify_only --group_reporting \
         --output-format=terse >/dev/null",
        t.path("fio").display()
    ));
    fsck_clean(&t, true);
}

#[test]
fn the_idle_cleaner_collects_on_its_own_and_stats_show_it() {
    let t = TestStore::mounted("gc_idle=1,gc_grace=0,prune_interval=0");
    fs::create_dir(t.path("c")).unwrap();
    ok(&t.cli(&["container", "set", "c", "--retention", "all=1s"]));
    fs::write(t.path("c/keep"), pseudo_random(3 << 20, 1)).unwrap();
    let mut f = File::create(t.path("c/gone")).unwrap();
    f.write_all(&pseudo_random(24 << 20, 2)).unwrap();
    f.sync_all().unwrap(); // committed, so its chunks die by the prune, not by never living
    drop(f);
    fs::remove_file(t.path("c/gone")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1 s window
    ok(&t.cli(&["retention", "prune", "c"]));
    let before = t.stats();
    assert!(
        before["reclaimable_bytes"].as_u64().unwrap() >= 24 << 20,
        "{before}"
    );
    assert_eq!(before["gc"]["runs"].as_u64(), Some(0), "{before}");
    // The cleaner needs a quiet second, then runs; poll its record (generous deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let after = loop {
        let s = t.stats();
        if s["gc"]["runs"].as_u64().unwrap_or(0) > 0 || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let g = &after["gc"];
    assert_eq!(g["last_background"].as_bool(), Some(true), "{after}");
    assert!(
        g["last_reclaimed_bytes"].as_u64().unwrap() >= 20 << 20,
        "{after}"
    );
    assert!(
        after["pack_bytes"].as_u64().unwrap() < before["pack_bytes"].as_u64().unwrap(),
        "{after}"
    );
    assert!(fs::read(t.path("c/keep")).unwrap() == pseudo_random(3 << 20, 1));
    let text = String::from_utf8_lossy(&t.cli(&["stats"]).stdout).into_owned();
    assert!(text.contains("background, idle store"), "{text}");
}

#[test]
fn unmount_stops_a_gc_that_waits_out_its_grace_period() {
    // A GC asked for over the control socket with a long grace period must not hold an
    // unmount up: it stops early (the next run finishes it) and says so. Without that the
    // unmount below waits 10 minutes and gives up after its own 60 s timeout.
    let mut t = TestStore::mounted("gc_idle=0,prune_interval=0");
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/big"), pseudo_random(6 << 20, 11)).unwrap();
    ok(&t.cli(&["sync"]));
    fs::remove_file(t.path("c/big")).unwrap();
    ok(&t.cli(&["sync"]));
    // Dead data for GC: the history that held it is pruned.
    ok(&t.cli(&["container", "set", "c", "--retention", "all=0s"]));
    ok(&t.cli(&["retention", "prune", "c"]));
    let spawn = || {
        std::process::Command::new(bin())
            .args(["--store", t.store.to_str().unwrap(), "gc", "--grace", "600"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    // Wait until that GC runs: a second one (a dry run) is refused while it does. A probe
    // that wins the race makes the real one refuse instead: start it again then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                err.contains("already running"),
                "the GC ended on its own ({status}): {err}"
            );
            child = spawn();
        }
        let o = t.cli(&["gc", "--dry-run"]);
        if String::from_utf8_lossy(&o.stderr).contains("already running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the GC never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ok(&dedupfs(&[
        "umount",
        t.mnt.to_str().unwrap(),
        "--timeout",
        "60",
    ]));
    t.mark_unmounted();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the GC was cut short: {err}");
    assert!(err.contains("stopped early"), "{err}");
    // The next run finishes it.
    t.mount("gc_idle=0,prune_interval=0");
    let g = gc(&t);
    assert!(
        g["reclaimed_bytes"].as_u64().unwrap() > 0 || g["packs_deleted"].as_u64().unwrap() > 0,
        "{g}"
    );
    fsck_clean(&t, false);
}
