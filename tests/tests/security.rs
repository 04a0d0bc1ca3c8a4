//! Nobody reads or controls what is not theirs: the store's files are private whatever the
//! umask, and the control socket serves only the daemon's user and root. And `umount`
//! touches only dedupfs mounts.

use dedupfs_tests::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `argv` as the unprivileged user `tests` (created by tests/setup.sh).
fn as_tests_user(argv: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=tests", "--regid=tests", "--clear-groups", "--"])
        .args(argv)
        .env("RUST_LOG", "warn")
        .current_dir("/");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("setpriv")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every entry under `root` whose mode lets group or others in.
fn loose_entries(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            continue;
        }
        let mode = md.mode() & 0o7777;
        let want = if md.is_dir() { 0o700 } else { 0o600 };
        if mode & 0o077 != 0 || (md.is_dir() && mode != want) {
            out.push(format!("{} {mode:04o}", p.display()));
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn a_store_is_private_whatever_the_umask_and_is_tightened_at_open() {
    // The test directory is open to others, so only the store's own modes protect it.
    let dir = tempfile::Builder::new()
        .prefix("dedupfs-perm-")
        .tempdir_in(test_root())
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("store");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let bin = bin();
    let bin = bin.to_str().unwrap();
    sh(&format!("umask 022; {bin} init {}", store.display()));
    sh(&format!(
        "umask 000; {bin} mount {} {} -o allow_other,gc_idle=0",
        store.display(),
        mnt.display()
    ));
    let secret = "the-secret-payload-".repeat(2000);
    fs::create_dir(mnt.join("c")).unwrap();
    let f = mnt.join("c/secret");
    fs::write(&f, &secret).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    sh(&format!(
        "sync; {bin} --store {} stats >/dev/null",
        store.display()
    ));
    let loose = loose_entries(&store);
    assert!(loose.is_empty(), "entries others can reach: {loose:?}");

    // Another local user reads nothing of the store, neither packs nor metadata nor log.
    for (cmd, p) in [
        ("ls", "packs"),
        ("ls", "meta"),
        ("cat", "dedupfs.log"),
        ("cat", "dedupfs.json"),
    ] {
        let o = as_tests_user(&[cmd, store.join(p).to_str().unwrap()], &[]);
        assert!(
            !o.status.success(),
            "{p} readable by another user: {}",
            text(&o)
        );
    }
    let packs = sh(&format!("ls {}/packs/*/*.pack", store.display()));
    let first = packs.lines().next().expect("a pack");
    let o = as_tests_user(&["cat", first], &[]);
    assert!(
        !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("secret-payload"),
        "a pack is readable by another user"
    );
    ok(&dedupfs(&["umount", mnt.to_str().unwrap()]));

    // A store copied with loose modes is closed again at open, and the log says so.
    sh(&format!("chmod -R go+rX {}", store.display()));
    assert!(!loose_entries(&store).is_empty());
    mount_store(&store, &mnt, "gc_idle=0");
    let loose = loose_entries(&store);
    assert!(loose.is_empty(), "not tightened at open: {loose:?}");
    let log = fs::read_to_string(store.join("dedupfs.log")).unwrap();
    assert!(
        log.contains("readable or writable by other users"),
        "the tightening is logged"
    );
    assert_eq!(fs::read_to_string(&f).unwrap(), secret);
    ok(&dedupfs(&["umount", mnt.to_str().unwrap()]));
}

#[test]
fn another_user_cannot_control_the_daemon_and_nothing_changes() {
    // A run directory of the test's own, so that it can be loosened below.
    let run = tempfile::Builder::new()
        .prefix("dedupfs-run-")
        .tempdir_in(test_root())
        .unwrap();
    let run_dir = run.path().join("run");
    let envs = [("DEDUPFS_RUN_DIR", run_dir.to_str().unwrap())];
    let mut t = TestStore::new();
    fs::set_permissions(t.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(run.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let with_env = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .envs(envs)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    ok(&with_env(&[
        "mount",
        t.store.to_str().unwrap(),
        t.mnt.to_str().unwrap(),
        "-o",
        "allow_other,gc_idle=0",
    ]));
    t.mark_mounted();
    fs::create_dir(t.path("c")).unwrap();
    fs::write(t.path("c/data"), "precious").unwrap();
    ok(&with_env(&[
        "--store",
        t.store.to_str().unwrap(),
        "bookmark",
        "create",
        "c",
        "b1",
    ]));
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&run_dir), 0o700, "run directory is private");
    let sock = fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("a control socket");
    assert_eq!(mode(&sock), 0o600, "socket is private");

    // 1. As another user, through the mount point: refused, with a clear message.
    let mnt_path = t.mnt.to_str().unwrap().to_string();
    let mnt = mnt_path.as_str();
    for argv in [
        vec![
            bin().to_str().unwrap(),
            "--store",
            mnt,
            "container",
            "delete",
            "c",
            "--force",
        ],
        vec![
            bin().to_str().unwrap(),
            "--store",
            mnt,
            "rollback",
            "c",
            "--to",
            "b1",
        ],
    ] {
        let o = as_tests_user(&argv, &[]);
        assert_eq!(
            o.status.code(),
            Some(6),
            "refused with exit 6: {}",
            text(&o)
        );
        assert!(text(&o).contains("permission denied"), "{}", text(&o));
    }
    // 2. Even with the socket reachable (a loosened run directory), the daemon checks
    //    who is calling and refuses. An attacker needs no CLI: a raw request.
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let store_path = t.store.to_str().unwrap().to_string();
    let store = store_path.as_str();
    for req in [
        r#"{"cmd":"container-delete","name":"c","force":true}"#,
        r#"{"cmd":"rollback","container":"c","to":"b1","dry_run":false}"#,
    ] {
        let o = as_tests_user(
            &[
                // Debian's interpreter (tests/setup.sh installs it): other users' PATHs
                // may name one they cannot run.
                "/usr/bin/python3",
                "-c",
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(sys.argv[2].encode()+b'\\n')\nprint(s.makefile().readline())",
                sock.to_str().unwrap(),
                req,
            ],
            &[],
        );
        let out = text(&o);
        assert!(o.status.success(), "the socket was reachable: {out}");
        assert!(
            out.contains("\"denied\"") && out.contains("may not control this store"),
            "{out}"
        );
    }
    let log = fs::read_to_string(t.store.join("dedupfs.log")).unwrap();
    assert!(
        log.contains("control socket: refused uid"),
        "refusals are logged"
    );
    // Nothing changed.
    assert_eq!(fs::read_to_string(t.path("c/data")).unwrap(), "precious");
    let st: serde_json::Value =
        serde_json::from_str(&ok(&with_env(&["--store", store, "stats", "--json"]))).unwrap();
    assert_eq!(st["containers"][0]["files"], 1, "{st}");
    let snaps = ok(&with_env(&["--store", store, "snapshot", "list"]));
    assert!(
        !snaps.contains("before-rollback"),
        "no rollback happened: {snaps}"
    );
    // A run directory owned by someone else is refused, not used.
    ok(&with_env(&["umount", mnt]));
    t.mark_unmounted();
    sh(&format!("chown tests {}", run_dir.display()));
    let o = with_env(&["mount", store, mnt, "-o", "gc_idle=0"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("belongs to uid"), "{}", text(&o));
}

#[test]
fn umount_refuses_what_is_not_dedupfs() {
    let dir = tempfile::Builder::new()
        .prefix("dedupfs-notours-")
        .tempdir_in(test_root())
        .unwrap();
    let p = dir.path().join("tmp");
    fs::create_dir(&p).unwrap();
    sh(&format!("mount -t tmpfs -o size=1m tmpfs {}", p.display()));
    let o = dedupfs(&["umount", p.to_str().unwrap()]);
    let still = is_mounted(&p);
    let _ = Command::new("umount").arg(&p).output();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("not a dedupfs mount"), "{}", text(&o));
    assert!(still, "the tmpfs was left mounted");
}
