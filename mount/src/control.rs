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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    conn: UnixStream,
    req: &Request,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    call_with_fds(conn, req, Vec::new(), progress)
}

/// Like [`call`], handing the daemon open descriptors with the request (`SCM_RIGHTS`): a
/// replication runs in the daemon but talks through pipes this process set up. This
/// process's copies are closed once sent, so the other ends see EOF when the daemon is
/// done with them.
pub fn call_with_fds(
    mut conn: UnixStream,
    req: &Request,
    fds: Vec<OwnedFd>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<serde_json::Value, OpError> {
    let mut line = serde_json::to_vec(&crate::protocol::Envelope::new(req.clone()))
        .map_err(|e| OpError::io(e.to_string()))?;
    line.push(b'\n');
    let sent = if fds.is_empty() {
        conn.write_all(&line)
    } else {
        send_with_fds(&conn, &line, &fds)
    };
    sent.map_err(|e| OpError::io(format!("control socket: {e}")))?;
    drop(fds);
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

/// Most descriptors one request may carry.
const MAX_FDS: usize = 4;

/// Writes `bytes` with `fds` attached to the first of them.
fn send_with_fds(conn: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other(
            "too many descriptors for one request",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header; every pointer set below points
    // into `iov`, `cbuf` or `raw`, which outlive the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is CMSG_SPACE(payload) bytes, room for one header and the
    // descriptors; CMSG_FIRSTHDR of it is therefore non-null and CMSG_DATA has `payload`
    // bytes of room.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
        std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), payload);
    }
    // SAFETY: `msg` is fully initialised above and the socket fd is open.
    let n = unsafe { libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    if n < bytes.len() {
        (&*conn).write_all(&bytes[n..])?;
    }
    Ok(())
}

/// Reads a request line and the descriptors that came with it. Clients write nothing
/// after the line, so reading in blocks cannot take bytes of anything else.
fn recv_request(conn: &UnixStream) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut cbuf = vec![0u64; (space as usize).div_ceil(8)];
    while !line.contains(&b'\n') {
        if line.len() > 1 << 20 {
            return Err(std::io::Error::other("request line too long"));
        }
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; its pointers are set to `iov` and `cbuf`,
        // which outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = (cbuf.len() * 8) as _;
        // SAFETY: `msg` describes buffers we own; MSG_CMSG_CLOEXEC marks received fds.
        let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: walking the control messages recvmsg filled in, within msg_controllen;
        // each SCM_RIGHTS payload is an array of descriptors now owned by this process.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let mut fd: RawFd = 0;
                        std::ptr::copy_nonoverlapping(
                            data.add(i * std::mem::size_of::<RawFd>()),
                            (&mut fd as *mut RawFd).cast::<u8>(),
                            std::mem::size_of::<RawFd>(),
                        );
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n as usize]);
    }
    Ok((String::from_utf8_lossy(&line).into_owned(), fds))
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
    let Ok((line, fds)) = recv_request(&conn) else {
        return;
    };
    let result = match crate::protocol::Envelope::parse(&line) {
        Ok(req) => {
            log::info!("control request: {req:?}");
            let mut w2 = match w.try_clone() {
                Ok(w2) => w2,
                Err(_) => return,
            };
            ops::execute(ctx, caller, req, fds, &mut |p| {
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
