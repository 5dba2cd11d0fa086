//! Properties of the codec and of path parsing over generated inputs: every
//! message survives a round trip, no byte string makes a decoder panic or
//! allocate past the frame cap, and a parsed path can never lead upward.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use bytes::Bytes;
use ft_protocol::codec::{decode_request, decode_response, encode, LEN_PREFIX};
use ft_protocol::{
    Entry, EntryKind, ErrorCode, FileMeta, RemoteError, RemotePath, Request, Response, MAX_FRAME,
};
use proptest::prelude::*;

fn digest() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn meta() -> impl Strategy<Value = FileMeta> {
    (
        any::<u64>(),
        any::<i64>(),
        any::<u32>(),
        proptest::option::of(digest()),
    )
        .prop_map(|(size, mtime_secs, mtime_nanos, sha256)| FileMeta {
            size,
            mtime_secs,
            mtime_nanos,
            sha256,
        })
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotFound),
        Just(ErrorCode::NotAFile),
        Just(ErrorCode::PermissionDenied),
        Just(ErrorCode::InvalidPath),
        Just(ErrorCode::UnsupportedVersion),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Internal),
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::FileChanged),
        Just(ErrorCode::NotADirectory),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (".{0,40}", any::<bool>(), meta()).prop_map(|(path, dir, meta)| Entry {
        path,
        kind: if dir { EntryKind::Dir } else { EntryKind::File },
        size: meta.size,
        mtime_secs: meta.mtime_secs,
        mtime_nanos: meta.mtime_nanos,
        sha256: meta.sha256,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u32>()).prop_map(|(magic, version)| Request::Hello {
            magic,
            version,
            token: None,
        }),
        ".{0,100}".prop_map(|path| Request::Stat { path }),
        (".{0,100}", any::<u64>()).prop_map(|(path, offset)| Request::Get { path, offset }),
        (".{0,100}", any::<u64>(), any::<u32>())
            .prop_map(|(path, first, count)| Request::Checkpoints { path, first, count }),
        (".{0,100}", any::<bool>(), any::<bool>()).prop_map(|(path, recursive, digests)| {
            Request::List {
                path,
                recursive,
                digests,
            }
        }),
        (".{0,100}", any::<u64>(), any::<u64>()).prop_map(|(path, offset, end)| Request::Range {
            path,
            offset,
            end
        }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (code(), ".{0,100}")
            .prop_map(|(code, message)| Response::Error(RemoteError::new(code, message))),
        any::<u32>().prop_map(|version| Response::Welcome { version }),
        meta().prop_map(Response::Meta),
        (
            meta(),
            any::<u64>(),
            proptest::collection::vec(digest(), 0..20)
        )
            .prop_map(|(meta, first, states)| Response::Checkpoints {
                meta,
                first,
                states
            }),
        proptest::collection::vec(any::<u8>(), 0..2000)
            .prop_map(|data| Response::Data(Bytes::from(data))),
        (any::<u64>(), digest()).prop_map(|(index, state)| Response::Checkpoint { index, state }),
        digest().prop_map(|sha256| Response::End { sha256 }),
        proptest::collection::vec(entry(), 0..20).prop_map(Response::Entries),
        any::<u64>().prop_map(|skipped| Response::ListEnd { skipped }),
        Just(Response::KeepAlive),
    ]
}

/// The body of an encoded frame, checked against its length prefix.
fn body(frame: &[u8]) -> &[u8] {
    let len = u32::from_be_bytes(frame[..LEN_PREFIX].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - LEN_PREFIX);
    assert!(len <= MAX_FRAME);
    &frame[LEN_PREFIX..]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn requests_round_trip(request in request()) {
        let frame = encode(&request).unwrap();
        prop_assert_eq!(decode_request(body(&frame)).unwrap(), request);
    }

    #[test]
    fn responses_round_trip(response in response()) {
        let frame = encode(&response).unwrap();
        let decoded = decode_response(Bytes::copy_from_slice(body(&frame))).unwrap();
        prop_assert_eq!(decoded, response);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(Bytes::from(bytes));
    }

    #[test]
    fn a_valid_frame_with_one_byte_changed_never_panics(
        response in response(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let frame = encode(&response).unwrap();
        let mut body = body(&frame).to_vec();
        if !body.is_empty() {
            let i = at.index(body.len());
            body[i] = value;
        }
        let _ = decode_response(Bytes::from(body.clone()));
        let _ = decode_request(&body);
    }

    #[test]
    fn parsed_paths_never_lead_upward(text in "[a-z./\\\\\\x00]{0,30}|.{0,60}") {
        if let Ok(path) = RemotePath::parse(&text) {
            let shown = path.to_string();
            prop_assert!(!shown.starts_with('/'));
            prop_assert!(!shown.contains('\0') && !shown.contains('\\'));
            prop_assert!(shown.split('/').all(|c| c != ".." && !c.is_empty()));
            let relative = path.to_relative();
            prop_assert!(relative.is_relative());
            prop_assert!(relative.components().all(|c| matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )));
            // Display and parse agree.
            let again = RemotePath::parse(&shown).unwrap();
            prop_assert_eq!(again, path);
        }
    }
}
