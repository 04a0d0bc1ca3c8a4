//! The replication stream: length-prefixed frames, each one message, in both directions.
//!
//! A frame is `len: u32 BE | type: u8 | payload` (`len` counts type and payload, at most
//! [`MAX_FRAME`]). Payloads use [`crate::codec`]; a frame that does not decode is a
//! protocol error naming the message. Tree changes travel as [`Item`]s whose chunk
//! references are wire ids; chunk bytes travel zstd-compressed inside a batch.
//!
//! Conversation (sender S, receiver R): S `Hello` → R `State` → S `Plan`; then per batch,
//! in interactive mode, S `Have` → R `HaveReply` (which chunks R lacks), S `Batch` → R
//! `BatchAck`; S `PointEnd` after each point; S `Finish` → R `Published`. Over a one-way
//! pipe R sends nothing: S skips `Have` and sends every chunk a changed extent needs that
//! the base does not reference. Either side may send `Error` instead and hang up.

use super::{PointKind, PointMeta, ReplicaError, Result, WireId};
use crate::codec::{Dec, Enc};
use crate::ids::Ino;
use crate::records::{DirentRec, FileKind, InodeRec};
use std::io::{Read, Write};

/// Largest frame accepted (a batch is cut well below it).
pub const MAX_FRAME: usize = 64 << 20;

/// How the receiver starts from its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Continue a replica (or create it).
    Normal = 0,
    /// Replicate back into the container this one was promoted from (failback).
    Failback = 1,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staging {
    pub plan_id: u64,
    pub base: Option<(u64, u64)>,
    pub points: Vec<PointMeta>,
    /// Next point to receive, and items of it already applied.
    pub point: u32,
    pub items: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Hello {
        proto: u32,
        source_store: String,
        source_container: String,
        target_container: String,
        pair_key: [u8; 32],
        chunk_max: u32,
        interactive: bool,
        mode: Mode,
    },
    State {
        target_store: String,
        /// The source coordinates (branch, version) of the replica's newest point.
        last: Option<(u64, u64)>,
        staging: Option<Staging>,
    },
    Plan {
        plan_id: u64,
        /// Source coordinates of the point the first point is a delta from.
        base: Option<(u64, u64)>,
        /// For a failback: the target's own version that equals the base.
        base_local: Option<u64>,
        points: Vec<PointMeta>,
        /// Continue the staging the receiver reported (same plan id).
        resume: bool,
        /// The source container's root inode (the replica keeps the source's numbers).
        root: u64,
    },
    Have {
        wires: Vec<WireId>,
    },
    HaveReply {
        bits: Vec<u8>,
    },
    Batch {
        point: u32,
        first_item: u64,
        n_items: u32,
        items: Vec<u8>,
        n_chunks: u32,
        /// zstd of `wire(16) | len u32 | bytes` per chunk.
        chunks: Vec<u8>,
    },
    BatchAck {
        items_done: u64,
        bad: Vec<WireId>,
    },
    PointEnd {
        point: u32,
        items: u64,
    },
    Finish,
    Published {
        json: String,
    },
    Error {
        message: String,
    },
    /// After `Published`: hash your tree of the newest point (see `super::verify`).
    Verify,
    VerifyReply {
        digests: Vec<u8>,
    },
}

fn proto(what: &str, e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Protocol(format!("{what}: {e}"))
}

fn enc_point(e: Enc, p: &PointMeta) -> Enc {
    e.u8(p.kind as u8)
        .blob(p.name.as_bytes())
        .blob(p.bookmark_kind.as_bytes())
        .u64(p.source_branch)
        .u64(p.source_version)
        .i64(p.time)
        .u32(p.time_nsec)
}

fn dec_str(d: &mut Dec<'_>) -> std::result::Result<String, crate::codec::CodecError> {
    let b = d.blob()?;
    String::from_utf8(b.to_vec())
        .map_err(|_| crate::codec::CodecError::new("replication message", "text not UTF-8"))
}

fn dec_point(d: &mut Dec<'_>) -> std::result::Result<PointMeta, crate::codec::CodecError> {
    let k = d.u8()?;
    let kind = PointKind::from_u8(k)
        .ok_or_else(|| crate::codec::CodecError::new("point", format!("kind {k}")))?;
    Ok(PointMeta {
        kind,
        name: dec_str(d)?,
        bookmark_kind: dec_str(d)?,
        source_branch: d.u64()?,
        source_version: d.u64()?,
        time: d.i64()?,
        time_nsec: d.u32()?,
    })
}

