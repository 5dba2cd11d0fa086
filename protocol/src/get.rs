//! The replies to `Get` and `Range`, both sides: where the sender cuts data
//! frames ([`piece_len`]), and checkers the receiver feeds every frame to
//! ([`GetReply`], [`RangeReply`]), which know what may follow what, where
//! checkpoints must sit and when the reply is complete. Whether the bytes
//! hash right is not their business: they check places, the hasher checks
//! contents.

use bytes::Bytes;

use crate::hash::Digest;
use crate::message::{FileMeta, RemoteError, Response};
use crate::{CHUNK_SIZE, MAX_DATA};

/// The length of the data frame that starts at `pos` in a file of `size`
/// bytes: up to [`MAX_DATA`], never across a chunk boundary or past the end.
pub fn piece_len(pos: u64, size: u64) -> usize {
    let to_boundary = CHUNK_SIZE - pos % CHUNK_SIZE;
    // At most MAX_DATA, so it fits.
    (MAX_DATA as u64)
        .min(to_boundary)
        .min(size.saturating_sub(pos)) as usize
}

/// One frame of a `Get` reply, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetEvent {
    /// The version being sent: always first.
    Meta(FileMeta),
    /// The next bytes of the file.
    Data(Bytes),
    /// The chaining state at boundary `index`, right after the data that
    /// reaches it.
    Checkpoint {
        /// The boundary, 1-based.
        index: u64,
        /// The state the server claims there.
        state: Digest,
    },
    /// The last frame: the digest the server claims for the whole file.
    End {
        /// SHA-256 of the whole file.
        sha256: Digest,
    },
    /// The server gave up on the request (also the last frame).
    Failed(RemoteError),
}

/// A frame out of place in a `Get` reply: the server broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// The first frame was neither `Meta` nor `Error`.
    #[error("unexpected reply to a download request")]
    NoMeta {
        /// The frame that came instead.
        kind: &'static str,
    },
    /// The download was asked from past the end of the file.
    #[error("asked from byte {offset}, but the file has {size} bytes")]
    OffsetPastEnd {
        /// Where the download was asked from.
        offset: u64,
        /// The size `Meta` announced.
        size: u64,
    },
    /// A frame that has no place in a `Get` reply.
    #[error("unexpected {kind} frame during a transfer")]
    Unexpected {
        /// The frame.
        kind: &'static str,
    },
    /// Data reached a chunk boundary and something other than its checkpoint followed.
    #[error("no checkpoint at byte {at}")]
    MissingCheckpoint {
        /// The boundary.
        at: u64,
    },
    /// A `Data` frame with nothing in it.
    #[error("empty data frame")]
    EmptyData,
    /// More bytes than `Meta` announced.
    #[error("sent more bytes than the {size} it announced")]
    TooLong {
        /// The size `Meta` announced.
        size: u64,
    },
    /// A `Data` frame that runs over a chunk boundary.
    #[error("data frame crosses a checkpoint")]
    CrossesCheckpoint,
    /// A checkpoint anywhere but right after the data that reaches its boundary.
    #[error("checkpoint {index} arrived at byte {at}")]
    MisplacedCheckpoint {
        /// The boundary it names.
        index: u64,
        /// Where the data stood.
        at: u64,
    },
    /// `End` before all the announced bytes.
    #[error("transfer ended at byte {at} of {size}")]
    EndedEarly {
        /// Bytes received by then (from the start of the file).
        at: u64,
        /// The size `Meta` announced.
        size: u64,
    },
    /// More bytes than a `Range` asked for.
    #[error("sent bytes past the end {end} of the range asked for")]
    PastRange {
        /// Where the range ends (or the file, if sooner).
        end: u64,
    },
    /// A frame after the reply was complete.
    #[error("a {kind} frame after the end of a transfer")]
    AfterEnd {
        /// The frame.
        kind: &'static str,
    },
}

/// Where a reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for `Meta`.
    Meta,
    /// Receiving data; `marked` is where the last checkpoint (or the start) was.
    Body { size: u64, pos: u64, marked: u64 },
    /// `End` or `Error` has come, with the data up to `pos`.
    Done { pos: u64 },
}

