//! Any bytes, read as a stream of frames by the sans-IO splitter (length
//! prefix, cap) and the codec, as requests and as responses; no runtime, no
//! socket. Nothing may panic or allocate past the frame cap; what decodes
//! must encode back to the same frame; and feeding the same bytes one at a
//! time must split them into the same frames.
#![no_main]

use ft_protocol::codec;
use ft_protocol::frame::{self, Split};
use libfuzzer_sys::fuzz_target;

/// The frame bodies at the front of `data`, in order, up to the first
/// incomplete or refused frame.
fn bodies(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Ok(Split::Frame { body, len }) = frame::split(rest) {
        out.push(body);
        rest = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = bodies(data);

    // The same bytes arriving one at a time split the same way.
    let mut buf = bytes::BytesMut::new();
    let mut trickled = Vec::new();
    for byte in data {
        buf.extend_from_slice(&[*byte]);
        while let Ok(Some(body)) = frame::decode(&mut buf) {
            trickled.push(body);
        }
        // At most one incomplete frame is held, and growth at most doubles it.
        assert!(buf.capacity() <= 2 * (ft_protocol::MAX_FRAME + frame::LEN_PREFIX) + 1024);
    }
    assert!(trickled.len() >= whole.len());
    for (a, b) in whole.iter().zip(&trickled) {
        assert_eq!(*a, &b[..]);
    }

    for body in whole {
        if let Ok(request) = codec::decode_request(body) {
            let frame = codec::encode(&request).expect("a decoded request encodes");
            let again = codec::decode_request(&frame[codec::LEN_PREFIX..]).expect("and decodes");
            assert_eq!(again, request);
        }
        if let Ok(response) = codec::decode_response(bytes::Bytes::copy_from_slice(body)) {
            let frame = codec::encode(&response).expect("a decoded response encodes");
            let body = bytes::Bytes::copy_from_slice(&frame[codec::LEN_PREFIX..]);
            assert_eq!(codec::decode_response(body).expect("and decodes"), response);
        }
    }
});
