//! The embedded log's bytes on disk: segment files of checksummed batches of items.
//!
//! A segment starts with [`MAGIC`], then holds batches back to back. A batch is
//! `u32 body length | u32 CRC-32 of the body | body`; the body is a run of items, each a tag byte
//! and its fields (little-endian). One batch is one group commit: it is written whole and
//! fsync'd before anything in it is visible, so after a crash a batch is either entirely there
//! (its checksum holds) or it is the torn tail of the newest segment, which recovery cuts off.

use crate::record::Headers;
use bytes::Bytes;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"OFLOG01\n";
/// Bytes before a batch's body: its length and its checksum.
pub const BATCH_HEADER: usize = 8;
/// Largest batch body a reader accepts; anything longer is a corrupt length field.
pub const MAX_BATCH: usize = 256 * 1024 * 1024;

const TAG_RECORD: u8 = 1;
const TAG_COMMIT: u8 = 2;
const TAG_TOPIC: u8 = 3;
const TAG_PARTITION: u8 = 4;

/// The file name of segment `id`: zero-padded so names sort like ids.
pub fn segment_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// The id of a segment file name, if it is one.
pub fn segment_id(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One entry of a batch, borrowed from its body.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A record of a partition at its offset; `frame` holds its headers, key and value.
    Record {
        /// Topic id.
        topic: u16,
        /// Partition within the topic.
        partition: u32,
        /// Offset within the partition.
        offset: u64,
        /// Where the frame starts within the body.
        frame_at: usize,
        /// The framed record (see [`encode_frame_into`]).
        frame: &'a [u8],
    },
    /// A consumer group's committed position on a partition: the next offset to read.
    Commit {
        /// Consumer group.
        group: &'a str,
        /// Topic id.
        topic: u16,
        /// Partition.
        partition: u32,
        /// Next offset to read.
        next: u64,
    },
    /// A topic and its id.
    Topic {
        /// Topic id, dense from 0.
        id: u16,
        /// Topic name.
        name: &'a str,
        /// Its partition count.
        partitions: u32,
    },
    /// Where a partition starts (everything below `base` is trimmed) and ends (its next offset).
    Partition {
        /// Topic id.
        topic: u16,
        /// Partition.
        partition: u32,
        /// First offset kept.
        base: u64,
        /// Next offset to assign.
        end: u64,
    },
}

/// A batch being built; [`Batch::finish`] seals it for writing.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
}

