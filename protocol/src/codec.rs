//! Messages to bytes and back: the one home of bincode.
//!
//! Encoding: bincode 1.3 with fixed-width little-endian integers, a decode limit
//! of [`MAX_FRAME`] bytes, and trailing bytes rejected. Changing the encoding
//! means changing this file only.
//!
//! `Data` frames have a fast path both ways, a server's `Response::Data` and
//! an uploading client's `Request::Data` alike: the sender writes a fixed
//! 16-byte header ([`data_header`], [`put_data_header`]) and then the payload
//! straight from its buffer, and the receiver slices the payload out of the
//! frame without copying it. Tests below hold both paths to the plain
//! bincode encoding.

use bincode::Options;
use bytes::Bytes;
use serde::Serialize;

use crate::error::CodecError;
pub use crate::frame::LEN_PREFIX;
use crate::message::{Request, Response};
use crate::MAX_FRAME;

/// Bincode's variant index of [`Response::Data`].
const DATA_TAG: u32 = 4;

/// Bincode's variant index of [`Request::Data`].
const PUT_DATA_TAG: u32 = 8;

/// Bytes before a `Data` payload inside the frame body: variant index (u32)
/// and payload length (u64).
const DATA_BODY_HEADER: usize = 12;

/// Bytes before a `Data` payload on the wire, length prefix included.
pub const DATA_HEADER: usize = LEN_PREFIX + DATA_BODY_HEADER;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

fn malformed(err: bincode::Error) -> CodecError {
    CodecError::Malformed(err.to_string())
}

/// Encodes a message as a whole frame: length prefix, then body.
pub fn encode<M: Serialize>(message: &M) -> Result<Vec<u8>, CodecError> {
    let len = options()
        .serialized_size(message)
        .map_err(|err| match *err {
            bincode::ErrorKind::SizeLimit => CodecError::FrameTooLarge {
                len: usize::MAX,
                max: MAX_FRAME,
            },
            _ => malformed(err),
        })?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_FRAME)
        .ok_or(CodecError::FrameTooLarge {
            len: len as usize,
            max: MAX_FRAME,
        })?;
    let mut frame = Vec::with_capacity(LEN_PREFIX + len);
    // `len <= MAX_FRAME`, which fits in a u32.
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    options()
        .serialize_into(&mut frame, message)
        .map_err(malformed)?;
    Ok(frame)
}

/// The wire bytes that precede a `Data` payload of `len` bytes; the payload
/// follows them unchanged. `len` must not exceed [`crate::MAX_DATA`].
pub fn data_header(len: usize) -> Result<[u8; DATA_HEADER], CodecError> {
    tagged_header(DATA_TAG, len)
}

/// The wire bytes that precede an upload's `Data` payload of `len` bytes
/// (a request); the payload follows them unchanged. `len` must not exceed
/// [`crate::MAX_PUT_DATA`].
pub fn put_data_header(len: usize) -> Result<[u8; DATA_HEADER], CodecError> {
    tagged_header(PUT_DATA_TAG, len)
}

fn tagged_header(tag: u32, len: usize) -> Result<[u8; DATA_HEADER], CodecError> {
    let body_len = DATA_BODY_HEADER + len;
    if body_len > MAX_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: body_len,
            max: MAX_FRAME,
        });
    }
    let mut header = [0u8; DATA_HEADER];
    header[..LEN_PREFIX].copy_from_slice(&(body_len as u32).to_be_bytes());
    options()
        .serialize_into(&mut header[LEN_PREFIX..], &(tag, len as u64))
        .map_err(malformed)?;
    Ok(header)
}

/// Decodes a request from a frame body.
pub fn decode_request(body: &[u8]) -> Result<Request, CodecError> {
    options().deserialize(body).map_err(malformed)
}

/// Decodes a request from a frame body; an upload's `Data` payload is
/// sliced out of `body`, not copied.
pub fn decode_request_bytes(body: Bytes) -> Result<Request, CodecError> {
    match data_payload(&body, PUT_DATA_TAG)? {
        Some(payload) => Ok(Request::Data(payload)),
        None => decode_request(&body),
    }
}

/// Decodes a response from a frame body; a `Data` payload is sliced out of
/// `body`, not copied.
pub fn decode_response(body: Bytes) -> Result<Response, CodecError> {
    match data_payload(&body, DATA_TAG)? {
        Some(payload) => Ok(Response::Data(payload)),
        None => options().deserialize(&body).map_err(malformed),
    }
}

