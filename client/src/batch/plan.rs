//! Planning a batch: each PATH listed (with `-r`) or noted once, every path
//! the server names checked as hostile before anything is written, and
//! outputs that would clash refused. Nothing here writes. A listing becomes
//! the plan entry by entry as it arrives, held once, and is cut off past
//! [`MAX_ENTRIES`] entries, [`MAX_LISTED_BYTES`] of paths or
//! [`MAX_REFUSED`] refused entries.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ft_protocol::{Entry, EntryKind, RemotePath};

use super::outcome::{Batch, FileOutcome};
use crate::error::{Error, ServerError, UsageError};
use crate::folder::{Folder, Output};
use crate::listing::{entries, not_a_folder};
use crate::session::{broken, retrying, Link, Server};
use crate::transfer::{partial_names, suffixed_owner, Target};

/// Most entries one `-r` PATH may list: what the plan holds in memory for
/// them (a few hundred bytes each) stays bounded whatever a server sends.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Most bytes of paths one `-r` PATH may list. The plan holds each path
/// twice (the remote path and the output), so this bounds the rest of its
/// memory whatever the server sends: paths of up to 4 KiB each would
/// otherwise cost 8 KiB an entry. Room for a million paths of 67 bytes.
pub const MAX_LISTED_BYTES: usize = 64 << 20;

/// Most entries of one `-r` PATH refused one by one (unsafe, empty, listed
/// twice), each reported. An honest server lists none; a server that lists
/// more is refused whole, with one error, rather than have a million
/// refusals held for the summary.
pub const MAX_REFUSED: usize = 1000;

/// What the planning found: folders to create (beneath `folder`), files to
/// fetch, and paths that failed already.
pub(super) struct Plan {
    pub folder: Arc<Folder>,
    pub dirs: Vec<PathBuf>,
    pub targets: Vec<Target>,
    pub failed: Vec<FileOutcome>,
    pub skipped: u64,
}

/// Lists or notes every PATH; failures are recorded, not fatal to the rest.
pub(super) async fn plan(link: &mut Link<'_>, batch: &Batch) -> Plan {
    // `docs`, not `./docs`, in what the user reads.
    let outdir = match batch.outdir == Path::new(".") {
        true => PathBuf::new(),
        false => batch.outdir.clone(),
    };
    let mut plan = Plan::new(Arc::new(Folder::new(outdir, true)));
    for path in &batch.paths {
        let failed = |err: Error| FileOutcome {
            path: path.clone(),
            result: Err(err),
        };
        let remote = match RemotePath::parse(path) {
            Ok(remote) => remote,
            Err(source) => {
                let err = UsageError::InvalidPath {
                    path: path.clone(),
                    source,
                };
                plan.failed.push(failed(err.into()));
                continue;
            }
        };
        // Beneath the output folder.
        let base = remote.file_name().map(PathBuf::from).unwrap_or_default();
        let single = Target {
            remote: remote.to_string(),
            output: Output::new(&plan.folder, &base),
            listed: None,
        };
        if !batch.recursive {
            plan.targets.push(single);
            continue;
        }
        // Digests are worth asking for only where local files may match: a
        // cold server hashes every file it lists with them before it sends
        // the listing, and a first run into an empty folder needs none.
        let local = plan.folder.shown(&base);
        let digests = fs::read_dir(&local).is_ok_and(|mut entries| entries.next().is_some());
        let folder = remote.to_string();
        let out = Arc::clone(&plan.folder);
        let mut listed = Listing::new(&batch.server, &remote, &base, &out);
        let walked = retrying(link, batch.policy.retries, async |link: &mut Link<'_>| {
            // What an attempt that failed half-way added is forgotten.
            listed = Listing::new(&batch.server, &remote, &base, &out);
            entries(link, &folder, true, digests, |entry| {
                listed.add(entry).map_err(|err| broken(&batch.server, err))
            })
            .await
        })
        .await;
        match walked {
            Ok(skipped) => {
                plan.skipped += skipped;
                plan.dirs.push(base.clone());
                plan.take(listed.plan);
            }
            Err(err) if not_a_folder(&err) => plan.targets.push(single),
            Err(err) => plan.failed.push(failed(err)),
        }
    }
    refuse_clashes(&mut plan);
    plan
}