/// The first frame of a reply to a request from `offset`, for `Get` and
/// `Range` alike: `Meta` of a file that reaches `offset`, or `Error`.
fn opening(offset: u64, frame: Response) -> Result<GetEvent, GetError> {
    match frame {
        Response::Meta(meta) if offset > meta.size => Err(GetError::OffsetPastEnd {
            offset,
            size: meta.size,
        }),
        Response::Meta(meta) => Ok(GetEvent::Meta(meta)),
        Response::Error(err) => Ok(GetEvent::Failed(err)),
        other => Err(GetError::NoMeta { kind: other.kind() }),
    }
}

impl Stage {
    /// Bytes of the file before the next data frame of a reply from `offset`.
    fn position(self, offset: u64) -> u64 {
        match self {
            Stage::Body { pos, .. } | Stage::Done { pos } => pos,
            Stage::Meta => offset,
        }
    }
}

/// Checks, frame by frame, the reply to a `Get` from `offset`.
#[derive(Debug, Clone)]
pub struct GetReply {
    offset: u64,
    stage: Stage,
}

impl GetReply {
    /// A reply to `Get { offset }`, before its first frame.
    pub fn new(offset: u64) -> Self {
        Self {
            offset,
            stage: Stage::Meta,
        }
    }

    /// The reply to `Get { offset }` once its `Meta` has come: what the
    /// receiver builds when it has read that first frame itself.
    pub fn after_meta(offset: u64, meta: &FileMeta) -> Result<Self, GetError> {
        let mut reply = Self::new(offset);
        reply.feed(Response::Meta(*meta))?;
        Ok(reply)
    }

    /// Bytes of the file before the next data frame: `offset` plus what
    /// has come.
    pub fn position(&self) -> u64 {
        self.stage.position(self.offset)
    }

    /// Whether the reply is complete (after `End` or `Error`).
    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done { .. })
    }

    /// Takes the next frame (keep-alives already skipped) and says what it
    /// is, or why it has no place here.
    pub fn feed(&mut self, frame: Response) -> Result<GetEvent, GetError> {
        let (size, pos, marked) = match self.stage {
            Stage::Done { .. } => return Err(GetError::AfterEnd { kind: frame.kind() }),
            Stage::Meta => {
                let event = opening(self.offset, frame)?;
                self.stage = match &event {
                    GetEvent::Meta(meta) => Stage::Body {
                        size: meta.size,
                        pos: self.offset,
                        marked: self.offset,
                    },
                    _ => Stage::Done { pos: self.offset },
                };
                return Ok(event);
            }
            Stage::Body { size, pos, marked } => (size, pos, marked),
        };
        // A checkpoint must follow the data that reaches each boundary.
        let owed = pos.is_multiple_of(CHUNK_SIZE) && pos > marked;
        if owed && !matches!(frame, Response::Checkpoint { .. } | Response::Error(_)) {
            return Err(GetError::MissingCheckpoint { at: pos });
        }
        match frame {
            Response::Data(data) => {
                if data.is_empty() {
                    return Err(GetError::EmptyData);
                }
                let end = pos + data.len() as u64;
                if end > size {
                    return Err(GetError::TooLong { size });
                }
                if pos / CHUNK_SIZE != (end - 1) / CHUNK_SIZE {
                    return Err(GetError::CrossesCheckpoint);
                }
                self.stage = Stage::Body {
                    size,
                    pos: end,
                    marked,
                };
                Ok(GetEvent::Data(data))
            }
            Response::Checkpoint { index, state } => {
                if pos <= marked || index.checked_mul(CHUNK_SIZE) != Some(pos) {
                    return Err(GetError::MisplacedCheckpoint { index, at: pos });
                }
                self.stage = Stage::Body {
                    size,
                    pos,
                    marked: pos,
                };
                Ok(GetEvent::Checkpoint { index, state })
            }
            Response::End { sha256 } => {
                if pos != size {
                    return Err(GetError::EndedEarly { at: pos, size });
                }
                self.stage = Stage::Done { pos };
                Ok(GetEvent::End { sha256 })
            }
            Response::Error(err) => {
                self.stage = Stage::Done { pos };
                Ok(GetEvent::Failed(err))
            }
            other => Err(GetError::Unexpected { kind: other.kind() }),
        }
    }
}