/// The payload of a body that is a `Data` message with variant index
/// `tag`, sliced out of it; `None` for any other message.
fn data_payload(body: &Bytes, tag: u32) -> Result<Option<Bytes>, CodecError> {
    let Some(head) = body.get(..DATA_BODY_HEADER) else {
        return Ok(None);
    };
    let (found, len): (u32, u64) = options().deserialize(head).map_err(malformed)?;
    if found != tag {
        return Ok(None);
    }
    let payload = body.slice(DATA_BODY_HEADER..);
    if payload.len() as u64 != len {
        return Err(CodecError::DataLength {
            announced: len,
            carried: payload.len(),
        });
    }
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Entry, EntryKind, ErrorCode, FileMeta, RemoteError};

    fn body(frame: &[u8]) -> Bytes {
        match crate::frame::split(frame) {
            Ok(crate::frame::Split::Frame { body, len }) => {
                assert_eq!(len, frame.len(), "length prefix covers the body");
                Bytes::copy_from_slice(body)
            }
            other => panic!("not one whole frame: {other:?}"),
        }
    }

    fn sample_responses() -> Vec<Response> {
        let meta = FileMeta {
            size: 123,
            mtime_secs: -5,
            mtime_nanos: 999,
            sha256: Some([7; 32]),
        };
        vec![
            Response::Error(RemoteError::new(ErrorCode::NotFound, "no such file: a.txt")),
            Response::Welcome { version: 1 },
            Response::Meta(meta),
            Response::Checkpoints {
                meta,
                first: 1,
                states: vec![[1; 32], [2; 32]],
            },
            Response::Data(Bytes::from_static(b"hello")),
            Response::Data(Bytes::new()),
            Response::Checkpoint {
                index: 3,
                state: [9; 32],
            },
            Response::End { sha256: [4; 32] },
            Response::Entries(vec![
                Entry {
                    path: "docs/a.txt".into(),
                    kind: EntryKind::File,
                    size: 5,
                    mtime_secs: 1,
                    mtime_nanos: 2,
                    sha256: Some([3; 32]),
                },
                Entry {
                    path: "docs".into(),
                    kind: EntryKind::Dir,
                    size: 0,
                    mtime_secs: -1,
                    mtime_nanos: 0,
                    sha256: None,
                },
            ]),
            Response::ListEnd { skipped: 7 },
            Response::KeepAlive,
            Response::Held {
                chunks: vec![(0, 3), (5, 6)],
            },
            Response::Stored { index: 4 },
        ]
    }

    #[test]
    fn keepalive_is_eight_bytes_on_the_wire() {
        // As PROTOCOL.md section 4 gives it.
        assert_eq!(
            encode(&Response::KeepAlive).expect("encodes"),
            [0, 0, 0, 4, 9, 0, 0, 0]
        );
    }

    #[test]
    fn responses_round_trip() {
        for response in sample_responses() {
            let frame = encode(&response).expect("encodes");
            assert_eq!(decode_response(body(&frame)).expect("decodes"), response);
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Hello {
                magic: crate::MAGIC,
                version: 2,
                token: None,
            },
            Request::Hello {
                magic: crate::MAGIC,
                version: 2,
                token: Some(crate::Token::new("ftk_abc")),
            },
            Request::Stat { path: "a/b".into() },
            Request::Get {
                path: "x".into(),
                offset: 1 << 40,
            },
            Request::Checkpoints {
                path: "x".into(),
                first: 1,
                count: 9,
            },
            Request::List {
                path: "".into(),
                recursive: true,
                digests: false,
            },
            Request::Range {
                path: "x".into(),
                offset: 8 << 20,
                end: 12 << 20,
            },
            Request::Put {
                path: "in/x".into(),
                size: 5 << 20,
                version: [6; 32],
                mtime_secs: -3,
                mtime_nanos: 4,
                overwrite: true,
            },
            Request::Chunk {
                index: 1,
                start: [1; 32],
                end: [2; 32],
            },
            Request::Data(Bytes::from_static(b"bytes")),
            Request::Commit { sha256: [3; 32] },
        ];
        for request in requests {
            let frame = encode(&request).expect("encodes");
            assert_eq!(decode_request(&body(&frame)).expect("decodes"), request);
        }
    }

    #[test]
    fn upload_data_fast_path_matches_plain_bincode() {
        let payload = Bytes::from_static(b"uploaded bytes");
        let plain = encode(&Request::Data(payload.clone())).expect("encodes");
        let mut fast = put_data_header(payload.len()).expect("fits").to_vec();
        fast.extend_from_slice(&payload);
        assert_eq!(plain, fast);
        assert_eq!(
            decode_request_bytes(body(&plain)).expect("decodes"),
            Request::Data(payload)
        );
        let wrong = {
            let mut frame = plain.clone();
            frame.pop();
            frame
        };
        assert!(decode_request_bytes(Bytes::copy_from_slice(&wrong[LEN_PREFIX..])).is_err());
        // Other requests go the plain way.
        let commit = Request::Commit { sha256: [1; 32] };
        let frame = encode(&commit).expect("encodes");
        assert_eq!(decode_request_bytes(body(&frame)).expect("decodes"), commit);
    }

    #[test]
    fn data_fast_path_matches_plain_bincode() {
        let payload = b"some file bytes".to_vec();
        let plain = encode(&Response::Data(Bytes::from(payload.clone()))).expect("encodes");
        let mut fast = data_header(payload.len()).expect("fits").to_vec();
        fast.extend_from_slice(&payload);
        assert_eq!(fast, plain);
    }

    #[test]
    fn wire_layout_is_fixed_little_endian() {
        // Hello is variant 0 with a 4-byte magic, a u32 version and an
        // optional token (a 0/1 tag, then a u64 length and the bytes); these
        // bytes are what PROTOCOL.md promises.
        let frame = encode(&Request::Hello {
            magic: *b"FTXF",
            version: 2,
            token: None,
        })
        .expect("encodes");
        assert_eq!(
            frame,
            [0, 0, 0, 13, 0, 0, 0, 0, b'F', b'T', b'X', b'F', 2, 0, 0, 0, 0]
        );
        let frame = encode(&Request::Hello {
            magic: *b"FTXF",
            version: 2,
            token: Some(crate::Token::new("ab")),
        })
        .expect("encodes");
        assert_eq!(
            frame,
            [
                0, 0, 0, 23, 0, 0, 0, 0, b'F', b'T', b'X', b'F', 2, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0,
                0, 0, b'a', b'b'
            ]
        );
    }

    #[test]
    fn protocol_md_examples_hold() {
        // The worked examples in PROTOCOL.md, section 3.
        let busy =
            encode(&Response::Error(RemoteError::new(ErrorCode::Busy, "x"))).expect("encodes");
        assert_eq!(
            busy,
            [0, 0, 0, 17, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'x']
        );
        let data = encode(&Response::Data(Bytes::from_static(b"abc"))).expect("encodes");
        assert_eq!(
            data,
            [0, 0, 0, 15, 4, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c']
        );
        let meta = encode(&Response::Meta(FileMeta {
            size: 1,
            mtime_secs: -1,
            mtime_nanos: 2,
            sha256: None,
        }))
        .expect("encodes");
        let mut want = vec![0, 0, 0, 25, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[0xff; 8]);
        want.extend_from_slice(&[2, 0, 0, 0, 0]);
        assert_eq!(meta, want, "FileMeta: u64, i64, u32, Option tag");
        let list_end = encode(&Response::ListEnd { skipped: 2 }).expect("encodes");
        assert_eq!(list_end, [0, 0, 0, 12, 8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        // Error codes keep the values PROTOCOL.md section 5 gives them.
        let codes = [
            ErrorCode::NotFound,
            ErrorCode::NotAFile,
            ErrorCode::PermissionDenied,
            ErrorCode::InvalidPath,
            ErrorCode::UnsupportedVersion,
            ErrorCode::Busy,
            ErrorCode::Internal,
            ErrorCode::BadRequest,
            ErrorCode::FileChanged,
            ErrorCode::NotADirectory,
        ];
        for (value, code) in codes.into_iter().enumerate() {
            let frame = encode(&Response::Error(RemoteError::new(code, ""))).expect("encodes");
            assert_eq!(frame[8], value as u8, "{code:?}");
        }
    }

    #[test]
    fn a_full_batch_of_the_longest_paths_fits_a_frame() {
        // The server fills an Entries frame up to LIST_BATCH_BYTES of
        // `FIXED_BYTES + path` per entry, then adds one more at most.
        let entry = Entry {
            path: "x".repeat(crate::MAX_PATH_BYTES),
            kind: EntryKind::File,
            size: u64::MAX,
            mtime_secs: i64::MIN,
            mtime_nanos: u32::MAX,
            sha256: Some([0xff; 32]),
        };
        let one = encode(&entry).expect("encodes").len() - LEN_PREFIX;
        assert_eq!(one, Entry::FIXED_BYTES + crate::MAX_PATH_BYTES);
        let per_frame = crate::LIST_BATCH_BYTES / one + 1;
        let frame = encode(&Response::Entries(vec![entry; per_frame])).expect("fits");
        assert!(frame.len() <= MAX_FRAME);
    }

    #[test]
    fn data_frame_with_wrong_inner_length_is_malformed() {
        let mut frame = data_header(4).expect("fits").to_vec();
        frame.extend_from_slice(b"abc"); // one byte short
        let body = Bytes::copy_from_slice(&frame[LEN_PREFIX..]);
        assert_eq!(
            decode_response(body),
            Err(CodecError::DataLength {
                announced: 4,
                carried: 3
            })
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert!(decode_request(&[0xff; 9]).is_err());
        assert!(decode_request(&[]).is_err());
        let mut frame = encode(&Request::Stat { path: "a".into() }).expect("encodes");
        frame.push(0);
        assert!(decode_request(&frame[LEN_PREFIX..]).is_err());
        assert!(decode_response(Bytes::from_static(&[200, 0, 0, 0])).is_err());
    }

    #[test]
    fn huge_inner_lengths_do_not_allocate() {
        // A Stat whose string claims 2^60 bytes must fail on the limit, not try
        // to allocate.
        let mut body = vec![1, 0, 0, 0];
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode_request(&body).is_err());
    }

    #[test]
    fn oversized_messages_are_refused() {
        let response = Response::Checkpoints {
            meta: FileMeta {
                size: 0,
                mtime_secs: 0,
                mtime_nanos: 0,
                sha256: None,
            },
            first: 1,
            states: vec![[0; 32]; MAX_FRAME / 32 + 1],
        };
        assert!(matches!(
            encode(&response),
            Err(CodecError::FrameTooLarge { .. })
        ));
        assert!(data_header(MAX_FRAME).is_err());
    }
}
