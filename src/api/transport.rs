//! How a request reaches the gateway. The tool sends one request shape, a POST with a small body
//! to one origin, many thousands of times. reqwest's general client wraps each in its redirect,
//! time-out and pool layers and hands it to a connection task through a channel; for this one
//! shape that cost 7 % of the CPU per row at 64 workers (docs/performance.md, item 34). So a
//! direct connection is driven here: HTTP/1.1 with keep-alive over TCP, with rustls for `https`
//! (the platform's roots, as reqwest uses them), each request on an idle connection or a new one.
//!
//! Through a proxy (`HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`, unless `NO_PROXY` exempts the
//! gateway) the request goes through reqwest instead, which speaks to proxies.
//!
//! What matters for "never sent twice" is which failures could have reached the gateway. A
//! failure to connect could not ([`SendError::Connect`]); neither could a request that hyper hands
//! back unwritten, which is sent again on a fresh connection. Anything after the request may have
//! left is [`SendError::AfterSending`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::outcome::MAX_BODY;

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
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Requests not yet written on this many fresh connections in a row (each closed by the other
/// end first) count as a connection failure.
const FRESH_CONNECTION_TRIES: usize = 3;

/// Keep-alive connections to one origin, and how to open more.
pub struct Direct {
    host: String,
    port: u16,
    /// `Host` header: the authority as the URL gave it.
    host_header: HeaderValue,
    /// The request target in origin form (`/api/...`).
    path: http::Uri,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    connect_timeout: Duration,
    /// Connections whose last answer was read in full, most recent last.
    idle: Mutex<Vec<Conn>>,
}

/// The future that does a connection's reading and writing; `None` once it has ended.
type Driver = Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>;

/// A connection: the handle requests go in by, and its driver. The driver is polled by whichever
/// request is using the connection, in that request's task, so a request costs no hand-off to a
/// task of the connection's own.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
}

impl Conn {
    /// Not known to have ended (an idle connection's end may still be unread: see `post`).
    fn open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// Runs `fut` while driving the connection; if the connection ends first, `fut` is then
/// finished on its own (hyper answers a request it can no longer serve at once).
async fn driven<T>(driver: &mut Driver, fut: impl Future<Output = T>) -> T {
    tokio::pin!(fut);
    if let Some(d) = driver {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            ended = d.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("connection to the gateway ended: {e}");
                }
                *driver = None;
            }
        }
    }
    fut.await
}

