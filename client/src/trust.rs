//! Whom ftget trusts: a pinned key, a server recorded in the known-servers
//! file (first contact recorded, as ssh's `accept-new`), or a certificate
//! that chains to the system's roots or to `--ca` and names the host. The
//! rustls verifier that applies it, and the TLS configuration built on it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ft_protocol::tls::{self, Fingerprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Longest known-servers file read, in bytes.
const MAX_KNOWN_FILE: u64 = 16 << 20;

/// How ftget decides whom to trust, as the user set it.
#[derive(Debug, Clone, Default)]
pub struct TrustSettings {
    /// `--pin`: only the server with this key.
    pub pin: Option<Fingerprint>,
    /// `--strict`: refuse a server that is neither pinned, known nor
    /// certified, instead of recording it.
    pub strict: bool,
    /// `--ca`: PEM certificates to trust besides the system's.
    pub ca: Option<PathBuf>,
    /// The known-servers file; `None` when there is no home to keep it in.
    pub known_servers: Option<PathBuf>,
    /// Whether to say on stderr that a server was recorded.
    pub announce: bool,
}

/// Why a server's identity was not accepted. Nothing is written after it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    /// `--pin` names another key.
    #[error("the server's key is {got}, not the pinned {pin}")]
    PinMismatch {
        /// The pin.
        pin: Fingerprint,
        /// The key shown.
        got: Fingerprint,
    },
    /// `--strict`, and the server is neither known, pinned nor certified.
    #[error(
        "{host} is not a known server, and --strict refuses new ones: its key is {got}{why}; \
         pin it with --pin {got} if that is the right key"
    )]
    Unknown {
        /// host:port.
        host: String,
        /// The key shown.
        got: Fingerprint,
        /// Why its certificate is not trusted either, when it has one.
        why: String,
    },
    /// A known server shows another key.
    #[error(
        "the server's key has changed: {host} was recorded with {known} and now shows {got}. \
         Someone may be intercepting the connection; if the server was given a new key, \
         remove line {line} of {} and connect again",
        file.display()
    )]
    Changed {
        /// host:port.
        host: String,
        /// The key recorded.
        known: Fingerprint,
        /// The key shown.
        got: Fingerprint,
        /// The known-servers file.
        file: PathBuf,
        /// Its line that records the server, 1-based.
        line: usize,
    },
    /// Two connections of one run met two keys, the server unknown before.
    #[error(
        "{host} showed two keys in one run, {first} and then {got}: someone may be \
         intercepting the connection; nothing was recorded"
    )]
    Inconsistent {
        /// host:port.
        host: String,
        /// The key the first connection met.
        first: Fingerprint,
        /// The key shown now.
        got: Fingerprint,
    },
    /// The server's certificate is not X.509.
    #[error("the server's certificate cannot be read")]
    Malformed,
}

/// The trust settings could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file could not be read.
    #[error("{}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--ca` holds no certificate rustls can use.
    #[error("--ca {}: no usable PEM certificate in it", .0.display())]
    NoCa(PathBuf),
    /// rustls refused the configuration.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
}

/// What a run trusts, for one server: the TLS configuration to connect
/// with, and the verifier behind it, which records a first contact.
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
    verifier: Arc<Verifier>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("host", &self.verifier.host)
            .finish_non_exhaustive()
    }
}

impl Trust {
    /// The trust for the server `host:port` under `settings`: reads the
    /// known-servers file and `--ca` now, so a bad one fails before any
    /// connection.
    pub fn new(host: &str, port: u16, settings: TrustSettings) -> Result<Self, TrustError> {
        let host = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{}:{port}", host.to_ascii_lowercase())
        };
        let known = match &settings.known_servers {
            Some(file) => lookup(file, &host)?,
            None => None,
        };
        let extra_roots = match &settings.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| TrustError::Read {
                    path: path.clone(),
                    source,
                })?;
                let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect();
                if certs.is_empty() {
                    return Err(TrustError::NoCa(path.clone()));
                }
                certs
            }
            None => Vec::new(),
        };
        let provider = tls::provider();
        let verifier = Arc::new(Verifier {
            host,
            settings,
            known,
            extra_roots,
            provider: Arc::clone(&provider),
            webpki: OnceLock::new(),
            first_contact: Mutex::new(FirstContact::default()),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls::VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
            .with_no_client_auth();
        config.alpn_protocols = vec![tls::ALPN.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            verifier,
        })
    }

    /// The TLS configuration to connect with.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.config)
    }

    /// After a handshake with a server whose certificate is `cert`: records
    /// it in the known-servers file if the handshake was its first contact
    /// (once a run), and says so on stderr.
    pub fn confirm(&self, cert: Option<&CertificateDer<'_>>) -> Result<(), TrustError> {
        let Some(got) = cert.and_then(|cert| Fingerprint::of_certificate(cert).ok()) else {
            return Ok(());
        };
        let mut first = self
            .verifier
            .first_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if first.accepted != Some(got) || first.recorded {
            return Ok(());
        }
        let Some(file) = &self.verifier.settings.known_servers else {
            return Ok(());
        };
        record(file, &self.verifier.host, got).map_err(|source| TrustError::Read {
            path: file.clone(),
            source,
        })?;
        first.recorded = true;
        if self.verifier.settings.announce {
            eprintln!(
                "{}: first contact with {}: recorded its key {got} in {}",
                crate::printable::program(),
                self.verifier.host,
                file.display()
            );
        }
        Ok(())
    }
}