fn enc_opt_pair(e: Enc, p: Option<(u64, u64)>) -> Enc {
    match p {
        None => e.u8(0),
        Some((a, b)) => e.u8(1).u64(a).u64(b),
    }
}

fn dec_opt_pair(
    d: &mut Dec<'_>,
) -> std::result::Result<Option<(u64, u64)>, crate::codec::CodecError> {
    Ok(match d.u8()? {
        0 => None,
        _ => Some((d.u64()?, d.u64()?)),
    })
}

fn enc_points(mut e: Enc, ps: &[PointMeta]) -> Enc {
    e = e.u32(ps.len() as u32);
    for p in ps {
        e = enc_point(e, p);
    }
    e
}

fn dec_points(d: &mut Dec<'_>) -> std::result::Result<Vec<PointMeta>, crate::codec::CodecError> {
    let n = d.u32()? as usize;
    let mut v = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        v.push(dec_point(d)?);
    }
    Ok(v)
}

fn enc_wires(mut e: Enc, ws: &[WireId]) -> Enc {
    e = e.u32(ws.len() as u32);
    for w in ws {
        e = e.bytes(&w.0);
    }
    e
}

fn dec_wires(d: &mut Dec<'_>) -> std::result::Result<Vec<WireId>, crate::codec::CodecError> {
    let n = d.u32()? as usize;
    let mut v = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        v.push(WireId(d.bytes(16)?.try_into().unwrap_or([0; 16])));
    }
    Ok(v)
}

