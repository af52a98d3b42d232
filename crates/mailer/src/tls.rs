//! TLS for SMTP connections, with rustls (no OpenSSL): the system's trusted
//! roots plus an optional CA file, or, only when asked for explicitly, no
//! verification at all. The handshake is driven to completion right after
//! the TCP connect or STARTTLS, so certificate problems surface as TLS
//! errors (permanent) rather than as a broken connection later.

use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::error::{errno, MailError};
use super::options::MailerOptions;

/// The client configuration for `options`. Reads `ca_file` now, so a wrong
/// path fails the constructor instead of the first send.
pub fn client_config(options: &MailerOptions) -> Result<Arc<ClientConfig>, MailError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| MailError::option("verify_peer", e.to_string()))?;
    let config = if options.verify_peer {
        let mut roots = system_roots().clone();
        if let Some(path) = &options.ca_file {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| MailError::option("ca_file", format!("cannot read '{shown}': {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| MailError::option("ca_file", format!("'{shown}': {e}")))?;
            if certs.is_empty() {
                return Err(MailError::option(
                    "ca_file",
                    format!("'{shown}' holds no PEM certificate"),
                ));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    MailError::option("ca_file", format!("'{shown}': unusable certificate: {e}"))
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The system's trusted CAs, read once per process: parsing the bundle
/// costs milliseconds, and workers may create a mailer per task.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    })
}

/// Runs the TLS handshake over `tcp` and returns the session.
pub fn handshake(
    config: &Arc<ClientConfig>,
    host: &str,
    tcp: &mut TcpStream,
    addr: &str,
) -> Result<ClientConnection, MailError> {
    let tls_error = |reason: String| MailError::Tls {
        addr: addr.to_owned(),
        reason,
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| tls_error(format!("'{host}' is not a valid TLS server name")))?;
    let mut conn =
        ClientConnection::new(config.clone(), name).map_err(|e| tls_error(e.to_string()))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(tcp) {
            // rustls reports protocol and certificate failures as InvalidData;
            // anything else is the network.
            return Err(if e.kind() == std::io::ErrorKind::InvalidData {
                tls_error(e.to_string())
            } else {
                MailError::Io {
                    addr: addr.to_owned(),
                    stage: "the TLS handshake".to_owned(),
                    reason: e.to_string(),
                    errno: errno(&e),
                }
            });
        }
    }
    Ok(conn)
}

/// `verify_peer => false`: accepts any certificate for any name, but still
/// checks that the server holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_names_the_option() {
        let mut o = MailerOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..MailerOptions::default()
        };
        let e = client_config(&o).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid mailer option 'ca_file': cannot read '/nonexistent/ca.pem'"),
            "{e}"
        );
        let empty = std::env::temp_dir().join(format!("taskq-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        o.ca_file = Some(empty.clone());
        let e = client_config(&o).unwrap_err().to_string();
        std::fs::remove_file(&empty).unwrap();
        assert!(e.ends_with("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn verification_can_be_disabled_explicitly() {
        let o = MailerOptions {
            verify_peer: false,
            ..MailerOptions::default()
        };
        assert!(client_config(&o).is_ok());
        assert!(client_config(&MailerOptions::default()).is_ok());
    }
}