/// Checks, frame by frame, the reply to a `Range { offset, end }`: `Meta`,
/// then `Data` frames up to `end` or the end of the file, whichever comes
/// first, and nothing else; or `Error` in place of any of them. The reply
/// is complete with its last byte (at once after `Meta` when the range is
/// empty).
#[derive(Debug, Clone)]
pub struct RangeReply {
    offset: u64,
    end: u64,
    stage: Stage,
}

impl RangeReply {
    /// A reply to `Range { offset, end }`, before its first frame.
    pub fn new(offset: u64, end: u64) -> Self {
        Self {
            offset,
            end,
            stage: Stage::Meta,
        }
    }

    /// Bytes of the file before the next data frame.
    pub fn position(&self) -> u64 {
        self.stage.position(self.offset)
    }

    /// Whether the reply is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done { .. })
    }

    /// Takes the next frame (keep-alives already skipped) and says what it
    /// is, or why it has no place here.
    pub fn feed(&mut self, frame: Response) -> Result<GetEvent, GetError> {
        let (stop, pos) = match self.stage {
            Stage::Done { .. } => return Err(GetError::AfterEnd { kind: frame.kind() }),
            Stage::Body { size, pos, .. } => (size, pos),
            Stage::Meta => {
                let event = opening(self.offset, frame)?;
                self.stage = match &event {
                    GetEvent::Meta(meta) => self.after(self.end.min(meta.size), self.offset),
                    _ => Stage::Done { pos: self.offset },
                };
                return Ok(event);
            }
        };
        match frame {
            Response::Data(data) => {
                if data.is_empty() {
                    return Err(GetError::EmptyData);
                }
                let end = pos + data.len() as u64;
                if end > stop {
                    return Err(GetError::PastRange { end: stop });
                }
                if pos / CHUNK_SIZE != (end - 1) / CHUNK_SIZE {
                    return Err(GetError::CrossesCheckpoint);
                }
                self.stage = self.after(stop, end);
                Ok(GetEvent::Data(data))
            }
            Response::Error(err) => {
                self.stage = Stage::Done { pos };
                Ok(GetEvent::Failed(err))
            }
            other => Err(GetError::Unexpected { kind: other.kind() }),
        }
    }

    /// Where the reply stands with the bytes up to `pos` of `..stop` in.
    fn after(&self, stop: u64, pos: u64) -> Stage {
        if pos >= stop {
            Stage::Done { pos }
        } else {
            Stage::Body {
                size: stop,
                pos,
                marked: pos,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ErrorCode;

    const CHUNK: u64 = CHUNK_SIZE;

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mtime_secs: 0,
            mtime_nanos: 0,
            sha256: None,
        }
    }

    fn data(len: u64) -> Response {
        Response::Data(Bytes::from(vec![0u8; len as usize]))
    }

    fn point(index: u64) -> Response {
        Response::Checkpoint {
            index,
            state: [index as u8; 32],
        }
    }

    fn end() -> Response {
        Response::End { sha256: [0; 32] }
    }

    /// What an honest server sends for a file of `size` bytes from `offset`.
    fn honest(size: u64, offset: u64) -> Vec<Response> {
        let mut frames = vec![Response::Meta(meta(size))];
        let mut pos = offset;
        while pos < size {
            let len = piece_len(pos, size) as u64;
            frames.push(data(len));
            pos += len;
            if pos.is_multiple_of(CHUNK) {
                frames.push(point(pos / CHUNK));
            }
        }
        frames.push(end());
        frames
    }

    /// Feeds `frames` in order: the first error, or the events.
    fn run(offset: u64, frames: Vec<Response>) -> Result<Vec<GetEvent>, GetError> {
        let mut reply = GetReply::new(offset);
        frames.into_iter().map(|f| reply.feed(f)).collect()
    }

    #[test]
    fn pieces_stop_at_boundaries_and_the_end() {
        assert_eq!(piece_len(0, 10), 10);
        assert_eq!(piece_len(0, 10 * CHUNK), MAX_DATA);
        assert_eq!(piece_len(CHUNK - 5, 10 * CHUNK), 5);
        assert_eq!(piece_len(CHUNK, CHUNK + 3), 3);
        assert_eq!(piece_len(7, 7), 0);
        assert_eq!(piece_len(9, 7), 0, "past the end: nothing");
    }

    #[test]
    fn honest_replies_pass_from_any_chunk() {
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
            for offset in (0..=size).step_by(CHUNK as usize) {
                let mut reply = GetReply::new(offset);
                for frame in honest(size, offset) {
                    assert!(!reply.is_done());
                    reply
                        .feed(frame)
                        .unwrap_or_else(|err| panic!("{size}@{offset}: {err}"));
                }
                assert!(reply.is_done(), "{size}@{offset}");
                assert_eq!(reply.position(), size);
            }
        }
    }

    #[test]
    fn misplaced_frames_are_named() {
        let big = 2 * CHUNK;
        let cases: Vec<(&str, u64, Vec<Response>, GetError)> = vec![
            (
                "data before meta",
                0,
                vec![data(1)],
                GetError::NoMeta { kind: "Data" },
            ),
            (
                "offset past the end",
                CHUNK,
                vec![Response::Meta(meta(10))],
                GetError::OffsetPastEnd {
                    offset: CHUNK,
                    size: 10,
                },
            ),
            (
                "empty data",
                0,
                vec![Response::Meta(meta(10)), data(0)],
                GetError::EmptyData,
            ),
            (
                "too long",
                0,
                vec![Response::Meta(meta(10)), data(10), data(1)],
                GetError::TooLong { size: 10 },
            ),
            (
                "crosses a boundary",
                0,
                vec![Response::Meta(meta(big)), data(CHUNK - 1), data(2)],
                GetError::CrossesCheckpoint,
            ),
            (
                "checkpoint left out",
                0,
                vec![
                    Response::Meta(meta(big)),
                    data(CHUNK / 2),
                    data(CHUNK / 2),
                    data(1),
                ],
                GetError::MissingCheckpoint { at: CHUNK },
            ),
            (
                "checkpoint left out at the end",
                0,
                vec![
                    Response::Meta(meta(CHUNK)),
                    data(CHUNK / 2),
                    data(CHUNK / 2),
                    end(),
                ],
                GetError::MissingCheckpoint { at: CHUNK },
            ),
            (
                "checkpoint too early",
                0,
                vec![Response::Meta(meta(10)), point(1)],
                GetError::MisplacedCheckpoint { index: 1, at: 0 },
            ),
            (
                "checkpoint with the wrong index",
                0,
                vec![
                    Response::Meta(meta(big)),
                    data(CHUNK / 2),
                    data(CHUNK / 2),
                    point(2),
                ],
                GetError::MisplacedCheckpoint {
                    index: 2,
                    at: CHUNK,
                },
            ),
            (
                "checkpoint twice",
                0,
                vec![
                    Response::Meta(meta(big)),
                    data(CHUNK / 2),
                    data(CHUNK / 2),
                    point(1),
                    point(1),
                ],
                GetError::MisplacedCheckpoint {
                    index: 1,
                    at: CHUNK,
                },
            ),
            (
                "end too early",
                0,
                vec![Response::Meta(meta(10)), data(5), end()],
                GetError::EndedEarly { at: 5, size: 10 },
            ),
            (
                "a stray frame",
                0,
                vec![Response::Meta(meta(10)), Response::Welcome { version: 1 }],
                GetError::Unexpected { kind: "Welcome" },
            ),
            (
                "a frame after the end",
                0,
                vec![Response::Meta(meta(0)), end(), data(1)],
                GetError::AfterEnd { kind: "Data" },
            ),
        ];
        for (what, offset, frames, want) in cases {
            assert_eq!(run(offset, frames), Err(want), "{what}");
        }
    }

    #[test]
    fn an_error_may_end_the_reply_anywhere() {
        let failed = Response::Error(RemoteError::new(ErrorCode::FileChanged, "changed"));
        for at in 0..4 {
            let mut frames = honest(CHUNK + 10, 0);
            frames.truncate(at);
            frames.push(failed.clone());
            let events = run(0, frames).expect("an error is a legal end");
            assert!(matches!(events.last(), Some(GetEvent::Failed(_))), "{at}");
        }
        // Even where a checkpoint is owed.
        let mut reply = GetReply::after_meta(0, &meta(2 * CHUNK)).expect("meta");
        for _ in 0..4 {
            reply.feed(data(CHUNK / 4)).expect("data");
        }
        assert!(matches!(reply.feed(failed), Ok(GetEvent::Failed(_))));
        assert!(reply.is_done());
    }

    #[test]
    fn messages_read_as_before() {
        assert_eq!(
            GetError::MissingCheckpoint { at: 4 }.to_string(),
            "no checkpoint at byte 4"
        );
        assert_eq!(
            GetError::Unexpected { kind: "Welcome" }.to_string(),
            "unexpected Welcome frame during a transfer"
        );
    }

    /// What an honest server sends for `Range { offset, end }` of a file of `size`.
    fn honest_range(size: u64, offset: u64, end: u64) -> Vec<Response> {
        let mut frames = vec![Response::Meta(meta(size))];
        let mut pos = offset;
        while pos < end.min(size) {
            let len = (piece_len(pos, size) as u64).min(end - pos);
            frames.push(data(len));
            pos += len;
        }
        frames
    }

    #[test]
    fn honest_ranges_pass_and_end_with_their_last_byte() {
        for size in [0, 1, CHUNK, 3 * CHUNK + 5] {
            for offset in (0..=size).step_by(CHUNK as usize) {
                for end in [offset + CHUNK, offset + 2 * CHUNK, u64::MAX] {
                    let mut reply = RangeReply::new(offset, end);
                    for frame in honest_range(size, offset, end) {
                        assert!(!reply.is_done(), "{size}@{offset}..{end}");
                        reply.feed(frame).expect("honest");
                    }
                    assert!(reply.is_done(), "{size}@{offset}..{end}");
                    assert_eq!(reply.position(), end.min(size));
                }
            }
        }
    }

    #[test]
    fn a_range_reply_holds_its_bytes_and_nothing_else() {
        let size = 3 * CHUNK;
        let mut reply = RangeReply::new(CHUNK, 2 * CHUNK);
        assert!(matches!(
            reply.clone().feed(data(1)),
            Err(GetError::NoMeta { .. })
        ));
        reply.feed(Response::Meta(meta(size))).expect("meta");
        let mut wide = RangeReply::new(CHUNK, 3 * CHUNK);
        wide.feed(Response::Meta(meta(size))).expect("meta");
        assert_eq!(wide.feed(data(CHUNK + 1)), Err(GetError::CrossesCheckpoint));
        assert!(matches!(
            reply.clone().feed(point(2)),
            Err(GetError::Unexpected { .. })
        ));
        assert!(matches!(
            reply.clone().feed(end()),
            Err(GetError::Unexpected { .. })
        ));
        assert_eq!(reply.clone().feed(data(0)), Err(GetError::EmptyData));
        reply.feed(data(CHUNK)).expect("the range");
        assert!(reply.is_done());
        assert!(matches!(
            reply.feed(data(1)),
            Err(GetError::AfterEnd { .. })
        ));

        let mut short = RangeReply::new(0, CHUNK / 2);
        short.feed(Response::Meta(meta(size))).expect("meta");
        assert_eq!(
            short.feed(data(CHUNK / 2 + 1)),
            Err(GetError::PastRange { end: CHUNK / 2 })
        );
        let mut past = RangeReply::new(4 * CHUNK, 5 * CHUNK);
        assert!(matches!(
            past.feed(Response::Meta(meta(size))),
            Err(GetError::OffsetPastEnd { .. })
        ));
        let mut failed = RangeReply::new(0, CHUNK);
        failed.feed(Response::Meta(meta(size))).expect("meta");
        failed.feed(data(7)).expect("some");
        let err = RemoteError::new(ErrorCode::FileChanged, "x");
        assert_eq!(
            failed.feed(Response::Error(err.clone())),
            Ok(GetEvent::Failed(err))
        );
        assert!(failed.is_done());
        assert_eq!(failed.position(), 7);
    }
}
