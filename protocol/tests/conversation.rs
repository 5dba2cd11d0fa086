//! Whole conversations on bytes alone: what one side encodes is cut into
//! arbitrary pieces, split back into frames, decoded and checked by the
//! other side's state machines. No runtime, no socket: these run with the
//! `io` feature off.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use bytes::{Bytes, BytesMut};
use ft_protocol::codec::{decode_request, decode_response, encode};
use ft_protocol::get::piece_len;
use ft_protocol::{
    frame, ChainHasher, ClientHandshake, Entry, EntryKind, FileMeta, GetError, GetEvent, GetReply,
    ListError, ListEvent, ListReply, Request, Response, ServerHandshake, CHUNK_SIZE, VERSION,
};

/// Cuts `bytes` into pieces of pseudo-random sizes (1 to `max` bytes) and
/// feeds them to the splitter one piece at a time: the frame bodies, in order.
fn trickle(bytes: &[u8], max: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = seed;
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let take = (1 + (rng >> 33) as usize % max).min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        while let Some(body) = frame::decode(&mut buf).expect("frames within the cap") {
            bodies.push(body);
        }
    }
    assert!(buf.is_empty(), "no bytes left over");
    bodies
}

/// The responses in `bytes`, cut and reassembled, keep-alives skipped (as
/// the connection's reader does).
fn responses(bytes: &[u8], max: usize, seed: u64) -> Vec<Response> {
    trickle(bytes, max, seed)
        .into_iter()
        .map(|body| decode_response(body).expect("decodes"))
        .filter(|response| *response != Response::KeepAlive)
        .collect()
}

/// What an honest server writes for `Get { offset }` of `data`, with a
/// keep-alive before the first data frame.
fn get_reply(data: &[u8], offset: u64) -> Vec<Response> {
    let size = data.len() as u64;
    let mut hasher = ChainHasher::new();
    hasher.update(&data[..offset as usize]);
    let meta = FileMeta {
        size,
        mtime_secs: 1,
        mtime_nanos: 2,
        sha256: None,
    };
    let mut frames = vec![Response::Meta(meta), Response::KeepAlive];
    let mut pos = offset;
    while pos < size {
        let end = pos + piece_len(pos, size) as u64;
        let piece = &data[pos as usize..end as usize];
        hasher.update(piece);
        frames.push(Response::Data(Bytes::copy_from_slice(piece)));
        if end.is_multiple_of(CHUNK_SIZE) {
            frames.push(Response::Checkpoint {
                index: end / CHUNK_SIZE,
                state: hasher.state().expect("a boundary"),
            });
        }
        pos = end;
    }
    frames.push(Response::End {
        sha256: hasher.finalize(),
    });
    frames
}

fn wire(frames: &[Response]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|frame| encode(frame).expect("encodes"))
        .collect()
}

#[test]
fn the_handshake_crosses_as_bytes_in_any_pieces() {
    let client = ClientHandshake {
        token: Some(ft_protocol::Token::new("ftk_t")),
    };
    let hello = encode(&client.hello()).expect("encodes");
    for max in [1, 3, 64] {
        let bodies = trickle(&hello, max, max as u64);
        let [body] = bodies.as_slice() else {
            panic!("one frame: {bodies:?}")
        };
        let request = decode_request(body).expect("decodes");
        let token = ServerHandshake.receive(request).expect("welcomed");
        assert_eq!(token, client.token);
        let welcome = ServerHandshake.welcome();
        let reply = responses(&encode(&welcome).expect("encodes"), max, 7);
        assert_eq!(client.receive(reply[0].clone()), Ok(VERSION));
    }
    // A Stat before the hello is refused on the server's side.
    let stat = encode(&Request::Stat { path: "a".into() }).expect("encodes");
    let body = &trickle(&stat, 5, 1)[0];
    let request = decode_request(body).expect("decodes");
    assert!(ServerHandshake.receive(request).is_err());
}

#[test]
fn a_get_reply_cut_anywhere_checks_out_from_any_chunk() {
    let data: Vec<u8> = (0..2 * CHUNK_SIZE as usize + 1000)
        .map(|i| (i % 251) as u8)
        .collect();
    for offset in [0, CHUNK_SIZE, 2 * CHUNK_SIZE] {
        let bytes = wire(&get_reply(&data, offset));
        for (max, seed) in [(7, 1), (4096, 2), (3 << 20, 3)] {
            let mut reply = GetReply::new(offset);
            let mut received = Vec::new();
            let mut points = 0;
            for frame in responses(&bytes, max, seed) {
                match reply.feed(frame).expect("in order") {
                    GetEvent::Data(piece) => received.extend_from_slice(&piece),
                    GetEvent::Checkpoint { .. } => points += 1,
                    GetEvent::Meta(_) | GetEvent::End { .. } => {}
                    GetEvent::Failed(err) => panic!("{err}"),
                }
            }
            assert!(reply.is_done(), "offset {offset}, pieces up to {max}");
            assert_eq!(received, &data[offset as usize..]);
            assert_eq!(points, 2 - offset / CHUNK_SIZE);
        }
    }
}

#[test]
fn a_get_reply_with_a_frame_out_of_place_is_refused() {
    let data = vec![9u8; CHUNK_SIZE as usize + 10];
    let honest = get_reply(&data, 0);
    let dropped: Vec<Response> = honest
        .iter()
        .filter(|frame| !matches!(frame, Response::Checkpoint { .. }))
        .cloned()
        .collect();
    let mut reply = GetReply::new(0);
    let outcome = responses(&wire(&dropped), 100, 9)
        .into_iter()
        .try_for_each(|frame| reply.feed(frame).map(drop));
    assert_eq!(outcome, Err(GetError::MissingCheckpoint { at: CHUNK_SIZE }));
}

#[test]
fn a_listing_crosses_as_bytes_and_ends_once() {
    let entry = |i: usize| Entry {
        path: format!("d/f{i}"),
        kind: EntryKind::File,
        size: i as u64,
        mtime_secs: 0,
        mtime_nanos: 0,
        sha256: None,
    };
    let frames = [
        Response::Entries((0..3).map(entry).collect()),
        Response::KeepAlive,
        Response::Entries((3..5).map(entry).collect()),
        Response::ListEnd { skipped: 2 },
        Response::Entries(vec![entry(9)]),
    ];
    let mut reply = ListReply::new();
    let mut names = Vec::new();
    let mut outcome = Vec::new();
    for frame in responses(&wire(&frames), 11, 4) {
        match reply.feed(frame) {
            Ok(ListEvent::Entries(entries)) => names.extend(entries.into_iter().map(|e| e.path)),
            other => outcome.push(other),
        }
    }
    assert_eq!(names, ["d/f0", "d/f1", "d/f2", "d/f3", "d/f4"]);
    assert_eq!(
        outcome,
        [
            Ok(ListEvent::End { skipped: 2 }),
            Err(ListError::AfterEnd { kind: "Entries" })
        ]
    );
}
