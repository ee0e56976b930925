//! postcard's wire encoding, read by hand for the objects a restore reads before
//! its first write (index objects, page maps): exactly what postcard reads, and
//! refused where it refuses (proptests hold each reader to postcard), without
//! serde visiting every byte of every 32-byte id and every element of long lists.
//!
//! The encoding (postcard 1.x, stable): integers above `u8` as LEB128 varints of
//! at most 5 (`u32`) or 10 (`u64`, `usize` on 64-bit) bytes, whose last byte
//! carries only the bits left; `u8` and byte arrays as raw bytes; `Option` as a
//! byte 0 or 1 then the value; sequences as a varint length then the elements;
//! enum variants as a `u32` varint index then their fields.

use crate::types::Id;

pub(crate) type Taken<'a, T> = std::result::Result<(T, &'a [u8]), postcard::Error>;

/// A postcard varint of a `u32`: at most 5 bytes, the last carrying at most 4 bits.
pub(crate) fn take_varint_u32(b: &[u8]) -> Taken<'_, u32> {
    let (v, rest) = take_varint(b, 5, 0x0f)?;
    Ok((v as u32, rest))
}

/// A postcard varint of a `u64`: at most 10 bytes, the last carrying at most 1 bit.
pub(crate) fn take_varint_u64(b: &[u8]) -> Taken<'_, u64> {
    take_varint(b, 10, 0x01)
}

fn take_varint(b: &[u8], max_len: usize, max_last: u8) -> Taken<'_, u64> {
    let mut out = 0u64;
    for i in 0..max_len {
        let byte = *b.get(i).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        out |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == max_len - 1 && byte > max_last {
                return Err(postcard::Error::DeserializeBadVarint);
            }
            return Ok((out, &b[i + 1..]));
        }
    }
    Err(postcard::Error::DeserializeBadVarint)
}

/// A `usize` (a sequence length) as postcard reads it on 64-bit targets: a `u64`
/// varint. Callers bound it by the bytes left before they allocate.
pub(crate) fn take_len(b: &[u8]) -> Taken<'_, usize> {
    let (v, rest) = take_varint_u64(b)?;
    Ok((v as usize, rest))
}

/// A sequence: its length, then that many elements read by `take`, each at least
/// `min_len` bytes long. A length the bytes left cannot hold fails where postcard
/// would, before anything is allocated for it.
pub(crate) fn take_seq<'a, T>(
    b: &'a [u8],
    min_len: usize,
    mut take: impl FnMut(&'a [u8]) -> Taken<'a, T>,
) -> Taken<'a, Vec<T>> {
    let (n, mut b) = take_len(b)?;
    if n > b.len() / min_len {
        return Err(postcard::Error::DeserializeUnexpectedEnd);
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (item, rest) = take(b)?;
        out.push(item);
        b = rest;
    }
    Ok((out, b))
}

/// A 32-byte id: its raw bytes.
pub(crate) fn take_id(b: &[u8]) -> Taken<'_, Id> {
    let (id, rest) = b
        .split_first_chunk::<32>()
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    Ok((Id(*id), rest))
}

/// An `Option<Id>`: a byte 0 (none) or 1 (then the id).
pub(crate) fn take_option_id(b: &[u8]) -> Taken<'_, Option<Id>> {
    match b.split_first() {
        None => Err(postcard::Error::DeserializeUnexpectedEnd),
        Some((0, rest)) => Ok((None, rest)),
        Some((1, rest)) => take_id(rest).map(|(id, rest)| (Some(id), rest)),
        Some(_) => Err(postcard::Error::DeserializeBadOption),
    }
}
