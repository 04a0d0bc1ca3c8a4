//! A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the venv that
//! `tests/setup.sh --test-tools` makes), bound to 127.0.0.1 only, with its own data
//! directory, ports and credentials, started by the test and stopped by pid when dropped.
//!
//! SeaweedFS checks SigV4 signatures once credentials are set (they always are here) and
//! honours `If-None-Match: *`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "dedupfs-test-key";
pub const SECRET: &str = "dedupfs-test-secret";

pub struct S3Server {
    pub dir: tempfile::TempDir,
    /// The base port; S3 listens on base + 6.
    base: u16,
    pid: Option<u32>,
}

fn weed() -> PathBuf {
    std::env::var_os("DEDUPFS_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::venv_python().with_file_name("weed"))
}

/// A base port (base .. base+8 and base+10008 are used); a busy one makes the start fail
/// at once and another is tried.
fn pick_base(attempt: u32) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let seed = std::process::id() as u64 * 7919 + attempt as u64 * 104_729 + nanos;
    20_000 + ((seed % 270) * 10) as u16
}

impl S3Server {
    /// Starts a server and waits until a signed request succeeds.
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("dedupfs-s3-")
            .tempdir_in(crate::test_root())
            .expect("tempdir");
        let mut s = S3Server {
            dir,
            base: 0,
            pid: None,
        };
        for attempt in 0..10 {
            s.base = pick_base(attempt);
            if s.spawn() {
                return s;
            }
        }
        panic!(
            "could not start SeaweedFS (see {}/weed.log)",
            s.dir.path().display()
        );
    }

    /// Starts the server process on the current ports; false if it exited at once (a port
    /// in use) or never became ready.
    fn spawn(&mut self) -> bool {
        use std::os::unix::process::CommandExt;
        let d = self.dir.path().join("data");
        std::fs::create_dir_all(&d).expect("data dir");
        // Saved options of an earlier run would override these flags.
        let _ = std::fs::remove_file(d.join("mini.options"));
        let b = self.base as u32;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .expect("log");
        let p = |k: &str, v: u32| format!("-{k}={v}");
        let mut child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", d.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                p("master.port", b),
                p("master.port.grpc", b + 1),
                p("volume.port", b + 2),
                p("volume.port.grpc", b + 3),
                p("filer.port", b + 4),
                p("filer.port.grpc", b + 5),
                p("s3.port", b + 6),
                p("s3.port.grpc", b + 7),
                p("admin.port", b + 8),
                p("admin.port.grpc", b + 8 + 10_000),
            ])
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-master.volumeSizeLimitMB=64",
                "-s3.autoCreateBucket=false",
            ])
            .arg(format!("-filer.localSocket={}/filer.sock", d.display()))
            .arg(format!("-s3.localSocket={}/s3.sock", d.display()))
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start weed (run tests/setup.sh --test-tools)");
        let pid = child.id();
        self.pid = Some(pid);
        // Reaped by a thread so that a killed server does not linger as a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if !crate::running(pid) {
                self.pid = None;
                return false;
            }
            if self.curl(&["-X", "GET", &self.endpoint()]).0 == 200 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base as u32 + 6)
    }

    /// A signed curl request: (HTTP status, body).
    pub fn curl(&self, args: &[&str]) -> (u32, String) {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{KEY}:{SECRET}"))
            .args(args)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn create_bucket(&self, name: &str) {
        let (code, body) = self.curl(&["-X", "PUT", &format!("{}/{name}", self.endpoint())]);
        assert_eq!(code, 200, "create bucket {name}: {body}");
    }

    /// Keys under `prefix` in `bucket` (sorted).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let enc: String = prefix
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?", self.endpoint());
            if let Some(t) = &token {
                let t: String = t
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                url.push_str(&format!("continuation-token={t}&"));
            }
            url.push_str(&format!("list-type=2&prefix={enc}"));
            let (code, body) = self.curl(&[&url]);
            assert_eq!(code, 200, "list {bucket}/{prefix}: {body}");
            for part in body.split("<Key>").skip(1) {
                if let Some((k, _)) = part.split_once("</Key>") {
                    out.push(k.to_string());
                }
            }
            token = body
                .split_once("<NextContinuationToken>")
                .and_then(|(_, r)| r.split_once("</NextContinuationToken>"))
                .map(|(t, _)| t.to_string());
            if token.is_none() {
                break;
            }
        }
        out.sort();
        out
    }

    pub fn put(&self, bucket: &str, key: &str, data: &str) {
        // `-T FILE` (curl signs an upload's body; `--data-binary` gets a form content type
        // that breaks the signature).
        let f = self.dir.path().join("put.tmp");
        std::fs::write(&f, data).expect("temp object");
        let (code, body) = self.curl(&[
            "-T",
            f.to_str().expect("utf8"),
            &format!("{}/{bucket}/{key}", self.endpoint()),
        ]);
        assert_eq!(code, 200, "put {key}: {body}");
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        let (code, body) = self.curl(&[
            "-X",
            "DELETE",
            &format!("{}/{bucket}/{key}", self.endpoint()),
        ]);
        assert!(code == 204 || code == 200, "delete {key}: {code} {body}");
    }

    /// The environment a dedupfs command needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Kills the server (SIGKILL to its process group) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: kill(2) on our own child's process group.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            crate::wait_gone(pid);
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "SeaweedFS did not come back (see weed.log)");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
        let b = self.base as u32;
        for port in [b + 1, b + 3, b + 5, b + 7, b + 10_008] {
            for kind in ["master", "volume", "filer", "s3", "admin"] {
                let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
            }
        }
    }
}
