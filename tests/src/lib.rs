//! Helpers for end-to-end tests: a store in a temporary directory, mounted for real with
//! the `dedupfs` binary, driven by real programs.
//!
//! The binary is found next to the test executable's `deps/` directory (build it first:
//! `cargo build --release -p dedupfs-mount`), or at `$DEDUPFS_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DEDUPFS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("dedupfs");
    assert!(
        p.exists(),
        "{} not found: run `cargo build --release -p dedupfs-mount` first (or set DEDUPFS_BIN)",
        p.display()
    );
    p
}

/// Runs `dedupfs ARGS` and returns its output.
pub fn dedupfs(args: &[&str]) -> Output {
    dedupfs_env(args, &[])
}

/// Runs `dedupfs ARGS` with extra environment variables (an S3 server's credentials).
pub fn dedupfs_env(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run dedupfs")
}

/// `DEDUPFS_TEST_PACKS=s3://BUCKET[/PREFIX]`: every test store is made with its packs in
/// that bucket (each under its own prefix), so the end-to-end suite runs against object
/// storage (`tests/s3-suite.sh`; endpoint and credentials from the AWS_* variables).
pub fn test_packs_url(store_dir: &Path) -> Option<String> {
    let base = std::env::var("DEDUPFS_TEST_PACKS")
        .ok()
        .filter(|s| !s.is_empty())?;
    let name = store_dir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(format!("{}/{name}", base.trim_end_matches('/')))
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "dedupfs failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dedupfs mount STORE MNT -o OPTS`, which must succeed.
pub fn mount_store(store: &Path, mnt: &Path, opts: &str) {
    ok(&dedupfs(&[
        "mount",
        store.to_str().expect("utf8"),
        mnt.to_str().expect("utf8"),
        "-o",
        opts,
    ]));
}

/// A store and a mount point under one temporary directory.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
    /// Extra environment for every command (an S3 server's credentials and endpoint).
    pub env: Vec<(String, String)>,
}

impl TestStore {
    /// A new store (with `init_args`), not mounted.
    pub fn new_with(init_args: &[&str]) -> TestStore {
        Self::new_env(init_args, Vec::new())
    }

