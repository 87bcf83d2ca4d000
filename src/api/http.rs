//! The one way a request leaves the tool: reqwest, for a run's requests (straight to the gateway
//! or through the proxy the environment names: `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`, unless
//! `NO_PROXY` exempts the gateway) and for `doctor`'s. Redirects are never followed (a signed POST
//! must never be sent again somewhere else) and no answer body over [`MAX_BODY`] is read.
//!
//! What matters for "never sent twice" is which failures could have reached the gateway, and it
//! is decided here only ([`classify`]): a failure to connect (refused, unknown host, TLS, connect
//! time-out) cannot have; hyper sends a request again on a fresh connection only when none of it
//! was written. Anything after the connection stood may have reached it.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::outcome::MAX_BODY;

/// The longest wait for a connection (TCP and TLS), whatever `timeout` says.
const CONNECT_AT_MOST: Duration = Duration::from_secs(10);

/// The tool's `User-Agent`.
pub const USER_AGENT: &str = concat!("pms-onboard/", env!("CARGO_PKG_VERSION"));

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection: the request cannot have reached the gateway.
    Connect(String),
    /// No complete answer within the time-out; the gateway may have processed the request.
    Timeout,
    /// The connection failed after the request may have left. `status` if one was read.
    AfterSending { reason: String, status: Option<u16> },
}

/// A complete answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The HTTP client of a run and of `doctor`: the whole exchange within `timeout`, a connection
/// within `timeout` or 10 s, kept-alive connections, proxies from the environment, no redirects.
/// HTTP/1.1: HTTP/2 cost 2–6 % more CPU a row (docs/performance.md) and buys nothing for one
/// small request at a time per connection.
pub fn client(timeout: Duration, user_agent: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_AT_MOST))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(user_agent)
        .build()?)
}

/// POSTs `body` with `headers` and reads the whole answer (up to [`MAX_BODY`]).
pub async fn post(
    http: &reqwest::Client,
    url: &reqwest::Url,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<RawResponse, SendError> {
    let response = http
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| classify(&e, None))?;
    read(response).await
}

/// Reads an answer in chunks up to the cap: a body that goes on is not the documented answer.
pub async fn read(mut response: reqwest::Response) -> Result<RawResponse, SendError> {
    let status = response.status().as_u16();
    let too_large = || SendError::AfterSending {
        reason: format!("the answer is larger than {} KiB", MAX_BODY / 1024),
        status: Some(status),
    };
    let said = response.content_length().unwrap_or(0);
    if said > MAX_BODY as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(said as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(&e, Some(status)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(RawResponse {
        status,
        headers: std::mem::take(response.headers_mut()),
        body,
    })
}

/// The one classification of reqwest's failures. A connect error comes before anything was
/// written (a connect time-out is one too); a request reqwest could not even build never left.
/// Everything else (`is_timeout`, `is_request`, `is_body`, `is_decode`) came after the
/// connection stood, so the request may have reached the gateway.
pub fn classify(e: &reqwest::Error, status: Option<u16>) -> SendError {
    if e.is_connect() || e.is_builder() {
        SendError::Connect(error_chain(e))
    } else if e.is_timeout() {
        SendError::Timeout
    } else {
        SendError::AfterSending {
            reason: error_chain(e),
            status: status.or_else(|| e.status().map(|s| s.as_u16())),
        }
    }
}

/// An error and its causes on one line. reqwest's own layers ("error sending request for url
/// (…)", hyper's "client error (Connect)") say nothing a person can act on, so a reqwest error
/// starts at its first cause; a cause that repeats the one before is said once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = next {
        next = cause.source();
        let text = cause.to_string();
        let wrapper = (cause.is::<reqwest::Error>() && next.is_some())
            || (text.starts_with("client error (") && next.is_some());
        if wrapper || parts.last().is_some_and(|last| *last == text) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

/// Whether the environment sends requests for `url` through a proxy, as reqwest decides it (the
/// same matcher): `doctor` then skips the checks the proxy makes itself.
pub fn proxied(url: &url::Url) -> bool {
    let Ok(uri) = url.as_str().parse::<http::Uri>() else {
        return false;
    };
    hyper_util::client::proxy::matcher::Matcher::from_system()
        .intercept(&uri)
        .is_some()
}

/// rustls with the platform's certificate roots and aws-lc-rs, as reqwest builds it. Only
/// `doctor`'s TLS check uses it, so that it checks what a run trusts. `host` without brackets.
pub fn tls(
    host: &str,
) -> anyhow::Result<(
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
)> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|_| anyhow::anyhow!("{host:?} is not a valid server name for TLS"))?
        .to_owned();
    Ok((
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        name,
    ))
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

    fn http() -> reqwest::Client {
        client(Duration::from_secs(5), USER_AGENT).unwrap()
    }

    fn url(port: u16) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://127.0.0.1:{port}/api")).unwrap()
    }

    /// A server that answers one request per connection and then closes it without saying so
    /// (no `Connection: close`), as a gateway does with a connection it has kept idle too long.
    fn one_answer_per_connection(connections: usize) -> (u16, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"{}") {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before its request was complete");
                    request.extend_from_slice(&buf[..n]);
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .unwrap();
                served += 1;
            }
            served
        });
        (port, server)
    }

    #[tokio::test]
    async fn a_connection_the_gateway_closed_while_idle_is_replaced_not_failed() {
        let (port, server) = one_answer_per_connection(2);
        let http = http();
        for _ in 0..2 {
            let answer = post(&http, &url(port), HeaderMap::new(), b"{}".to_vec())
                .await
                .unwrap();
            assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
            // Time for the server's close to arrive, so the next request finds it ended.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.join().unwrap(), 2);
    }

    /// A server for one connection: it reads the request, then `answer` writes what it will
    /// (nothing: the connection closes without an answer).
    fn serve_once(
        answer: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
    ) -> (u16, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).unwrap();
            answer(&mut stream);
        });
        (port, server)
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let failure = post(&http(), &url(port), HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(
            matches!(&failure, SendError::Connect(reason) if reason.contains("refused")),
            "{failure:?}"
        );
    }

    /// A server that reads the request and closes the connection without answering.
    #[tokio::test]
    async fn a_connection_closed_after_the_request_is_possibly_sent() {
        let (port, server) = serve_once(|_| ());
        let failure = post(&http(), &url(port), HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(
            matches!(&failure, SendError::AfterSending { status: None, .. }),
            "{failure:?}"
        );
        server.join().unwrap();
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_cap_is_not_read_whole() {
        for chunked in [false, true] {
            let (port, server) = serve_once(move |stream| {
                let body = vec![b'x'; 200 * 1024];
                if chunked {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                    for part in body.chunks(8192) {
                        let _ = stream.write_all(format!("{:x}\r\n", part.len()).as_bytes());
                        let _ = stream.write_all(part);
                        let _ = stream.write_all(b"\r\n");
                    }
                    let _ = stream.write_all(b"0\r\n\r\n");
                } else {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                }
            });
            let failure = post(&http(), &url(port), HeaderMap::new(), b"{}".to_vec())
                .await
                .unwrap_err();
            assert!(
                matches!(&failure, SendError::AfterSending { reason, status: Some(200) }
                    if reason.contains("larger than 64 KiB")),
                "{failure:?}"
            );
            server.join().unwrap();
        }
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let (port, server) = serve_once(|stream| {
            let _ = stream.write_all(
                b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n",
            );
        });
        let answer = post(&http(), &url(port), HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(answer.status, 307);
        server.join().unwrap();
    }
}
