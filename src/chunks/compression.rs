//! How chunks are compressed: the per-container setting, single-chunk zstd records, and
//! compression frames — several consecutive new chunks compressed together as one record,
//! which compresses real data (source trees, binaries, logs) far better than chunk by chunk
//! while a reader still finds each chunk by its offset in the frame.
//!
//! A frame's payload is a directory — the member count, then each member's id and raw
//! length, in order — followed by one zstd frame of the members' bytes concatenated. The
//! directory lets a reader check and cache every member it decompresses, and lets GC
//! rewrite a frame keeping only its live members.

use crate::ids::ChunkId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How a container compresses the chunks it stores first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    Off,
    /// `zstd:LEVEL`: runs of new chunks compressed together in frames (the default).
    Zstd(i32),
    /// `zstd-chunk:LEVEL`: each chunk compressed on its own. Stores more than frames, but
    /// a random read decompresses one chunk, not a frame: for containers read at random
    /// (VM images run from the backup, databases).
    ZstdChunk(i32),
}

impl Default for Compression {
    /// zstd level 3: on real backup data (ARCHITECTURE.md, "Compression frames") it
    /// stored 4.6 % less than level 1, with no ingest slowdown beyond the noise of two runs.
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => write!(f, "off"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
            Compression::ZstdChunk(l) => write!(f, "zstd-chunk:{l}"),
        }
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "none" => Ok(Compression::Off),
            "zstd" => Ok(Compression::Zstd(1)),
            _ => {
                let (framed, l) = match (s.strip_prefix("zstd:"), s.strip_prefix("zstd-chunk:")) {
                    (Some(l), _) => (true, Some(l)),
                    (_, Some(l)) => (false, Some(l)),
                    _ => (true, None),
                };
                let level = l
                    .and_then(|l| l.parse::<i32>().ok())
                    .filter(|l| (1..=19).contains(l))
                    .ok_or_else(|| {
                        format!(
                            "invalid compression '{s}': expected 'off', 'zstd:LEVEL' or \
                             'zstd-chunk:LEVEL' with LEVEL 1..19"
                        )
                    })?;
                Ok(if framed {
                    Compression::Zstd(level)
                } else {
                    Compression::ZstdChunk(level)
                })
            }
        }
    }
}

thread_local! {
    static ZSTD_C: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static ZSTD_D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Whether a chunk looks incompressible: the byte entropy of four 1 KiB samples spread
/// over it is close to 8 bits in every one. Random and already-compressed data (encrypted
/// backups, media, archives) then skip the compressor, which spends as long failing as it
/// spends succeeding elsewhere; a chunk that is only partly random is still compressed.
pub(super) fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 1024;
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let step = (data.len() - SAMPLE) / 3;
    (0..4).all(|k| {
        let sample = &data[k * step..k * step + SAMPLE];
        let mut hist = [0u32; 256];
        for &b in sample {
            hist[b as usize] += 1;
        }
        let entropy: f64 = hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / SAMPLE as f64;
                -p * p.log2()
            })
            .sum();
        // 1 KiB of uniform random bytes measures about 7.8 bits (the sample is small
        // for 256 symbols); text and records stay below 6.5.
        entropy > 7.6
    })
}

/// Compresses one chunk; `None` when compression does not pay (stored raw instead).
pub(super) fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if looks_incompressible(data) {
        return None;
    }
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = c.as_mut()?;
        let out = comp.compress(data).ok()?;
        // Keep raw unless compression saves at least 1/32: decompressing costs reads.
        (out.len() < data.len() - data.len() / 32).then_some(out)
    })
}

pub(super) fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let dec = d.as_mut().ok_or("no decompressor")?;
        dec.decompress(data, raw_len).map_err(|e| e.to_string())
    })
}

/// Raw bytes a frame collects before it is closed (about two average chunks). Larger
/// frames compress better still, but a random read decompresses, and first reads from the
/// disk, its whole frame (ARCHITECTURE.md, "Compression frames").
pub const FRAME_TARGET: usize = 64 << 10;
/// Members at most in one frame (small chunks of a run of tiny files).
pub const FRAME_MAX_MEMBERS: usize = 64;

const FRAME_ENTRY: usize = 20;

/// A frame member: its id, offset in the decompressed frame, and length.
pub(super) type Member = (ChunkId, u32, u32);

/// A decoded frame: each member's id, offset in `data` and length, and their bytes.
pub(super) struct Frame {
    pub members: Vec<Member>,
    pub data: Vec<u8>,
}