    /// A new store made with `init_args` and `env` (kept for every later command).
    pub fn new_env(init_args: &[&str], env: Vec<(String, String)>) -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("dedupfs-test-")
            .tempdir_in(test_root())
            .expect("tempdir");
        let store = dir.path().join("store");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        let mut args = vec!["init", store.to_str().expect("utf8")];
        args.extend_from_slice(init_args);
        let url = test_packs_url(&store);
        if let Some(u) = &url {
            if !init_args
                .iter()
                .any(|a| *a == "--packs" || *a == "--recover-from")
            {
                args.extend_from_slice(&["--packs", u]);
            }
        }
        ok(&dedupfs_env(&args, &env));
        TestStore {
            dir,
            store,
            mnt,
            mounted: false,
            env,
        }
    }

    /// `dedupfs ARGS` with this store's environment.
    pub fn run(&self, args: &[&str]) -> Output {
        dedupfs_env(args, &self.env)
    }

    pub fn new() -> TestStore {
        Self::new_with(&[])
    }

    /// A new store, mounted with `-o allow_other` plus `opts`.
    pub fn mounted(opts: &str) -> TestStore {
        let mut t = Self::new();
        t.mount(opts);
        t
    }

    pub fn mount(&mut self, opts: &str) {
        let o = if opts.is_empty() {
            "allow_other".to_string()
        } else {
            format!("allow_other,{opts}")
        };
        ok(&self.run(&[
            "mount",
            self.store.to_str().unwrap(),
            self.mnt.to_str().unwrap(),
            "-o",
            &o,
        ]));
        self.mounted = true;
    }

    /// Records that the store was mounted (or unmounted) by the test itself, so that drop
    /// cleans up correctly.
    pub fn mark_mounted(&mut self) {
        self.mounted = true;
    }
    pub fn mark_unmounted(&mut self) {
        self.mounted = false;
    }

    pub fn umount(&mut self) {
        ok(&self.run(&["umount", self.mnt.to_str().unwrap()]));
        self.mounted = false;
    }

    /// The daemon's pid (from the lock file note).
    pub fn daemon_pid(&self) -> u32 {
        let note = std::fs::read_to_string(self.store.join("lock")).expect("lock note");
        note.split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("pid in lock note")
    }

    /// Kills the daemon with SIGKILL and clears the dead mount.
    pub fn kill9(&mut self) {
        let pid = self.daemon_pid();
        sh(&format!("kill -9 {pid}"));
        wait_gone(pid);
        // The kernel keeps a dead FUSE mount (ENOTCONN) until it is unmounted.
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        self.mounted = false;
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `dedupfs --store STORE ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut a = vec!["--store", self.store.to_str().unwrap()];
        a.extend_from_slice(args);
        self.run(&a)
    }

    pub fn stats(&self) -> serde_json::Value {
        let out = ok(&self.cli(&["stats", "--json"]));
        serde_json::from_str(&out).expect("stats json")
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // A failing test shows the daemon's side of the story before the store goes.
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.store.join("dedupfs.log")) {
                let lines: Vec<&str> = log.lines().collect();
                let from = lines.len().saturating_sub(40);
                eprintln!("--- last lines of {}/dedupfs.log:", self.store.display());
                for l in &lines[from..] {
                    eprintln!("{l}");
                }
            }
        }
        if self.mounted {
            let _ = self.run(&["umount", self.mnt.to_str().unwrap()]);
            if is_mounted(&self.mnt) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
            }
        }
    }
}

/// The Python with the test clients' libraries (`tests/setup.sh --test-tools` makes it).
pub fn venv_python() -> PathBuf {
    std::env::var_os("DEDUPFS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/dedupfs-venv"))
        .join("bin/python")
}

pub fn is_mounted(p: &Path) -> bool {
    let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap_or("")))
}

/// Whether a process is running (exists and is not a zombie waiting to be reaped).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Waits for a process to exit (pidfd + poll; no sleeping).
pub fn wait_gone(pid: u32) {
    // SAFETY: pidfd_open with a pid; poll on the returned fd, closed afterwards.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as i32;
        if fd < 0 {
            return;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        libc::poll(&mut p, 1, 60_000);
        libc::close(fd);
    }
}

/// Where test stores live (override with $DEDUPFS_TEST_DIR; /var/tmp by default since /tmp
/// may be a small tmpfs).
pub fn test_root() -> PathBuf {
    let p = std::env::var_os("DEDUPFS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&p).expect("test root");
    p
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// This crate's directory. Cargo sets it at run time too; that one wins, because a test
/// binary built in another checkout of the same tree (CI's clone) may be reused here.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The backup corpus generator (the project's standard workload).
pub fn backup_corpus() -> PathBuf {
    if let Some(p) = std::env::var_os("BACKUP_CORPUS") {
        return PathBuf::from(p);
    }
    let here = manifest_dir();
    here.parent()
        .expect("repo")
        .join("benches")
        .join("backup-corpus")
}

/// A small deterministic generator (tests must be reproducible from their seed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n` (`n` of 0 counts as 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A tmpfs of `mib` MiB mounted at `dir` (unmounted on drop): a small disk to fill.
pub struct SmallFs(pub PathBuf);

impl SmallFs {
    pub fn new(dir: PathBuf, mib: u64) -> SmallFs {
        std::fs::create_dir_all(&dir).expect("mkdir");
        sh(&format!(
            "mount -t tmpfs -o size={mib}m tmpfs {}",
            dir.display()
        ));
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Unmounts a dedupfs mount when dropped (also when the test fails).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = dedupfs(&["umount", self.0.to_str().unwrap_or_default()]);
        }
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
}

/// The device id ("MAJOR:MINOR") of the mount at `p`, if `p` is a mount point.
pub fn mount_dev(p: &Path) -> Option<String> {
    let canon = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .rfind(|l| l.split(' ').nth(4) == canon.to_str())
        .and_then(|l| l.split(' ').nth(2).map(str::to_string))
}

pub mod s3;
