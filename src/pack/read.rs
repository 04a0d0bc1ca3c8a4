//! Reading records back: from the local pack file when there is one, otherwise from the
//! remote pack store through the byte-range cache ([`super::cache`]).
//!
//! Invariant: every read checks the record header (magic, lengths) against what the index
//! says; a mismatch is [`PackError::Corrupt`] naming the pack and offset, never data.

use super::tier::RemoteTier;
use super::*;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;

enum Source<'a> {
    Local(Arc<File>),
    Remote(&'a Arc<RemoteTier>),
}

/// Reads and verifies records, caching open pack handles.
pub struct PackReader {
    dir: PathBuf,
    /// Open pack handles. Protects: the map (reads use the `Arc`s after releasing it).
    /// Lock order: a leaf.
    files: Mutex<HashMap<PackId, Arc<File>>>,
    /// Where uploaded packs are read from (stores with packs in object storage).
    tier: std::sync::OnceLock<Arc<RemoteTier>>,
}

impl PackReader {
    pub fn new(dir: &Path) -> PackReader {
        PackReader {
            dir: dir.to_path_buf(),
            files: Mutex::new(HashMap::new()),
            tier: std::sync::OnceLock::new(),
        }
    }

    /// Reads uploaded packs through `tier` from now on.
    pub fn set_tier(&self, tier: Arc<RemoteTier>) {
        let _ = self.tier.set(tier);
    }

    /// The tier, if `id` is read from it (uploaded). A local handle kept from before the
    /// upload is dropped, so the cache's eviction really frees the file's space.
    fn remote_for(&self, id: PackId) -> Option<&Arc<RemoteTier>> {
        let t = self.tier.get()?;
        if t.is_uploaded(id) {
            self.files.lock().remove(&id);
            Some(t)
        } else {
            None
        }
    }

    /// Where to read pack `id`: the tier if it was uploaded, else the local file. A local
    /// file that vanished because its upload finished meanwhile (the uploader records the
    /// upload before it moves the file) is read from the tier.
    fn source(&self, id: PackId) -> Result<Source<'_>, PackError> {
        if let Some(t) = self.remote_for(id) {
            return Ok(Source::Remote(t));
        }
        match self.file(id) {
            Ok(f) => Ok(Source::Local(f)),
            Err(PackError::Missing { .. }) if self.remote_for(id).is_some() => self
                .remote_for(id)
                .map(Source::Remote)
                .ok_or(PackError::Missing {
                    pack: id,
                    path: pack_path(&self.dir, id),
                }),
            Err(e) => Err(e),
        }
    }

    fn file(&self, id: PackId) -> Result<Arc<File>, PackError> {
        if let Some(f) = self.files.lock().get(&id) {
            return Ok(f.clone());
        }
        let path = pack_path(&self.dir, id);
        let f = match File::open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PackError::Missing { pack: id, path })
            }
            Err(e) => return Err(PackError::io(id, 0, e)),
        };
        let mut files = self.files.lock();
        if files.len() >= MAX_OPEN_PACKS {
            files.clear();
        }
        files.insert(id, f.clone());
        Ok(f)
    }

    /// Forgets a cached handle (after a pack is deleted or rewritten).
    pub fn forget(&self, id: PackId) {
        self.files.lock().remove(&id);
    }

    /// Reads the record at `loc`, whose payload is `stored_len` bytes, and checks its header
    /// (magic and lengths). The payload checksum is left to [`Record::verify`]: the chunk
    /// store verifies the decoded content itself, which is stronger.
    pub fn read(&self, loc: RecordLoc, stored_len: u32) -> Result<Record, PackError> {
        let f = match self.source(loc.pack)? {
            Source::Local(f) => f,
            Source::Remote(t) => return Self::read_remote(t, loc, stored_len),
        };
        self.read_local(&f, loc, stored_len)
    }

    fn read_remote(t: &RemoteTier, loc: RecordLoc, stored_len: u32) -> Result<Record, PackError> {
        let want = RECORD_HEADER_LEN as usize + stored_len as usize;
        let mut bytes = t.read(loc.pack, loc.offset, want as u64)?;
        if bytes.len() < want {
            return Err(truncated(loc, bytes.len(), want));
        }
        let header: Vec<u8> = bytes.drain(..RECORD_HEADER_LEN as usize).collect();
        record_from(&header, bytes, loc, stored_len)
    }

    fn read_local(&self, f: &File, loc: RecordLoc, stored_len: u32) -> Result<Record, PackError> {
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        let mut payload: Vec<u8> = Vec::with_capacity(stored_len as usize);
        let want = header.len() + stored_len as usize;
        let got = read_record_at(
            f,
            loc.offset,
            &mut header,
            &mut payload,
            stored_len as usize,
        )
        .map_err(|e| PackError::io(loc.pack, loc.offset, e))?;
        if got < want {
            return Err(truncated(loc, got, want));
        }
        record_from(&header, payload, loc, stored_len)
    }
}

