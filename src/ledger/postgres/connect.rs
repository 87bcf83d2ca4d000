//! A connection to a PostgreSQL ledger: the URL, TLS through the rustls already used for the
//! gateway (the platform's roots, aws-lc-rs; no second TLS stack), and the connection's task.
//!
//! `sslmode` in the URL means what it means to PostgreSQL's own clients (libpq): `disable`
//! (plain), `prefer` (the default: TLS when the server offers it) and `require` (TLS or
//! nothing) encrypt without checking the server's certificate, so that a server with its
//! distribution's self-signed certificate (Debian's "snakeoil") works as `psql` finds it;
//! `verify-ca` checks the certificate against the roots, `verify-full` the roots and the host
//! name. The roots are the system's, or the file `sslrootcert=PATH` names (which, as in libpq,
//! makes `require` check against it too). tokio-postgres knows only the first three: the URL is
//! read here first and handed on with `sslmode=require` for the checking modes.
//!
//! A password in the URL is never shown: [`redacted`] is what every message names; `PGPASSWORD`
//! gives the password when the URL has none.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Whether a `ledger` setting names a PostgreSQL ledger (a URL) rather than a SQLite file.
pub fn is_url(ledger: &str) -> bool {
    ledger.starts_with("postgresql://") || ledger.starts_with("postgres://")
}

/// The URL as messages show it: the password, when there is one, replaced by `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "the PostgreSQL URL (which cannot be parsed)".to_owned(),
    }
}

/// Connects; the connection's task runs on the current runtime and ends with the client.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let shown = redacted(url);
    let (url, tls_mode) =
        tls_settings(url).map_err(|e| anyhow::anyhow!("setting `ledger` ({shown}): {e}"))?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        anyhow::anyhow!(
            "setting `ledger` ({shown}): not a PostgreSQL URL ({e}); write it as \
             postgresql://USER@HOST[:PORT]/DATABASE"
        )
    })?;
    // A password kept out of the URL (and so out of settings files and messages).
    if config.get_password().is_none()
        && let Ok(password) = std::env::var("PGPASSWORD")
    {
        config.password(password);
    }
    let checked = matches!(tls_mode, TlsMode::Checked { .. });
    let (client, connection) = config.connect(tls(&tls_mode)?).await.map_err(|e| {
        let what = match checked && format!("{e:#}").contains("TLS") {
            true => {
                "the server's certificate did not pass the check `sslmode` asks for: give \
                     the root that signed it with sslrootcert=PATH (verify-full also needs the \
                     certificate to name the host of the URL), or sslmode=require to encrypt \
                     without checking it"
            }
            false => "check that the server runs and the URL",
        };
        anyhow::Error::new(e).context(format!(
            "cannot connect to the PostgreSQL ledger {shown}: {what}"
        ))
    })?;
    tokio::spawn(async move {
        // The error comes back to whoever uses the client next.
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether `url` asks for the server's certificate to be checked (`verify-ca`, `verify-full`,
/// or a root file).
pub fn checks_certificate(url: &str) -> bool {
    matches!(tls_settings(url), Ok((_, TlsMode::Checked { .. })))
}

/// How the server's certificate is checked (`sslmode`, `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TlsMode {
    /// Encrypted (when the server offers it, or required), the certificate not checked.
    Unchecked,
    /// The certificate checked against the roots: `names` too (`verify-full`), or not
    /// (`verify-ca`). The roots are the system's, or those of the file.
    Checked {
        names: bool,
        roots: Option<std::path::PathBuf>,
    },
}

/// The URL as tokio-postgres reads it, and how a certificate is checked: `sslmode` and
/// `sslrootcert` taken out of the query (the other parameters left as they are), `sslmode`
/// put back as one tokio-postgres knows.
fn tls_settings(url: &str) -> Result<(String, TlsMode), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), TlsMode::Unchecked));
    };
    let (mut mode, mut roots, mut kept) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded: String = form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        match key {
            "sslmode" => mode = Some(decoded),
            "sslrootcert" => roots = Some(std::path::PathBuf::from(decoded)),
            _ => kept.push(pair),
        }
    }
    let (given, tls) = match (mode.as_deref(), roots) {
        (None | Some("prefer"), _) => ("prefer", TlsMode::Unchecked),
        (Some("disable"), _) => ("disable", TlsMode::Unchecked),
        (Some("require"), None) => ("require", TlsMode::Unchecked),
        (Some("require" | "verify-ca"), roots) => (
            "require",
            TlsMode::Checked {
                names: false,
                roots,
            },
        ),
        (Some("verify-full"), roots) => ("require", TlsMode::Checked { names: true, roots }),
        (Some(other), _) => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    kept.push(match given {
        "disable" => "sslmode=disable",
        "require" => "sslmode=require",
        _ => "sslmode=prefer",
    });
    Ok((format!("{base}?{}", kept.join("&")), tls))
}

