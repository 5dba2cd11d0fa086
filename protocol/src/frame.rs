//! Frame splitting on bytes: a `u32` big-endian body length, then the body.
//!
//! Bytes in, a whole frame or "need more" out; no sockets, no runtime. The
//! length prefix is checked against [`MAX_FRAME`] as soon as its four bytes
//! are in, before anything is allocated for the body, so a peer cannot make
//! the reader reserve more than the cap whatever it announces.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::CodecError;
use crate::MAX_FRAME;

/// Bytes of the frame length prefix.
pub const LEN_PREFIX: usize = 4;

/// What the front of a byte stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split<'a> {
    /// A whole frame: its body, and how many bytes of the input it takes
    /// (prefix included).
    Frame {
        /// The frame body.
        body: &'a [u8],
        /// Input bytes the frame takes, prefix included.
        len: usize,
    },
    /// Not yet a whole frame. `total` is the input length the frame needs,
    /// once the prefix has arrived; `None` while the prefix itself is short.
    NeedMore {
        /// Input bytes the whole frame takes, when known.
        total: Option<usize>,
    },
}

/// The body length a length prefix announces, refused past [`MAX_FRAME`].
pub fn body_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, CodecError> {
    body_len_within(prefix, MAX_FRAME)
}

/// The body length a length prefix announces, refused past `max` (a reader
/// may cap frames below [`MAX_FRAME`]: a server caps requests at
/// [`crate::MAX_REQUEST`]).
pub fn body_len_within(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(CodecError::FrameTooLarge { len, max });
    }
    Ok(len)
}

/// Splits the frame at the front of `input`, if it is all there.
pub fn split(input: &[u8]) -> Result<Split<'_>, CodecError> {
    split_within(input, MAX_FRAME)
}

/// [`split`], with frames capped at `max` bytes.
pub fn split_within(input: &[u8], max: usize) -> Result<Split<'_>, CodecError> {
    let Some((prefix, rest)) = input.split_first_chunk::<LEN_PREFIX>() else {
        return Ok(Split::NeedMore { total: None });
    };
    let len = body_len_within(*prefix, max)?;
    match rest.get(..len) {
        Some(body) => Ok(Split::Frame {
            body,
            len: LEN_PREFIX + len,
        }),
        None => Ok(Split::NeedMore {
            total: Some(LEN_PREFIX + len),
        }),
    }
}

/// The variant index and body length of each whole frame at the front of
/// `input`, at most `most` of them, without taking them: how a reader sees
/// what a peer has sent ahead. Stops at the first frame not all there (or
/// over `max`).
pub fn whole_frames(input: &[u8], max: usize, most: usize) -> Vec<(u32, usize)> {
    let mut found = Vec::new();
    let mut rest = input;
    while found.len() < most {
        let Ok(Split::Frame { body, len }) = split_within(rest, max) else {
            break;
        };
        let Some(tag) = body.first_chunk::<4>() else {
            break;
        };
        found.push((u32::from_le_bytes(*tag), body.len()));
        rest = &rest[len..];
    }
    found
}

/// Takes the frame at the front of `buf` out of it, as a body that shares
/// `buf`'s memory; `None` if it is not all there yet, in which case `buf` has
/// room reserved for the rest of it (never past the cap).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
    decode_within(buf, MAX_FRAME)
}

/// [`decode`], with frames capped at `max` bytes.
pub fn decode_within(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, CodecError> {
    match split_within(buf, max)? {
        Split::Frame { len, .. } => {
            buf.advance(LEN_PREFIX);
            Ok(Some(buf.split_to(len - LEN_PREFIX).freeze()))
        }
        Split::NeedMore { total } => {
            if let Some(total) = total {
                buf.reserve(total.saturating_sub(buf.len()));
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_sent_ahead_are_seen_without_being_taken() {
        let mut input = vec![0, 0, 0, 5, 7, 0, 0, 0, 1];
        input.extend([0, 0, 0, 4, 9, 0, 0, 0]);
        input.extend([0, 0, 0, 9, 8]);
        assert_eq!(whole_frames(&input, MAX_FRAME, 10), [(7, 5), (9, 4)]);
        assert_eq!(whole_frames(&input, MAX_FRAME, 1), [(7, 5)]);
        assert_eq!(whole_frames(&input, 4, 10), [], "over the cap");
        assert_eq!(whole_frames(&[0, 0, 0, 2, 1, 2], MAX_FRAME, 10), []);
    }

    #[test]
    fn whole_frames_split_and_short_ones_ask_for_more() {
        assert_eq!(split(&[]), Ok(Split::NeedMore { total: None }));
        assert_eq!(split(&[0, 0, 0]), Ok(Split::NeedMore { total: None }));
        assert_eq!(
            split(&[0, 0, 0, 3, 1]),
            Ok(Split::NeedMore { total: Some(7) })
        );
        assert_eq!(
            split(&[0, 0, 0, 3, 1, 2, 3, 9, 9]),
            Ok(Split::Frame {
                body: &[1, 2, 3],
                len: 7
            })
        );
        assert_eq!(split(&[0, 0, 0, 0]), Ok(Split::Frame { body: &[], len: 4 }));
    }

    #[test]
    fn the_cap_is_checked_on_the_prefix_alone() {
        let over = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(
            split(&over),
            Err(CodecError::FrameTooLarge { len, .. }) if len == MAX_FRAME + 1
        ));
        assert!(body_len((MAX_FRAME as u32).to_be_bytes()).is_ok());
        // Nothing is reserved for a refused frame.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let before = buf.capacity();
        assert!(decode(&mut buf).is_err());
        assert_eq!(buf.capacity(), before);
    }

    #[test]
    fn decode_takes_frames_one_by_one_without_copying() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 7, 8, 0, 0, 0, 1, 9, 0, 0][..]);
        assert_eq!(decode(&mut buf), Ok(Some(Bytes::from_static(&[7, 8]))));
        assert_eq!(decode(&mut buf), Ok(Some(Bytes::from_static(&[9]))));
        assert_eq!(decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 2, "the partial prefix stays");
        buf.extend_from_slice(&[0, 100]);
        assert_eq!(decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= 104, "room for the whole frame");
    }
}
