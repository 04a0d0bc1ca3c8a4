//! The scrape endpoint of `-o metrics=ADDR`: a minimal HTTP/1.1 server, std only.
//!
//! Serves `GET /metrics` (the text the caller's `render` returns, as Prometheus text
//! format 0.0.4), `GET /` (a page linking it) and `HEAD` of both; other paths get 404 and
//! other methods 405. Every response closes the connection, so there is no keep-alive,
//! pipelining or chunked encoding to get wrong, and request bodies are never read.
//!
//! One thread accepts and serves connections in turn: a scrape every few seconds needs
//! no more. A client cannot hold it: reading the request head and writing the response
//! each have a total deadline ([`IO_TIMEOUT`]), not just a per-read timeout that a
//! byte-at-a-time client could renew forever, and the head is capped at [`MAX_HEAD`].
//! `render` runs on that thread; a panic in it becomes a 500, not a dead endpoint.
//!
//! No TLS, no authentication: the caller is expected to bind to loopback (or to what the
//! user explicitly asked for); this module binds whatever it is given.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Produces the exposition text for one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Deadline for reading a request head, and again for writing the response.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) accepted; beyond it, 431.
pub const MAX_HEAD: usize = 8 * 1024;
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>dedupfs</title></head><body>\n\
    <h1>dedupfs</h1>\n<p><a href=\"/metrics\">Metrics</a></p>\n</body></html>\n";

/// A running endpoint. Stops (and joins its thread) on [`MetricsServer::stop`] or drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, render: Render) -> io::Result<MetricsServer> {
        Self::start_with(addr, render, IO_TIMEOUT)
    }

    fn start_with(addr: SocketAddr, render: Render, timeout: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        // The bound address, so that port 0 resolves and `stop` can connect to it.
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(listener, &flag, &*render, timeout))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread, after the connection in progress if any.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // `accept` has no timeout: a connection of our own wakes it to see the flag. An
        // unspecified bind address is not connectable everywhere; loopback reaches it.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        // If the wake-up cannot connect, joining could wait forever: leave the thread
        // detached instead; it exits at the next connection it accepts.
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            // A panic of the thread was already reported by the panic hook.
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, render: &dyn Fn() -> String, t: Duration) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            // A failed connection concerns that client only: nothing to report.
            Ok(stream) => {
                let _ = handle(stream, render, t);
            }
            // Errors such as EMFILE last until something closes: do not spin on them.
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Why no request head could be read.
enum HeadError {
    TooLarge,
    TimedOut,
    Io(io::Error),
}

