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

/// `dedupfs ARGS` with the time zone `tz` (POSIX TZ string, so no tzdata is needed).
fn dedupfs_tz(tz: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .env("TZ", tz)
        .output()
        .expect("run dedupfs")
}

/// Relative times pass the argument parser, a local time means the caller's zone whether
/// the daemon (in another zone) or the CLI resolves it, and a time in the future is refused
/// and records nothing.
#[test]
fn times_mean_the_callers_zone_and_future_times_are_refused() {
    let mut t = TestStore::new();
    let (store, mnt) = (
        t.store.to_str().unwrap().to_string(),
        t.mnt.to_str().unwrap().to_string(),
    );
    let (store, mnt) = (store.as_str(), mnt.as_str());
    // The daemon runs 5 hours behind UTC, the caller 9 hours ahead.
    let (daemon_tz, cli_tz) = ("AAA+5", "BBB-9");
    ok(&dedupfs_tz(
        daemon_tz,
        &["mount", store, mnt, "-o", "allow_other"],
    ));
    t.mark_mounted();
    ok(&t.cli(&["container", "create", "c"]));
    std::fs::write(t.path("c/f"), b"one").unwrap();
    ok(&t.cli(&["sync"]));
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(t.path("c/f"), b"two").unwrap();
    ok(&t.cli(&["sync"]));
    // `between` as the caller's wall clock shows it, to the millisecond.
    let local = sh(&format!(
        "TZ={cli_tz} date -d @{}.{:03} '+%Y-%m-%d %H:%M:%S.%3N'",
        between.as_secs(),
        between.subsec_millis()
    ));
    let local = local.trim();

    ok(&dedupfs_tz(
        cli_tz,
        &[
            "--store", store, "snapshot", "create", "c", "s1", "--at", local,
        ],
    ));
    assert_eq!(
        std::fs::read(t.path(".snapshots/s1/f")).unwrap(),
        b"one",
        "'{local}' in {cli_tz} is before the second write"
    );
    // Shown in the caller's zone, with its offset; JSON keeps seconds since the epoch.
    let shown = ok(&dedupfs_tz(
        cli_tz,
        &["--store", store, "snapshot", "show", "s1"],
    ));
    assert!(shown.contains("+09:00"), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&ok(&dedupfs_tz(
        cli_tz,
        &["--store", store, "snapshot", "show", "s1", "--json"],
    )))
    .unwrap();
    assert_eq!(
        json["at_time"].as_i64(),
        Some(between.as_secs() as i64),
        "{json}"
    );

    // `--to -15m` reaches the time resolver (the container is younger than that).
    let o = t.cli(&["rollback", "c", "--to", "-15m", "--dry-run"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("did not exist"), "{}", stderr(&o));
    let o = t.cli(&["snapshot", "create", "c", "s0", "--at", "-2m"]);
    assert!(stderr(&o).contains("did not exist"), "{}", stderr(&o));

    // A typo of the year: refused, nothing recorded.
    let before = ok(&t.cli(&["snapshot", "list", "--json"]));
    let o = t.cli(&["rollback", "c", "--to", "2099-01-01 00:00"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("in the future"), "{}", stderr(&o));
    let o = t.cli(&["snapshot", "create", "c", "s9", "--at", "2099-01-01 00:00"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(ok(&t.cli(&["snapshot", "list", "--json"])), before);
    assert_eq!(std::fs::read(t.path("c/f")).unwrap(), b"two");
    // Nor can the mount show the future.
    let e = std::fs::metadata(t.path(".at/c/2099-01-01 00:00")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");

    // Unmounted, the CLI resolves the same string to the same instant.
    t.umount();
    ok(&dedupfs_tz(
        cli_tz,
        &[
            "--store", store, "snapshot", "create", "c", "s2", "--at", local,
        ],
    ));
    t.mount("");
    assert_eq!(std::fs::read(t.path(".snapshots/s2/f")).unwrap(), b"one");
    t.umount();
}

/// A daemon killed with SIGKILL leaves its mount point dead (ENOTCONN); mounting the same
/// store there again — what systemd's `Restart=` does — detaches it and serves again.
/// Another store is not allowed to take over the dead mount.
#[test]
fn a_restart_after_a_crash_mounts_over_its_own_dead_mount() {
    let mut t = TestStore::mounted("");
    ok(&t.cli(&["container", "create", "c"]));
    std::fs::write(t.path("c/f"), b"kept").unwrap();
    ok(&t.cli(&["sync"]));
    let pid = t.daemon_pid();
    sh(&format!("kill -9 {pid}"));
    wait_gone(pid);
    let err = std::fs::metadata(&t.mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // Another store's mount is refused and names the dead mount.
    let other = TestStore::new();
    let o = dedupfs(&[
        "mount",
        other.store.to_str().unwrap(),
        t.mnt.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("dead"), "{}", stderr(&o));
    // The store's own restart succeeds.
    t.mount("");
    assert_eq!(std::fs::read(t.path("c/f")).unwrap(), b"kept");
    // A foreground mount (systemd's) of the store it now serves is refused: it would
    // exit at once instead of serving.
    let again = t.dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let o = dedupfs(&[
        "mount",
        "-f",
        t.store.to_str().unwrap(),
        again.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("already served"), "{}", stderr(&o));
    t.umount();
    assert!(!is_mounted(&t.mnt));
}

/// Commands name a store by its directory or any view of its mount, and the hints of
/// their errors are right.
#[test]
fn stores_are_named_the_same_way_everywhere() {
    let mut t = TestStore::mounted("");
    ok(&t.cli(&["container", "create", "c"]));
    let (store, mnt) = (
        t.store.to_str().unwrap().to_string(),
        t.mnt.to_str().unwrap().to_string(),
    );
    let (store, mnt) = (store.as_str(), mnt.as_str());
    // gc and fsck take --store like every other command, as well as a positional store.
    for args in [
        vec!["gc", "--store", store, "--dry-run"],
        vec!["gc", "--dry-run", mnt],
        vec!["fsck", "--store", mnt],
        vec!["--store", store, "fsck"],
    ] {
        ok(&dedupfs(&args));
    }
    // A second view of the mounted store (a bind mount) names the same store.
    let view = t.dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    sh(&format!("mount --bind {mnt} {}", view.display()));
    let o = dedupfs(&[
        "--store",
        view.to_str().unwrap(),
        "container",
        "list",
        "--json",
    ]);
    let _ = std::process::Command::new("umount").arg(&view).output();
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&ok(&o))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["c"], "the view names the store holding container c");
    // A directory that is no store is not offered `dedupfs init` of itself.
    let o = dedupfs(&["gc", "/etc"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!stderr(&o).contains("init /etc"), "{}", stderr(&o));
    // A dead mount is called dead, not missing.
    let pid = t.daemon_pid();
    sh(&format!("kill -9 {pid}"));
    wait_gone(pid);
    let o = dedupfs(&["--store", mnt, "stats"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("dead"), "{}", stderr(&o));
    t.mount("");
    t.umount();
}

/// `stats --watch --json` prints one object per refresh and leaves buffered writes alone;
/// a plain `stats` commits them first.
#[test]
fn stats_watch_refreshes_without_forcing_commits() {
    use std::io::{BufRead, BufReader, Write};
    // Without the kernel's writeback cache, a write reaches the daemon at once.
    let mut t = TestStore::mounted("no_writeback_cache");
    ok(&t.cli(&["container", "create", "c"]));
    std::fs::write(t.path("c/a"), pseudo_random(1 << 20, 1)).unwrap();
    ok(&t.cli(&["sync"]));
    // Buffered in the daemon, not committed (the file stays open, so no last-close flush):
    // it is committed after 5 s or when something asks.
    let mut open = std::fs::File::create(t.path("c/b")).unwrap();
    open.write_all(&pseudo_random(1 << 20, 2)).unwrap();
    let mut child = std::process::Command::new(bin())
        .args([
            "--store",
            t.store.to_str().unwrap(),
            "stats",
            "--watch",
            "0.1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut written = Vec::new();
    for _ in 0..3 {
        let l = lines.next().expect("a refresh").unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).expect("one JSON object per line");
        written.push(v["ingest"]["written_bytes"].as_u64().unwrap());
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        written.iter().all(|w| *w == 1 << 20),
        "watching committed the buffered write: {written:?}"
    );
    let s = t.stats();
    assert_eq!(s["ingest"]["written_bytes"].as_u64(), Some(2 << 20), "{s}");
    drop(open);
    let o = t.cli(&["stats", "--watch", "0"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    t.umount();
}

/// `status` shows each view of a mount, its options and type, and the daemon's health; a
/// daemon that does not answer makes it exit 1 within its deadline.
#[test]
fn status_lists_views_options_and_health() {
    let t = TestStore::mounted("gc_idle=0");
    let view = t.dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    sh(&format!(
        "mount --bind {} {}",
        t.mnt.display(),
        view.display()
    ));
    let o = t.cli(&["status", "--json"]);
    let _ = std::process::Command::new("umount").arg(&view).output();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "--store names one store: {v}");
    let e = &list[0];
    let canon = std::fs::canonicalize(&t.mnt).unwrap();
    assert_eq!(e["mountpoint"].as_str(), canon.to_str(), "{e}");
    assert_eq!(e["fstype"], "fuse.dedupfs", "{e}");
    assert_eq!(e["health"], "ok", "{e}");
    assert!(
        e["views"].as_array().unwrap().len() >= 2,
        "the bind view: {e}"
    );
    assert!(
        e["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "gc_idle=0"),
        "{e}"
    );
    assert_eq!(e["detail"]["pid"].as_u64(), Some(t.daemon_pid() as u64));
    let text = ok(&t.cli(&["status"]));
    assert!(text.contains("gc_idle=0") && text.contains("ok"), "{text}");
    // A stopped daemon does not answer: status says so and fails, after its deadline.
    let pid = t.daemon_pid();
    sh(&format!("kill -STOP {pid}"));
    let started = std::time::Instant::now();
    let o = t.cli(&["status"]);
    sh(&format!("kill -CONT {pid}"));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("not answering"),
        "{o:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// `mount -f -o log=PATH` logs to PATH, not to stderr (without `log=`, stderr: the journal).
#[test]
fn a_foreground_mount_logs_where_log_says() {
    let t = TestStore::new();
    let log = t.dir.path().join("fg.log");
    let opt = format!("log={}", log.display());
    let child = std::process::Command::new(bin())
        .args([
            "mount",
            "-f",
            t.store.to_str().unwrap(),
            t.mnt.to_str().unwrap(),
            "-o",
            &opt,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = Unmount(t.mnt.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !is_mounted(&t.mnt) {
        assert!(std::time::Instant::now() < deadline, "never mounted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::create_dir(t.mnt.join("c")).unwrap();
    ok(&dedupfs(&["umount", t.mnt.to_str().unwrap()]));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("container 'c' created"), "{logged}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("created"),
        "nothing on stderr once log= is given"
    );
}