impl Msg {
    fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "hello",
            Msg::State { .. } => "state",
            Msg::Plan { .. } => "plan",
            Msg::Have { .. } => "have",
            Msg::HaveReply { .. } => "have-reply",
            Msg::Batch { .. } => "batch",
            Msg::BatchAck { .. } => "batch-ack",
            Msg::PointEnd { .. } => "point-end",
            Msg::Finish => "finish",
            Msg::Published { .. } => "published",
            Msg::Error { .. } => "error",
            Msg::Verify => "verify",
            Msg::VerifyReply { .. } => "verify-reply",
        }
    }

    fn encode(&self) -> (u8, Vec<u8>) {
        let e = Enc::new();
        match self {
            Msg::Hello {
                proto,
                source_store,
                source_container,
                target_container,
                pair_key,
                chunk_max,
                interactive,
                mode,
            } => (
                1,
                e.u32(*proto)
                    .blob(source_store.as_bytes())
                    .blob(source_container.as_bytes())
                    .blob(target_container.as_bytes())
                    .bytes(pair_key)
                    .u32(*chunk_max)
                    .u8(*interactive as u8)
                    .u8(*mode as u8)
                    .finish(),
            ),
            Msg::State {
                target_store,
                last,
                staging,
            } => {
                let mut e = enc_opt_pair(e.blob(target_store.as_bytes()), *last);
                match staging {
                    None => e = e.u8(0),
                    Some(s) => {
                        e = enc_opt_pair(e.u8(1).u64(s.plan_id), s.base);
                        e = enc_points(e, &s.points).u32(s.point).u64(s.items);
                    }
                }
                (2, e.finish())
            }
            Msg::Plan {
                plan_id,
                base,
                base_local,
                points,
                resume,
                root,
            } => {
                let e = enc_opt_pair(e.u64(*plan_id), *base);
                let e = match base_local {
                    None => e.u8(0),
                    Some(v) => e.u8(1).u64(*v),
                };
                (
                    3,
                    enc_points(e, points).u8(*resume as u8).u64(*root).finish(),
                )
            }
            Msg::Have { wires } => (4, enc_wires(e, wires).finish()),
            Msg::HaveReply { bits } => (5, e.blob(bits).finish()),
            Msg::Batch {
                point,
                first_item,
                n_items,
                items,
                n_chunks,
                chunks,
            } => (
                6,
                e.u32(*point)
                    .u64(*first_item)
                    .u32(*n_items)
                    .blob(items)
                    .u32(*n_chunks)
                    .blob(chunks)
                    .finish(),
            ),
            Msg::BatchAck { items_done, bad } => (7, enc_wires(e.u64(*items_done), bad).finish()),
            Msg::PointEnd { point, items } => (8, e.u32(*point).u64(*items).finish()),
            Msg::Finish => (9, Vec::new()),
            Msg::Published { json } => (10, e.blob(json.as_bytes()).finish()),
            Msg::Error { message } => (11, e.blob(message.as_bytes()).finish()),
            Msg::Verify => (12, Vec::new()),
            Msg::VerifyReply { digests } => (13, e.blob(digests).finish()),
        }
    }

    fn decode(t: u8, b: &[u8]) -> Result<Msg> {
        let mut d = Dec::new(b, "replication message");
        let m = (|| -> std::result::Result<Msg, crate::codec::CodecError> {
            Ok(match t {
                1 => Msg::Hello {
                    proto: d.u32()?,
                    source_store: dec_str(&mut d)?,
                    source_container: dec_str(&mut d)?,
                    target_container: dec_str(&mut d)?,
                    pair_key: d.bytes(32)?.try_into().unwrap_or([0; 32]),
                    chunk_max: d.u32()?,
                    interactive: d.u8()? != 0,
                    mode: if d.u8()? == 1 {
                        Mode::Failback
                    } else {
                        Mode::Normal
                    },
                },
                2 => {
                    let target_store = dec_str(&mut d)?;
                    let last = dec_opt_pair(&mut d)?;
                    let staging = match d.u8()? {
                        0 => None,
                        _ => Some(Staging {
                            plan_id: d.u64()?,
                            base: dec_opt_pair(&mut d)?,
                            points: dec_points(&mut d)?,
                            point: d.u32()?,
                            items: d.u64()?,
                        }),
                    };
                    Msg::State {
                        target_store,
                        last,
                        staging,
                    }
                }
                3 => Msg::Plan {
                    plan_id: d.u64()?,
                    base: dec_opt_pair(&mut d)?,
                    base_local: match d.u8()? {
                        0 => None,
                        _ => Some(d.u64()?),
                    },
                    points: dec_points(&mut d)?,
                    resume: d.u8()? != 0,
                    root: d.u64()?,
                },
                4 => Msg::Have {
                    wires: dec_wires(&mut d)?,
                },
                5 => Msg::HaveReply {
                    bits: d.blob()?.to_vec(),
                },
                6 => Msg::Batch {
                    point: d.u32()?,
                    first_item: d.u64()?,
                    n_items: d.u32()?,
                    items: d.blob()?.to_vec(),
                    n_chunks: d.u32()?,
                    chunks: d.blob()?.to_vec(),
                },
                7 => Msg::BatchAck {
                    items_done: d.u64()?,
                    bad: dec_wires(&mut d)?,
                },
                8 => Msg::PointEnd {
                    point: d.u32()?,
                    items: d.u64()?,
                },
                9 => Msg::Finish,
                10 => Msg::Published {
                    json: dec_str(&mut d)?,
                },
                11 => Msg::Error {
                    message: dec_str(&mut d)?,
                },
                12 => Msg::Verify,
                13 => Msg::VerifyReply {
                    digests: d.blob()?.to_vec(),
                },
                t => {
                    return Err(crate::codec::CodecError::new(
                        "replication message",
                        format!("type {t}"),
                    ))
                }
            })
        })()
        .map_err(|e| proto("a message", e))?;
        d.end().map_err(|e| proto(m.name(), e))?;
        Ok(m)
    }
}

/// Writes one message; returns the bytes it took on the wire.
pub fn write_msg(w: &mut dyn Write, m: &Msg) -> Result<u64> {
    let (t, payload) = m.encode();
    let len = payload.len() + 1;
    if len > MAX_FRAME {
        return Err(ReplicaError::Protocol(format!(
            "{} message of {len} bytes is over the frame limit",
            m.name()
        )));
    }
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&(len as u32).to_be_bytes());
    head[4] = t;
    w.write_all(&head).map_err(ReplicaError::Io)?;
    w.write_all(&payload).map_err(ReplicaError::Io)?;
    Ok(len as u64 + 4)
}

