//! The control channel between the CLI and a mounted daemon.
//!
//! One request per connection: the client writes a JSON [`Request`] line in its versioned
//! envelope (`protocol::Envelope`; another version is refused by name); the daemon
//! answers with zero or more `{"progress": …}` lines and one final `{"ok": …}` or
//! `{"error": …}` line. While a store is mounted its lock is held by the daemon, so every
//! store command goes through here.
//!
//! Who may use it: the socket is 0600 in a 0700 run directory owned by the daemon's user,
//! and every connection's peer is checked (`SO_PEERCRED`): only the daemon's own uid and
//! root are served. Anyone else gets a refusal naming their uid, and nothing runs.

use crate::locate;
use crate::ops::{self, ErrorKind, OpError, Progress, Request};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let mut line = serde_json::to_vec(&crate::protocol::Envelope::new(req.clone()))
        .map_err(|e| OpError::io(e.to_string()))?;
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

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(conn: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Binds the control socket: 0600, in the (checked) run directory.
pub fn bind(sock: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(sock);
    let l = UnixListener::bind(sock)?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The accept loop and the requests in flight, stopped and joined at unmount.
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Shared with the accept thread, so the fd stays ours until both are done.
    listener: Arc<UnixListener>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves requests on `listener` until [`Server::stop`].
    pub fn start(listener: UnixListener, ctx: Arc<ops::Ctx>) -> std::io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = Arc::new(listener);
        let (s2, l2) = (stop.clone(), listener.clone());
        let accept = std::thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || serve(&l2, ctx, &s2))?;
        Ok(Server {
            stop,
            listener,
            accept: Some(accept),
        })
    }

    /// Stops accepting, waits for the requests in flight, and joins every thread (so the
    /// store they hold is released).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutting down a listening socket we hold (the Arc keeps the fd open) wakes
        // the accept(2) blocked on it with an error.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &UnixListener, ctx: Arc<ops::Ctx>, stop: &AtomicBool) {
    let mut handlers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        handlers.retain(|h| !h.is_finished());
        let Ok(conn) = conn else { continue };
        let ctx = ctx.clone();
        match std::thread::Builder::new()
            .name("control".into())
            .spawn(move || handle(conn, &ctx))
        {
            Ok(h) => handlers.push(h),
            Err(e) => log::error!("control request not served: {e}"),
        }
    }
    for h in handlers {
        let _ = h.join();
    }
}

fn send(w: &mut UnixStream, l: &Line) {
    if let Ok(mut v) = serde_json::to_vec(l) {
        v.push(b'\n');
        let _ = w.write_all(&v);
    }
}

fn handle(conn: UnixStream, ctx: &ops::Ctx) {
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let me = locate::euid();
    let caller = match peer_uid(&conn) {
        Ok(uid) if uid == me || uid == 0 => uid,
        other => {
            let who = match other {
                Ok(uid) => format!("uid {uid}"),
                Err(e) => format!("a peer whose credentials could not be read ({e})"),
            };
            log::warn!(
                "control socket: refused {who} (only uid {me} or root may control this store)"
            );
            // Take the request first (bounded in size and time) so that a client that
            // writes before it reads gets the refusal rather than a broken pipe. Nothing
            // of it is parsed.
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut line = Vec::new();
            let _ = BufReader::new((&conn).take(64 << 10)).read_until(b'\n', &mut line);
            send(
                &mut w,
                &Line::Error(OpError {
                    kind: ErrorKind::Denied,
                    message: format!(
                        "permission denied: {who} may not control this store; only uid {me} (the daemon's user) or root may"
                    ),
                }),
            );
            return;
        }
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let result = match crate::protocol::Envelope::parse(&line) {
        Ok(req) => {
            log::info!("control request: {req:?}");
            let mut w2 = match w.try_clone() {
                Ok(w2) => w2,
                Err(_) => return,
            };
            ops::execute(ctx, caller, req, &mut |p| {
                send(&mut w2, &Line::Progress(p.clone()))
            })
        }
        Err(e) => {
            log::warn!("control request refused: {}", e.message);
            Err(e)
        }
    };
    match result {
        Ok(v) => send(&mut w, &Line::Ok(v)),
        Err(e) => send(&mut w, &Line::Error(e)),
    }
}