fn handle(mut stream: TcpStream, render: &dyn Fn() -> String, timeout: Duration) -> io::Result<()> {
    let mut buf = [0u8; MAX_HEAD];
    let response = match read_head(&mut stream, &mut buf, Instant::now() + timeout) {
        Ok(len) => respond(&buf[..len], render),
        Err(HeadError::TooLarge) => plain(431, "Request Header Fields Too Large", false),
        Err(HeadError::TimedOut) => plain(408, "Request Timeout", false),
        // The client went away or broke the connection: no one to answer.
        Err(HeadError::Io(e)) => return Err(e),
    };
    write_by(&mut stream, &response, Instant::now() + timeout)?;
    stream.shutdown(Shutdown::Write)?;
    // Closing with unread input (a request body, the rest of an oversized head) makes the
    // kernel send a reset, which can destroy the response before the client reads it. So
    // read what the client still sends, briefly and boundedly, until it closes.
    let deadline = Instant::now() + timeout.min(Duration::from_secs(1));
    let mut drained = 0;
    while drained < 1 << 20 {
        match remaining(deadline).map(|left| stream.set_read_timeout(Some(left))) {
            Some(Ok(())) => {}
            _ => break,
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Time left before `deadline`, `None` once passed (a zero timeout is an error in std).
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Reads up to the blank line ending the head; returns the head's length in `buf`.
fn read_head(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, HeadError> {
    let mut len = 0;
    loop {
        let left = remaining(deadline).ok_or(HeadError::TimedOut)?;
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        // Rescan a little before the new bytes: the terminator may straddle two reads.
        let from = len.saturating_sub(3);
        len += n;
        if let Some(end) = head_end(&buf[from..len]) {
            return Ok(from + end);
        }
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Offset of the empty line ending a head: `\r\n\r\n`, or `\n\n` from lax clients.
fn head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find(|&i| b[i..].starts_with(b"\n\r\n") || b[i..].starts_with(b"\n\n"))
}

fn respond(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let Some(line) = std::str::from_utf8(head)
        .ok()
        .and_then(|h| h.lines().next())
    else {
        return plain(400, "Bad Request", false);
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return plain(400, "Bad Request", false);
    };
    if !version.starts_with("HTTP/1.") {
        return plain(505, "HTTP Version Not Supported", false);
    }
    let head_only = method == "HEAD";
    // Scrapers may add a query string (Prometheus `params`); it selects nothing here.
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path != "/metrics" && path != "/" {
        return plain(404, "Not Found", head_only);
    }
    if method != "GET" && !head_only {
        let mut r = plain(405, "Method Not Allowed", false);
        // Insert `Allow` before the blank line ending the headers.
        let at = r
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |p| p + 2);
        r.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
        return r;
    }
    if path == "/" {
        return response(
            200,
            "OK",
            "text/html; charset=utf-8",
            INDEX.as_bytes(),
            head_only,
        );
    }
    // HEAD renders too, so that its Content-Length is the one GET would send.
    match catch_unwind(AssertUnwindSafe(render)) {
        Ok(body) => response(200, "OK", METRICS_TYPE, body.as_bytes(), head_only),
        Err(_) => plain(500, "Internal Server Error", head_only),
    }
}

fn plain(status: u16, reason: &str, head_only: bool) -> Vec<u8> {
    let body = format!("{status} {reason}\n");
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

fn response(status: u16, reason: &str, ctype: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body);
    }
    r
}

/// `write_all` with a total deadline rather than a per-write timeout.
fn write_by(stream: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = remaining(deadline).ok_or(ErrorKind::TimedOut)?;
        stream.set_write_timeout(Some(left))?;
        match stream.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:0";

    fn server(body: &'static str) -> MetricsServer {
        let addr = LOCAL.parse().expect("address");
        MetricsServer::start(addr, Arc::new(move || body.to_owned())).expect("start")
    }

    /// Sends `request` raw and returns (status, headers, body) of the answer.
    fn ask(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("receive");
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end");
        let head = String::from_utf8(raw[..end].to_vec()).expect("utf-8 head");
        let status = head[9..12].parse().expect("status");
        (status, head, raw[end + 4..].to_vec())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn get_metrics_is_200_with_body() {
        let s = server("dedupfs_up 1\n");
        let (status, head, body) = ask(s.local_addr(), b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        assert_eq!(body, b"dedupfs_up 1\n");
        assert_eq!(header(&head, "content-type"), Some(METRICS_TYPE));
        assert_eq!(header(&head, "content-length"), Some("13"));
        assert_eq!(header(&head, "connection"), Some("close"));
        // A query string, HTTP/1.0 and bare newlines are fine too.
        let (status, _, body) = ask(s.local_addr(), b"GET /metrics?x=1 HTTP/1.0\n\n");
        assert_eq!((status, body.as_slice()), (200, &b"dedupfs_up 1\n"[..]));
        s.stop();
    }

    #[test]
    fn index_links_to_metrics() {
        let s = server("");
        let (status, head, body) = ask(s.local_addr(), b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert!(header(&head, "content-type").is_some_and(|t| t.starts_with("text/html")));
        assert!(String::from_utf8_lossy(&body).contains("href=\"/metrics\""));
    }

    #[test]
    fn head_has_length_but_no_body() {
        let s = server("abc\n");
        let (status, head, body) = ask(s.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert_eq!(header(&head, "content-length"), Some("4"));
        assert!(body.is_empty());
    }

    #[test]
    fn unknown_path_404_and_method_405() {
        let s = server("x\n");
        let (status, _, _) = ask(s.local_addr(), b"GET /nope HTTP/1.1\r\n\r\n");
        assert_eq!(status, 404);
        let post = b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let (status, head, _) = ask(s.local_addr(), post);
        assert_eq!(status, 405);
        assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
        let (status, _, _) = ask(s.local_addr(), b"GARBAGE\r\n\r\n");
        assert_eq!(status, 400);
        let (status, _, _) = ask(s.local_addr(), b"GET /metrics HTTP/2.0\r\n\r\n");
        assert_eq!(status, 505);
    }

    #[test]
    fn oversized_head_is_431() {
        let s = server("x\n");
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        req.resize(req.len() + 2 * MAX_HEAD, b'a');
        req.extend_from_slice(b"\r\n\r\n");
        let (status, _, _) = ask(s.local_addr(), &req);
        assert_eq!(status, 431);
        // And the server still serves.
        assert_eq!(ask(s.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
    }

    #[test]
    fn silent_client_times_out_and_does_not_block_others() {
        let addr = LOCAL.parse().expect("address");
        let render: Render = Arc::new(|| "ok 1\n".to_owned());
        let s = MetricsServer::start_with(addr, render, Duration::from_millis(300)).expect("start");
        let mut idle = TcpStream::connect(s.local_addr()).expect("connect");
        let started = Instant::now();
        let (status, _, _) = ask(s.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut answer = String::new();
        idle.read_to_string(&mut answer).expect("408");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }

    #[test]
    fn panicking_render_is_500_and_server_survives() {
        let addr = LOCAL.parse().expect("address");
        let first = Arc::new(AtomicBool::new(true));
        let render: Render = Arc::new(move || {
            assert!(
                !first.swap(false, Ordering::SeqCst),
                "render failed (on purpose)"
            );
            "ok 1\n".to_owned()
        });
        let s = MetricsServer::start(addr, render).expect("start");
        assert_eq!(ask(s.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n").0, 500);
        assert_eq!(ask(s.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
    }

    #[test]
    fn stop_and_drop_join_and_release_the_port() {
        let s = server("x\n");
        let addr = s.local_addr();
        s.stop();
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after stop"
        );
        let addr = {
            let s = server("x\n");
            s.local_addr()
        };
        assert!(
            TcpStream::connect(addr).is_err(),
            "still listening after drop"
        );
        // An unspecified bind address is woken through loopback.
        let any =
            MetricsServer::start("0.0.0.0:0".parse().expect("address"), Arc::new(String::new));
        let any = any.expect("start");
        let port = any.local_addr().port();
        any.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