/// Reads one message (`None`: the stream ended cleanly between messages).
pub fn read_msg(r: &mut dyn Read) -> Result<Option<(Msg, u64)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(ReplicaError::Protocol(
                    "the stream ended inside a frame header".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReplicaError::Io(e)),
        }
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ReplicaError::Protocol(format!("frame length {len}")));
    }
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReplicaError::Protocol("the stream ended inside a message".into())
        } else {
            ReplicaError::Io(e)
        }
    })?;
    Ok(Some((Msg::decode(head[4], &payload)?, len as u64 + 4)))
}

/// An extent as it travels: the chunk named by its wire id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireExtent {
    pub len: u32,
    pub wire: WireId,
    pub chunk_off: u32,
    pub flags: u8,
}

/// One change of a tree, in inode order within a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An inode's record as it now is, and its changed extended attributes.
    Inode {
        ino: Ino,
        rec: InodeRec,
        xattrs: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Changed entries of a directory (`None`: removed).
    Dirents {
        dir: Ino,
        changes: Vec<(Vec<u8>, Option<DirentRec>)>,
    },
    /// Changed extents of a file's data generation `gen` (`None`: removed).
    Extents {
        ino: Ino,
        gen: u64,
        changes: Vec<(u64, Option<WireExtent>)>,
    },
    /// An inode that no longer exists (with its entries, if a directory).
    Gone { ino: Ino },
}

pub fn encode_items(items: &[Item]) -> Vec<u8> {
    let mut e = Enc::new();
    for it in items {
        e = match it {
            Item::Inode { ino, rec, xattrs } => {
                let mut e = e
                    .u8(1)
                    .u64(ino.0)
                    .blob(&rec.encode())
                    .u32(xattrs.len() as u32);
                for (n, v) in xattrs {
                    e = e.blob(n);
                    e = match v {
                        None => e.u8(0),
                        Some(v) => e.u8(1).blob(v),
                    };
                }
                e
            }
            Item::Dirents { dir, changes } => {
                let mut e = e.u8(2).u64(dir.0).u32(changes.len() as u32);
                for (n, d) in changes {
                    e = e.blob(n);
                    e = match d {
                        None => e.u8(0),
                        Some(d) => e.u8(1).u64(d.ino.0).u8(d.kind.to_u8()),
                    };
                }
                e
            }
            Item::Extents { ino, gen, changes } => {
                let mut e = e.u8(3).u64(ino.0).u64(*gen).u32(changes.len() as u32);
                for (off, x) in changes {
                    e = e.u64(*off);
                    e = match x {
                        None => e.u8(0),
                        Some(x) => e
                            .u8(1)
                            .u32(x.len)
                            .bytes(&x.wire.0)
                            .u32(x.chunk_off)
                            .u8(x.flags),
                    };
                }
                e
            }
            Item::Gone { ino } => e.u8(4).u64(ino.0),
        };
    }
    e.finish()
}

pub fn decode_items(b: &[u8], n: u32) -> Result<Vec<Item>> {
    use crate::codec::CodecError;
    let mut d = Dec::new(b, "replicated tree changes");
    // `n` comes from the peer: the list grows as items decode, never sized by it.
    let mut out = Vec::with_capacity((n as usize).min(4096));
    (|| -> std::result::Result<(), CodecError> {
        for _ in 0..n {
            let item = match d.u8()? {
                1 => {
                    let ino = Ino(d.u64()?);
                    let rec = InodeRec::decode(d.blob()?)?;
                    let k = d.u32()?;
                    let mut xattrs = Vec::new();
                    for _ in 0..k {
                        let name = d.blob()?.to_vec();
                        let v = match d.u8()? {
                            0 => None,
                            _ => Some(d.blob()?.to_vec()),
                        };
                        xattrs.push((name, v));
                    }
                    Item::Inode { ino, rec, xattrs }
                }
                2 => {
                    let dir = Ino(d.u64()?);
                    let k = d.u32()?;
                    let mut changes = Vec::new();
                    for _ in 0..k {
                        let name = d.blob()?.to_vec();
                        let de = match d.u8()? {
                            0 => None,
                            _ => {
                                let ino = Ino(d.u64()?);
                                let kb = d.u8()?;
                                let kind = FileKind::from_u8(kb).ok_or_else(|| {
                                    CodecError::new("directory entry", format!("kind {kb}"))
                                })?;
                                Some(DirentRec { ino, kind })
                            }
                        };
                        changes.push((name, de));
                    }
                    Item::Dirents { dir, changes }
                }
                3 => {
                    let ino = Ino(d.u64()?);
                    let gen = d.u64()?;
                    let k = d.u32()?;
                    let mut changes = Vec::new();
                    for _ in 0..k {
                        let off = d.u64()?;
                        let x = match d.u8()? {
                            0 => None,
                            _ => Some(WireExtent {
                                len: d.u32()?,
                                wire: WireId(d.bytes(16)?.try_into().unwrap_or([0; 16])),
                                chunk_off: d.u32()?,
                                flags: d.u8()?,
                            }),
                        };
                        changes.push((off, x));
                    }
                    Item::Extents { ino, gen, changes }
                }
                4 => Item::Gone { ino: Ino(d.u64()?) },
                t => return Err(CodecError::new("replicated change", format!("type {t}"))),
            };
            out.push(item);
        }
        d.end()
    })()
    .map_err(|e| proto("batch", e))?;
    Ok(out)
}

