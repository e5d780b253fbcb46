//! TLS with rustls (the ring provider), for both sides:
//! [`ServerTlsSource`] gives a listener's acceptor and re-reads its
//! certificate, key and client CA files when they change (new connections
//! get the new ones, open connections keep theirs); [`client_config`]
//! builds an exporter's config from the Collector's client keys;
//! [`ClientIdentity`] is what a client certificate says about its holder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientTls, ServerTls, TlsVersion};

/// Why TLS could not be set up. Names the file and the key it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{what}: cannot read {}: {source}", path.display())]
    Read {
        /// `cert_file`, `key_file`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{what}: {} holds no {expected} (PEM): {detail}", path.display())]
    Pem {
        /// `cert_file`, `key_file`, ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// "certificate", "private key".
        expected: &'static str,
        /// The parser's word.
        detail: String,
    },
    /// rustls refused the combination (a key not matching the certificate,
    /// a CA that is not one, no versions left).
    #[error("{what}: {detail}")]
    Refused {
        /// What was being set up.
        what: &'static str,
        /// rustls's word.
        detail: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut out = Vec::new();
    if min <= TlsVersion::V1_2 && max >= TlsVersion::V1_2 {
        out.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::V1_3 {
        out.push(&rustls::version::TLS13);
    }
    out
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })?;
    let pem = |detail: String| TlsError::Pem { what, path: path.to_owned(), expected: "certificate", detail };
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "private key",
        detail: e.to_string(),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(what, path)? {
        store.add(cert).map_err(|e| TlsError::Refused { what, detail: format!("{}: {e}", path.display()) })?;
    }
    Ok(store)
}

/// A listener's rustls config from its `tls:` keys, offering h2 and http/1.1.
pub fn server_config(tls: &ServerTls) -> Result<ServerConfig, TlsError> {
    let refused = |what| move |e: rustls::Error| TlsError::Refused { what, detail: e.to_string() };
    let chain = certificates("cert_file", &tls.cert_file)?;
    let key = private_key("key_file", &tls.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(tls.min_version, tls.max_version))
        .map_err(refused("min_version/max_version"))?;
    let builder = match &tls.client_ca_file {
        Some(path) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots("client_ca_file", path)?.into(),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Refused { what: "client_ca_file", detail: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(refused("cert_file/key_file"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What identifies a file's content well enough to notice a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

/// A listener's TLS acceptor, re-read when its files change.
pub struct ServerTlsSource {
    tls: ServerTls,
    current: Mutex<Current>,
}

struct Current {
    acceptor: TlsAcceptor,
    stamps: Vec<Option<Stamp>>,
    checked: Instant,
}

impl ServerTlsSource {
    /// Reads the files now: a listener never starts with a bad certificate.
    pub fn load(tls: &ServerTls) -> Result<Self, TlsError> {
        let stamps = Self::stamps_of(tls);
        let acceptor = TlsAcceptor::from(Arc::new(server_config(tls)?));
        Ok(ServerTlsSource {
            tls: tls.clone(),
            current: Mutex::new(Current { acceptor, stamps, checked: Instant::now() }),
        })
    }

    fn stamps_of(tls: &ServerTls) -> Vec<Option<Stamp>> {
        [Some(&tls.cert_file), Some(&tls.key_file), tls.client_ca_file.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| stamp(p))
            .collect()
    }

    /// The acceptor for a new connection. At most once per
    /// `reload_interval` the files are looked at; when they changed and
    /// still make a valid config, it replaces the old one. A broken
    /// rotation (a key not matching the certificate yet) keeps the old
    /// one serving and is tried again.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.checked.elapsed() >= self.tls.reload_interval {
            current.checked = Instant::now();
            let stamps = Self::stamps_of(&self.tls);
            if stamps != current.stamps {
                match server_config(&self.tls) {
                    Ok(config) => {
                        current.acceptor = TlsAcceptor::from(Arc::new(config));
                        current.stamps = stamps;
                        tracing::info!(cert_file = %self.tls.cert_file.display(), "TLS certificate reloaded");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS files changed but do not load; the previous certificate serves")
                    }
                }
            }
        }
        current.acceptor.clone()
    }
}

/// Who a client certificate names: the subject's distinguished name and
/// the subject alternative names (DNS, email, URI, IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// RFC 4514 string, e.g. `CN=collector-7,O=Example`.
    pub subject: String,
    /// `DNS:a.example`, `email:x@example`, `URI:spiffe://...`, `IP:10.0.0.1`.
    pub sans: Vec<String>,
}

impl ClientIdentity {
    /// Parses the leaf certificate a client presented.
    pub fn of(leaf: &CertificateDer<'_>) -> Option<ClientIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
                    GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
                    GeneralName::URI(u) => Some(format!("URI:{u}")),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => Some(format!("IP:{}", std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?))),
                        16 => Some(format!("IP:{}", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?))),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(ClientIdentity { subject: cert.subject().to_string(), sans })
    }
}

/// An exporter's rustls config from its `tls:` keys; `alpn` lists the
/// protocols to offer (`h2` for gRPC).
pub fn client_config(tls: &ClientTls, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let refused = |what| move |e: rustls::Error| TlsError::Refused { what, detail: e.to_string() };
    let mut store = RootCertStore::empty();
    if let Some(path) = &tls.ca_file {
        store = roots("ca_file", path)?;
    }
    if tls.include_system_ca_certs_pool {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = store.add(cert);
        }
        if store.is_empty() {
            let detail = format!("no system CA certificates found ({:?}); set ca_file", found.errors.first());
            return Err(TlsError::Refused { what: "include_system_ca_certs_pool", detail });
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(
            tls.min_version.unwrap_or(TlsVersion::V1_2),
            tls.max_version.unwrap_or(TlsVersion::V1_3),
        ))
        .map_err(refused("min_version/max_version"))?;
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|e| TlsError::Refused { what: "ca_file", detail: e.to_string() })?;
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AnyServer(webpki))
    } else if let Some(name) = &tls.server_name_override {
        let name = ServerName::try_from(name.clone())
            .map_err(|e| TlsError::Refused { what: "server_name_override", detail: e.to_string() })?;
        Arc::new(NamedServer { inner: webpki, name })
    } else {
        webpki
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates("cert_file", cert)?, private_key("key_file", key)?)
            .map_err(refused("cert_file/key_file"))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// `server_name_override`: the certificate is checked against this name
/// rather than the endpoint's host.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// signatures are still checked (the connection is encrypted, not
/// authenticated).
#[derive(Debug)]
struct AnyServer(Arc<rustls::client::WebPkiServerVerifier>);

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

macro_rules! delegate_signatures {
    ($inner:expr) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $inner(self).verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $inner(self).verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            $inner(self).supported_verify_schemes()
        }
    };
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }
    delegate_signatures!(|s: &Self| s.inner.clone());
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    delegate_signatures!(|s: &Self| s.0.clone());
}
