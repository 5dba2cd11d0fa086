//! The reply to a `List`, checked frame by frame on the receiving side:
//! `Entries` frames, then `ListEnd`; or one `Error`; nothing after either.

use crate::message::{Entry, RemoteError, Response};

/// One frame of a `List` reply, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEvent {
    /// More entries, in order.
    Entries(Vec<Entry>),
    /// The listing is complete; the server left out this many entries.
    End {
        /// Entries left out (see [`Response::ListEnd`]).
        skipped: u64,
    },
    /// The server refused or gave up (the last frame).
    Failed(RemoteError),
}

/// A frame out of place in a `List` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A frame that has no place in a listing.
    #[error("unexpected reply to a list request")]
    Unexpected {
        /// The frame.
        kind: &'static str,
    },
    /// A frame after `ListEnd` or `Error`.
    #[error("a {kind} frame after the end of a listing")]
    AfterEnd {
        /// The frame.
        kind: &'static str,
    },
}

/// Checks, frame by frame, the reply to a `List`.
#[derive(Debug, Clone, Default)]
pub struct ListReply {
    done: bool,
}

impl ListReply {
    /// A reply before its first frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the reply is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next frame (keep-alives already skipped).
    pub fn feed(&mut self, frame: Response) -> Result<ListEvent, ListError> {
        if self.done {
            return Err(ListError::AfterEnd { kind: frame.kind() });
        }
        let event = match frame {
            Response::Entries(entries) => return Ok(ListEvent::Entries(entries)),
            Response::ListEnd { skipped } => ListEvent::End { skipped },
            Response::Error(err) => ListEvent::Failed(err),
            other => return Err(ListError::Unexpected { kind: other.kind() }),
        };
        self.done = true;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ErrorCode;

    #[test]
    fn entries_then_one_end() {
        let mut reply = ListReply::new();
        assert_eq!(
            reply.feed(Response::Entries(vec![])),
            Ok(ListEvent::Entries(vec![]))
        );
        assert!(!reply.is_done());
        assert_eq!(
            reply.feed(Response::ListEnd { skipped: 3 }),
            Ok(ListEvent::End { skipped: 3 })
        );
        assert!(reply.is_done());
        assert_eq!(
            reply.feed(Response::Entries(vec![])),
            Err(ListError::AfterEnd { kind: "Entries" })
        );
    }

    #[test]
    fn an_error_ends_it_and_stray_frames_are_refused() {
        let mut reply = ListReply::new();
        let err = RemoteError::new(ErrorCode::NotADirectory, "not a folder");
        assert_eq!(
            reply.feed(Response::Error(err.clone())),
            Ok(ListEvent::Failed(err))
        );
        assert!(reply.is_done());
        assert_eq!(
            ListReply::new().feed(Response::Data(bytes::Bytes::new())),
            Err(ListError::Unexpected { kind: "Data" })
        );
    }
}
