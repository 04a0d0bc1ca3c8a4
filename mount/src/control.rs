//! The control channel between the CLI and a mounted daemon.
//!
//! One request per connection: the client writes a JSON [`Request`] line; the daemon
//! answers with zero or more `{"progress": …}` lines and one final `{"ok": …}` or
//! `{"error": …}` line. While a store is mounted its lock is held by the daemon, so every
//! store command goes through here.

use crate::locate;
use crate::ops::{self, OpError, Progress, Request};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
enum Line {
    Progress(Progress),
    Ok(serde_json::Value),
    Error(OpError),
}

/// Connects to the daemon serving `store`, if one is running.
pub fn connect(store: &Path) -> Option<UnixStream> {
    UnixStream::connect(locate::socket_path(store)).ok()
}

/// Sends one request and waits for its result, reporting progress as it comes.
pub fn call(
    mut conn: UnixStream,
    req: &Request,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    let mut line = serde_json::to_vec(req).map_err(|e| OpError::io(e.to_string()))?;
    line.push(b'\n');
    conn.write_all(&line)
        .map_err(|e| OpError::io(format!("control socket: {e}")))?;
    let reader = BufReader::new(conn);
    for l in reader.lines() {
        let l = l.map_err(|e| OpError::io(format!("control socket: {e}")))?;
        match serde_json::from_str::<Line>(&l)
            .map_err(|e| OpError::io(format!("bad reply from daemon: {e}")))?
        {
            Line::Progress(p) => progress(&p),
            Line::Ok(v) => return Ok(v),
            Line::Error(e) => return Err(e),
        }
    }
    Err(OpError::io(
        "the daemon closed the control connection without answering".into(),
    ))
}

/// Serves requests until the listener is closed.
pub fn serve(listener: UnixListener, ctx: Arc<ops::Ctx>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || handle(conn, &ctx));
    }
}

fn handle(conn: UnixStream, ctx: &ops::Ctx) {
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let send = |w: &mut UnixStream, l: &Line| {
        if let Ok(mut v) = serde_json::to_vec(l) {
            v.push(b'\n');
            let _ = w.write_all(&v);
        }
    };
    let result = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            log::info!("control request: {req:?}");
            let mut w2 = match w.try_clone() {
                Ok(w2) => w2,
                Err(_) => return,
            };
            ops::execute(ctx, req, &mut |p| send(&mut w2, &Line::Progress(p.clone())))
        }
        Err(e) => Err(OpError::invalid(format!("bad request: {e}"))),
    };
    match result {
        Ok(v) => send(&mut w, &Line::Ok(v)),
        Err(e) => send(&mut w, &Line::Error(e)),
    }
}
