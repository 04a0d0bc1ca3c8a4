//! Storing the chunks of a write: [`ChunkStore::prepare`] and the `pending` protocol that
//! lets concurrent writers of the same content store it once.
//!
//! A writer looks each chunk up (index, then `pending`), compresses the new ones in runs
//! (frames of consecutive compressible chunks, or one record each), then, run by run,
//! *claims* the members nobody holds — an entry in `pending` in state `Storing` — appends
//! what it claimed, flushes the pack buffer, and only then publishes the locations
//! (`Stored`) and wakes the writers waiting for them. Members another writer holds are
//! joined instead (a frame whose members are all held elsewhere is not written at all);
//! a writer that joined a `Storing` entry waits for it to be published before it returns,
//! so its commit always finds the location.
//!
//! Invariants:
//! - One copy per chunk: between the lookup and the append, a chunk that another writer
//!   claimed, stored or committed in the meantime is joined, never appended again (a
//!   writer claims first and looks the claimed chunks up in the index second; a writer
//!   drops its hold only after its commit indexed the chunk). Only the members of a frame
//!   that another writer claimed while this one compressed are written twice, as garbage
//!   inside this writer's frame.
//! - A location is published only after the pack buffer holding it was written, so no
//!   commit can name a record that is not in the pack file; and it is published before
//!   the writer lets go of the GC gate, so GC never finds a record of it that is neither
//!   indexed nor pending (and takes it for garbage).
//! - A claimed entry that its writer could not store becomes `Failed`; those who joined it
//!   fail their write too (their data stays buffered and is retried), never commit a
//!   reference to nothing.
//! - No cycle of waits: a writer waits only at the end of `prepare`, after publishing (or
//!   failing) everything it claimed, holding only its file's flush lock (publishing a
//!   claim never needs another file's).

use super::compression::{self, compress, encode_frame, Compression};
use super::pending::PendingClaim;
use super::{parallel_map, ChunkError, ChunkStore, Stored};
use crate::ids::ChunkId;
use crate::pack::RECORD_HEADER_LEN;
use crate::records::{FrameSlot, COMPRESSION_FRAME, COMPRESSION_NONE, COMPRESSION_ZSTD};

/// A chunk handed to [`ChunkStore::prepare`]: identity, content, and the chunk that follows
/// it in the data being written (remembered as its successor if the chunk is new).
#[derive(Clone, Copy, Debug)]
pub struct NewChunk<'a> {
    pub id: ChunkId,
    pub data: &'a [u8],
    pub next: Option<(ChunkId, u32)>,
}

/// How `prepare` stores a run of new chunks: one record each, or one frame for all.
enum Encoded {
    /// Per chunk: its encoding and compressed bytes (`None`: stored raw).
    Singles(Vec<(u8, Option<Vec<u8>>)>),
    /// The payload of one frame holding every chunk of the run.
    Frame(Vec<u8>),
}