fn truncated(loc: RecordLoc, got: usize, want: usize) -> PackError {
    PackError::Corrupt {
        pack: loc.pack,
        offset: loc.offset,
        reason: format!("record truncated: {got} of {want} bytes present"),
    }
}

/// A record from its header and payload, checked against the index's payload length.
fn record_from(
    header: &[u8],
    payload: Vec<u8>,
    loc: RecordLoc,
    stored_len: u32,
) -> Result<Record, PackError> {
    let h = parse_header(header, loc)?;
    if h.stored_len != stored_len {
        return Err(PackError::Corrupt {
            pack: loc.pack,
            offset: loc.offset,
            reason: format!(
                "record holds {} bytes, index says {}",
                h.stored_len, stored_len
            ),
        });
    }
    Ok(Record {
        chunk: h.chunk,
        encoding: h.encoding,
        raw_len: h.raw_len,
        stored: payload,
        sum: h.sum,
        loc,
    })
}

impl PackReader {
    /// Checks that the record at `loc` is present, whole, and names `chunk` (unless `None`:
    /// a frame's header names its first member only) with `stored_len` payload bytes,
    /// reading only its header (fsck without scrub).
    pub fn check_header(
        &self,
        loc: RecordLoc,
        chunk: Option<ChunkId>,
        stored_len: u32,
    ) -> Result<(), PackError> {
        let (local, remote) = match self.source(loc.pack)? {
            Source::Local(f) => (Some(f), None),
            Source::Remote(t) => (None, Some(t)),
        };
        let size = match (&local, remote) {
            (Some(f), _) => f
                .metadata()
                .map_err(|e| PackError::io(loc.pack, 0, e))?
                .len(),
            (None, Some(t)) => t.uploaded_size(loc.pack).unwrap_or(0),
            (None, None) => 0,
        };
        let corrupt = |reason: String| PackError::Corrupt {
            pack: loc.pack,
            offset: loc.offset,
            reason,
        };
        let end = loc.offset + RECORD_HEADER_LEN + stored_len as u64;
        if end > size {
            return Err(corrupt(format!(
                "record ends at {end}, past the end of the pack ({size} bytes)"
            )));
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        match (&local, remote) {
            (Some(f), _) => f
                .read_exact_at(&mut header, loc.offset)
                .map_err(|e| PackError::io(loc.pack, loc.offset, e))?,
            (None, Some(t)) => {
                let b = t.read(loc.pack, loc.offset, RECORD_HEADER_LEN)?;
                if b.len() != header.len() {
                    return Err(corrupt("record header cut short".into()));
                }
                header.copy_from_slice(&b);
            }
            (None, None) => return Err(corrupt("pack not found".into())),
        }
        let h = parse_header(&header, loc)?;
        if chunk.is_some_and(|c| c != h.chunk) {
            return Err(corrupt(format!("record holds chunk {}", h.chunk)));
        }
        if h.stored_len != stored_len {
            return Err(corrupt(format!(
                "record holds {} bytes, index says {stored_len}",
                h.stored_len
            )));
        }
        Ok(())
    }
}

/// Reads a record's header and `n` payload bytes with one `preadv` (retrying short reads);
/// returns how many bytes were read in all.
fn read_record_at(
    f: &File,
    off: u64,
    header: &mut [u8; RECORD_HEADER_LEN as usize],
    payload: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = payload.spare_capacity_mut();
    let iov = [
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: n.min(spare.len()),
        },
    ];
    let got = loop {
        // SAFETY: both iovecs point at writable memory we own for their full length (the
        // payload's spare capacity is at least n bytes); the kernel writes at most that much.
        let r = unsafe { libc::preadv(f.as_raw_fd(), iov.as_ptr(), 2, off as libc::off_t) };
        if r >= 0 {
            break r as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut in_payload = got.saturating_sub(header.len());
    // SAFETY: the kernel initialised the first `in_payload` bytes of the spare capacity.
    unsafe { payload.set_len(in_payload) };
    if got < header.len() {
        return Ok(got);
    }
    // A short read (rare: signals, page-cache pressure) continues with plain reads.
    while in_payload < n {
        let mut more = vec![0u8; n - in_payload];
        let k = f.read_at(&mut more, off + (header.len() + in_payload) as u64)?;
        if k == 0 {
            break;
        }
        payload.extend_from_slice(&more[..k]);
        in_payload += k;
    }
    Ok(header.len() + in_payload)
}
