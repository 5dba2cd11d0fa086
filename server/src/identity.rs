//! The server's identity: its private key and certificate, made on first
//! start in the state folder and kept there, or given as PEM files; and the
//! fingerprint clients pin it by.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ft_protocol::tls::{self, Fingerprint};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The key's file in the state folder.
pub const KEY_FILE: &str = "key.pem";

/// The certificate's file in the state folder.
pub const CERT_FILE: &str = "cert.pem";

/// The name a self-made certificate is issued to. Clients that pin or trust
/// on first use look at the key, never at this name.
const SELF_NAME: &str = "ftserve";

/// Why the identity could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file may be read by others than its owner.
    #[error(
        "{}: the private key is readable by others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file holds no usable PEM key or certificate.
    #[error("{}: {what}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// Key and certificate do not go together, or rustls refused them.
    #[error("the certificate and key cannot be used: {0}")]
    Rejected(#[from] rustls::Error),
    /// Making a key or a certificate failed.
    #[error("cannot make a key and certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain, its key, and the fingerprint of the key.
pub struct Identity {
    /// The chain, the server's own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// What clients pin.
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity kept in `dir`, made there first if it has none: the
    /// folder (mode 0700) and a new key (mode 0600) with a self-signed
    /// certificate. A certificate that is missing, or is not the key's, is
    /// made again from the key, so the fingerprint stays. Two servers
    /// starting at once on one folder end up with the same key.
    pub fn in_state_dir(dir: &Path) -> Result<Self, IdentityError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        if !key_path.exists() {
            let key = rcgen::KeyPair::generate()?;
            // Written aside, then linked into place: the key appears whole
            // or not at all, and a server that lost the race reads the
            // winner's.
            let staged = stage(dir, key.serialize_pem().as_bytes(), 0o600).map_err(io(dir))?;
            match std::fs::hard_link(&staged, &key_path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    let _ = std::fs::remove_file(&staged);
                    return Err(io(&key_path)(err));
                }
            }
            let _ = std::fs::remove_file(&staged);
        }
        let key_pem = read_key_file(&key_path)?;
        let pair = rcgen::KeyPair::from_pem(&key_pem).map_err(|err| IdentityError::Unreadable {
            path: key_path.clone(),
            what: format!("not a private key this server can use: {err}"),
        })?;
        let fingerprint =
            Fingerprint::of_public_key_info(&rcgen::PublicKeyData::subject_public_key_info(&pair));
        let kept = std::fs::read(&cert_path)
            .ok()
            .and_then(|pem| CertificateDer::from_pem_slice(&pem).ok())
            .filter(|cert| Fingerprint::of_certificate(cert).ok() == Some(fingerprint));
        let cert = match kept {
            Some(cert) => cert,
            None => {
                let params = rcgen::CertificateParams::new(vec![SELF_NAME.to_owned()])?;
                let cert = params.self_signed(&pair)?;
                let staged = stage(dir, cert.pem().as_bytes(), 0o644).map_err(io(dir))?;
                std::fs::rename(&staged, &cert_path).map_err(io(&cert_path))?;
                cert.der().clone()
            }
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|err| {
            IdentityError::Unreadable {
                path: key_path,
                what: format!("no private key in it: {err}"),
            }
        })?;
        Ok(Self {
            chain: vec![cert],
            key,
            fingerprint,
        })
    }

    /// The identity given as PEM files: a certificate chain (the server's
    /// own first) and its private key, which only its owner may read.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let pem = std::fs::read(cert_path).map_err(|source| IdentityError::Io {
            path: cert_path.to_path_buf(),
            source,
        })?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| IdentityError::Unreadable {
                path: cert_path.to_path_buf(),
                what: format!("not a PEM certificate chain: {err}"),
            })?;
        let Some(first) = chain.first() else {
            return Err(IdentityError::Unreadable {
                path: cert_path.to_path_buf(),
                what: "no certificate in it".into(),
            });
        };
        let fingerprint =
            Fingerprint::of_certificate(first).map_err(|err| IdentityError::Unreadable {
                path: cert_path.to_path_buf(),
                what: err.to_string(),
            })?;
        let key_pem = read_key_file(key_path)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|err| {
            IdentityError::Unreadable {
                path: key_path.to_path_buf(),
                what: format!("no private key in it: {err}"),
            }
        })?;
        Ok(Self {
            chain,
            key,
            fingerprint,
        })
    }

    /// The rustls configuration that serves this identity: TLS 1.3 only,
    /// ALPN `ft/2` required, no client certificates.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
        let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(tls::VERSIONS)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![tls::ALPN.to_vec()];
        // ft has its own sessions; resumption would only be state to keep.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

/// The default state folder: `$XDG_STATE_HOME/ftserve`, else
/// `~/.local/state/ftserve`.
pub fn default_state_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_STATE_HOME")
        .map(|state| state.join("ftserve"))
        .or_else(|| absolute("HOME").map(|home| home.join(".local/state/ftserve")))
}

/// A key file's text, refused if anyone but its owner may read it.
fn read_key_file(path: &Path) -> Result<String, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    // A key is a few hundred bytes; the bound keeps a wrong file (a disk
    // image given by mistake) from being read whole.
    let mut text = String::new();
    use std::io::Read;
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|_| IdentityError::Unreadable {
            path: path.to_path_buf(),
            what: "not a PEM file".into(),
        })?;
    Ok(text)
}

/// Writes `bytes` to a new file in `dir` with `mode`, synced, and returns
/// its path.
fn stage(dir: &Path, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let path = dir.join(format!(".staged-{}-{}", std::process::id(), nonce()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)?;
    // The umask may have taken bits away; the mode is what it must be.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(path)
}

/// A number unlikely to repeat between two threads staging at once.
fn nonce() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_makes_an_identity_and_the_next_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state/ftserve");
        let made = Identity::in_state_dir(&state).expect("made");
        let key_mode = std::fs::metadata(state.join(KEY_FILE)).expect("key").mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&state).expect("dir").mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let kept = Identity::in_state_dir(&state).expect("kept");
        assert_eq!(made.fingerprint, kept.fingerprint);
        assert_eq!(made.chain, kept.chain);
        // A lost certificate is made again from the key: same fingerprint.
        std::fs::remove_file(state.join(CERT_FILE)).expect("rm cert");
        let remade = Identity::in_state_dir(&state).expect("remade");
        assert_eq!(made.fingerprint, remade.fingerprint);
        assert!(made.server_config().is_ok());
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        Identity::in_state_dir(dir.path()).expect("made");
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = Identity::in_state_dir(dir.path()).expect_err("refused");
        assert!(
            matches!(err, IdentityError::Exposed { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn given_pem_files_serve_with_their_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = Identity::in_state_dir(dir.path()).expect("made");
        let given =
            Identity::from_pem_files(&dir.path().join(CERT_FILE), &dir.path().join(KEY_FILE))
                .expect("given");
        assert_eq!(made.fingerprint, given.fingerprint);
        let err = Identity::from_pem_files(&dir.path().join(KEY_FILE), &dir.path().join(KEY_FILE))
            .expect_err("a key is not a certificate");
        assert!(matches!(err, IdentityError::Unreadable { .. }), "{err}");
    }
}
