//! Replication requests: the stream's descriptors come with the request (from the CLI's
//! pipes, its stdin/stdout, or an ssh child's), so a mounted store replicates from its
//! daemon and an unmounted one from the CLI, through the same code.

use super::{to_json, Ctx, ErrorKind, OpError, Progress};
use dedupfs_core::replica::receive;
use dedupfs_core::replica::send::{self, SendOptions};
use dedupfs_core::replica::wire::Mode;
use dedupfs_core::replica::ReplicaError;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::OwnedFd;

type Answer = Result<serde_json::Value, OpError>;

pub struct SendArgs {
    pub container: String,
    pub target_container: String,
    pub failback: bool,
    pub bwlimit: Option<u64>,
    pub since: Option<String>,
    pub interactive: bool,
    pub corrupt: u32,
    pub verify: bool,
}

fn err(e: ReplicaError) -> OpError {
    let kind = match &e {
        ReplicaError::NoContainer(_) => ErrorKind::NotFound,
        // A refusal is the run failing (exit 1), not bad usage.
        ReplicaError::Point(_) => ErrorKind::Invalid,
        _ => ErrorKind::Io,
    };
    OpError {
        kind,
        message: e.to_string(),
    }
}

/// Takes the descriptors a request needs: (read end if interactive, write end).
fn ends(fds: Vec<OwnedFd>, n: usize) -> Result<Vec<File>, OpError> {
    if fds.len() != n {
        return Err(OpError::invalid(format!(
            "a replication request needs {n} open descriptor(s), {} came",
            fds.len()
        )));
    }
    Ok(fds.into_iter().map(File::from).collect())
}

fn size(n: u64) -> String {
    crate::output::size(n)
}

pub fn send(
    ctx: &Ctx,
    a: SendArgs,
    fds: Vec<OwnedFd>,
    progress: &mut dyn FnMut(&Progress),
) -> Answer {
    let mut files = ends(fds, if a.interactive { 2 } else { 1 })?;
    // The live point includes every write the daemon has acknowledged.
    if let (Some(fs), Some(ci)) = (&ctx.fs, ctx.store.registry().by_name(&a.container)) {
        fs.core()
            .flush_container(ci.id())
            .map_err(|e| OpError::io(format!("committing buffered writes first: {e}")))?;
    }
    let mut opts = SendOptions::new(&a.target_container);
    opts.bwlimit = a.bwlimit;
    opts.since = a.since;
    opts.corrupt = a.corrupt;
    opts.verify = a.verify;
    if a.failback {
        opts.mode = Mode::Failback;
    }
    let wfile = files
        .pop()
        .ok_or_else(|| OpError::invalid("no write end".into()))?;
    let mut w = BufWriter::with_capacity(1 << 20, wfile);
    let mut r = files.pop().map(|f| BufReader::with_capacity(1 << 16, f));
    let mut prog = |p: &send::SendProgress| {
        progress(&Progress {
            what: format!(
                "point {}/{}: {} changes, {} chunks sent, {} on the wire",
                p.point + 1,
                p.points,
                p.changes,
                p.chunks_sent,
                size(p.wire_bytes)
            ),
            done: p.logical_done,
            total: Some(p.logical_total.max(p.logical_done)),
        })
    };
    let rd = r.as_mut().map(|r| r as &mut dyn std::io::Read);
    let rep = send::run(&ctx.store, &a.container, &opts, rd, &mut w, &mut prog).map_err(err)?;
    Ok(to_json(&rep))
}

pub fn receive(
    ctx: &Ctx,
    container: Option<String>,
    interactive: bool,
    fds: Vec<OwnedFd>,
    progress: &mut dyn FnMut(&Progress),
) -> Answer {
    let mut files = ends(fds, if interactive { 2 } else { 1 })?;
    let mut w = if interactive {
        files.pop().map(BufWriter::new)
    } else {
        None
    };
    let rfile = files
        .pop()
        .ok_or_else(|| OpError::invalid("no read end".into()))?;
    let mut r = BufReader::with_capacity(1 << 20, rfile);
    let mut prog = |p: &receive::ReceiveReport| {
        progress(&Progress {
            what: format!(
                "{} changes, {} chunks received",
                p.changes, p.chunks_received
            ),
            done: p.wire_bytes,
            total: None,
        })
    };
    let wd = w.as_mut().map(|w| w as &mut dyn std::io::Write);
    let rep =
        receive::serve_as(&ctx.store, container.as_deref(), &mut r, wd, &mut prog).map_err(err)?;
    // The replica's tree was replaced behind the kernel's back.
    // (`old_view`: its live view before the publish, recorded by the publish itself.)
    if rep.published && rep.old_view != 0 {
        ctx.invalidate_view(rep.old_view, &rep.container);
    }
    ctx.invalidate_root_entry(&rep.container);
    ctx.invalidate_root_entry(".snapshots");
    Ok(to_json(&rep))
}

pub fn promote(ctx: &Ctx, name: &str) -> Answer {
    let rec = receive::promote(&ctx.store, name).map_err(err)?;
    ctx.invalidate_root_entry(name);
    Ok(to_json(&rec))
}

pub fn abort(ctx: &Ctx, name: &str) -> Answer {
    let ci = ctx.store.registry().by_name(name).ok_or_else(|| OpError {
        kind: ErrorKind::NotFound,
        message: format!("no container named '{name}'"),
    })?;
    let had = receive::abort(&ctx.store, ci.id()).map_err(err)?;
    Ok(serde_json::json!({ "container": name, "discarded": had }))
}
