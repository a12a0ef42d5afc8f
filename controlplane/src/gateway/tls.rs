//! TLS on a Kafka listener (rustls, ring as the crypto provider): the server's
//! certificate chain and key from PEM files, TLS 1.3 only unless the listener says
//! `tls_min_version = "1.2"`, and client certificates (mTLS) checked against
//! `client_ca_file` when `client_auth` asks for them. The principal of a client that
//! showed a certificate is `User:<CN of its subject>` (Kafka's default mapping).

use precursor_config::{ClientAuth, ListenerConfig, TlsVersion};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a listener's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener {listener}: {what} {}: {source}", path.display())]
    Pem {
        listener: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("listener {listener}: {what} {} holds no certificate", path.display())]
    NoCertificate {
        listener: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error("listener {listener}: client_ca_file {}: {source}", path.display())]
    ClientCa {
        listener: String,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("listener {listener}: client certificate verifier: {source}")]
    Verifier {
        listener: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("listener {listener}: {source}")]
    Config {
        listener: String,
        #[source]
        source: rustls::Error,
    },
}

fn certificates(
    listener: &str,
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        listener: listener.to_string(),
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            listener: listener.to_string(),
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The rustls server configuration of a TLS listener, read from its files now.
pub fn server_config(listener: &ListenerConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let name = listener.name.as_str();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(name, "cert_file", &listener.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&listener.key_file).map_err(|source| TlsError::Pem {
        listener: name.to_string(),
        what: "key_file",
        path: listener.key_file.clone(),
        source,
    })?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match listener.tls_min_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let config_error = |source| TlsError::Config {
        listener: name.to_string(),
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(config_error)?;
    let builder = match listener.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(name, "client_ca_file", &listener.client_ca_file)? {
                roots.add(ca).map_err(|source| TlsError::ClientCa {
                    listener: name.to_string(),
                    path: listener.client_ca_file.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                listener: name.to_string(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(config_error)?;
    Ok(Arc::new(config))
}

/// `User:<CN>` of a verified client certificate (DER); `User:ANONYMOUS` when it has no
/// common name or cannot be read (rustls verified it already).
pub fn principal_of(certificate: &CertificateDer<'_>) -> String {
    let cn = x509_parser::parse_x509_certificate(certificate.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_string))
        });
    match cn {
        Some(cn) => format!("User:{cn}"),
        None => ANONYMOUS.to_string(),
    }
}

/// The principal of a connection that has not authenticated (Kafka's).
pub const ANONYMOUS: &str = "User:ANONYMOUS";