impl Plan {
    /// Adds `more` after what the plan has (without a copy when it has none).
    fn take(&mut self, more: Plan) {
        fn append<T>(to: &mut Vec<T>, mut more: Vec<T>) {
            if to.is_empty() {
                *to = more;
            } else {
                to.append(&mut more);
            }
        }
        append(&mut self.dirs, more.dirs);
        append(&mut self.targets, more.targets);
        append(&mut self.failed, more.failed);
        self.skipped += more.skipped;
    }
}

/// How much of a listing ftget takes: [`MAX_ENTRIES`], [`MAX_LISTED_BYTES`]
/// and [`MAX_REFUSED`] (smaller in tests).
#[derive(Debug, Clone, Copy)]
struct Caps {
    entries: usize,
    bytes: usize,
    refused: usize,
}

const CAPS: Caps = Caps {
    entries: MAX_ENTRIES,
    bytes: MAX_LISTED_BYTES,
    refused: MAX_REFUSED,
};

/// One folder's listing, turned into folders and files to fetch as each
/// entry arrives, refusing any path that is not plainly below the folder,
/// and the whole listing past the caps.
struct Listing<'a> {
    server: &'a Server,
    remote: &'a RemotePath,
    base: &'a Path,
    folder: String,
    caps: Caps,
    entries: usize,
    bytes: usize,
    seen: Seen,
    plan: Plan,
}

impl<'a> Listing<'a> {
    /// The listing of `remote`, its files put at `base` beneath `out`.
    fn new(server: &'a Server, remote: &'a RemotePath, base: &'a Path, out: &Arc<Folder>) -> Self {
        Self {
            server,
            remote,
            base,
            folder: remote.to_string(),
            caps: CAPS,
            entries: 0,
            bytes: 0,
            seen: Seen::default(),
            plan: Plan::new(Arc::clone(out)),
        }
    }

    /// Takes one entry; the listing is refused once it passes the caps.
    fn add(&mut self, entry: Entry) -> Result<(), ServerError> {
        self.entries += 1;
        self.bytes += entry.path.len();
        let caps = self.caps;
        if self.entries > caps.entries {
            return Err(ServerError::TooManyEntries {
                folder: self.folder.clone(),
                max: caps.entries,
            });
        }
        if self.bytes > caps.bytes {
            return Err(ServerError::ListingTooLarge {
                folder: self.folder.clone(),
                max: caps.bytes,
            });
        }
        let Err(source) = self.place(&entry) else {
            return Ok(());
        };
        if self.plan.failed.len() >= caps.refused {
            return Err(ServerError::TooManyRefused {
                folder: self.folder.clone(),
                max: caps.refused,
            });
        }
        self.plan.failed.push(FileOutcome {
            path: format!("{}/{}", self.remote, entry.path),
            result: Err(Error::Server {
                server: self.server.label.clone(),
                source,
            }),
        });
        Ok(())
    }

    /// Makes `entry` a folder or a file to fetch, or says why it is refused.
    fn place(&mut self, entry: &Entry) -> Result<(), ServerError> {
        let folder = || self.folder.clone();
        let relative = match RemotePath::parse(&entry.path) {
            Ok(relative) if !relative.is_root() => relative,
            Ok(_) => return Err(ServerError::EmptyPath { folder: folder() }),
            Err(source) => {
                return Err(ServerError::UnsafePath {
                    folder: folder(),
                    path: entry.path.clone(),
                    source,
                })
            }
        };
        let output = self.base.join(relative.to_relative());
        if !self.seen.insert(&output) {
            return Err(ServerError::ListedTwice {
                folder: folder(),
                path: entry.path.clone(),
            });
        }
        match entry.kind {
            EntryKind::Dir => self.plan.dirs.push(output),
            EntryKind::File => self.plan.targets.push(Target {
                remote: self.remote.join(&relative).to_string(),
                output: Output::new(&self.plan.folder, output),
                listed: Some(entry.meta()),
            }),
        }
        Ok(())
    }
}

/// The outputs a listing has named so far, each as a 128-bit keyed hash:
/// 16 bytes a path rather than the path. A repeat always matches; two
/// different paths match by a chance of 2^-128 a pair, which a server
/// cannot aim for (the keys are random, drawn by ftget), and would only
/// have the second refused as listed twice: never two files on one output.
#[derive(Default)]
struct Seen {
    keys: RandomState,
    hashes: HashSet<u128>,
}

