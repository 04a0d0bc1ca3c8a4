//! Reading chunks back: index entry → pack record → checked bytes, through the cache.
//! A framed chunk is read by decompressing its frame; every member of the frame is checked
//! against its hash and cached, so a sequential restore decompresses each frame once.

use super::compression::{decode_frame, decompress};
use super::{ChunkData, ChunkError, ChunkStore};
use crate::ids::ChunkId;
use crate::pack::{PackError, RecordLoc};
use crate::records::{ChunkRec, COMPRESSION_FRAME, COMPRESSION_NONE, COMPRESSION_ZSTD};
use std::sync::Arc;

impl ChunkStore {
    /// The content of a chunk.
    pub fn read(&self, id: ChunkId) -> Result<ChunkData, ChunkError> {
        if let Some(d) = self.cache.get(id) {
            return Ok(d);
        }
        let rec = self
            .lookup(id)?
            .ok_or(ChunkError::NotIndexed { chunk: id })?;
        match self.read_rec(id, &rec) {
            // GC may have moved the chunk (and, after its grace period, deleted the old
            // pack) between our lookup and our read: look again once.
            Err(e @ ChunkError::Damaged { .. }) => match self.lookup(id)? {
                Some(now) if (now.pack, now.offset) != (rec.pack, rec.offset) => {
                    self.read_rec(id, &now)
                }
                _ => Err(e),
            },
            r => r,
        }
    }

    /// Reads and checks one chunk from the index entry given (for scrub and GC copies).
    pub fn read_indexed(&self, id: ChunkId, rec: &ChunkRec) -> Result<ChunkData, ChunkError> {
        self.read_rec(id, rec)
    }

    pub(super) fn read_rec(&self, id: ChunkId, rec: &ChunkRec) -> Result<ChunkData, ChunkError> {
        if let Some(d) = self.cache.get(id) {
            return Ok(d);
        }
        let damaged = |reason: String| ChunkError::Damaged {
            chunk: id,
            pack: rec.pack,
            offset: rec.offset,
            reason,
        };
        let r = self
            .reader
            .read(
                RecordLoc {
                    pack: rec.pack,
                    offset: rec.offset,
                },
                rec.stored_len,
            )
            .map_err(|e| match e {
                PackError::Missing { .. } | PackError::Corrupt { .. } => damaged(e.to_string()),
                other => ChunkError::Pack(other),
            })?;
        // The content hash is the check; the record checksum only sharpens the message
        // when something is wrong.
        let explain = |r: &crate::pack::Record, what: String| match r.verify() {
            Err(e) => damaged(e.to_string()),
            Ok(()) => damaged(what),
        };
        if (r.encoding == COMPRESSION_FRAME) != (rec.compression == COMPRESSION_FRAME) {
            return Err(damaged(format!(
                "record encoding {}, index says {}",
                r.encoding, rec.compression
            )));
        }
        if let Some(slot) = rec.frame {
            return self.read_framed(id, rec, slot.at, &r, explain);
        }
        if r.chunk != id {
            return Err(damaged(format!("record holds chunk {}", r.chunk)));
        }
        let raw = match r.encoding {
            COMPRESSION_NONE => {
                if r.stored.len() != rec.raw_len as usize || self.hasher.id(&r.stored) != id {
                    return Err(explain(&r, "content does not match its hash".into()));
                }
                r.stored
            }
            COMPRESSION_ZSTD => {
                let raw = decompress(&r.stored, rec.raw_len as usize)
                    .map_err(|e| explain(&r, format!("zstd: {e}")))?;
                if raw.len() != rec.raw_len as usize {
                    return Err(explain(
                        &r,
                        format!("decoded {} bytes, expected {}", raw.len(), rec.raw_len),
                    ));
                }
                if self.hasher.id(&raw) != id {
                    return Err(explain(&r, "content does not match its hash".into()));
                }
                raw
            }
            other => return Err(damaged(format!("unknown encoding {other}"))),
        };
        let data: ChunkData = Arc::new(raw);
        self.cache.insert(id, data.clone());
        Ok(data)
    }

    /// A framed chunk: decompresses the frame, checks and returns the chunk, and caches
    /// the other members too (each checked against its hash first), since a restore reads
    /// them next.
    fn read_framed(
        &self,
        id: ChunkId,
        rec: &ChunkRec,
        at: u32,
        r: &crate::pack::Record,
        explain: impl Fn(&crate::pack::Record, String) -> ChunkError,
    ) -> Result<ChunkData, ChunkError> {
        let frame = decode_frame(&r.stored, r.raw_len).map_err(|e| explain(r, e))?;
        let mut mine = None;
        for &(mid, mat, len) in &frame.members {
            let bytes = &frame.data[mat as usize..(mat + len) as usize];
            if mid == id && mat == at {
                if len != rec.raw_len || self.hasher.id(bytes) != id {
                    return Err(explain(r, "content does not match its hash".into()));
                }
                mine = Some(Arc::new(bytes.to_vec()));
            } else if !self.cache.contains(mid) && self.hasher.id(bytes) == mid {
                self.cache.insert(mid, Arc::new(bytes.to_vec()));
            }
        }
        let data: ChunkData =
            mine.ok_or_else(|| explain(r, format!("not in its frame's directory at offset {at}")))?;
        self.cache.insert(id, data.clone());
        Ok(data)
    }
}