/// Packs chunk bytes for a batch (`wire | len | bytes` each, zstd-compressed together).
pub fn pack_chunks(chunks: &[(WireId, &[u8])], level: i32) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(chunks.iter().map(|c| c.1.len() + 20).sum());
    for (w, b) in chunks {
        raw.extend_from_slice(&w.0);
        raw.extend_from_slice(&(b.len() as u32).to_be_bytes());
        raw.extend_from_slice(b);
    }
    zstd::bulk::compress(&raw, level).map_err(ReplicaError::Io)
}

/// Unpacks a batch's chunks: (wire id, bytes) each, checked for framing only.
pub fn unpack_chunks(packed: &[u8], n: u32) -> Result<Vec<(WireId, Vec<u8>)>> {
    // Bounded: a batch carries at most a few MiB of chunks, and the size must not be the
    // peer's to choose.
    let raw = zstd::bulk::decompress(packed, MAX_FRAME).map_err(|e| proto("batch chunks", e))?;
    let mut out = Vec::with_capacity((n as usize).min(4096));
    let mut p = 0usize;
    for _ in 0..n {
        let head = raw
            .get(p..p + 20)
            .ok_or_else(|| proto("batch chunks", "truncated"))?;
        let wire = WireId(head[..16].try_into().unwrap_or([0; 16]));
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap_or([0; 4])) as usize;
        let body = raw
            .get(p + 20..p + 20 + len)
            .ok_or_else(|| proto("batch chunks", "truncated"))?;
        out.push((wire, body.to_vec()));
        p += 20 + len;
    }
    if p != raw.len() {
        return Err(proto("batch chunks", "trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Timestamp;

    fn point() -> PointMeta {
        PointMeta {
            kind: PointKind::Bookmark,
            name: "nightly".into(),
            bookmark_kind: "app".into(),
            source_branch: 3,
            source_version: 99,
            time: 1_800_000_000,
            time_nsec: 5,
        }
    }

    fn roundtrip(m: Msg) {
        let mut buf = Vec::new();
        let n = write_msg(&mut buf, &m).unwrap();
        assert_eq!(n as usize, buf.len());
        let (back, n2) = read_msg(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(back, m);
        assert_eq!(n, n2);
    }

    #[test]
    fn every_message_reads_back_as_written() {
        roundtrip(Msg::Hello {
            proto: 1,
            source_store: "abc".into(),
            source_container: "c".into(),
            target_container: "r".into(),
            pair_key: [7; 32],
            chunk_max: 131072,
            interactive: true,
            mode: Mode::Failback,
        });
        roundtrip(Msg::State {
            target_store: "t".into(),
            last: Some((1, 2)),
            staging: Some(Staging {
                plan_id: 9,
                base: None,
                points: vec![point()],
                point: 0,
                items: 12,
            }),
        });
        roundtrip(Msg::Plan {
            plan_id: 4,
            base: Some((1, 2)),
            base_local: Some(8),
            points: vec![point(), point()],
            resume: true,
            root: 77,
        });
        roundtrip(Msg::Have {
            wires: vec![WireId([1; 16]), WireId([2; 16])],
        });
        roundtrip(Msg::HaveReply { bits: vec![3] });
        roundtrip(Msg::Batch {
            point: 1,
            first_item: 5,
            n_items: 0,
            items: vec![],
            n_chunks: 0,
            chunks: vec![1, 2],
        });
        roundtrip(Msg::BatchAck {
            items_done: 3,
            bad: vec![WireId([9; 16])],
        });
        roundtrip(Msg::PointEnd {
            point: 2,
            items: 40,
        });
        roundtrip(Msg::Finish);
        roundtrip(Msg::Published { json: "{}".into() });
        roundtrip(Msg::Error {
            message: "no".into(),
        });
        roundtrip(Msg::Verify);
        roundtrip(Msg::VerifyReply {
            digests: vec![0; 24],
        });
    }

    #[test]
    fn items_and_chunks_read_back_and_damage_is_refused() {
        let rec = InodeRec {
            kind: FileKind::RegularFile,
            perm: 0o644,
            uid: 1,
            gid: 2,
            nlink: 2,
            size: 10,
            atime: Timestamp::now(),
            mtime: Timestamp::now(),
            ctime: Timestamp::now(),
            btime: Timestamp::now(),
            rdev: 0,
            parent: Ino(0),
            data_gen: 1,
            data_bytes: 10,
            flags: 0,
            xattrs: 1,
            target: vec![],
        };
        let items = vec![
            Item::Inode {
                ino: Ino(5),
                rec,
                xattrs: vec![
                    (b"user.a".to_vec(), Some(b"v".to_vec())),
                    (b"user.b".to_vec(), None),
                ],
            },
            Item::Dirents {
                dir: Ino(1),
                changes: vec![
                    (
                        b"f".to_vec(),
                        Some(DirentRec {
                            ino: Ino(5),
                            kind: FileKind::RegularFile,
                        }),
                    ),
                    (b"gone".to_vec(), None),
                ],
            },
            Item::Extents {
                ino: Ino(5),
                gen: 1,
                changes: vec![
                    (
                        0,
                        Some(WireExtent {
                            len: 10,
                            wire: WireId([4; 16]),
                            chunk_off: 0,
                            flags: 1,
                        }),
                    ),
                    (4096, None),
                ],
            },
            Item::Gone { ino: Ino(9) },
        ];
        let b = encode_items(&items);
        assert_eq!(decode_items(&b, items.len() as u32).unwrap(), items);
        assert!(decode_items(&b[..b.len() - 1], items.len() as u32).is_err());
        assert!(decode_items(&b, items.len() as u32 + 1).is_err());

        let packed = pack_chunks(&[(WireId([1; 16]), b"abc"), (WireId([2; 16]), b"")], 3).unwrap();
        let back = unpack_chunks(&packed, 2).unwrap();
        assert_eq!(
            back,
            vec![
                (WireId([1; 16]), b"abc".to_vec()),
                (WireId([2; 16]), vec![])
            ]
        );
        assert!(unpack_chunks(&packed, 3).is_err());
        assert!(unpack_chunks(&packed, 1).is_err());
    }

    #[test]
    fn a_cut_or_oversized_frame_is_a_protocol_error() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &Msg::Finish).unwrap();
        write_msg(&mut buf, &Msg::PointEnd { point: 1, items: 2 }).unwrap();
        let cut = &buf[..buf.len() - 3];
        let mut r = cut;
        assert_eq!(read_msg(&mut r).unwrap().unwrap().0, Msg::Finish);
        assert!(matches!(read_msg(&mut r), Err(ReplicaError::Protocol(_))));
        let huge = [0xff, 0xff, 0xff, 0xff, 9];
        assert!(matches!(
            read_msg(&mut &huge[..]),
            Err(ReplicaError::Protocol(_))
        ));
        assert!(read_msg(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn wire_ids_depend_on_the_key() {
        let a = super::super::PairKey([1; 32]);
        let b = super::super::PairKey([2; 32]);
        assert_eq!(a.wire_id(b"x"), a.wire_id(b"x"));
        assert_ne!(a.wire_id(b"x"), b.wire_id(b"x"));
        assert_ne!(a.wire_id(b"x"), a.wire_id(b"y"));
    }
}
