//! A connection to a PostgreSQL ledger: the URL, TLS through the rustls already used for the
//! gateway (the platform's roots, aws-lc-rs; no second TLS stack), and the connection's task.
//!
//! `sslmode` in the URL is PostgreSQL's: `disable` (plain), `prefer` (the default: TLS when the
//! server offers it) or `require`. A password in the URL is never shown: [`redacted`] is what
//! every message names; `PGPASSWORD` gives the password when the URL has none.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
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
    let (client, connection) = config
        .connect(tls()?)
        .await
        .with_context(|| {
            format!("cannot connect to the PostgreSQL ledger {shown}: check that the server runs and the URL")
        })?;
    tokio::spawn(async move {
        // The error comes back to whoever uses the client next.
        let _ = connection.await;
    });
    Ok(client)
}

fn tls() -> anyhow::Result<MakeRustls> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    Ok(MakeRustls(Arc::new(config)))
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
