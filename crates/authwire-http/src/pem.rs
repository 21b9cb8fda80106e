//! PEM in and out, through `rustls-pki-types` (one parser for every certificate and key the
//! authwire crates read: client certificates, CA bundles, DPoP and assertion keys, Azure
//! certificates). RSA and EC keys in PKCS#1, PKCS#8 and SEC1; an encrypted key is an error
//! that says so.

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use zeroize::Zeroizing;

/// What is wrong with a PEM document. Never holds the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemError {
    message: String,
}

impl PemError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PemError {}

/// Every `CERTIFICATE` block of `pem`, in order; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::new(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(PemError::new("no CERTIFICATE block in the PEM"));
    }
    Ok(certs)
}

/// A private key read from PEM.
pub struct PrivateKey {
    der: PrivateKeyDer<'static>,
}

impl PrivateKey {
    /// The key's DER bytes.
    pub fn der(&self) -> &[u8] {
        self.der.secret_der()
    }

    /// Its PEM label: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY`
    /// (SEC1).
    pub fn label(&self) -> &'static str {
        match &self.der {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        }
    }

    /// The key as rustls takes it.
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        self.der.clone_key()
    }

    /// Whether it is a PKCS#8 `PRIVATE KEY`.
    pub fn is_pkcs8(&self) -> bool {
        matches!(self.der, PrivateKeyDer::Pkcs8(_))
    }

    /// The key as PEM, to hand to a library that reads PEM.
    pub fn to_pem(&self) -> Zeroizing<String> {
        encode(self.label(), self.der())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("format", &self.label())
            .finish_non_exhaustive()
    }
}

/// The first private key of `pem` (the document may also hold certificates). An encrypted key
/// (`ENCRYPTED PRIVATE KEY`, or a legacy `Proc-Type: 4,ENCRYPTED` block) is refused with an
/// error that says so.
pub fn private_key(pem: &[u8]) -> Result<PrivateKey, PemError> {
    if is_encrypted(pem) {
        return Err(PemError::new(
            "the private key is encrypted: decrypt it first (openssl pkey -in key.pem -out plain.pem) and keep the result private",
        ));
    }
    let mut found = None;
    for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| PemError::new(format!("not valid PEM ({e})")))?;
        let der = Zeroizing::new(der);
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.to_vec().into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.to_vec().into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.to_vec().into()),
            _ => continue,
        };
        found = Some(key);
        break;
    }
    match found {
        Some(der) => Ok(PrivateKey { der }),
        None => Err(PemError::new(
            "no private key in the PEM (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )),
    }
}

fn is_encrypted(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED")
}

/// `der` as a PEM block with `label`, 64 characters a line.
pub fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    use base64::Engine as _;
    let body = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut pem = Zeroizing::new(String::with_capacity(
        body.len() + body.len() / 64 + 2 * label.len() + 40,
    ));
    pem.push_str("-----BEGIN ");
    pem.push_str(label);
    pem.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END ");
    pem.push_str(label);
    pem.push_str("-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_key_is_named_as_such() {
        let pem = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = private_key(pem).unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
        let legacy = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(private_key(legacy).is_err());
    }

    #[test]
    fn keys_and_certificates_round_trip() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x00];
        let pem = encode("EC PRIVATE KEY", &der);
        let key = private_key(pem.as_bytes()).unwrap();
        assert_eq!(key.label(), "EC PRIVATE KEY");
        assert_eq!(key.der(), der);
        assert!(!key.is_pkcs8());
        assert!(!format!("{key:?}").contains("MAMC"));
        let cert = encode("CERTIFICATE", &der);
        assert_eq!(certificates(cert.as_bytes()).unwrap()[0].as_ref(), der);
        assert!(certificates(b"no pem here").is_err());
        assert!(private_key(cert.as_bytes()).is_err());
    }
}
