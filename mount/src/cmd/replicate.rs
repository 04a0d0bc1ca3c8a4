//! Replication commands: `replicate` (to a store here or over ssh, talking to `serve` on
//! the other end), the one-way pipe pair `send` | `receive`, and `serve` itself. The
//! protocol and both halves live in the core (`dedupfs_core::replica`); this module
//! opens stores, starts the other end, draws progress and prints results.
//!
//! Invariants: the other end is this same program started as `serve` (locally, or by
//! ssh with no port opened); a failed run leaves the target's staging in place, so the
//! next run resumes, and its exit code says which side failed.

use super::common::{resolve_store, store_cmd_io};
use crate::ops::Request;
use crate::{output, CliError, ExitKind};
use dedupfs_core::replica::receive::ReceiveReport;
use dedupfs_core::replica::send::SendReport;
use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `replicate --to` sends.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Local(PathBuf),
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
}

/// Parses `--to`: a path, or `ssh://[user@]host[:port]/path`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let Some(rest) = s.strip_prefix("ssh://") else {
        return Ok(Target::Local(PathBuf::from(s)));
    };
    let (auth, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("'{s}': expected ssh://[user@]host[:port]/path/to/store"))?;
    let (user, hostport) = match auth.split_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, auth),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            Some(p.parse().map_err(|_| format!("'{s}': bad port '{p}'"))?),
        ),
        None => (hostport.to_string(), None),
    };
    if host.is_empty() {
        return Err(format!("'{s}': no host"));
    }
    Ok(Target::Ssh {
        user,
        host,
        port,
        path: format!("/{path}"),
    })
}