/// The payload of a frame of `members` (in order), or `None` when compressing them does not
/// pay (they are then stored raw, one record each).
pub(super) fn encode_frame(members: &[(ChunkId, &[u8])], level: i32) -> Option<Vec<u8>> {
    let raw: usize = members.iter().map(|(_, d)| d.len()).sum();
    let mut concat = Vec::with_capacity(raw);
    for (_, d) in members {
        concat.extend_from_slice(d);
    }
    let comp = compress(&concat, level)?;
    let mut out = Vec::with_capacity(4 + FRAME_ENTRY * members.len() + comp.len());
    out.extend_from_slice(&(members.len() as u32).to_be_bytes());
    for (id, d) in members {
        out.extend_from_slice(&id.0.to_be_bytes());
        out.extend_from_slice(&(d.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(&comp);
    Some(out)
}

/// The directory of a frame payload: each member's id, offset and length, and where the
/// compressed bytes start. Checks that the lengths add up to `raw_len`.
pub(super) fn frame_directory(
    payload: &[u8],
    raw_len: u32,
) -> Result<(Vec<Member>, usize), String> {
    let n = payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("frame shorter than its directory")?;
    let dir_end = 4 + n * FRAME_ENTRY;
    if n == 0 || payload.len() < dir_end {
        return Err(format!("frame directory of {n} members does not fit"));
    }
    let mut members = Vec::with_capacity(n);
    let mut at: u64 = 0;
    for e in payload[4..dir_end].chunks_exact(FRAME_ENTRY) {
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let len = u32::from_be_bytes([e[16], e[17], e[18], e[19]]);
        members.push((ChunkId(u128::from_be_bytes(id)), at as u32, len));
        at += len as u64;
    }
    if at != raw_len as u64 {
        return Err(format!(
            "frame members hold {at} bytes, the record says {raw_len}"
        ));
    }
    Ok((members, dir_end))
}

/// Decodes a frame payload whose record says `raw_len` decompressed bytes.
pub(super) fn decode_frame(payload: &[u8], raw_len: u32) -> Result<Frame, String> {
    let (members, dir_end) = frame_directory(payload, raw_len)?;
    let data = decompress(&payload[dir_end..], raw_len as usize)?;
    if data.len() != raw_len as usize {
        return Err(format!(
            "frame decoded to {} bytes, expected {raw_len}",
            data.len()
        ));
    }
    Ok(Frame { members, data })
}

/// A frame record's pack bytes (header and payload) shared out over its members in
/// proportion to their raw sizes; the shares add up to `record_bytes` exactly.
pub(super) fn frame_shares(record_bytes: u64, raws: &[u32]) -> Vec<u32> {
    let total: u64 = raws.iter().map(|&r| r as u64).sum::<u64>().max(1);
    let mut out: Vec<u32> = raws
        .iter()
        .map(|&r| (record_bytes * r as u64 / total) as u32)
        .collect();
    let given: u64 = out.iter().map(|&s| s as u64).sum();
    if let Some(last) = out.last_mut() {
        *last += (record_bytes - given) as u32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_parses() {
        assert_eq!("off".parse::<Compression>().unwrap(), Compression::Off);
        assert_eq!(
            "zstd:3".parse::<Compression>().unwrap(),
            Compression::Zstd(3)
        );
        assert!("zstd:0".parse::<Compression>().is_err());
        assert!("zstd:20".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
        assert_eq!(
            "zstd-chunk:5".parse::<Compression>().unwrap(),
            Compression::ZstdChunk(5)
        );
        assert!("zstd-chunk:0".parse::<Compression>().is_err());
        assert_eq!(Compression::ZstdChunk(2).to_string(), "zstd-chunk:2");
        assert_eq!(
            Compression::Zstd(7)
                .to_string()
                .parse::<Compression>()
                .unwrap(),
            Compression::Zstd(7)
        );
    }

    #[test]
    fn incompressible_data_is_kept_raw() {
        let mut x = 1u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        assert!(compress(&random, 1).is_none());
        let text: Vec<u8> = random
            .iter()
            .map(|b| b"etaoinshrdlu ETAON.,;"[(*b % 21) as usize])
            .collect();
        assert!(
            !looks_incompressible(&text),
            "text-like bytes are compressed"
        );
        assert!(compress(&text, 1).is_some());
        let text = b"abcabcabc".repeat(1000);
        let c = compress(&text, 3).unwrap();
        assert_eq!(decompress(&c, text.len()).unwrap(), text);
    }

    #[test]
    fn frames_roundtrip_and_share_exactly() {
        let a = b"alpha ".repeat(3000);
        let b = b"beta ".repeat(5000);
        let members = [(ChunkId(1), &a[..]), (ChunkId(2), &b[..])];
        let payload = encode_frame(&members, 1).unwrap();
        let raw = (a.len() + b.len()) as u32;
        let f = decode_frame(&payload, raw).unwrap();
        assert_eq!(
            f.members,
            vec![
                (ChunkId(1), 0, a.len() as u32),
                (ChunkId(2), a.len() as u32, b.len() as u32)
            ]
        );
        assert_eq!(&f.data[..a.len()], &a[..]);
        assert_eq!(&f.data[a.len()..], &b[..]);
        // A directory that disagrees with the record, or a truncated payload, is an error.
        assert!(decode_frame(&payload, raw + 1).is_err());
        assert!(decode_frame(&payload[..30], raw).is_err());
        assert!(decode_frame(&[0, 0, 0, 0], 0).is_err());
        let s = frame_shares(1001, &[1, 2, 3]);
        assert_eq!(s.iter().map(|&x| x as u64).sum::<u64>(), 1001);
        assert_eq!(s, vec![166, 333, 502]);
    }
}
