//! Any bytes, read as a stream of frames through the real framed connection
//! (length prefix, cap, bincode), as requests and as responses. Nothing may
//! panic, hang or allocate past the frame cap; what decodes must encode back
//! to the same frame.
#![no_main]

use std::time::Duration;

use ft_protocol::codec;
use ft_protocol::Connection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut as_requests = Connection::new(data, tokio::io::sink(), Duration::from_secs(1));
        while let Ok(Some(request)) = as_requests.read_request().await {
            let frame = codec::encode(&request).expect("a decoded request encodes");
            let again = codec::decode_request(&frame[codec::LEN_PREFIX..]).expect("and decodes");
            assert_eq!(again, request);
        }
        let mut as_responses = Connection::new(data, tokio::io::sink(), Duration::from_secs(1));
        while let Ok(response) = as_responses.read_response().await {
            let frame = codec::encode(&response).expect("a decoded response encodes");
            let body = bytes::Bytes::copy_from_slice(&frame[codec::LEN_PREFIX..]);
            assert_eq!(codec::decode_response(body).expect("and decodes"), response);
        }
    });
});
