//! Exports: a container of a live mount served over SMB by Samba (driven by `smbclient` and
//! an SMB3 client in Python) and over NFS v3 and v4 by NFS-Ganesha's VFS backend (driven by
//! libnfs clients). Every server is started here, binds 127.0.0.1 only, and is stopped by
//! its pid before the mount goes (Ganesha keeps exported files open).
//!
//! Both tests end under a retention lock on the exported container: files are still
//! deleted and overwritten through the protocol, their old content stays readable under
//! MOUNT/.at/, and the emptied container itself cannot be deleted.

use dedupfs_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    venv_python()
}

fn client(name: &str) -> PathBuf {
    manifest_dir().join("clients").join(name)
}

/// A server process, stopped (TERM, then KILL) when dropped.
struct Server {
    child: Child,
    what: &'static str,
}

impl Server {
    /// Starts `cmd` in a session of its own (a server sharing the test's process group
    /// could take the test down with it when killed) and waits for `port` on 127.0.0.1.
    fn start(what: &'static str, cmd: &mut Command, port: u16, log: &Path) -> Server {
        // SAFETY: setsid in the child before exec; it touches no memory of the parent.
        let child = unsafe {
            use std::os::unix::process::CommandExt;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .pre_exec(|| {
                    libc::setsid();
                    Ok(())
                })
                .spawn()
        }
        .unwrap_or_else(|e| panic!("{what} does not start: {e} (run tests/setup.sh --test-tools)"));
        let mut s = Server { child, what };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                matches!(s.child.try_wait(), Ok(None)),
                "{what} exited at start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{what} never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill with our child's pid and a signal number.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if t0.elapsed() > Duration::from_secs(20) {
                eprintln!("{} ignored TERM; killing it", self.what);
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Reaped, so that its pid is gone when we return.
        let _ = self.child.wait();
    }
}

fn corpus(dir: &Path) {
    sh(&format!(
        "{} --out {} --versions 2 --size-mb 16 --files 100 --format tar --seed 11 > /dev/null",
        backup_corpus().display(),
        dir.display()
    ));
}

fn same(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        x == y,
        "{} ({} bytes) and {} ({} bytes) differ",
        a.display(),
        x.len(),
        b.display(),
        y.len()
    );
}

fn stored(t: &TestStore) -> u64 {
    t.stats()["stored_bytes"].as_u64().expect("stored_bytes")
}

// ---------------------------------------------------------------------------------------
// Retention lock (both protocols)

/// Bookmarks container `c` as `b1`, then puts a governance retention lock of one day on it,
/// both through the CLI on the store (the daemon does them), and checks the lock is set.
fn bookmark_and_lock(t: &TestStore, c: &str) {
    ok(&t.cli(&["bookmark", "create", c, "b1"]));
    ok(&t.cli(&[
        "container",
        "set",
        c,
        "--lock",
        "governance",
        "--lock-for",
        "1d",
    ]));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&t.cli(&["container", "show", c, "--json"]))).unwrap();
    assert_eq!(
        show["settings"]["lock"]["mode"], "governance",
        "container set --lock governance did not lock '{c}': {show}"
    );
    assert_eq!(
        show["settings"]["lock"]["secs"], 86_400,
        "--lock-for 1d is not one day: {show}"
    );
}

