//! Protobuf's wire format, the little of it responses and resources are written with: varints,
//! length-delimited fields, and a resource's `Any` as a ready `resources` entry. A leaf: both the
//! resources ([`crate::resource`]) and the responses around them ([`crate::wire`]) use it.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::Any;

/// Wire type of length-delimited fields.
const LEN: u8 = 2;

pub(crate) fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

pub(crate) fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit.
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// The key of a length-delimited field; every field written here has a number below 16, so one
/// byte.
pub(crate) fn key(field: u8) -> u8 {
    (field << 3) | LEN
}

/// Bytes of a length-delimited field holding `len` bytes; prost leaves out empty strings.
pub(crate) fn string_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + varint_len(len as u64) + len
    }
}

pub(crate) fn put_string(buf: &mut BytesMut, field: u8, value: &[u8]) {
    if value.is_empty() {
        return;
    }
    buf.put_u8(key(field));
    put_varint(buf, value.len() as u64);
    buf.put_slice(value);
}

/// A version as a string field, without building the string.
pub(crate) fn put_version(buf: &mut BytesMut, field: u8, version: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.put_u8(key(field));
    buf.put_u8(16);
    for shift in (0..16).rev() {
        // Truncation intended: one hex digit.
        buf.put_u8(HEX[((version >> (shift * 4)) & 0xf) as usize]);
    }
}

/// `body` as one `resources` entry of a `DiscoveryResponse`. The `resource` field of a Delta
/// `Resource` has the same number, so these bytes serve both protocols.
pub(crate) fn any_field(body: &Any) -> Bytes {
    let len = body.encoded_len();
    let mut buf = BytesMut::with_capacity(1 + varint_len(len as u64) + len);
    buf.put_u8(key(2));
    put_varint(&mut buf, len as u64);
    body.encode_raw(&mut buf);
    buf.freeze()
}

/// The `Any` inside bytes [`any_field`] wrote.
pub(crate) fn any_of_field(field: &[u8]) -> Option<Any> {
    let (&first, mut rest) = field.split_first()?;
    if first != key(2) {
        return None;
    }
    let len = prost::encoding::decode_varint(&mut rest).ok()?;
    let body = rest.get(..usize::try_from(len).ok()?)?;
    Any::decode(body).ok()
}