impl Seen {
    /// Notes `output`; false if it was there already.
    fn insert(&mut self, output: &Path) -> bool {
        let half = |domain: u8| {
            let mut hasher = self.keys.build_hasher();
            hasher.write_u8(domain);
            hasher.write(output.as_os_str().as_encoded_bytes());
            u128::from(hasher.finish())
        };
        let hash = (half(0) << 64) | half(1);
        self.hashes.insert(hash)
    }
}

/// Two targets with one output (`a/x` and `b/x` given as PATHs) would
/// write over each other, and a file named as another's partial or sidecar
/// (`NAME.part`, `NAME.part.json`, or the hidden names of a long `NAME`)
/// would be overwritten by that download: the later ones fail instead,
/// explicitly. The outputs are borrowed, not copied: a plan of a million
/// files holds them once.
fn refuse_clashes(plan: &mut Plan) {
    // The first target of each output.
    let mut first: HashMap<&Path, usize> = HashMap::with_capacity(plan.targets.len());
    for (at, target) in plan.targets.iter().enumerate() {
        first.entry(target.output.name()).or_insert(at);
    }
    let made = hidden_names(&plan.targets);
    let mut hidden: HashMap<(&Path, &OsStr), &Path> = HashMap::with_capacity(2 * made.len());
    for (owner, data, sidecar) in &made {
        let parent = owner.parent().unwrap_or(Path::new(""));
        hidden.insert((parent, data), owner);
        hidden.insert((parent, sidecar), owner);
    }
    let mut refused = Vec::new();
    for (at, target) in plan.targets.iter().enumerate() {
        let output = &target.output;
        let name = output.name();
        let place = (
            name.parent().unwrap_or(Path::new("")),
            name.file_name().unwrap_or_default(),
        );
        let owner = partial_owner(name)
            .filter(|owner| first.contains_key(owner.as_path()))
            .or_else(|| hidden.get(&place).map(|owner| owner.to_path_buf()));
        let why = if let Some(owner) = owner {
            UsageError::PartialName {
                output: output.shown(),
                owner: output.folder().shown(&owner),
            }
        } else if first.get(name) != Some(&at) {
            UsageError::SameOutput(output.shown())
        } else {
            continue;
        };
        refused.push((at, why));
    }
    drop((first, hidden));
    drop(made);
    let mut refused = refused.into_iter().peekable();
    let mut at = 0;
    plan.targets.retain(|target| {
        let this = at;
        at += 1;
        let Some((_, why)) = refused.next_if(|(which, _)| *which == this) else {
            return true;
        };
        plan.failed.push(FileOutcome {
            path: target.remote.clone(),
            result: Err(why.into()),
        });
        false
    });
}

/// The hidden partial and sidecar names of each output too long for the
/// suffixed ones, with that output: only their file names are made, each
/// a few dozen bytes, whatever the paths' length.
fn hidden_names(targets: &[Target]) -> Vec<(&Path, OsString, OsString)> {
    fn hidden(target: &Target) -> Option<(&Path, OsString, OsString)> {
        let name = target.output.name();
        let (data, sidecar, hashed) = partial_names(name.file_name()?);
        hashed.then_some((name, data, sidecar))
    }
    targets.iter().filter_map(hidden).collect()
}

/// The output whose suffixed partial or sidecar `name` would be
/// (`NAME.part`, `NAME.part.json`), whether or not there is one.
fn partial_owner(name: &Path) -> Option<PathBuf> {
    let owner = suffixed_owner(name.file_name()?)?;
    Some(name.with_file_name(owner))
}

