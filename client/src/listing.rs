//! The listing client: a `List` request on the session, its reply checked
//! frame by frame by the protocol's [`ListReply`]; and `--list`, which
//! lists a folder or, given a file, describes it.

use ft_protocol::{Entry, ErrorCode, FileMeta, ListEvent, ListReply, Request};

use crate::error::Error;
use crate::session::{broken, remote, retrying, Failure, Link, Server};

/// What `--list PATH` found.
#[derive(Debug)]
pub enum Listed {
    /// A folder, whose entries went to the callback; the server left out
    /// this many.
    Folder {
        /// Entries left out.
        skipped: u64,
    },
    /// A single file.
    File(FileMeta),
}

/// Lists `path` on the server, each entry to `each`, in the server's sorted
/// order; or describes it, if it is a file.
pub async fn list(
    server: &Server,
    retries: u32,
    path: &str,
    recursive: bool,
    mut each: impl FnMut(Entry),
) -> Result<Listed, Error> {
    let mut link = Link::new(server);
    let listed = retrying(&mut link, retries, async |link: &mut Link<'_>| {
        entries(link, path, recursive, false, |entry| {
            each(entry);
            Ok(())
        })
        .await
    })
    .await;
    match listed {
        Ok(skipped) => Ok(Listed::Folder { skipped }),
        Err(err) if not_a_folder(&err) => {
            let meta = retrying(&mut link, retries, async |link: &mut Link<'_>| {
                link.stat(path).await
            })
            .await?;
            Ok(Listed::File(meta))
        }
        Err(err) => Err(err),
    }
}

/// Whether the server refused a listing because the path is a file.
pub(crate) fn not_a_folder(err: &Error) -> bool {
    matches!(err, Error::Refused { reason, .. } if reason.code == ErrorCode::NotADirectory)
}

/// Lists `path` once, handing each entry to `each`; the count of entries
/// the server left out.
pub(crate) async fn entries(
    link: &mut Link<'_>,
    path: &str,
    recursive: bool,
    digests: bool,
    mut each: impl FnMut(Entry) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let server = link.server;
    let request = Request::List {
        path: path.to_owned(),
        recursive,
        digests,
    };
    let mut reply = ListReply::new();
    let mut frame = link.ask(&request).await?;
    loop {
        match reply.feed(frame) {
            Ok(ListEvent::Entries(entries)) => {
                for entry in entries {
                    if let Err(failure) = each(entry) {
                        // The rest of the reply is still on its way.
                        link.reset();
                        return Err(failure);
                    }
                }
            }
            Ok(ListEvent::End { skipped }) => return Ok(skipped),
            Ok(ListEvent::Failed(err)) => return Err(remote(server, err)),
            Err(err) => {
                link.reset();
                return Err(broken(server, err.into()));
            }
        }
        frame = link.read().await?;
    }
}
