//! The chunk index operations of garbage collection and fsck: the GC gate, dropping dead
//! entries, pointing moved chunks at their copies, and paging through the index.

use super::compression::{compress, decode_frame, encode_frame, frame_directory, frame_shares};
use super::{stat_sub, ChunkError, ChunkStore};
use crate::commit::Commit;
use crate::ids::{ChunkId, ContainerId, PackId};
use crate::keys;
use crate::kv::Cf;
use crate::pack::{RecordLoc, RECORD_HEADER_LEN};
use crate::records::{ChunkRec, FrameSlot, COMPRESSION_FRAME, COMPRESSION_NONE, COMPRESSION_ZSTD};
use parking_lot::RwLockWriteGuard;

/// Where garbage collection put a chunk's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub loc: RecordLoc,
    pub stored_len: u32,
    pub compression: u8,
    pub frame: Option<FrameSlot>,
}

/// A chunk, where its index entry pointed, and where its copy is.
pub type Move = (ChunkId, RecordLoc, Placement);

impl ChunkStore {
    /// Shuts writers out of chunk lookups and stores while GC changes the index; hold it
    /// across the commit of the change (lock order: this gate, then the commit lock).
    pub fn gc_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_gate.write()
    }

    /// Whether a writer holds `id` until its commit (call with the GC gate held).
    pub fn is_held(&self, id: ChunkId) -> bool {
        self.pending.state(id).is_some()
    }

    /// Packs holding chunks stored by writers that have not committed them yet (call with
    /// the GC gate held): GC must leave them alone.
    pub fn packs_with_pending(&self) -> std::collections::HashSet<PackId> {
        self.pending
            .stored_all()
            .into_iter()
            .map(|s| s.loc.pack)
            .collect()
    }

    /// Inside a commit, with the GC gate held: drops the index entries of chunks nothing
    /// references and no writer holds. Returns how many and their pack bytes.
    pub fn forget_dead(
        &self,
        c: &mut Commit<'_>,
        ids: &[ChunkId],
    ) -> Result<(u64, u64), ChunkError> {
        let (txn, store) = c.txn_and_store();
        let (mut n, mut bytes) = (0, 0);
        for &id in ids {
            if self.is_held(id) {
                continue;
            }
            let key = keys::chunk(id);
            let Some(v) = txn.get(Cf::Chunks, &key)? else {
                continue;
            };
            let rec = ChunkRec::decode(&v).map_err(|e| ChunkError::BadIndex {
                chunk: id,
                reason: e.to_string(),
            })?;
            if rec.refs != 0 {
                continue;
            }
            let stored = rec.disk_bytes();
            stat_sub(&mut store.chunks, 1, "chunk count");
            stat_sub(&mut store.raw_bytes, rec.raw_len as u64, "unique bytes");
            stat_sub(&mut store.stored_bytes, stored, "stored bytes");
            stat_sub(&mut store.dead_chunks, 1, "dead chunk count");
            stat_sub(&mut store.dead_stored_bytes, stored, "dead stored bytes");
            txn.delete(Cf::Chunks, key);
            self.cache.remove(id);
            n += 1;
            bytes += stored;
        }
        Ok((n, bytes))
    }

    /// Copies the records of `live` — index entries of one pack, as read under the GC gate
    /// — to the current pack, for garbage collection: a chunk's own record byte for byte; a
    /// frame whole when all its members are in `live`, else re-framed with only those
    /// members (compressed at `level`), so the bytes of dead members do not travel. Every
    /// record is checked before it is copied; the first damaged one (or a full disk) stops
    /// the copy with its error, and what was copied is garbage. Returns the moves (for
    /// [`Self::relocate`]) and the bytes written.
    pub fn copy_out(
        &self,
        live: &[(ChunkId, ChunkRec)],
        level: i32,
    ) -> Result<(Vec<Move>, u64), ChunkError> {
        let mut list: Vec<&(ChunkId, ChunkRec)> = live.iter().collect();
        list.sort_by_key(|(_, r)| (r.offset, r.frame.map(|f| f.at)));
        let mut moves = Vec::with_capacity(list.len());
        let mut written = 0u64;
        let mut i = 0;
        while i < list.len() {
            let rec = list[i].1;
            let n = list[i..]
                .iter()
                .take_while(|(_, r)| r.offset == rec.offset)
                .count();
            let group = &list[i..i + n];
            i += n;
            let old = RecordLoc {
                pack: rec.pack,
                offset: rec.offset,
            };
            let damaged = |id: ChunkId, reason: String| ChunkError::Damaged {
                chunk: id,
                pack: old.pack,
                offset: old.offset,
                reason,
            };
            let record = self.reader.read(old, rec.stored_len)?;
            record.verify()?;
            if rec.frame.is_none() {
                let id = group[0].0;
                if record.chunk != id || n != 1 {
                    return Err(damaged(id, format!("record holds chunk {}", record.chunk)));
                }
                let (loc, _) =
                    self.writer
                        .append(id, record.encoding, record.raw_len, &record.stored)?;
                written += RECORD_HEADER_LEN + record.stored.len() as u64;
                moves.push((
                    id,
                    old,
                    Placement {
                        loc,
                        stored_len: rec.stored_len,
                        compression: rec.compression,
                        frame: None,
                    },
                ));
                continue;
            }
            if record.encoding != COMPRESSION_FRAME {
                return Err(damaged(
                    group[0].0,
                    format!("record encoding {} is not a frame", record.encoding),
                ));
            }
            let (members, _) = frame_directory(&record.stored, record.raw_len)
                .map_err(|e| damaged(group[0].0, e))?;
            let whole = members.len() == n
                && members
                    .iter()
                    .zip(group)
                    .all(|((mid, at, _), (id, r))| mid == id && r.frame.map(|f| f.at) == Some(*at));
            if whole {
                let (loc, _) = self.writer.append(
                    record.chunk,
                    COMPRESSION_FRAME,
                    record.raw_len,
                    &record.stored,
                )?;
                written += RECORD_HEADER_LEN + record.stored.len() as u64;
                for (id, r) in group {
                    moves.push((
                        *id,
                        old,
                        Placement {
                            loc,
                            stored_len: r.stored_len,
                            compression: COMPRESSION_FRAME,
                            frame: r.frame,
                        },
                    ));
                }
                continue;
            }
            // Some members are dead: decompress, check the live ones, store only them.
            let frame =
                decode_frame(&record.stored, record.raw_len).map_err(|e| damaged(group[0].0, e))?;
            let mut keep: Vec<(ChunkId, &[u8])> = Vec::with_capacity(n);
            for (id, r) in group {
                let at = r.frame.map(|f| f.at).unwrap_or(u32::MAX);
                let Some(&(_, _, len)) = frame.members.iter().find(|(m, a, _)| m == id && *a == at)
                else {
                    return Err(damaged(
                        *id,
                        format!("not in its frame's directory at offset {at}"),
                    ));
                };
                let bytes = &frame.data[at as usize..(at + len) as usize];
                if len != r.raw_len || self.hasher.id(bytes) != *id {
                    return Err(damaged(*id, "content does not match its hash".into()));
                }
                keep.push((*id, bytes));
            }
            let framed = if keep.len() > 1 {
                encode_frame(&keep, level)
            } else {
                None
            };
            match framed {
                Some(payload) => {
                    let raw: u32 = keep.iter().map(|(_, d)| d.len() as u32).sum();
                    let (loc, _) =
                        self.writer
                            .append(keep[0].0, COMPRESSION_FRAME, raw, &payload)?;
                    let total = RECORD_HEADER_LEN + payload.len() as u64;
                    written += total;
                    let raws: Vec<u32> = keep.iter().map(|(_, d)| d.len() as u32).collect();
                    let mut at = 0u32;
                    for ((id, d), share) in keep.iter().zip(frame_shares(total, &raws)) {
                        moves.push((
                            *id,
                            old,
                            Placement {
                                loc,
                                stored_len: payload.len() as u32,
                                compression: COMPRESSION_FRAME,
                                frame: Some(FrameSlot { at, share }),
                            },
                        ));
                        at += d.len() as u32;
                    }
                }
                None => {
                    for (id, d) in keep {
                        let (enc, z) = match compress(d, level) {
                            Some(z) => (COMPRESSION_ZSTD, Some(z)),
                            None => (COMPRESSION_NONE, None),
                        };
                        let stored: &[u8] = z.as_deref().unwrap_or(d);
                        let (loc, _) = self.writer.append(id, enc, d.len() as u32, stored)?;
                        written += RECORD_HEADER_LEN + stored.len() as u64;
                        moves.push((
                            id,
                            old,
                            Placement {
                                loc,
                                stored_len: stored.len() as u32,
                                compression: enc,
                                frame: None,
                            },
                        ));
                    }
                }
            }
        }
        Ok((moves, written))
    }

    /// Inside a commit, with the GC gate held: points chunks at their copies, for those
    /// whose entry still names the old location. A re-framed chunk's share of the pack
    /// changes: the store's counters and those of the `containers` that reference it
    /// follow. Returns how many moved.
    pub fn relocate(
        &self,
        c: &mut Commit<'_>,
        moves: &[Move],
        containers: &[ContainerId],
    ) -> Result<u64, ChunkError> {
        let mut n = 0;
        for &(id, old, new) in moves {
            let key = keys::chunk(id);
            let Some(v) = c.txn.get(Cf::Chunks, &key)? else {
                continue;
            };
            let rec = ChunkRec::decode(&v).map_err(|e| ChunkError::BadIndex {
                chunk: id,
                reason: e.to_string(),
            })?;
            if (rec.pack, rec.offset) != (old.pack, old.offset) {
                continue;
            }
            let moved = ChunkRec {
                pack: new.loc.pack,
                offset: new.loc.offset,
                stored_len: new.stored_len,
                compression: new.compression,
                frame: new.frame,
                ..rec
            };
            let (was, now) = (rec.disk_bytes(), moved.disk_bytes());
            if was != now {
                let adjust = |v: &mut u64, what: &str| {
                    if now > was {
                        *v += now - was;
                    } else {
                        stat_sub(v, was - now, what);
                    }
                };
                let store = c.store_counters();
                adjust(&mut store.stored_bytes, "stored bytes");
                if rec.refs == 0 {
                    adjust(&mut store.dead_stored_bytes, "dead stored bytes");
                }
                for &ct in containers {
                    let refs_it = c
                        .txn
                        .get(Cf::ContainerRefs, &keys::container_ref(ct, id))?
                        .is_some();
                    let cc = c.container_counters(ct);
                    if refs_it {
                        adjust(&mut cc.stored_bytes, "container stored bytes");
                    }
                    if rec.owner == ct.0 {
                        adjust(&mut cc.added_bytes, "container added bytes");
                    }
                }
            }
            c.txn.put(Cf::Chunks, key, moved.encode());
            n += 1;
        }
        Ok(n)
    }

    /// Up to `max` index entries after `after` (from the start if `None`), in chunk-id
    /// order. Scans page through the index so that their memory stays bounded; callers
    /// re-check under the GC gate whatever they act on.
    pub fn index_page(
        &self,
        after: Option<ChunkId>,
        max: usize,
    ) -> Result<Vec<(ChunkId, ChunkRec)>, ChunkError> {
        let lower = match after {
            None => vec![],
            Some(id) => keys::chunk_after(id),
        };
        let mut it = self.kv.iter(Cf::Chunks, Some(lower.clone()), None);
        it.seek(&lower);
        let mut out = Vec::with_capacity(max.min(65536));
        while it.valid() && out.len() < max {
            let id = keys::chunk_from(it.key()).map_err(|e| ChunkError::BadRefRecord {
                key: format!(
                    "chunk index key {}",
                    crate::containers::purge::hex(it.key())
                ),
                reason: e.to_string(),
            })?;
            let rec = ChunkRec::decode(it.value()).map_err(|e| ChunkError::BadIndex {
                chunk: id,
                reason: e.to_string(),
            })?;
            out.push((id, rec));
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

/// Every pack the chunk index names (disaster recovery checks them against a bucket).
pub fn packs_named(
    kv: &dyn crate::kv::Kv,
) -> Result<std::collections::BTreeSet<PackId>, ChunkError> {
    let mut it = kv.iter(Cf::Chunks, None, None);
    it.seek(&[]);
    let mut out = std::collections::BTreeSet::new();
    while it.valid() {
        let rec = ChunkRec::decode(it.value()).map_err(|e| ChunkError::BadIndex {
            chunk: keys::chunk_from(it.key()).unwrap_or(ChunkId(0)),
            reason: e.to_string(),
        })?;
        out.insert(rec.pack);
        it.next();
    }
    it.status()?;
    Ok(out)
}