/// Once the locked container `c` is empty and no server has it open: removing its
/// directory at the mount root (which deletes an empty container) is refused with EPERM,
/// `dedupfs container delete --force` exits 7, and the container is still there.
///
/// Both exports serve the container itself as their root (the SMB share's path and the
/// Ganesha export's Path are MOUNT/c), so no SMB or NFS request can name the container's
/// directory to remove it; the rmdir goes through the local mount instead.
fn assert_locked_container_not_deleted(t: &TestStore, c: &str) {
    let dir = t.path(c);
    // An open file or directory in the container makes the rmdir fail with EBUSY before
    // the lock is asked, and the kernel sends FUSE's RELEASE for a file the stopped server
    // closed without waiting for it: wait for the last one to be gone.
    let t0 = Instant::now();
    let e = loop {
        match std::fs::remove_dir(&dir) {
            Ok(()) => panic!(
                "rmdir {} deleted the container under a retention lock",
                dir.display()
            ),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && t0.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "rmdir {} of the emptied locked container: {e} (expected EPERM from the lock, \
         not ENOTEMPTY or EBUSY)",
        dir.display()
    );
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    let o = t.cli(&["container", "delete", c, "--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(7),
        "container delete {c} --force under a retention lock must exit 7 (locked): {err}"
    );
    assert!(
        err.contains("retention lock"),
        "the refusal does not name the retention lock: {err}"
    );
    assert!(
        dir.is_dir(),
        "{} is gone after the refused deletes",
        dir.display()
    );
    ok(&t.cli(&["container", "show", c]));
}

// ---------------------------------------------------------------------------------------
// Samba

fn smb_conf(d: &Path, share: &Path) -> PathBuf {
    for sub in ["run", "lock", "state", "cache", "private", "ncalrpc"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let read = |f: &str| std::fs::read_to_string(client(f)).unwrap();
    let conf = read("smb.conf.in").replace("@DIR@", d.to_str().unwrap())
        + &read("smb-share.conf.in")
            .replace("@NAME@", "dd")
            .replace("@PATH@", share.to_str().unwrap());
    let p = d.join("smb.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

fn smbclient(cwd: &Path, cmds: &str) -> String {
    let o = Command::new("smbclient")
        .current_dir(cwd)
        .args(["//127.0.0.1/dd", "-U", "root%pw", "-c", cmds])
        .output()
        .expect("smbclient (run tests/setup.sh --test-tools)");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "smbclient -c '{cmds}': {out}");
    // smbclient exits 0 after a failed command in a -c list; its NT status says it.
    assert!(!out.contains("NT_STATUS_"), "smbclient -c '{cmds}': {out}");
    out
}

#[test]
fn samba_share_of_a_container_round_trips_backups_and_dedups_them() {
    let t = TestStore::mounted("");
    std::fs::create_dir(t.path("c")).unwrap();
    let work = t.dir.path().join("smb");
    let local = t.dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    corpus(&local);
    let conf = smb_conf(&work, &t.path("c"));
    sh(&format!(
        "(echo pw; echo pw) | smbpasswd -c {} -a -s root > /dev/null",
        conf.display()
    ));
    let log = work.join("smbd.out");
    let smbd = Server::start(
        "smbd",
        Command::new("smbd")
            .args(["--foreground", "--no-process-group", "-s"])
            .arg(&conf),
        445,
        &log,
    );

    // A backup in, and back out byte for byte; the second version shares most chunks.
    let s0 = stored(&t);
    smbclient(&local, "put v001.tar");
    let s1 = stored(&t);
    same(&local.join("v001.tar"), &t.path("c/v001.tar"));
    smbclient(&local, "put v001.tar again.tar");
    let s2 = stored(&t);
    let size = std::fs::metadata(local.join("v001.tar")).unwrap().len();
    assert!(
        s1 - s0 > size / 2,
        "the first copy is stored ({} bytes)",
        s1 - s0
    );
    assert!(
        s2 - s1 < size / 50,
        "the same backup again over SMB stores {} of {size} bytes",
        s2 - s1
    );
    smbclient(
        &local,
        "mkdir sub; rename again.tar sub\\again.tar; get sub\\again.tar back.tar",
    );
    same(&local.join("v001.tar"), &local.join("back.tar"));
    assert!(!t.path("c/again.tar").exists() && t.path("c/sub/again.tar").exists());

    // DOS attributes live in the user.DOSATTRIB xattr of the file in the container.
    let info = smbclient(&local, "setmode sub\\again.tar +h; allinfo sub\\again.tar");
    assert!(info.contains("attributes: HA"), "{info}");
    let x = sh(&format!(
        "getfattr --only-values -n user.DOSATTRIB {}",
        t.path("c/sub/again.tar").display()
    ));
    assert!(!x.is_empty(), "no user.DOSATTRIB on the file");

    // A ranged read by an SMB3 client.
    let part = local.join("part");
    let (off, len) = (3_000_001u64, 1_234_567u64);
    let o = Command::new(python())
        .arg(client("smb_client.py"))
        .args(["127.0.0.1", "dd", "root", "pw", "range", "sub\\again.tar"])
        .arg(off.to_string())
        .arg(len.to_string())
        .arg(&part)
        .output()
        .expect("python with smbprotocol (run tests/setup.sh --test-tools)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = std::fs::read(local.join("v001.tar")).unwrap();
    assert!(
        std::fs::read(&part).unwrap() == whole[off as usize..(off + len) as usize],
        "the ranged read differs"
    );

    // Two clients writing different files at once.
    let spawn = |name: &str| {
        Command::new("smbclient")
            .current_dir(&local)
            .args(["//127.0.0.1/dd", "-U", "root%pw", "-c"])
            .arg(format!("put {name} par-{name}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("v001.tar"), spawn("v002.tar"));
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    same(&local.join("v001.tar"), &t.path("c/par-v001.tar"));
    same(&local.join("v002.tar"), &t.path("c/par-v002.tar"));

    // Listing and delete.
    smbclient(&local, "del par-v001.tar");
    let o = Command::new(python())
        .arg(client("smb_client.py"))
        .args(["127.0.0.1", "dd", "root", "pw", "list", ""])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["par-v002.tar", "sub", "v001.tar"],
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!t.path("c/par-v001.tar").exists());

    // Under a retention lock (bookmark b1 first): a delete and an overwrite over SMB
    // still work, and what they replaced stays readable at b1.
    bookmark_and_lock(&t, "c");
    smbclient(&local, "del par-v002.tar; put v002.tar v001.tar");
    assert!(
        !t.path("c/par-v002.tar").exists(),
        "the delete over SMB under the lock left c/par-v002.tar"
    );
    same(&local.join("v002.tar"), &t.path("c/v001.tar"));
    same(&local.join("v002.tar"), &t.path(".at/c/b1/par-v002.tar"));
    same(&local.join("v001.tar"), &t.path(".at/c/b1/v001.tar"));

    // Emptied over SMB, so that only the lock can refuse deleting the container.
    smbclient(&local, "del v001.tar; del sub\\again.tar; rmdir sub");
    let o = Command::new(python())
        .arg(client("smb_client.py"))
        .args(["127.0.0.1", "dd", "root", "pw", "list", ""])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "the share is not empty after deleting everything over SMB"
    );
    smbd.stop();
    assert_locked_container_not_deleted(&t, "c");
}

// ---------------------------------------------------------------------------------------
// NFS-Ganesha

fn ganesha_conf(d: &Path, export: &Path) -> PathBuf {
    std::fs::create_dir_all(d).unwrap();
    // The export block docs/exports.md recommends (Graceless: no 90 s grace in a test).
    let conf = format!(
        "NFS_CORE_PARAM {{ Bind_addr = 127.0.0.1; NFS_Port = 2049; MNT_Port = 20048;
  Enable_NLM = false; Enable_RQUOTA = false; Protocols = 3, 4; Enable_UDP = false; }}
NFSV4 {{ Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{ Export_Id = 1; Path = {}; Pseudo = /dd; Access_Type = RW;
  Squash = No_Root_Squash; SecType = sys; Protocols = 3, 4; Transports = TCP;
  FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = EVENT; }}
",
        export.display()
    );
    let p = d.join("ganesha.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

fn ganesha(work: &Path, conf: &Path) -> Server {
    std::fs::create_dir_all("/var/lib/nfs/ganesha").unwrap();
    let log = work.join("ganesha.log");
    Server::start(
        "ganesha.nfsd",
        Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(conf)
            .arg("-L")
            .arg(&log)
            .arg("-p")
            .arg(work.join("ganesha.pid")),
        2049,
        &log,
    )
}

/// rpcbind, which Ganesha registers its v3 services with: ours unless one already runs.
fn rpcbind() -> Option<Server> {
    if TcpStream::connect(("127.0.0.1", 111)).is_ok() {
        return None;
    }
    std::fs::create_dir_all("/run/rpcbind").unwrap();
    Some(Server::start(
        "rpcbind",
        Command::new("rpcbind").arg("-f"),
        111,
        Path::new("/dev/null"),
    ))
}

fn nfs_cp(from: &str, to: &str) {
    let o = Command::new("nfs-cp")
        .args([from, to])
        .output()
        .expect("nfs-cp (run tests/setup.sh --test-tools)");
    assert!(
        o.status.success(),
        "nfs-cp {from} {to}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `nfs_client.py URL ARGS...` (one libnfs operation), which must succeed.
fn nfs_client(url: &str, args: &[&str]) {
    let o = Command::new(python())
        .arg(client("nfs_client.py"))
        .arg(url)
        .args(args)
        .output()
        .expect("python with libnfs (run tests/setup.sh --test-tools)");
    assert!(
        o.status.success(),
        "nfs_client.py {url} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A libnfs client holding one file open (one NFS file handle) across what the test does.
struct Holder {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn open(url: &str, path: &str) -> Holder {
        let mut child = Command::new(python())
            .arg(client("nfs_client.py"))
            .args([url, "hold", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python with libnfs (run tests/setup.sh --test-tools)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "open", "the NFS client could not open {path}");
        Holder { child, out }
    }
    /// Reads the whole file again through the held handle: "LEN SHA256" or "error: ...".
    fn read(&mut self) -> String {
        writeln!(self.child.stdin.as_mut().unwrap(), "read").unwrap();
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim().to_string()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha(p: &Path) -> String {
    let o = sh(&format!("sha256sum {}", p.display()));
    let d = std::fs::read(p).unwrap().len();
    format!("{d} {}", o.split_whitespace().next().unwrap())
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

#[test]
fn nfs_ganesha_export_of_a_container_over_v3_and_v4() {
    let mut t = TestStore::mounted("");
    std::fs::create_dir(t.path("c")).unwrap();
    let work = t.dir.path().join("nfs");
    let local = t.dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    corpus(&local);
    let export = t.path("c");
    let conf = ganesha_conf(&work, &export);
    let _rpcbind = rpcbind();
    let g = ganesha(&work, &conf);
    let v3 = format!("nfs://127.0.0.1{}", export.display());
    let v4 = "nfs://127.0.0.1/dd";

    // Copy in, out over both versions: byte-identical, deduplicated. (Copies in go over
    // v3: Debian 12's nfs-cp fails to write over v4 to Ganesha on a plain ext4 export too.)
    let (a, b) = (local.join("v001.tar"), local.join("v002.tar"));
    nfs_cp(a.to_str().unwrap(), &format!("{v3}/a.tar"));
    nfs_cp(b.to_str().unwrap(), &format!("{v3}/b.tar"));
    same(&a, &t.path("c/a.tar"));
    same(&b, &t.path("c/b.tar"));
    let s = stored(&t);
    nfs_cp(a.to_str().unwrap(), &format!("{v3}/a2.tar"));
    let size = std::fs::metadata(&a).unwrap().len();
    assert!(
        stored(&t) - s < size / 50,
        "the same backup again over NFS stores {} of {size} bytes",
        stored(&t) - s
    );
    nfs_cp(
        &format!("{v4}/a.tar?version=4"),
        local.join("a.back").to_str().unwrap(),
    );
    nfs_cp(
        &format!("{v3}/b.tar"),
        local.join("b.back").to_str().unwrap(),
    );
    same(&a, &local.join("a.back"));
    same(&b, &local.join("b.back"));

    // Listing.
    let ls = sh(&format!("nfs-ls '{v4}?version=4'"));
    for n in ["a.tar", "a2.tar", "b.tar"] {
        assert!(ls.contains(n), "nfs-ls lacks {n}: {ls}");
    }

    // A handle held across drop_caches: the kernel forgets the inode, dedupfs still
    // answers for it (FUSE export support).
    let mut h3 = Holder::open(&v3, "/a.tar");
    let mut h4 = Holder::open(&format!("{v4}?version=4"), "/b.tar");
    assert_eq!(h3.read(), sha(&a));
    drop_caches();
    assert_eq!(h3.read(), sha(&a), "v3 handle after drop_caches");
    assert_eq!(h4.read(), sha(&b), "v4 handle after drop_caches");

    // Remove.
    let o = Command::new(python())
        .arg(client("nfs_client.py"))
        .args([&format!("{v4}?version=4"), "unlink", "/a2.tar"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!t.path("c/a2.tar").exists());

    // The daemon restarts under the NFS server in the safe order: the server stops first
    // (it holds files of the export open), dedupfs unmounts and mounts again, the server
    // starts; clients then read everything back. Another filesystem takes the device
    // number dedupfs had, as on a busy host, so the new mount has another one. (Handles
    // held across this go stale: Ganesha's VFS backend puts the device number in them,
    // nfs-ganesha issue 1359; docs/exports.md says what to do.)
    drop((h3, h4));
    g.stop();
    let dev = mount_dev(&t.mnt).expect("dev");
    t.umount();
    // Device numbers are handed out lowest first: small filesystems are mounted until one
    // has taken the number dedupfs had.
    let mut others = Vec::new();
    for i in 0..64 {
        let p = t.dir.path().join(format!("other{i}"));
        others.push(SmallFs::new(p.clone(), 1));
        if mount_dev(&p).as_deref() == Some(dev.as_str()) {
            break;
        }
    }
    t.mount("");
    assert_ne!(
        mount_dev(&t.mnt),
        Some(dev),
        "the remount got the old device number"
    );
    let g = ganesha(&work, &conf);
    nfs_cp(
        &format!("{v3}/a.tar"),
        local.join("a.again").to_str().unwrap(),
    );
    same(&a, &local.join("a.again"));
    nfs_cp(
        &format!("{v4}/b.tar?version=4"),
        local.join("b.again").to_str().unwrap(),
    );
    same(&b, &local.join("b.again"));

    // Under a retention lock (bookmark b1 first): a delete over v4 and an overwrite over
    // v3 (the client truncates, then writes) still work, and what they replaced stays
    // readable at b1.
    bookmark_and_lock(&t, "c");
    let v4url = format!("{v4}?version=4");
    nfs_client(&v4url, &["unlink", "/a.tar"]);
    assert!(
        !t.path("c/a.tar").exists(),
        "the unlink over NFS under the lock left c/a.tar"
    );
    nfs_client(&v3, &["put", "/b.tar", a.to_str().unwrap()]);
    same(&a, &t.path("c/b.tar"));
    same(&a, &t.path(".at/c/b1/a.tar"));
    same(&b, &t.path(".at/c/b1/b.tar"));

    // Emptied over NFS, so that only the lock can refuse deleting the container.
    nfs_client(&v3, &["unlink", "/b.tar"]);
    let left: Vec<_> = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "c is not empty after deleting everything over NFS: {left:?}"
    );
    // Ganesha keeps files of the export open: stopped first.
    g.stop();
    assert_locked_container_not_deleted(&t, "c");
}
