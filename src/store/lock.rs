//! The store lock: one process at a time opens a store for writing.
//!
//! Owns `STORE/lock`, an `flock`ed file whose content names the holder (pid and what it is
//! doing) so that a refused opener can say who holds the store. The lock dies with its
//! process, so a killed daemon never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

pub const LOCK_FILE: &str = "lock";

pub struct StoreLock {
    file: File,
}

/// Why the lock was not taken.
pub enum LockFailure {
    Held { holder: String },
    Io(std::io::Error),
}

impl StoreLock {
    /// Takes the lock, waiting up to `wait` for a holder to let go.
    pub fn acquire(store: &Path, purpose: &str, wait: Duration) -> Result<StoreLock, LockFailure> {
        let path = store.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LockFailure::Io)?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockFailure::Io(err));
            }
            if Instant::now() >= deadline {
                let mut holder = String::new();
                let _ = file.seek(SeekFrom::Start(0));
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                return Err(LockFailure::Held {
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder
                    },
                });
            }
            // Polling the lock of a process we cannot be notified by.
            std::thread::sleep(Duration::from_millis(50));
        }
        let note = format!("pid {} ({})\n", std::process::id(), purpose);
        file.set_len(0).map_err(LockFailure::Io)?;
        file.seek(SeekFrom::Start(0)).map_err(LockFailure::Io)?;
        file.write_all(note.as_bytes()).map_err(LockFailure::Io)?;
        Ok(StoreLock { file })
    }

    /// Rewrites the holder note (for example once the mount point is known).
    pub fn describe(&mut self, purpose: &str) {
        let note = format!("pid {} ({})\n", std::process::id(), purpose);
        let _ = self.file.set_len(0);
        let _ = self.file.seek(SeekFrom::Start(0));
        let _ = self.file.write_all(note.as_bytes());
    }
}

/// Reads who holds the lock right now, if anyone (without taking it).
pub fn holder(store: &Path) -> Option<String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.join(LOCK_FILE))
        .ok()?;
    // SAFETY: as above.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        // SAFETY: as above; we release the probe lock immediately.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    let mut s = String::new();
    let mut f = file;
    let _ = f.read_to_string(&mut s);
    Some(s.trim().to_string())
}