impl Direct {
    /// For `url` (`http` or `https`); fails only on a URL that names no host, or when the
    /// platform's certificate store cannot be used.
    pub fn new(url: &url::Url, connect_timeout: Duration) -> anyhow::Result<Self> {
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("the endpoint {url} names no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow::anyhow!("the endpoint {url} names no port"))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        // IPv6 literals come bracketed from the URL; a socket address and a TLS server name want
        // them bare.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tls = match url.scheme() {
            "https" => Some(tls(bare)?),
            _ => None,
        };
        Ok(Direct {
            host: bare.to_owned(),
            port,
            host_header: HeaderValue::from_str(&authority)?,
            path: url[url::Position::BeforePath..url::Position::AfterQuery].parse()?,
            tls,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` with `headers` (plus `Host`) and reads the whole answer.
    pub async fn post(
        &self,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Result<RawResponse, SendError> {
        let mut request = http::Request::post(self.path.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let h = request.headers_mut();
        h.insert(header::HOST, self.host_header.clone());
        for (name, value) in headers {
            h.insert(name, value);
        }
        let mut fresh = 0;
        loop {
            let mut conn = match self.checkout() {
                Some(c) => c,
                None if fresh < FRESH_CONNECTION_TRIES => {
                    fresh += 1;
                    self.connect().await?
                }
                None => {
                    return Err(SendError::Connect(
                        "the gateway closed each new connection before the request was written"
                            .into(),
                    ));
                }
            };
            if driven(&mut conn.driver, conn.sender.ready()).await.is_err() {
                continue; // closed while idle: nothing was written on it
            }
            let sent = conn.sender.try_send_request(request);
            match driven(&mut conn.driver, sent).await {
                Ok(response) => {
                    let (parts, incoming) = response.into_parts();
                    let status = parts.status.as_u16();
                    // A body over the cap is not the documented answer: the connection is
                    // dropped with it (never checked in with a body half read).
                    let limited = http_body_util::Limited::new(incoming, MAX_BODY);
                    let body = driven(&mut conn.driver, limited.collect())
                        .await
                        .map_err(|e| SendError::AfterSending {
                            reason: body_error(&*e),
                            status: Some(status),
                        })?
                        .to_bytes();
                    self.checkin(conn);
                    return Ok(RawResponse {
                        status,
                        headers: parts.headers,
                        body,
                    });
                }
                Err(mut e) => match e.take_message() {
                    // hyper gives the request back only when none of it was written.
                    Some(unsent) => request = unsent,
                    None => {
                        return Err(SendError::AfterSending {
                            reason: error_chain(e.error()),
                            status: None,
                        });
                    }
                },
            }
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.open() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        if conn.open() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let open = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| error_chain(&e))?;
            // Each request is written whole at once; waiting for more to coalesce only adds
            // latency.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => handshake(tcp).await,
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| error_chain(&e))?;
                    handshake(stream).await
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, open).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(reason)) => Err(SendError::Connect(reason)),
            Err(_) => Err(SendError::Connect(format!(
                "no connection within {}",
                crate::duration::format(self.connect_timeout)
            ))),
        }
    }
}

/// HTTP/1.1 on an open stream.
async fn handshake<S>(stream: S) -> Result<Conn, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(Conn {
        sender,
        driver: Some(Box::pin(conn)),
    })
}

/// rustls with the platform's certificate roots (as reqwest uses them), HTTP/1.1 only. `host`
/// without brackets. Also `doctor`'s TLS check, so that it checks what a run will use.
pub(crate) fn tls(
    host: &str,
) -> anyhow::Result<(
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
)> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|_| anyhow::anyhow!("{host:?} is not a valid server name for TLS"))?
        .to_owned();
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// Whether the environment sends requests for `url` through a proxy, as reqwest would decide.
pub fn proxied(url: &url::Url) -> bool {
    let Ok(uri) = url.as_str().parse::<http::Uri>() else {
        return false;
    };
    hyper_util::client::proxy::matcher::Matcher::from_system()
        .intercept(&uri)
        .is_some()
}

/// Why an answer's body could not be read, in words: over the cap, or the connection's error.
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> String {
    if e.is::<http_body_util::LengthLimitError>() {
        format!("the answer is larger than {} KiB", MAX_BODY / 1024)
    } else {
        error_chain(e)
    }
}
/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

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
                // Headers, then the 2-byte body the test sends.
                while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"{}") {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before its request was complete");
                    request.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
                assert!(head.starts_with("post /api/x?y=1 http/1.1\r\n"), "{head}");
                assert!(
                    head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
                    "{head}"
                );
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
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}/api/x?y=1")).unwrap();
        let direct = Direct::new(&url, Duration::from_secs(5)).unwrap();
        for _ in 0..2 {
            let answer = direct.post(Vec::new(), b"{}".to_vec()).await.unwrap();
            assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
            // Time for the server's close to arrive: the next request finds the connection ended
            // (its handle says so, or driving it reads the end) before writing anything on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.join().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}/api")).unwrap();
        let direct = Direct::new(&url, Duration::from_secs(5)).unwrap();
        let failure = direct.post(Vec::new(), b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(&failure, SendError::Connect(reason) if reason.contains("refused")),
            "{failure:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_cap_is_not_read_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).unwrap();
            let body = vec![b'x'; 200 * 1024];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        });
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}/api")).unwrap();
        let direct = Direct::new(&url, Duration::from_secs(5)).unwrap();
        let failure = direct.post(Vec::new(), b"{}".to_vec()).await.unwrap_err();
        assert!(
            matches!(&failure, SendError::AfterSending { reason, status: Some(200) }
                if reason.contains("larger than 64 KiB")),
            "{failure:?}"
        );
        server.join().unwrap();
    }
}