/// The default known-servers file: `$XDG_CONFIG_HOME/ft/known_servers`,
/// else `~/.config/ft/known_servers`.
pub fn default_known_servers() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CONFIG_HOME")
        .map(|config| config.join("ft/known_servers"))
        .or_else(|| absolute("HOME").map(|home| home.join(".config/ft/known_servers")))
}

/// The key a first contact was accepted with, and whether it is on disk.
#[derive(Debug, Default)]
struct FirstContact {
    accepted: Option<Fingerprint>,
    recorded: bool,
}

#[derive(Debug)]
struct Verifier {
    /// `host:port`, as the known-servers file keys it.
    host: String,
    settings: TrustSettings,
    /// The server's line in the known-servers file, and the key on it.
    known: Option<(usize, Fingerprint)>,
    extra_roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    /// The system's roots and `--ca`, read the first time a certificate
    /// is neither pinned nor known.
    webpki: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
    first_contact: Mutex<FirstContact>,
}

impl Verifier {
    fn certified(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), String> {
        let webpki = self.webpki.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            roots.add_parsable_certificates(self.extra_roots.iter().cloned());
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
                .build()
                .map_err(|err| err.to_string())
        });
        let webpki = webpki.as_ref().map_err(Clone::clone)?;
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}

fn refuse(err: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(err),
    )))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of_certificate(end_entity)
            .map_err(|_| refuse(IdentityError::Malformed))?;
        if let Some(pin) = self.settings.pin {
            return if got == pin {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(refuse(IdentityError::PinMismatch { pin, got }))
            };
        }
        if matches!(self.known, Some((_, known)) if known == got) {
            return Ok(ServerCertVerified::assertion());
        }
        let certified = self.certified(end_entity, intermediates, server_name, now);
        if certified.is_ok() {
            return Ok(ServerCertVerified::assertion());
        }
        if let (Some((line, known)), Some(file)) = (self.known, &self.settings.known_servers) {
            return Err(refuse(IdentityError::Changed {
                host: self.host.clone(),
                known,
                got,
                file: file.clone(),
                line,
            }));
        }
        let mut first = self.first_contact.lock().unwrap_or_else(|e| e.into_inner());
        match first.accepted {
            // Every connection of a run must meet the same server.
            Some(accepted) if accepted == got => Ok(ServerCertVerified::assertion()),
            Some(first) => Err(refuse(IdentityError::Inconsistent {
                host: self.host.clone(),
                first,
                got,
            })),
            None if self.settings.strict || self.settings.known_servers.is_none() => {
                let why = match certified {
                    Err(why) if !self.extra_roots.is_empty() => {
                        format!(", and its certificate is not trusted ({why})")
                    }
                    _ => String::new(),
                };
                Err(refuse(IdentityError::Unknown {
                    host: self.host.clone(),
                    got,
                    why,
                }))
            }
            None => {
                first.accepted = Some(got);
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    /// The signature is checked against the key of the certificate that
    /// `verify_server_cert` accepted: a copy of a pinned certificate, without
    /// its key, cannot sign.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The identity refusal behind a failed TLS handshake, if that is why it
/// failed.
pub fn refusal(err: &std::io::Error) -> Option<IdentityError> {
    let inner = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<IdentityError>().cloned()
        }
        _ => None,
    }
}

/// The first line of `file` that records `host`, and its key. Lines that
/// are not `host:port fingerprint` are skipped; a missing file knows no one.
fn lookup(file: &Path, host: &str) -> Result<Option<(usize, Fingerprint)>, TrustError> {
    let text = match std::fs::File::open(file) {
        Ok(opened) => {
            let mut text = String::new();
            use std::io::Read;
            opened
                .take(MAX_KNOWN_FILE)
                .read_to_string(&mut text)
                .map_err(|source| TrustError::Read {
                    path: file.to_path_buf(),
                    source,
                })?;
            text
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TrustError::Read {
                path: file.to_path_buf(),
                source,
            })
        }
    };
    Ok(text.lines().enumerate().find_map(|(index, line)| {
        let mut fields = line.split_whitespace();
        let (name, key) = (fields.next()?, fields.next()?);
        (name == host).then_some(())?;
        Some((index + 1, key.parse().ok()?))
    }))
}

/// Appends `host fingerprint` to `file`, making its folder (mode 0700) if
/// need be. One write of a whole line, in append mode: runs recording at
/// once do not mix their lines.
fn record(file: &Path, host: &str, key: Fingerprint) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(file)?;
    out.write_all(format!("{host} {key}\n").as_bytes())?;
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_servers_file_is_read_by_host_and_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ft/known_servers");
        let a = Fingerprint::of_public_key_info(b"a");
        let b = Fingerprint::of_public_key_info(b"b");
        assert_eq!(lookup(&file, "h:1").expect("no file"), None);
        record(&file, "h:1", a).expect("recorded");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"garbage\n[::1]:7878 nonsense\n"))
            .expect("append");
        record(&file, "[::1]:7878", b).expect("recorded");
        assert_eq!(lookup(&file, "h:1").expect("read"), Some((1, a)));
        assert_eq!(lookup(&file, "[::1]:7878").expect("read"), Some((4, b)));
        assert_eq!(lookup(&file, "h:2").expect("read"), None);
    }
}
