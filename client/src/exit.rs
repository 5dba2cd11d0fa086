//! Exit codes, as the README's table documents them.

use std::process::ExitCode;

/// How ftget ends. Ordered by code, so the worst of several is the largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// The file arrived and was verified.
    Success,
    /// Anything not covered below: local I/O, a misbehaving server, …
    Failure,
    /// The command line was wrong.
    Usage,
    /// The server refused the path: not found, not a file, invalid, permission denied.
    Refused,
    /// The data failed verification twice in the same place.
    Verification,
    /// Could not connect, or the connection was lost and retries ran out.
    Connection,
    /// The server's identity could not be verified. Nothing was written.
    Identity,
    /// The server refused our credentials. Nothing was written.
    Credentials,
    /// Interrupted by Ctrl-C; the partial file is kept for a later resume.
    Interrupted,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Refused => 3,
            Exit::Verification => 4,
            Exit::Connection => 5,
            Exit::Identity => 6,
            Exit::Credentials => 7,
            Exit::Interrupted => 130,
        }
    }
}

/// In JSON, an exit is its code, as the README's table gives it.
impl serde::Serialize for Exit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_readme_table() {
        let table = [
            (Exit::Success, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::Refused, 3),
            (Exit::Verification, 4),
            (Exit::Connection, 5),
            (Exit::Identity, 6),
            (Exit::Credentials, 7),
            (Exit::Interrupted, 130),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
            assert_eq!(
                serde_json::to_string(&exit).ok(),
                Some(code.to_string()),
                "{exit:?} in JSON"
            );
        }
    }
}