/// Splits the chunks to store (in the order they are written) into runs: consecutive
/// compressible chunks are framed together up to [`compression::FRAME_TARGET`] bytes;
/// a chunk that looks incompressible is a run of its own (stored raw).
fn runs(chunks: &[NewChunk<'_>], compression: Compression) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    if matches!(compression, Compression::Off | Compression::ZstdChunk(_)) {
        return (0..chunks.len()).map(|i| i..i + 1).collect();
    }
    let (mut start, mut bytes) = (0, 0usize);
    for (i, c) in chunks.iter().enumerate() {
        if compression::looks_incompressible(c.data) {
            if start < i {
                out.push(start..i);
            }
            out.push(i..i + 1);
            (start, bytes) = (i + 1, 0);
            continue;
        }
        bytes += c.data.len();
        if bytes >= compression::FRAME_TARGET || i + 1 - start >= compression::FRAME_MAX_MEMBERS {
            out.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < chunks.len() {
        out.push(start..chunks.len());
    }
    out
}

fn encode_run(run: &[NewChunk<'_>], compression: Compression) -> Encoded {
    let level = match compression {
        Compression::Off => return Encoded::Singles(vec![(COMPRESSION_NONE, None); run.len()]),
        Compression::Zstd(l) | Compression::ZstdChunk(l) => l,
    };
    if run.len() > 1 {
        let members: Vec<(ChunkId, &[u8])> = run.iter().map(|c| (c.id, c.data)).collect();
        return match encode_frame(&members, level) {
            Some(p) => Encoded::Frame(p),
            None => Encoded::Singles(vec![(COMPRESSION_NONE, None); run.len()]),
        };
    }
    Encoded::Singles(
        run.iter()
            .map(|c| match compress(c.data, level) {
                Some(z) => (COMPRESSION_ZSTD, Some(z)),
                None => (COMPRESSION_NONE, None),
            })
            .collect(),
    )
}

impl ChunkStore {
    /// Makes every chunk of `chunks` (id and content) present in a pack, storing those the
    /// store does not hold yet. The returned claim must be released with [`Self::release`]
    /// after the commit that references them (whether it succeeded or not).
    pub fn prepare(
        &self,
        chunks: &[NewChunk<'_>],
        compression: Compression,
        threads: usize,
    ) -> Result<PendingClaim, ChunkError> {
        // Before the GC gate: a writer held up by the upload backlog must not stall GC,
        // nor (behind GC's queued exclusive request) every other writer.
        self.writer.wait_backlog()?;
        let mut claim = PendingClaim::default();
        let mut to_store: Vec<NewChunk<'_>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let looked_up = (|| {
            let _gate = self.gc_gate.read();
            for &NewChunk { id, data, next } in chunks {
                if !seen.insert(id) || self.pending.join(id, &mut claim) {
                    continue;
                }
                if let Some(rec) = self.lookup(id)? {
                    self.verify_match(id, &rec, data)?;
                    self.pending.hold_indexed(id, &mut claim);
                    continue;
                }
                to_store.push(NewChunk { id, data, next });
            }
            Ok(())
        })();
        if let Err(e) = looked_up {
            self.release(claim);
            return Err(e);
        }
        let all_bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        // Raw bytes of the chunks this call stored itself.
        let mut new_bytes = 0usize;
        let runs = runs(&to_store, compression);
        let encoded: Vec<Encoded> = parallel_map(&runs, threads, |r| {
            encode_run(&to_store[r.clone()], compression)
        });
        // What this writer claimed (`Storing`), and what it stored, to publish.
        let mut owned: Vec<ChunkId> = Vec::new();
        let mut fills: Vec<(ChunkId, Stored)> = Vec::new();
        // Held from the first claim of a run to the publication of what this writer
        // stored: GC, which takes the gate exclusively, never sees a record appended here
        // that is neither indexed nor published in `pending` (it would be garbage to it).
        let gate = self.gc_gate.read();
        let stored = (|| {
            for (run, enc) in runs.iter().zip(encoded) {
                let run = &to_store[run.clone()];
                let mine = self.claim_run(run, &mut claim)?;
                owned.extend(run.iter().zip(&mine).filter(|x| *x.1).map(|x| x.0.id));
                if !mine.iter().any(|m| *m) {
                    continue;
                }
                match enc {
                    Encoded::Singles(list) => {
                        for ((c, (encoding, comp)), m) in run.iter().zip(list).zip(&mine) {
                            if !m {
                                continue;
                            }
                            let bytes: &[u8] = comp.as_deref().unwrap_or(c.data);
                            let (loc, _) =
                                self.writer
                                    .append(c.id, encoding, c.data.len() as u32, bytes)?;
                            new_bytes += c.data.len();
                            fills.push((
                                c.id,
                                Stored {
                                    loc,
                                    stored_len: bytes.len() as u32,
                                    raw_len: c.data.len() as u32,
                                    encoding,
                                    next: c.next,
                                    frame: None,
                                },
                            ));
                        }
                    }
                    Encoded::Frame(payload) => {
                        let raw: u32 = run.iter().map(|c| c.data.len() as u32).sum();
                        let (loc, _) =
                            self.writer
                                .append(run[0].id, COMPRESSION_FRAME, raw, &payload)?;
                        let raws: Vec<u32> = run.iter().map(|c| c.data.len() as u32).collect();
                        let shares = compression::frame_shares(
                            RECORD_HEADER_LEN + payload.len() as u64,
                            &raws,
                        );
                        let mut at = 0u32;
                        for ((c, share), m) in run.iter().zip(shares).zip(&mine) {
                            let slot = FrameSlot { at, share };
                            at += c.data.len() as u32;
                            // Held by another writer since we compressed it: that copy is
                            // the one indexed, ours is garbage inside the frame (GC drops it
                            // when it rewrites the frame).
                            if !m {
                                continue;
                            }
                            new_bytes += c.data.len();
                            fills.push((
                                c.id,
                                Stored {
                                    loc,
                                    stored_len: payload.len() as u32,
                                    raw_len: c.data.len() as u32,
                                    encoding: COMPRESSION_FRAME,
                                    next: c.next,
                                    frame: Some(slot),
                                },
                            ));
                        }
                    }
                }
            }
            // Published only once the records are in the pack file (see the module doc).
            self.writer.flush()?;
            Ok(())
        })();
        match &stored {
            Ok(()) => self.pending.finish(&fills, &[]),
            Err(_) => self.pending.finish(&[], &owned),
        }
        drop(gate);
        let waited = stored.and_then(|()| {
            self.pending
                .wait_published(&claim)
                .map_err(|chunk| ChunkError::StoredElsewhereFailed { chunk })
        });
        if let Err(e) = waited {
            self.release(claim);
            return Err(e);
        }
        crate::metrics::INGEST_NEW_CHUNK_BYTES.add(new_bytes as u64);
        crate::metrics::INGEST_DEDUP_BYTES.add((all_bytes - new_bytes) as u64);
        Ok(claim)
    }

    /// With `verify_dedup`, compares a chunk found in the index with the bytes written.
    fn verify_match(
        &self,
        id: ChunkId,
        rec: &crate::records::ChunkRec,
        data: &[u8],
    ) -> Result<(), ChunkError> {
        if !self.verify_dedup {
            return Ok(());
        }
        match self.read_rec(id, rec) {
            Ok(d) if d.as_ref() == data => Ok(()),
            Ok(_) => Err(ChunkError::Collision { chunk: id }),
            Err(e) => Err(e),
        }
    }

    /// Claims the members of a run that nobody holds, then drops from the claim those the
    /// index has (a writer may have committed them since our lookup); joins the others.
    /// Returns, per member, whether this writer is to store it.
    fn claim_run(
        &self,
        run: &[NewChunk<'_>],
        claim: &mut PendingClaim,
    ) -> Result<Vec<bool>, ChunkError> {
        let ids: Vec<ChunkId> = run.iter().map(|c| c.id).collect();
        let data: std::collections::HashMap<ChunkId, &[u8]> =
            run.iter().map(|c| (c.id, c.data)).collect();
        self.pending
            .claim_unindexed(&ids, claim, |id| match self.lookup(id)? {
                Some(rec) => {
                    self.verify_match(id, &rec, data.get(&id).copied().unwrap_or_default())?;
                    Ok(true)
                }
                None => Ok(false),
            })
    }

    /// Holds chunks the caller found by identity alone (a replication receive names chunks
    /// the store already has without sending their bytes): each one indexed or pending is
    /// held against GC until the claim is released after the commit that references it.
    /// Returns, per id, whether it is held (`false`: the store does not have it).
    pub fn hold_existing(&self, ids: &[ChunkId]) -> Result<(PendingClaim, Vec<bool>), ChunkError> {
        let mut claim = PendingClaim::default();
        let mut held = Vec::with_capacity(ids.len());
        let _gate = self.gc_gate.read();
        for &id in ids {
            if self.pending.join(id, &mut claim) {
                held.push(true);
                continue;
            }
            match self.lookup(id) {
                Ok(Some(_)) => {
                    self.pending.hold_indexed(id, &mut claim);
                    held.push(true);
                }
                Ok(None) => held.push(false),
                Err(e) => {
                    self.pending.release(claim);
                    return Err(e);
                }
            }
        }
        Ok((claim, held))
    }

    /// Drops a writer's hold on pending chunks.
    pub fn release(&self, claim: PendingClaim) {
        self.pending.release(claim);
    }
}
