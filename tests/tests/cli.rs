//! The command line: clear errors with distinct exit codes, containers, stats.

use dedupfs_tests::*;
use std::process::Output;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version() {
    let o = dedupfs(&["--help"]);
    assert_eq!(code(&o), 0);
    let out = String::from_utf8_lossy(&o.stdout);
    for word in [
        "init",
        "mount",
        "umount",
        "container",
        "stats",
        "Exit codes",
    ] {
        assert!(out.contains(word), "--help lacks {word}");
    }
    let v = ok(&dedupfs(&["--version"]));
    assert!(v.starts_with("dedupfs "), "{v}");
    assert_eq!(code(&dedupfs(&["frobnicate"])), 2);
}

#[test]
fn store_errors_name_the_problem() {
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let missing = tmp.path().join("nope");
    let o = dedupfs(&["stats", "--store", missing.to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("no such directory"), "{}", stderr(&o));

    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = dedupfs(&["mount", plain.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).contains("is not a dedupfs store"),
        "{}",
        stderr(&o)
    );

    // A store from a newer format version.
    let t = TestStore::new();
    let cfg = t.store.join("dedupfs.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["format"] = serde_json::json!(99);
    std::fs::write(&cfg, v.to_string()).unwrap();
    let o = dedupfs(&["mount", t.store.to_str().unwrap(), t.mnt.to_str().unwrap()]);
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).contains("format 99") && stderr(&o).contains("upgrade"),
        "{}",
        stderr(&o)
    );

    // init refuses a non-empty directory and an existing store.
    std::fs::write(plain.join("x"), b"x").unwrap();
    let o = dedupfs(&["init", plain.to_str().unwrap()]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("not empty"));
    let o = dedupfs(&[
        "init",
        "--chunk-avg",
        "banana",
        tmp.path().join("s2").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = dedupfs(&[
        "init",
        "--chunk-min",
        "64K",
        "--chunk-avg",
        "32K",
        tmp.path().join("s3").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn mount_errors_name_the_problem() {
    let mut t = TestStore::new();
    let store = t.store.to_str().unwrap().to_string();
    let missing = t.dir.path().join("no-such-dir");
    let o = dedupfs(&["mount", &store, missing.to_str().unwrap()]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let o = dedupfs(&[
        "mount",
        &store,
        t.mnt.to_str().unwrap(),
        "-o",
        "threads=lots",
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("threads"), "{}", stderr(&o));
    let o = dedupfs(&[
        "mount",
        &store,
        t.mnt.to_str().unwrap(),
        "-o",
        "bogus_option",
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("bogus_option"), "{}", stderr(&o));

    // A store locked by another process (not a mount: an offline gc, say).
    {
        use std::os::unix::io::AsRawFd;
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(t.store.join("lock"))
            .unwrap();
        // SAFETY: flock on an open fd; released when `lock` closes.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let o = dedupfs(&["mount", &store, t.mnt.to_str().unwrap()]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        assert!(stderr(&o).contains("in use by"), "{}", stderr(&o));
    }
    t.mount("");
    // The same store again, elsewhere: another view of the running mount (helper.rs).
    let other = t.dir.path().join("mnt2");
    std::fs::create_dir(&other).unwrap();
    let o = dedupfs(&["mount", &store, other.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    ok(&dedupfs(&["umount", other.to_str().unwrap()]));
    // Another store onto the busy mount point.
    let t2 = TestStore::new();
    let o = dedupfs(&["mount", t2.store.to_str().unwrap(), t.mnt.to_str().unwrap()]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("busy"), "{}", stderr(&o));
    t.umount();
    let o = dedupfs(&["umount", t.mnt.to_str().unwrap()]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("not mounted"));
}

#[test]
fn containers_lifecycle_unmounted_and_mounted() {
    let mut t = TestStore::new();
    // Unmounted: the CLI opens the store itself.
    ok(&t.cli(&["container", "create", "nightly", "--compression", "zstd:3"]));
    let o = t.cli(&["container", "create", "nightly"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("already exists"));
    let o = t.cli(&["container", "create", "bad", "--compression", "zstd:42"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&t.cli(&["container", "show", "nightly", "--json"]))).unwrap();
    assert_eq!(show["settings"]["compression"], "zstd:3");
    ok(&t.cli(&["container", "set", "nightly", "--compression", "off"]));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&t.cli(&["container", "show", "nightly", "--json"]))).unwrap();
    assert_eq!(show["settings"]["compression"], "off");
    let o = t.cli(&["container", "show", "nothere"]);
    assert_eq!(code(&o), 5);

    // Mounted: the same commands go through the daemon, and the mount sees them.
    t.mount("");
    assert!(t.path("nightly").is_dir());
    ok(&t.cli(&["container", "create", "weekly"]));
    assert!(
        t.path("weekly").is_dir(),
        "a container created while mounted appears at once"
    );
    std::fs::write(t.path("weekly/f"), b"data").unwrap();
    let o = t.cli(&["container", "delete", "weekly"]);
    assert_eq!(code(&o), 1, "non-empty needs --force: {}", stderr(&o));
    {
        let _open = std::fs::File::open(t.path("weekly/f")).unwrap();
        let o = t.cli(&["container", "delete", "weekly", "--force"]);
        assert_eq!(code(&o), 1);
        assert!(stderr(&o).contains("open"), "{}", stderr(&o));
    }
    ok(&t.cli(&["container", "delete", "weekly", "--force"]));
    assert!(!t.path("weekly").exists());
    let list = ok(&t.cli(&["container", "list"]));
    assert!(
        list.contains("nightly") && !list.contains("weekly"),
        "{list}"
    );
    // Without --store, the only mounted store is used... unless the test machine has
    // others mounted; --store by mount point always works.
    let by_mnt = ok(&dedupfs(&[
        "--store",
        t.mnt.to_str().unwrap(),
        "container",
        "list",
        "--json",
    ]));
    assert!(by_mnt.contains("nightly"));
    t.umount();
}

/// Resumes a stopped process when dropped (also when the test fails).
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill with a pid and a signal number.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// Once the kernel lets go of a mount its device number is free, while the daemon may
/// still be finishing (here: it is stopped). `dedupfs umount` of the next mount, given
/// that number, waits for its own daemon and reports its own outcome, never the other's.
#[test]
fn umount_of_a_mount_that_reuses_a_device_number_waits_for_its_own_daemon() {
    let mut reused = 0;
    for _ in 0..10 {
        if reused == 3 {
            break;
        }
        let mut a = TestStore::mounted("gc_idle=0");
        let a_dev = mount_dev(&a.mnt).expect("a's device");
        let a_pid = a.daemon_pid();
        // SAFETY: kill with a pid and a signal number.
        unsafe { libc::kill(a_pid as libc::pid_t, libc::SIGSTOP) };
        let resume = Resume(a_pid);
        let a_mnt = a.mnt.clone();
        let a_umount = std::thread::spawn(move || dedupfs(&["umount", a_mnt.to_str().unwrap()]));
        let t0 = std::time::Instant::now();
        while is_mounted(&a.mnt) {
            assert!(t0.elapsed().as_secs() < 60, "the kernel never let go of a");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        a.mark_unmounted();
        let mut b = TestStore::mounted("gc_idle=0");
        if mount_dev(&b.mnt).as_deref() == Some(a_dev.as_str()) {
            reused += 1;
            // a's daemon is stopped: waiting for it would hang until the 120 s limit.
            let o = dedupfs(&["umount", b.mnt.to_str().unwrap()]);
            assert_eq!(code(&o), 0, "b's unmount: {}", stderr(&o));
            b.mark_unmounted();
        } else {
            b.umount();
        }
        drop(resume);
        let o = a_umount.join().unwrap();
        assert_eq!(code(&o), 0, "a's unmount: {}", stderr(&o));
    }
    assert!(
        reused > 0,
        "no mount was given the device number of the one before"
    );
}