/// Parses a rate like `20M`, `1.5G`, `500k` (bytes per second; `0`: unlimited).
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}': expected a rate like 20M (bytes per second)"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("'{s}': a rate is not negative"));
    }
    Ok(((v * mult as f64) as u64 > 0).then_some((v * mult as f64) as u64))
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Result<OwnedFd, CliError> {
    fd.try_clone_to_owned()
        .map_err(|e| CliError::new(ExitKind::Failed, format!("duplicating a descriptor: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, CliError> {
    crate::protocol::decode::<T>(v, what).map_err(CliError::from_op)
}

fn corrupt_hook() -> u32 {
    // Test hook (documented in SEMANTICS): damage this many chunks in transit, to show
    // that the target rejects them and they are sent again.
    std::env::var("DEDUPFS_TEST_CORRUPT_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn print_send(r: &SendReport) {
    let rate = |b: u64| output::size((b as f64 / r.seconds.max(1e-3)) as u64);
    println!(
        "replicated '{}' to '{}'{}: {}",
        r.container,
        r.target_container,
        if r.resumed { " (resumed)" } else { "" },
        r.points.join(", ")
    );
    println!(
        "  {} changes; {} of changed data ({}/s); {} chunks referenced, {} sent ({}); {} \
         on the wire in {:.1} s",
        r.changes,
        output::size(r.logical_bytes),
        rate(r.logical_bytes),
        r.chunks_referenced,
        r.chunks_sent,
        output::size(r.chunk_bytes_sent),
        output::size(r.wire_bytes),
        r.seconds
    );
    if r.chunks_resent > 0 {
        println!(
            "  {} damaged chunk(s) were rejected by the target and sent again",
            r.chunks_resent
        );
    }
}

/// `replicate`'s options.
pub struct Options {
    pub as_name: Option<String>,
    pub bwlimit: Option<String>,
    pub failback: bool,
    pub remote_cmd: String,
    pub verify: bool,
}

/// `dedupfs replicate C --to TARGET`.
pub fn replicate(
    store: Option<PathBuf>,
    container: String,
    to: String,
    o: Options,
    json: bool,
) -> Result<(), CliError> {
    let Options {
        as_name,
        bwlimit,
        failback,
        remote_cmd,
        verify,
    } = o;
    let target = parse_target(&to).map_err(CliError::usage)?;
    let bw = match bwlimit {
        Some(b) => parse_rate(&b).map_err(CliError::usage)?,
        None => None,
    };
    let src = resolve_store(store)?;
    // What the kernel still caches (dirty pages, times) goes to the daemon first, so the
    // live point is what applications see.
    super::common::sync_mount(&src);
    let mut cmd = match &target {
        Target::Local(p) => {
            let exe = std::env::current_exe()
                .map_err(|e| CliError::new(ExitKind::Failed, format!("own executable: {e}")))?;
            let mut c = Command::new(exe);
            c.arg("serve").arg("--store").arg(p);
            c
        }
        Target::Ssh {
            user,
            host,
            port,
            path,
        } => {
            // DEDUPFS_SSH replaces the ssh command (options, a key), as rsync's -e does.
            let ssh = std::env::var("DEDUPFS_SSH").unwrap_or_else(|_| "ssh".into());
            let mut parts = ssh.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("ssh"));
            c.args(parts);
            if let Some(p) = port {
                c.arg("-p").arg(p.to_string());
            }
            c.arg("-o").arg("BatchMode=yes");
            c.arg(match user {
                Some(u) => format!("{u}@{host}"),
                None => host.clone(),
            });
            c.arg("--")
                .arg(&remote_cmd)
                .arg("serve")
                .arg("--store")
                .arg(path);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CliError::new(ExitKind::Failed, format!("starting the receiver: {e}")))?;
    let (Some(to_child), Some(from_child)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(CliError::new(
            ExitKind::Failed,
            "the receiver has no pipes".into(),
        ));
    };
    let req = Request::ReplicaSend {
        target_container: as_name.unwrap_or_else(|| container.clone()),
        container,
        failback,
        bwlimit: bw,
        since: None,
        interactive: true,
        corrupt: corrupt_hook(),
        verify,
    };
    // The pipes go to whoever runs the send (the daemon, if the store is mounted); our
    // copies close once handed over, so the receiver sees EOF when the sender is done.
    let fds = vec![OwnedFd::from(from_child), OwnedFd::from(to_child)];
    let res = store_cmd_io(&src, req, fds, "replicating");
    let status = child.wait();
    let v = res?;
    match status {
        Ok(st) if st.success() => {}
        Ok(st) => {
            return Err(CliError::new(
                ExitKind::Failed,
                format!("the receiver exited with {st} after publishing"),
            ))
        }
        Err(e) => return Err(CliError::new(ExitKind::Failed, format!("receiver: {e}"))),
    }
    let r: SendReport = decode(v.clone(), "replicate")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_send(&r);
    }
    if let Some(vr) = &r.verify {
        if !json {
            println!(
                "verify: {} inodes compared; {} differ, {} missing, {} extra at the target",
                vr.inodes,
                vr.differ.len(),
                vr.missing.len(),
                vr.extra
            );
            for p in vr.differ.iter().take(50) {
                println!("  differs: {p}");
            }
            for p in vr.missing.iter().take(50) {
                println!("  missing: {p}");
            }
        }
        if !vr.ok() {
            return Err(CliError::new(
                ExitKind::Failed,
                format!(
                    "verification failed: {} path(s) differ, {} missing, {} extra at the target",
                    vr.differ.len(),
                    vr.missing.len(),
                    vr.extra
                ),
            ));
        }
    }
    Ok(())
}

/// `dedupfs send C` (stream to stdout).
pub fn send_cmd(
    store: Option<PathBuf>,
    container: String,
    as_name: Option<String>,
    since: Option<String>,
    bwlimit: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    if std::io::stdout().is_terminal() {
        return Err(CliError::usage(
            "send writes a binary stream: pipe it into `dedupfs receive` (or a file)".into(),
        ));
    }
    let bw = match bwlimit {
        Some(b) => parse_rate(&b).map_err(CliError::usage)?,
        None => None,
    };
    let src = resolve_store(store)?;
    super::common::sync_mount(&src);
    let req = Request::ReplicaSend {
        target_container: as_name.unwrap_or_else(|| container.clone()),
        container,
        failback: false,
        bwlimit: bw,
        since: since.map(|s| super::common::to_instant(&s)),
        interactive: false,
        corrupt: 0,
        verify: false,
    };
    let out = dup(std::io::stdout().as_fd())?;
    let v = store_cmd_io(&src, req, vec![out], "sending")?;
    // stdout carries the stream: the summary goes to stderr.
    if json {
        eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let r: SendReport = decode(v, "send")?;
    eprintln!(
        "sent '{}': {} ({} changes, {} chunks, {} on the wire)",
        r.container,
        r.points.join(", "),
        r.changes,
        r.chunks_sent,
        output::size(r.wire_bytes)
    );
    Ok(())
}

/// `dedupfs receive STORE [C]` (stream from stdin), or `--abort C`.
pub fn receive_cmd(
    store: Option<PathBuf>,
    path: Option<PathBuf>,
    container: Option<String>,
    abort: bool,
    json: bool,
) -> Result<(), CliError> {
    let dst = resolve_store(path.or(store))?;
    if abort {
        let name =
            container.ok_or_else(|| CliError::usage("--abort needs the container".into()))?;
        let req = Request::ReplicaAbort { name: name.clone() };
        let v = store_cmd_io(&dst, req, Vec::new(), "abort")?;
        if json {
            println!("{v}");
        } else if v["discarded"].as_bool().unwrap_or(false) {
            println!("discarded the unfinished receive into '{name}'");
        } else {
            println!("no unfinished receive into '{name}'");
        }
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "receive reads a stream from `dedupfs send` on its standard input".into(),
        ));
    }
    let input = dup(std::io::stdin().as_fd())?;
    let req = Request::ReplicaReceive {
        container,
        interactive: false,
    };
    let v = store_cmd_io(&dst, req, vec![input], "receiving")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let r: ReceiveReport = decode(v, "receive")?;
    println!(
        "received '{}' from '{}'{}: {} ({} changes, {} chunks, {} on the wire)",
        r.container,
        r.source_container,
        if r.resumed { " (resumed)" } else { "" },
        r.points.join(", "),
        r.changes,
        r.chunks_received,
        output::size(r.wire_bytes)
    );
    Ok(())
}

/// `dedupfs serve --store STORE`: the receiving end of `replicate`, on stdin/stdout.
pub fn serve(store: Option<PathBuf>) -> Result<(), CliError> {
    let dst = resolve_store(store)?;
    let fds = vec![
        dup(std::io::stdin().as_fd())?,
        dup(std::io::stdout().as_fd())?,
    ];
    let req = Request::ReplicaReceive {
        container: None,
        interactive: true,
    };
    let v = store_cmd_io(&dst, req, fds, "receiving")?;
    log::info!("received: {v}");
    Ok(())
}

/// `dedupfs container promote C`.
pub fn promote(store: &Path, name: String, json: bool) -> Result<(), CliError> {
    let req = Request::ReplicaPromote { name: name.clone() };
    let v = store_cmd_io(store, req, Vec::new(), "promote")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let from = v["promoted_from"]["source_container"]
        .as_str()
        .unwrap_or("?");
    println!(
        "'{name}' is now an ordinary, writable container (it was a replica of '{from}'); \
         `dedupfs replicate {name} --to … --failback` sends back only what changes here"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_rates_parse_as_documented() {
        assert_eq!(
            parse_target("/srv/store").unwrap(),
            Target::Local(PathBuf::from("/srv/store"))
        );
        assert_eq!(
            parse_target("ssh://backup@dr.example:2222/srv/store").unwrap(),
            Target::Ssh {
                user: Some("backup".into()),
                host: "dr.example".into(),
                port: Some(2222),
                path: "/srv/store".into()
            }
        );
        assert_eq!(
            parse_target("ssh://host/x").unwrap(),
            Target::Ssh {
                user: None,
                host: "host".into(),
                port: None,
                path: "/x".into()
            }
        );
        assert!(parse_target("ssh://host").is_err());
        assert!(parse_target("ssh://host:port/x").is_err());
        assert_eq!(parse_rate("20M").unwrap(), Some(20 << 20));
        assert_eq!(parse_rate("500k").unwrap(), Some(500 << 10));
        assert_eq!(parse_rate("1.5G/s").unwrap(), Some(3 << 29));
        assert_eq!(parse_rate("0").unwrap(), None);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1M").is_err());
    }
}
