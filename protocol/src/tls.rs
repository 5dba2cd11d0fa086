//! The TLS both sides share: TLS 1.3 only, the one crypto provider and the
//! order of its cipher suites, the ALPN name of protocol v2, and the
//! fingerprint that names a server's key. Who trusts whom is the client's
//! business (its `trust` module); where a server's key comes from is the
//! server's.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use sha2::{Digest as _, Sha256};

/// The ALPN protocol name of ft version 2. Both sides require it, so a TLS
/// client of another protocol (a browser, curl) is refused in the TLS
/// handshake, before a byte of ft is spoken.
pub const ALPN: &[u8] = b"ft/2";

/// What `Fingerprint`s are written with.
const PREFIX: &str = "SHA256:";

/// The protocol versions ft speaks: TLS 1.3 and nothing older.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider both binaries use: aws-lc-rs, with AES-128-GCM first,
/// then AES-256-GCM, then ChaCha20-Poly1305 (BENCHMARKS.md has the
/// measurements behind the choice).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}

/// A certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// It is not a DER X.509 certificate.
    #[error("not an X.509 certificate")]
    Malformed,
}

/// A fingerprint is not `SHA256:` and 43 characters of base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a fingerprint: expected SHA256: and 43 characters of base64")]
pub struct FingerprintError;

/// What names a server: the SHA-256 of its certificate's
/// SubjectPublicKeyInfo, so a certificate renewed on the same key keeps it.
/// Written `SHA256:` and the digest in unpadded standard base64, as ssh
/// writes its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate's key.
    pub fn of_certificate(der: &[u8]) -> Result<Self, CertificateError> {
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| CertificateError::Malformed)?;
        if !rest.is_empty() {
            return Err(CertificateError::Malformed);
        }
        Ok(Self::of_public_key_info(cert.public_key().raw))
    }

    /// The fingerprint of a DER SubjectPublicKeyInfo.
    pub fn of_public_key_info(spki: &[u8]) -> Self {
        Self(Sha256::digest(spki).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0);
        write!(f, "{PREFIX}{text}")
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digest = text.strip_prefix(PREFIX).ok_or(FingerprintError)?;
        // Exactly 43 characters: base64 of 32 bytes, unpadded. The check
        // comes first, so a long string is not decoded.
        if digest.len() != 43 {
            return Err(FingerprintError);
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(digest)
            .map_err(|_| FingerprintError)?;
        bytes.try_into().map(Self).map_err(|_| FingerprintError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_reads_back_what_it_writes() {
        let fingerprint = Fingerprint::of_public_key_info(b"key");
        let text = fingerprint.to_string();
        assert!(
            text.starts_with("SHA256:") && text.len() == 7 + 43,
            "{text}"
        );
        assert!(!text.ends_with('='));
        assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
    }

    #[test]
    fn anything_else_is_not_a_fingerprint() {
        let good = Fingerprint::of_public_key_info(b"key").to_string();
        let digest = &good[7..];
        for bad in [
            "",
            digest,
            &format!("sha256:{digest}"),
            &format!("SHA256:{digest}="),
            &format!("SHA256:{}", &digest[1..]),
            &format!("SHA256:{}!", &digest[1..]),
            &format!("MD5:{digest}"),
        ] {
            assert_eq!(bad.parse::<Fingerprint>(), Err(FingerprintError), "{bad}");
        }
    }

    #[test]
    fn a_certificate_that_is_not_one_has_no_fingerprint() {
        assert_eq!(
            Fingerprint::of_certificate(b"not der"),
            Err(CertificateError::Malformed)
        );
    }
}