impl Plan {
    fn new(folder: Arc<Folder>) -> Self {
        Self {
            folder,
            dirs: Vec::new(),
            targets: Vec::new(),
            failed: Vec::new(),
            skipped: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> Arc<Folder> {
        Arc::new(Folder::new("out", true))
    }

    fn target(remote: &str, output: &str) -> Target {
        Target {
            remote: remote.into(),
            output: Output::new(&folder(), output),
            listed: None,
        }
    }

    #[test]
    fn clashing_outputs_fail_instead_of_overwriting() {
        let long = "l".repeat(250);
        let (hidden, _, _) = partial_names(std::ffi::OsStr::new(&long));
        let hidden = hidden.to_string_lossy().into_owned();
        let mut plan = Plan::new(folder());
        plan.targets = vec![
            target("d/x", "x"),
            target("d/x.part", "x.part"),
            target("d/x.part.json", "x.part.json"),
            target("a/y", "y"),
            target("b/y", "y"),
            target("d/z.part", "z.part"),
            target("d/long", &long),
            target("d/hidden", &hidden),
            target("d/sub/x.part", "sub/x.part"),
            target("d/long.part", &format!("{long}.part")),
            target("d/sub/hidden", &format!("sub/{hidden}")),
        ];
        refuse_clashes(&mut plan);
        let kept: Vec<&str> = plan.targets.iter().map(|t| t.remote.as_str()).collect();
        assert_eq!(
            kept,
            [
                "d/x",
                "a/y",
                "d/z.part",
                "d/long",
                "d/sub/x.part",
                "d/long.part",
                "d/sub/hidden",
            ]
        );
        let failed: Vec<&str> = plan.failed.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(failed, ["d/x.part", "d/x.part.json", "b/y", "d/hidden"]);
        assert!(plan
            .failed
            .iter()
            .all(|f| matches!(f.result, Err(Error::Usage(_)))));
        let said = plan.failed[0]
            .result
            .as_ref()
            .err()
            .map(ToString::to_string);
        assert_eq!(
            said.as_deref(),
            Some(
                "out/x.part is the partial-download name of out/x; download it on its own with -o"
            )
        );
    }

    fn server() -> Server {
        Server {
            label: "h".into(),
            host: "h".into(),
            port: 1,
            timeout: std::time::Duration::from_secs(1),
            trust: std::sync::Arc::new(
                crate::trust::Trust::new("h", 1, Default::default()).expect("trust"),
            ),
            token: None,
            congestion: None,
        }
    }

    fn file(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: 1,
            mtime_secs: 0,
            mtime_nanos: 0,
            sha256: None,
        }
    }

    /// What a listing of `paths` under `caps` fails with at its last path,
    /// the others taken.
    fn refused_at_last(caps: Caps, paths: &[String]) -> String {
        let server = server();
        let remote = RemotePath::parse("docs").expect("valid");
        let out = folder();
        let mut listing = Listing::new(&server, &remote, Path::new("docs"), &out);
        listing.caps = caps;
        let (last, taken) = paths.split_last().expect("paths");
        for path in taken {
            listing.add(file(path)).expect("within the caps");
        }
        let err = listing.add(file(last)).expect_err("past the caps");
        err.to_string()
    }

    #[test]
    fn a_listing_past_its_caps_is_refused_whole() {
        let names = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        let caps = Caps {
            entries: 10,
            bytes: 3 << 20,
            refused: 10,
        };
        let few = Caps { entries: 3, ..caps };
        assert_eq!(
            refused_at_last(few, &names(&["a", "b", "c", "d"])),
            "the listing of docs has more than 3 entries; download its folders one by one"
        );
        let long = |name: &str| format!("{name}/{}", "x".repeat(1 << 20))[..1 << 20].to_owned();
        let paths = [long("a"), long("b"), long("c"), "d".to_owned()];
        assert_eq!(
            refused_at_last(caps, &paths),
            "the listing of docs has more than 3 MiB of paths; download its folders one by one"
        );
        let strict = Caps { refused: 2, ..caps };
        assert_eq!(
            refused_at_last(strict, &names(&["/a", "ok", "../b", ""])),
            "the listing of docs has more than 2 unsafe or repeated paths; refused whole"
        );
    }

    #[test]
    fn hostile_listed_paths_are_refused_and_the_rest_kept() {
        let server = server();
        let entries = ["ok.txt", "../up", "", "ok.txt", "/abs", "sub/fine"].map(file);
        let remote = RemotePath::parse("docs").expect("valid");
        let out = folder();
        let mut listing = Listing::new(&server, &remote, Path::new("docs"), &out);
        for entry in entries {
            listing.add(entry).expect("within the caps");
        }
        let plan = listing.plan;
        let kept: Vec<&str> = plan.targets.iter().map(|t| t.remote.as_str()).collect();
        assert_eq!(kept, ["docs/ok.txt", "docs/sub/fine"]);
        assert_eq!(
            plan.targets[1].output.shown(),
            Path::new("out/docs/sub/fine")
        );
        let why: Vec<String> = plan
            .failed
            .iter()
            .map(|f| match &f.result {
                Err(Error::Server { source, .. }) => source.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            why,
            [
                "refused an unsafe path in the listing of docs: \"../up\"",
                "refused an empty path in the listing of docs",
                "\"ok.txt\" is listed twice in docs",
                "refused an unsafe path in the listing of docs: \"/abs\"",
            ]
        );
    }
}
