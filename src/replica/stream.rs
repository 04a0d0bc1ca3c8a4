//! Streaming one point's changes: batches are prepared (changes turned into wire items,
//! chunks read back and hashed to wire ids) by a worker thread ahead of the exchange, and
//! the exchange overlaps the two sides: the question for batch N+1 (`Have`) goes out
//! before batch N, so while the receiver stores batch N the sender already packs N+1.
//!
//! Invariants: batches go out in order and the receiver applies them in order (its
//! cursor counts changes); a chunk is asked about or carried once per run (`present`
//! holds those the receiver has or that a sent batch carries); a batch the receiver
//! rejected for damaged chunks is sent again whole before anything after it.

use super::delta::Change;
use super::send::{Link, SendOptions, SendProgress, SendReport};
use super::wire::{self, Item, Msg, WireExtent};
use super::{PairKey, ReplicaError, Result, WireId};
use crate::chunks::ChunkData;
use crate::ids::ChunkId;
use crate::store::Store;
use std::collections::{HashMap, HashSet};

/// Chunk bytes per batch (raw), and changes per batch.
const BATCH_BYTES: usize = 4 << 20;
const BATCH_CHANGES: usize = 2048;
/// Resends of a batch whose chunks arrived damaged before giving up.
const RESENDS: u32 = 3;

/// A batch ready for the exchange.
struct Prepared {
    first: u64,
    n_items: u32,
    items: Vec<u8>,
    /// Distinct chunks its new extents name, in first-use order, and the bytes of those
    /// read for it (a chunk seen earlier in the run is not read again).
    order: Vec<WireId>,
    data: HashMap<WireId, ChunkData>,
    logical: u64,
}

/// Cuts a point's changes (from `skip`) into batch ranges.
fn ranges(changes: &[Change], skip: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = skip;
    while at < changes.len() {
        let mut end = at;
        let mut bytes = 0usize;
        while end < changes.len() && end - at < BATCH_CHANGES && bytes < BATCH_BYTES {
            if let Change::Extents { changes: xs, .. } = &changes[end] {
                bytes += xs
                    .iter()
                    .filter_map(|(_, x)| x.map(|x| x.len as usize))
                    .sum::<usize>();
            }
            end += 1;
        }
        out.push((at, end));
        at = end;
    }
    out
}

/// The worker's half: items and wire ids of one range.
fn prepare(
    store: &Store,
    key: &PairKey,
    seen: &mut HashMap<ChunkId, WireId>,
    changes: &[Change],
    first: usize,
) -> Result<Prepared> {
    let mut p = Prepared {
        first: first as u64,
        n_items: changes.len() as u32,
        items: Vec::new(),
        order: Vec::new(),
        data: HashMap::new(),
        logical: 0,
    };
    let mut named: HashSet<WireId> = HashSet::new();
    let mut items = Vec::with_capacity(changes.len());
    for c in changes {
        items.push(match c {
            Change::Inode { ino, rec, xattrs } => Item::Inode {
                ino: *ino,
                rec: rec.clone(),
                xattrs: xattrs.clone(),
            },
            Change::Dirents { dir, changes } => Item::Dirents {
                dir: *dir,
                changes: changes.clone(),
            },
            Change::Gone { ino } => Item::Gone { ino: *ino },
            Change::Extents { ino, gen, changes } => {
                let mut out = Vec::with_capacity(changes.len());
                for (off, x) in changes {
                    let x = match x {
                        None => None,
                        Some(e) => {
                            let wire = match seen.get(&e.chunk) {
                                Some(w) => *w,
                                None => {
                                    let d = store.chunks.read(e.chunk)?;
                                    let w = key.wire_id(&d);
                                    seen.insert(e.chunk, w);
                                    p.data.insert(w, d);
                                    w
                                }
                            };
                            if named.insert(wire) {
                                p.order.push(wire);
                            }
                            p.logical += e.len as u64;
                            Some(WireExtent {
                                len: e.len,
                                wire,
                                chunk_off: e.chunk_off,
                                flags: e.flags,
                            })
                        }
                    };
                    out.push((*off, x));
                }
                Item::Extents {
                    ino: *ino,
                    gen: *gen,
                    changes: out,
                }
            }
        });
    }
    p.items = wire::encode_items(&items);
    Ok(p)
}

