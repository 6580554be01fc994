//! TLS as a client sees it: whether workers speak HTTPS, which
//! certificate authorities to trust, and the certificate to present when
//! workers require one (mutual TLS).
//!
//! One [`ClientTls`] value configures every HTTP client of the crate and of
//! the worker's own requests to its peers ([`ClientTls::apply`]), so the
//! rules below hold everywhere:
//!
//! - TLS is on when `enabled` is set, or a CA bundle or a client
//!   certificate is given (a CA file without HTTPS would be pointless).
//! - `ca` (a PEM bundle) replaces the system's roots: a private CA is the
//!   usual deployment, and trusting the public roots beside it would let
//!   any public certificate for the host name through.
//! - `verify: false` accepts any certificate (testing only; it is logged).
//! - `cert` and `key` (PEM files) go together.
//!
//! etcd has its own settings ([`crate::discovery::EtcdTls`]): an etcd
//! cluster often has a CA of its own.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// TLS settings of a client of workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// Speak HTTPS to workers. Implied by `ca` and `cert`. Default false.
    pub enabled: bool,
    /// PEM bundle of the certificate authorities to trust instead of the
    /// system's. Default none (the system's roots).
    pub ca: Option<PathBuf>,
    /// Verify the worker's certificate and host name. Default true.
    pub verify: bool,
    /// PEM certificate (chain) presented to workers that require one.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls {
            enabled: false,
            ca: None,
            verify: true,
            cert: None,
            key: None,
        }
    }
}

impl ClientTls {
    /// Whether requests use HTTPS.
    pub fn is_on(&self) -> bool {
        self.enabled || self.ca.is_some() || self.cert.is_some()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.is_on() {
            "https"
        } else {
            "http"
        }
    }

    /// `builder` with these settings: trusted roots, verification, client
    /// identity. A file that cannot be read or parsed is an
    /// [`Error::InvalidArgument`] naming it and the setting.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        if !self.is_on() {
            return Ok(builder);
        }
        let mut b = builder.https_only(true);
        if let Some(ca) = &self.ca {
            let pem = read(ca, "tls_ca")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid("tls_ca", ca, &e.to_string()))?;
            if certs.is_empty() {
                return Err(invalid("tls_ca", ca, "no PEM certificate in it"));
            }
            b = b.tls_certs_only(certs);
        }
        if !self.verify {
            tracing::warn!("tls_verify is off: worker certificates are not checked");
            b = b.tls_danger_accept_invalid_certs(true);
        }
        match (&self.cert, &self.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let mut pem = read(key, "tls_key")?;
                pem.push(b'\n');
                pem.extend(read(cert, "tls_cert")?);
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| invalid("tls_cert", cert, &e.to_string()))?;
                b = b.identity(id);
            }
            _ => {
                return Err(Error::InvalidArgument(
                    "tls_cert and tls_key go together: set both or neither".into(),
                ))
            }
        }
        Ok(b)
    }
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| invalid(setting, path, &e.to_string()))
}

fn invalid(setting: &str, path: &Path, why: &str) -> Error {
    Error::InvalidArgument(format!("{setting} {}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_or_a_certificate_turns_tls_on() {
        assert!(!ClientTls::default().is_on());
        assert_eq!(ClientTls::default().scheme(), "http");
        let with_ca = ClientTls {
            ca: Some("/x.pem".into()),
            ..ClientTls::default()
        };
        assert!(with_ca.is_on());
        assert_eq!(with_ca.scheme(), "https");
        let with_cert = ClientTls {
            cert: Some("/c.pem".into()),
            ..ClientTls::default()
        };
        assert!(with_cert.is_on());
    }

    #[test]
    fn bad_files_are_errors_that_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ClientTls {
            ca: Some(dir.path().join("none.pem")),
            ..ClientTls::default()
        };
        let e = missing.apply(reqwest::Client::builder()).unwrap_err();
        assert!(e.to_string().contains("tls_ca"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = ClientTls {
            ca: Some(junk),
            ..ClientTls::default()
        }
        .apply(reqwest::Client::builder())
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let half = ClientTls {
            cert: Some(dir.path().join("c.pem")),
            ..ClientTls::default()
        };
        let e = half.apply(reqwest::Client::builder()).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }
}
