//! Planning a batch: each PATH listed (with `-r`) or noted once, every path
//! the server names checked as hostile before anything is written, and
//! outputs that would clash refused. Nothing here writes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ft_protocol::{Entry, EntryKind, RemotePath};

use super::outcome::{Batch, FileOutcome};
use crate::error::{Error, ServerError, UsageError};
use crate::folder::{Folder, Output};
use crate::listing::{entries, not_a_folder};
use crate::session::{broken, retrying, Link, Server};
use crate::transfer::{partial_names, Target};

/// Most entries one `-r` PATH may list: what the plan holds in memory for
/// them (a few hundred bytes each) stays bounded whatever a server sends.
pub const MAX_ENTRIES: usize = 1_000_000;

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
        let mut listed = Vec::new();
        let folder = remote.to_string();
        let too_many = || ServerError::TooManyEntries {
            folder: folder.clone(),
            max: MAX_ENTRIES,
        };
        let walked = retrying(link, batch.policy.retries, async |link: &mut Link<'_>| {
            listed.clear();
            entries(link, &folder, true, digests, |entry| {
                if listed.len() >= MAX_ENTRIES {
                    return Err(broken(&batch.server, too_many()));
                }
                listed.push(entry);
                Ok(())
            })
            .await
        })
        .await;
        match walked {
            Ok(skipped) => {
                plan.skipped += skipped;
                plan.dirs.push(base.clone());
                add_entries(&mut plan, &batch.server, &remote, &base, listed);
            }
            Err(err) if not_a_folder(&err) => plan.targets.push(single),
            Err(err) => plan.failed.push(failed(err)),
        }
    }
    refuse_clashes(&mut plan);
    plan
}

/// Turns a folder's entries into folders and files to fetch, refusing any
/// path that is not plainly below the folder.
fn add_entries(
    plan: &mut Plan,
    server: &Server,
    remote: &RemotePath,
    base: &Path,
    entries: Vec<Entry>,
) {
    let mut seen = HashSet::new();
    let folder = remote.to_string();
    for entry in entries {
        let refuse = |source: ServerError| FileOutcome {
            path: format!("{}/{}", remote, entry.path.escape_debug()),
            result: Err(Error::Server {
                server: server.label.clone(),
                source,
            }),
        };
        let relative = match RemotePath::parse(&entry.path) {
            Ok(relative) if !relative.is_root() => relative,
            Ok(_) => {
                let folder = folder.clone();
                plan.failed.push(refuse(ServerError::EmptyPath { folder }));
                continue;
            }
            Err(source) => {
                plan.failed.push(refuse(ServerError::UnsafePath {
                    folder: folder.clone(),
                    path: entry.path.clone(),
                    source,
                }));
                continue;
            }
        };
        if !seen.insert(relative.to_string()) {
            plan.failed.push(refuse(ServerError::ListedTwice {
                folder: folder.clone(),
                path: entry.path.clone(),
            }));
            continue;
        }
        let output = base.join(relative.to_relative());
        match entry.kind {
            EntryKind::Dir => plan.dirs.push(output),
            EntryKind::File => plan.targets.push(Target {
                remote: remote.join(&relative).to_string(),
                output: Output::new(&plan.folder, output),
                listed: Some(entry.meta()),
            }),
        }
    }
}

/// Two targets with one output (`a/x` and `b/x` given as PATHs) would
/// write over each other, and a file named as another's partial or sidecar
/// (`NAME.part`, `NAME.part.json`, or the hidden names of a long `NAME`)
/// would be overwritten by that download: the later ones fail instead,
/// explicitly.
fn refuse_clashes(plan: &mut Plan) {
    let mut partial_of = HashMap::new();
    for target in &plan.targets {
        let name = target.output.name();
        let (data, sidecar, _) = partial_names(name.file_name().unwrap_or_default());
        partial_of.insert(name.with_file_name(data), name);
        partial_of.insert(name.with_file_name(sidecar), name);
    }
    let mut taken = HashSet::new();
    let mut failed = Vec::new();
    let mut kept = Vec::new();
    for target in &plan.targets {
        let output = &target.output;
        let why = if let Some(owner) = partial_of.get(output.name()) {
            UsageError::PartialName {
                output: output.shown(),
                owner: output.folder().shown(owner),
            }
        } else if !taken.insert(output.name()) {
            UsageError::SameOutput(output.shown())
        } else {
            kept.push(target.clone());
            continue;
        };
        failed.push(FileOutcome {
            path: target.remote.clone(),
            result: Err(why.into()),
        });
    }
    plan.failed.extend(failed);
    plan.targets = kept;
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
        ];
        refuse_clashes(&mut plan);
        let kept: Vec<&str> = plan.targets.iter().map(|t| t.remote.as_str()).collect();
        assert_eq!(kept, ["d/x", "a/y", "d/z.part", "d/long", "d/sub/x.part"]);
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

    #[test]
    fn hostile_listed_paths_are_refused_and_the_rest_kept() {
        let server = Server {
            label: "h".into(),
            host: "h".into(),
            port: 1,
            timeout: std::time::Duration::from_secs(1),
        };
        let file = |path: &str| Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: 1,
            mtime_secs: 0,
            mtime_nanos: 0,
            sha256: None,
        };
        let entries = ["ok.txt", "../up", "", "ok.txt", "/abs", "sub/fine"]
            .map(file)
            .to_vec();
        let mut plan = Plan::new(folder());
        let remote = RemotePath::parse("docs").expect("valid");
        add_entries(&mut plan, &server, &remote, Path::new("docs"), entries);
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