/// Buffer a batch keeps between writes; larger ones give the rest back.
const KEEP_BYTES: usize = 4 * 1024 * 1024;

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(&[0; BATCH_HEADER]);
        Self { buf }
    }

    /// Empties the batch, keeping its buffer unless an outsized batch grew it.
    pub fn clear(&mut self) {
        self.buf.clear();
        // One burst or move of up to MAX_APPEND_BYTES must not stay allocated for good.
        self.buf.shrink_to(KEEP_BYTES);
        self.buf.extend_from_slice(&[0; BATCH_HEADER]);
    }

    /// Whether no item was added.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == BATCH_HEADER
    }

    /// Cuts the batch back to `len` bytes, taking back the items added after that point.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len.max(BATCH_HEADER));
    }

    /// Bytes so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Adds a record; returns where its frame starts within the batch (header included) and
    /// its length. `None` if a field is too long for the frame (see [`encode_frame_into`]).
    pub fn record(
        &mut self,
        topic: u16,
        partition: u32,
        offset: u64,
        headers: &Headers,
        key: &[u8],
        value: &[u8],
    ) -> Option<(usize, u32)> {
        let start = self.buf.len();
        self.buf.push(TAG_RECORD);
        self.buf.extend_from_slice(&topic.to_le_bytes());
        self.buf.extend_from_slice(&partition.to_le_bytes());
        self.buf.extend_from_slice(&offset.to_le_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let frame_at = self.buf.len();
        let fitted = encode_frame_into(&mut self.buf, headers, key, value)
            .and_then(|()| u32::try_from(self.buf.len() - frame_at).ok());
        let Some(len) = fitted else {
            self.buf.truncate(start);
            return None;
        };
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        Some((frame_at, len))
    }

    /// Adds a record whose frame is already encoded (a record moved between segments).
    pub fn record_frame(
        &mut self,
        topic: u16,
        partition: u32,
        offset: u64,
        frame: &[u8],
    ) -> Option<(usize, u32)> {
        let len = u32::try_from(frame.len()).ok()?;
        self.buf.push(TAG_RECORD);
        self.buf.extend_from_slice(&topic.to_le_bytes());
        self.buf.extend_from_slice(&partition.to_le_bytes());
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        let frame_at = self.buf.len();
        self.buf.extend_from_slice(frame);
        Some((frame_at, len))
    }

    /// Adds a group's committed position.
    pub fn commit(&mut self, group: &str, topic: u16, partition: u32, next: u64) {
        let name = short(group);
        self.buf.push(TAG_COMMIT);
        self.buf
            .extend_from_slice(&(name.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(&topic.to_le_bytes());
        self.buf.extend_from_slice(&partition.to_le_bytes());
        self.buf.extend_from_slice(&next.to_le_bytes());
    }

    /// Adds a topic definition.
    pub fn topic(&mut self, id: u16, name: &str, partitions: u32) {
        let name = short(name);
        self.buf.push(TAG_TOPIC);
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf
            .extend_from_slice(&(name.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(&partitions.to_le_bytes());
    }

    /// Adds a partition's bounds.
    pub fn partition(&mut self, topic: u16, partition: u32, base: u64, end: u64) {
        self.buf.push(TAG_PARTITION);
        self.buf.extend_from_slice(&topic.to_le_bytes());
        self.buf.extend_from_slice(&partition.to_le_bytes());
        self.buf.extend_from_slice(&base.to_le_bytes());
        self.buf.extend_from_slice(&end.to_le_bytes());
    }

    /// Fills in the header and returns the bytes to write.
    pub fn finish(&mut self) -> &[u8] {
        let body = &self.buf[BATCH_HEADER..];
        let len = body.len() as u32;
        let crc = crc32fast::hash(body);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// Names longer than a `u16` length are cut; topic and group names are far shorter.
fn short(name: &str) -> &[u8] {
    let bytes = name.as_bytes();
    &bytes[..bytes.len().min(usize::from(u16::MAX))]
}

/// Splits a batch header into the body length and checksum.
pub fn batch_header(header: &[u8; BATCH_HEADER]) -> (usize, u32) {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    (len, crc)
}

/// Whether `body` matches its checksum.
pub fn body_intact(body: &[u8], crc: u32) -> bool {
    crc32fast::hash(body) == crc
}

/// A body that does not parse although its checksum held: written by another version, or a bug.
#[derive(Debug, thiserror::Error)]
#[error("malformed batch item at byte {at}")]
pub struct Malformed {
    /// Where in the body parsing stopped.
    pub at: usize,
}

/// The items of a batch body, in order.
pub fn items(body: &[u8]) -> Result<Vec<Item<'_>>, Malformed> {
    let mut out = Vec::new();
    let mut r = Reader { buf: body, at: 0 };
    while r.at < body.len() {
        let start = r.at;
        let bad = || Malformed { at: start };
        let item = match r.u8().ok_or_else(bad)? {
            TAG_RECORD => {
                let topic = r.u16().ok_or_else(bad)?;
                let partition = r.u32().ok_or_else(bad)?;
                let offset = r.u64().ok_or_else(bad)?;
                let len = r.u32().ok_or_else(bad)? as usize;
                let frame_at = r.at;
                let frame = r.take(len).ok_or_else(bad)?;
                Item::Record {
                    topic,
                    partition,
                    offset,
                    frame_at,
                    frame,
                }
            }
            TAG_COMMIT => {
                let len = usize::from(r.u16().ok_or_else(bad)?);
                let group = std::str::from_utf8(r.take(len).ok_or_else(bad)?).map_err(|_| bad())?;
                Item::Commit {
                    group,
                    topic: r.u16().ok_or_else(bad)?,
                    partition: r.u32().ok_or_else(bad)?,
                    next: r.u64().ok_or_else(bad)?,
                }
            }
            TAG_TOPIC => {
                let id = r.u16().ok_or_else(bad)?;
                let len = usize::from(r.u16().ok_or_else(bad)?);
                let name = std::str::from_utf8(r.take(len).ok_or_else(bad)?).map_err(|_| bad())?;
                Item::Topic {
                    id,
                    name,
                    partitions: r.u32().ok_or_else(bad)?,
                }
            }
            TAG_PARTITION => Item::Partition {
                topic: r.u16().ok_or_else(bad)?,
                partition: r.u32().ok_or_else(bad)?,
                base: r.u64().ok_or_else(bad)?,
                end: r.u64().ok_or_else(bad)?,
            },
            _ => return Err(bad()),
        };
        out.push(item);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.buf.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Appends a record's frame to `out`: `u16` header count, each header as `u16` name length,
/// name, `u32` value length, value; then `u32` key length, key; the rest is the value.
/// `None` (and `out` partly written) if a length does not fit its field.
pub fn encode_frame_into(
    out: &mut Vec<u8>,
    headers: &Headers,
    key: &[u8],
    value: &[u8],
) -> Option<()> {
    out.reserve(
        6 + key.len()
            + value.len()
            + headers
                .iter()
                .map(|(n, v)| 6 + n.len() + v.len())
                .sum::<usize>(),
    );
    out.extend_from_slice(&u16::try_from(headers.len()).ok()?.to_le_bytes());
    for (name, val) in headers {
        out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u32::try_from(val.len()).ok()?.to_le_bytes());
        out.extend_from_slice(val.as_bytes());
    }
    out.extend_from_slice(&u32::try_from(key.len()).ok()?.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Some(())
}

/// Splits a frame into headers, key and value; key and value share the frame's buffer.
pub fn decode_frame(frame: &Bytes) -> Option<(Headers, Bytes, Bytes)> {
    let mut r = Reader { buf: frame, at: 0 };
    let count = r.u16()?;
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let n = usize::from(r.u16()?);
        let name = std::str::from_utf8(r.take(n)?).ok()?.to_owned();
        let n = r.u32()? as usize;
        let val = std::str::from_utf8(r.take(n)?).ok()?.to_owned();
        headers.push((name, val));
    }
    let n = r.u32()? as usize;
    let key_at = r.at;
    r.take(n)?;
    Some((
        headers,
        frame.slice(key_at..key_at + n),
        frame.slice(key_at + n..),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_detected() {
        let headers = vec![("idempotency-key".to_owned(), "o1:validate".to_owned())];
        let mut buf = Vec::new();
        encode_frame_into(&mut buf, &headers, b"key", b"{\"v\":1}").expect("fits");
        let frame = Bytes::from(buf);
        let (h, k, v) = decode_frame(&frame).expect("decodes");
        assert_eq!(h, headers);
        assert_eq!(&k[..], b"key");
        assert_eq!(&v[..], b"{\"v\":1}");
        assert!(decode_frame(&frame.slice(..5)).is_none());
    }

    #[test]
    fn batches_round_trip_and_a_flipped_bit_fails_the_checksum() {
        let mut batch = Batch::new();
        batch.topic(0, "orders.accepted", 4);
        let (at, len) = batch
            .record(0, 3, 41, &vec![("a".into(), "b".into())], b"k", b"v")
            .expect("fits");
        batch.commit("validate", 0, 3, 42);
        batch.partition(0, 3, 7, 42);
        let bytes = batch.finish().to_vec();
        let (body_len, crc) = batch_header(bytes[..8].try_into().expect("8 bytes"));
        let body = &bytes[8..];
        assert_eq!(body_len, body.len());
        assert!(body_intact(body, crc));
        let parsed = items(body).expect("parses");
        assert_eq!(parsed.len(), 4);
        match &parsed[1] {
            Item::Record {
                topic: 0,
                partition: 3,
                offset: 41,
                frame_at,
                frame,
            } => {
                assert_eq!(*frame_at + BATCH_HEADER, at);
                assert_eq!(frame.len(), len as usize);
                let (h, k, v) = decode_frame(&Bytes::copy_from_slice(frame)).expect("frame");
                assert_eq!((h.len(), &k[..], &v[..]), (1, &b"k"[..], &b"v"[..]));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            parsed[2],
            Item::Commit {
                group: "validate",
                topic: 0,
                partition: 3,
                next: 42
            }
        );
        let mut flipped = body.to_vec();
        flipped[5] ^= 1;
        assert!(!body_intact(&flipped, crc));
        assert!(
            items(&body[..body.len() - 3]).is_err(),
            "a cut item is malformed"
        );
    }

    #[test]
    fn segment_names_sort_like_their_ids() {
        assert_eq!(segment_name(7), "0000000007.seg");
        assert_eq!(segment_id("0000000007.seg"), Some(7));
        assert_eq!(segment_id("7.seg"), None);
        assert_eq!(segment_id("0000000007.idx"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