fn tls(mode: &TlsMode) -> anyhow::Result<MakeRustls> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        TlsMode::Checked {
            names: true,
            roots: None,
        } => builder.with_platform_verifier()?,
        TlsMode::Checked { names, roots } => {
            let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match roots {
                None => Arc::new(rustls_platform_verifier::Verifier::new(provider.clone())?),
                Some(file) => {
                    use rustls::pki_types::pem::PemObject as _;
                    let mut store = rustls::RootCertStore::empty();
                    let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
                        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            anyhow::anyhow!("sslrootcert={}: cannot read it ({e})", file.display())
                        })?;
                    for cert in certs {
                        store.add(cert)?;
                    }
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(store),
                        provider.clone(),
                    )
                    .build()?
                }
            };
            let verifier = match names {
                true => verifier,
                false => Arc::new(AnyName(verifier)),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
        }
        TlsMode::Unchecked => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider))),
    }
    .with_no_client_auth();
    Ok(MakeRustls(Arc::new(config)))
}

/// `sslmode=prefer`/`require`: the connection encrypted, the server's certificate taken as it
/// is (libpq's meaning of those modes); the handshake's signatures are still checked.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the certificate's chain checked, its host name not.
#[derive(Debug)]
struct AnyName(Arc<dyn rustls::client::danger::ServerCertVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook over tokio-rustls.
#[derive(Clone)]
pub struct MakeRustls(Arc<rustls::ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a valid server name for TLS"),
            )
        })?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Connecting<S>;

    fn connect(self, stream: S) -> Connecting<S> {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_as_libpq_reads_it_and_handed_on_as_tokio_postgres_knows_it() {
        let read = |url: &str| tls_settings(url).unwrap();
        let base = "postgresql://u@h:5432/db";
        assert_eq!(read(base), (base.to_owned(), TlsMode::Unchecked));
        assert_eq!(
            read(&format!("{base}?sslmode=require&application_name=x")),
            (
                format!("{base}?application_name=x&sslmode=require"),
                TlsMode::Unchecked
            )
        );
        assert_eq!(
            read(&format!("{base}?sslmode=verify-full")),
            (
                format!("{base}?sslmode=require"),
                TlsMode::Checked {
                    names: true,
                    roots: None
                }
            )
        );
        let ca = TlsMode::Checked {
            names: false,
            roots: Some("/etc/ca dir/root.crt".into()),
        };
        assert_eq!(
            read(&format!(
                "{base}?sslmode=verify-ca&sslrootcert=/etc/ca%20dir/root.crt"
            ))
            .1,
            ca
        );
        // As in libpq, a root file makes `require` check the chain.
        assert_eq!(
            read(&format!(
                "{base}?sslmode=require&sslrootcert=/etc/ca%20dir/root.crt"
            ))
            .1,
            ca
        );
        assert_eq!(
            read(&format!("{base}?sslmode=disable")).0,
            format!("{base}?sslmode=disable")
        );
        assert!(tls_settings(&format!("{base}?sslmode=verify")).is_err());
    }

    #[test]
    fn a_url_selects_postgres_and_its_password_is_never_shown() {
        assert!(is_url("postgresql://u@h/db"));
        assert!(is_url("postgres://u@h/db"));
        assert!(!is_url("pms-ledger.db"));
        assert!(!is_url("/var/postgresql://x"));
        let shown = redacted("postgresql://u:s3cret@h:5432/db");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("u:***@h:5432/db"), "{shown}");
    }
}