/// The exchange's state over a run.
pub(super) struct Streamer<'a> {
    pub store: &'a Store,
    pub key: PairKey,
    pub interactive: bool,
    pub opts: &'a SendOptions,
    /// Chunks the receiver has, or that a batch already sent carries.
    pub present: HashSet<WireId>,
    /// Wire ids of chunks read so far in this run.
    pub seen: HashMap<ChunkId, WireId>,
    pub corrupt_left: u32,
    pub prog: SendProgress,
}

/// A batch with its chunk list settled.
struct Ready {
    p: Prepared,
    wanted: Vec<WireId>,
}

impl Streamer<'_> {
    /// Streams the changes of point `point` from change `skip` on.
    pub fn point(
        &mut self,
        link: &mut Link<'_>,
        rep: &mut SendReport,
        point: u32,
        changes: &[Change],
        skip: usize,
        progress: &mut dyn FnMut(&SendProgress),
    ) -> Result<()> {
        let rs = ranges(changes, skip);
        let (store, key) = (self.store, self.key);
        let mut seen = std::mem::take(&mut self.seen);
        let res = std::thread::scope(|s| {
            // Two batches ahead at most: memory stays a few batches' chunk bytes.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Prepared>>(2);
            let worker = s.spawn(|| {
                for &(a, b) in &rs {
                    let p = prepare(store, &key, &mut seen, &changes[a..b], a);
                    let failed = p.is_err();
                    if tx.send(p).is_err() || failed {
                        break;
                    }
                }
                drop(tx);
                seen
            });
            let out = self.exchange(link, rep, point, &rx, progress);
            // Unblock the worker if the exchange stopped early, then collect it.
            drop(rx);
            let seen = worker.join().unwrap_or_default();
            (out, seen)
        });
        self.seen = res.1;
        res.0
    }

    fn next(rx: &std::sync::mpsc::Receiver<Result<Prepared>>) -> Result<Option<Prepared>> {
        match rx.recv() {
            Ok(p) => p.map(Some),
            Err(_) => Ok(None),
        }
    }

    fn exchange(
        &mut self,
        link: &mut Link<'_>,
        rep: &mut SendReport,
        point: u32,
        rx: &std::sync::mpsc::Receiver<Result<Prepared>>,
        progress: &mut dyn FnMut(&SendProgress),
    ) -> Result<()> {
        let mut cur = match Self::next(rx)? {
            Some(p) => {
                let q = self.ask(link, &p)?;
                let r = self.settle(link, p, q)?;
                let packed = self.pack(&r)?;
                Some((r, packed))
            }
            None => None,
        };
        while let Some((r, packed)) = cur.take() {
            // The question about the next batch goes before this batch, so the receiver
            // answers it first and the packing of the next overlaps its storing of this.
            let next = Self::next(rx)?;
            let question = match &next {
                Some(p) => self.ask(link, p)?,
                None => Vec::new(),
            };
            self.send_batch(link, rep, point, &r, packed)?;
            cur = match next {
                Some(p) => {
                    let nr = self.settle(link, p, question)?;
                    let packed = self.pack(&nr)?;
                    Some((nr, packed))
                }
                None => None,
            };
            if self.interactive {
                self.await_ack(link, rep, point, &r)?;
            }
            rep.changes += r.p.n_items as u64;
            rep.logical_bytes += r.p.logical;
            self.prog.logical_done += r.p.logical;
            self.prog.changes = rep.changes;
            self.prog.chunks_sent = rep.chunks_sent;
            self.prog.wire_bytes = link.bytes;
            progress(&self.prog);
        }
        Ok(())
    }

    /// Sends the question for a batch (interactive); returns the chunks asked about.
    fn ask(&mut self, link: &mut Link<'_>, p: &Prepared) -> Result<Vec<WireId>> {
        let q: Vec<WireId> = p
            .order
            .iter()
            .filter(|w| !self.present.contains(w))
            .copied()
            .collect();
        if self.interactive && !q.is_empty() {
            link.send(&Msg::Have { wires: q.clone() })?;
        }
        Ok(q)
    }

    /// Reads the answer to `ask` and settles what the batch carries; from here on the
    /// chunks it carries count as present (later batches do not carry them again).
    fn settle(&mut self, link: &mut Link<'_>, p: Prepared, q: Vec<WireId>) -> Result<Ready> {
        let mut wanted = q;
        if self.interactive && !wanted.is_empty() {
            let bits = match link.recv()? {
                Msg::HaveReply { bits } => bits,
                m => {
                    return Err(ReplicaError::Protocol(format!(
                        "expected have-reply, got {m:?}"
                    )))
                }
            };
            let mut missing = Vec::new();
            for (i, w) in wanted.iter().enumerate() {
                if bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                    self.present.insert(*w);
                } else {
                    missing.push(*w);
                }
            }
            wanted = missing;
        }
        self.present.extend(wanted.iter().copied());
        Ok(Ready { p, wanted })
    }

    /// The batch's chunk bytes, packed (damaged on purpose by the test hook).
    fn pack(&mut self, r: &Ready) -> Result<Vec<u8>> {
        let mut bad = None;
        if self.corrupt_left > 0 && !r.wanted.is_empty() {
            self.corrupt_left -= 1;
            let mut d = self.bytes(r, &r.wanted[0])?.to_vec();
            d[0] ^= 0xff;
            bad = Some(d);
        }
        let mut owned = Vec::new();
        for (i, w) in r.wanted.iter().enumerate() {
            owned.push(match (&bad, i) {
                (Some(d), 0) => std::sync::Arc::new(d.clone()),
                _ => self.bytes(r, w)?,
            });
        }
        let refs: Vec<(WireId, &[u8])> = r
            .wanted
            .iter()
            .zip(&owned)
            .map(|(w, d)| (*w, d.as_slice()))
            .collect();
        wire::pack_chunks(&refs, self.opts.level)
    }

    /// A wanted chunk's bytes: read for the batch, or (named earlier in the run but never
    /// carried) read again by its source id.
    fn bytes(&self, r: &Ready, w: &WireId) -> Result<ChunkData> {
        if let Some(d) = r.p.data.get(w) {
            return Ok(d.clone());
        }
        let id = self
            .seen
            .iter()
            .find(|(_, x)| *x == w)
            .map(|(c, _)| *c)
            .ok_or_else(|| ReplicaError::Protocol(format!("chunk {w} has no source")))?;
        Ok(self.store.chunks.read(id)?)
    }

    fn send_batch(
        &mut self,
        link: &mut Link<'_>,
        rep: &mut SendReport,
        point: u32,
        r: &Ready,
        packed: Vec<u8>,
    ) -> Result<()> {
        link.send(&Msg::Batch {
            point,
            first_item: r.p.first,
            n_items: r.p.n_items,
            items: r.p.items.clone(),
            n_chunks: r.wanted.len() as u32,
            chunks: packed,
        })?;
        rep.chunks_referenced += r.p.order.len() as u64;
        rep.chunks_sent += r.wanted.len() as u64;
        for w in &r.wanted {
            rep.chunk_bytes_sent += r.p.data.get(w).map(|d| d.len() as u64).unwrap_or(0);
        }
        Ok(())
    }

    /// Waits for the receiver's verdict on a batch; a batch with damaged chunks is sent
    /// again (chunks re-read) until it is accepted or the resends run out.
    fn await_ack(
        &mut self,
        link: &mut Link<'_>,
        rep: &mut SendReport,
        point: u32,
        r: &Ready,
    ) -> Result<()> {
        let mut resends = 0;
        loop {
            match link.recv()? {
                Msg::BatchAck { bad, .. } if bad.is_empty() => return Ok(()),
                Msg::BatchAck { bad, .. } => {
                    resends += 1;
                    if resends > RESENDS {
                        return Err(ReplicaError::Damaged {
                            wire: bad[0].to_string(),
                            got: 0,
                        });
                    }
                    log::warn!(
                        "replication: the receiver rejected {} damaged chunk(s) (first {}); \
                         sending the batch again",
                        bad.len(),
                        bad[0]
                    );
                    rep.chunks_resent += bad.len() as u64;
                    let packed = self.pack(r)?;
                    self.send_batch(link, rep, point, r, packed)?;
                }
                Msg::HaveReply { .. } => {
                    return Err(ReplicaError::Protocol(
                        "have-reply where a batch-ack was due".into(),
                    ))
                }
                m => {
                    return Err(ReplicaError::Protocol(format!(
                        "expected batch-ack, got {m:?}"
                    )))
                }
            }
        }
    }
}
