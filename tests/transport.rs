//! How requests reach the gateway, beyond the plain http to loopback the other tests use: https
//! through a TLS front (rustls, with a test CA and server certificate made by openssl) to the
//! real sandbox, which is how production traffic goes, and a proxy named in the environment.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::util::{SandboxProcess, Scratch, output, together};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (the command-line tool) makes this test's certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` (`name.pem`, `name.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    let (key, pem, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=pms-onboard test {name}"),
    );
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key, "-out",
            &pem, "-subj", &subject,
        ],
    );
}

/// A server certificate for 127.0.0.1 (`server.pem`, `server.key`), issued by CA `ca`.
fn server_certificate(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
    );
}

/// Terminates TLS on a loopback port and relays each connection to `backend`. Counts the
/// handshakes that succeeded.
struct TlsFront {
    port: u16,
    handshakes: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(dir: &Path, backend: String) -> TlsFront {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicU64::new(0));
        let count = handshakes.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, backend, count) = (acceptor.clone(), backend.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Relaxed);
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            port,
            handshakes,
            _runtime: runtime,
        }
    }
}

#[test]
fn a_run_over_https_verifies_the_gateway_certificate_and_sends_every_row() {
    let _turn = together();
    let s = Scratch::new();
    let certs = s.path("certs");
    std::fs::create_dir(&certs).unwrap();
    ca(&certs, "ca");
    ca(&certs, "other-ca");
    server_certificate(&certs, "ca");
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let backend = sandbox.endpoint.trim_start_matches("http://").to_owned();
    let front = TlsFront::start(&certs, backend);
    let endpoint = format!("https://127.0.0.1:{}", front.port);
    let sheet = s.sheet("stores.csv", 1, 30);

    // A certificate from a CA the machine does not trust: refused before anything is sent, and
    // the rows are not counted as possibly sent.
    let (code, _, err) = output(
        s.run_cmd(&endpoint, &[&sheet])
            .env("SSL_CERT_FILE", certs.join("other-ca.pem"))
            .env_remove("SSL_CERT_DIR")
            .args(["--rate", "0", "--max-attempts", "1"]),
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(sandbox.stats()["requests"], 0);
    assert_eq!(front.handshakes.load(Relaxed), 0);
    let error: String = s.ledger_query("SELECT error FROM attempts LIMIT 1");
    assert!(
        error.starts_with("cannot connect: invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    let maybe_sent: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE maybe_sent = 1");
    assert_eq!(maybe_sent, 0);

    // Trusted: every row goes over TLS, on kept-alive connections (fewer handshakes than rows).
    let (code, out, err) = output(
        s.run_cmd(&endpoint, &[&sheet])
            .env("SSL_CERT_FILE", certs.join("ca.pem"))
            .env_remove("SSL_CERT_DIR")
            .args(["--rate", "0", "--concurrency", "4", "--retry-failed"]),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sandbox.stats()["requests"], 30);
    let succeeded: i64 = s.ledger_query("SELECT count(*) FROM rows WHERE state = 'succeeded'");
    assert_eq!(succeeded, 30);
    let handshakes = front.handshakes.load(Relaxed);
    assert!((1..=4).contains(&handshakes), "{handshakes} handshakes");
}

/// A forward proxy for plain http: relays each connection to `backend` byte for byte (the
/// sandbox reads the absolute-form requests a client sends to a proxy). Counts connections.
fn relay(backend: String) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            count.fetch_add(1, Relaxed);
            let Ok(server) = TcpStream::connect(&backend) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (port, connections)
}

#[test]
fn a_proxy_named_in_the_environment_carries_the_requests() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (port, connections) = relay(sandbox.endpoint.trim_start_matches("http://").to_owned());
    let sheet = s.sheet("stores.csv", 1, 20);
    let mut cmd = s.run_cmd(&sandbox.endpoint, &[&sheet]);
    for var in [
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let (code, out, err) = output(
        cmd.env("HTTP_PROXY", format!("http://127.0.0.1:{port}"))
            .env("NO_PROXY", "example.com")
            .env_remove("no_proxy")
            .args(["--rate", "0", "--concurrency", "2"]),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sandbox.stats()["requests"], 20);
    let through = connections.load(Relaxed);
    assert!(
        (1..=2).contains(&through),
        "{through} connections through the proxy"
    );
}
