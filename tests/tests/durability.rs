//! What survives what: fsynced data across SIGKILL of the daemon, and damaged packs giving
//! EIO (never wrong bytes) while the rest of the store stays readable.

use dedupfs_tests::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

#[test]
fn fsynced_files_survive_kill_9_of_the_daemon() {
    let mut t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    let mut synced: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for i in 0..40u64 {
        let p = t.path(&format!("c/f{i}"));
        let data = pseudo_random(10_000 + (i as usize * 37_123) % 3_000_000, i);
        let mut f = File::create(&p).unwrap();
        f.write_all(&data).unwrap();
        if i % 4 != 3 {
            f.sync_all().unwrap();
            synced.push((p, data));
        }
        // Rewrite part of an earlier synced file and sync again: the new bytes must win.
        if i % 10 == 9 {
            let (p0, d0) = &mut synced[0];
            let f = OpenOptions::new().write(true).open(&*p0).unwrap();
            let patch = pseudo_random(5000, 1000 + i);
            use std::os::unix::fs::FileExt;
            f.write_all_at(&patch, 100).unwrap();
            f.sync_data().unwrap();
            d0[100..5100].copy_from_slice(&patch);
        }
    }
    // Unsynced work in flight at the moment of the kill.
    let mut unsynced = File::create(t.path("c/in-flight")).unwrap();
    unsynced.write_all(&pseudo_random(5 << 20, 77)).unwrap();
    t.kill9();
    drop(unsynced);
    t.mount("");
    for (p, want) in &synced {
        let mut got = Vec::new();
        File::open(p).unwrap().read_to_end(&mut got).unwrap();
        let differ: Vec<usize> = (0..got.len().min(want.len()))
            .filter(|&i| got[i] != want[i])
            .collect();
        assert!(
            got == *want,
            "{} differs after kill -9 ({} vs {} bytes; bytes {:?}..{:?} differ)",
            p.display(),
            got.len(),
            want.len(),
            differ.first(),
            differ.last()
        );
    }
    // The store keeps working.
    fs::write(t.path("c/after"), b"still writable").unwrap();
    assert_eq!(fs::read(t.path("c/after")).unwrap(), b"still writable");
}

fn packs(store: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&store.join("packs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    v.sort();
    v
}

fn walk(d: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_corrupt_or_missing_pack_gives_eio_and_the_rest_stays_readable() {
    let mut t = TestStore::mounted("");
    fs::create_dir(t.path("c")).unwrap();
    let a = pseudo_random(4 << 20, 1);
    let b = pseudo_random(4 << 20, 2);
    fs::write(t.path("c/a"), &a).unwrap();
    t.umount();
    t.mount(""); // a new session writes a new pack
    fs::write(t.path("c/b"), &b).unwrap();
    t.umount();
    let ps = packs(&t.store);
    assert_eq!(ps.len(), 2, "{ps:?}");
    // Flip one byte in the middle of the first pack (file a's data).
    let mut bytes = fs::read(&ps[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&ps[0], &bytes).unwrap();
    t.mount("");
    let err = fs::read(t.path("c/a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        fs::read(t.path("c/b")).unwrap(),
        b,
        "the undamaged file reads back"
    );
    let log = fs::read_to_string(t.store.join("dedupfs.log")).unwrap();
    let pack_name = ps[0].file_stem().unwrap().to_str().unwrap().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("chunk") && l.contains(&pack_name)),
        "no log line names the chunk and pack {pack_name}:\n{log}"
    );
    t.umount();
    // A missing pack: the same.
    fs::remove_file(&ps[0]).unwrap();
    t.mount("");
    assert_eq!(
        fs::read(t.path("c/a")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(fs::read(t.path("c/b")).unwrap(), b);
    fs::write(t.path("c/new"), b"writes still work").unwrap();
}

#[test]
fn sigterm_unmounts_cleanly_and_keeps_buffered_writes() {
    let t = TestStore::new();
    // Foreground daemon as our child, so we can signal it and collect its exit status.
    let mut child = std::process::Command::new(bin())
        .args([
            "mount",
            t.store.to_str().unwrap(),
            t.mnt.to_str().unwrap(),
            "-f",
            "-o",
            "allow_other",
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The foreground daemon mounts before it logs this line; read until it appears.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    while !line.contains("mounted at") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "daemon exited before mounting"
        );
    }
    fs::create_dir(t.path("c")).unwrap();
    let data = pseudo_random(3 << 20, 5);
    fs::write(t.path("c/f"), &data).unwrap(); // no fsync: still buffered in the daemon
    sh(&format!("kill -TERM {}", child.id()));
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
    assert!(!is_mounted(&t.mnt), "SIGTERM unmounts");
    let mut t = t;
    t.mount("");
    assert!(
        fs::read(t.path("c/f")).unwrap() == data,
        "buffered data was flushed at the clean unmount"
    );
}

/// The registry entry a killed daemon leaves behind must never make a later `mount` of
/// its store a view of some other filesystem. After `kill -9` the entry names a pid that
/// is a zombie until reaped (and may later belong to another process), and a device number
/// the kernel gives to the next FUSE mount; taking it for a live daemon bound the other
/// mount in place of the store (seen as a "fsynced" file with wrong bytes).
#[test]
fn a_dead_daemons_record_never_makes_a_mount_show_another_filesystem() {
    let mut a = TestStore::mounted("");
    fs::create_dir(a.path("c")).unwrap();
    fs::write(a.path("c/mine"), b"store A").unwrap();
    let b = TestStore::mounted("");
    fs::create_dir(b.path("other")).unwrap();
    let canon_a = fs::canonicalize(&a.store).unwrap();
    let run_dir = std::env::var_os("DEDUPFS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/dedupfs"));
    let (rec_path, rec) = fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .find_map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
            (v["store"].as_str() == canon_a.to_str()).then(|| (e.path(), v))
        })
        .expect("store A's registry entry");
    let b_dev = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f[4] == fs::canonicalize(&b.mnt).unwrap().to_str().unwrap())
        .map(|f| f[2].to_string())
        .expect("B in mountinfo");
    a.umount();
    assert!(!rec_path.exists(), "a clean unmount removes the entry");

    // A zombie (a child that exited and was not reaped), like a just-killed daemon.
    let mut zombie = std::process::Command::new("true").spawn().unwrap();
    // SAFETY: waitid on our own child with WNOWAIT: waits for its exit, leaves it a zombie.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        assert_eq!(
            libc::waitid(
                libc::P_PID,
                zombie.id(),
                &mut info,
                libc::WEXITED | libc::WNOWAIT
            ),
            0
        );
    }
    let stat = |pid: u32| {
        let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = s.rsplit_once(") ").unwrap().1.to_string();
        rest.split(' ').nth(19).unwrap().parse::<u64>().unwrap()
    };
    let stale = [
        // The killed daemon's pid, still a zombie.
        (zombie.id(), stat(zombie.id())),
        // Its pid reused by another live process (this one), which started at another time.
        (std::process::id(), stat(std::process::id()) + 1),
    ];
    for (pid, started) in stale {
        let mut r = rec.clone();
        r["pid"] = pid.into();
        r["started"] = started.into();
        r["dev"] = b_dev.clone().into();
        fs::write(&rec_path, serde_json::to_vec(&r).unwrap()).unwrap();
        a.mount("");
        assert!(
            a.path("c/mine").exists() && !a.path("other").exists(),
            "with a stale entry (pid {pid}) the mount of store A shows another filesystem"
        );
        assert_eq!(fs::read(a.path("c/mine")).unwrap(), b"store A");
        a.umount();
    }
    zombie.wait().unwrap();
}
