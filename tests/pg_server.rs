//! A throw-away PostgreSQL server for the tests, shared by the library's unit tests (included
//! with `#[path]`) and the integration tests (tests/pg.rs).
//!
//! - `PMS_ONBOARD_TEST_POSTGRES` holding a URL: that server is used (each test gets a database
//!   of its own, created through it).
//! - Otherwise, when PostgreSQL's programs are installed (`initdb`, `pg_ctl`: Debian's
//!   /usr/lib/postgresql/N/bin, or `pg_config --bindir`), one server per test process is started
//!   in a temporary folder (as the `postgres` user when running as root), on 127.0.0.1 and a free
//!   port, and stopped with its folder removed when the process ends (a watchdog waits for it).
//! - Without either, [`server`] says "skipped: ..." once and the test passes, unless
//!   `PMS_ONBOARD_REQUIRE_POSTGRES=1` (set by .ci/run): then it fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server the tests may create databases on.
pub struct Server {
    /// postgresql://USER@HOST:PORT (no database)
    base: url::Url,
    /// The root that signed the server's TLS certificate (for 127.0.0.1), when the server was
    /// started here with TLS (openssl at hand).
    pub ca: Option<PathBuf>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The server, or `None` (after one line saying why) when the tests that need it are skipped.
#[allow(clippy::print_stderr)]
pub fn server(test: &str) -> Option<&'static Server> {
    match SERVER.get_or_init(start) {
        Ok(s) => Some(s),
        Err(why) => {
            if std::env::var("PMS_ONBOARD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PMS_ONBOARD_REQUIRE_POSTGRES=1, but no PostgreSQL for {test}: {why}");
            }
            eprintln!("skipped: {test} needs PostgreSQL: {why}");
            None
        }
    }
}

impl Server {
    /// A new, empty database on the server: its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "pms_test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        let admin = self.url("postgres");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the test server {admin}: {e}"));
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
            drop(client);
            let _ = task.await;
        });
        self.url(&name)
    }

    fn url(&self, database: &str) -> String {
        let mut u = self.base.clone();
        u.set_path(&format!("/{database}"));
        u.to_string()
    }
}

fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var("PMS_ONBOARD_TEST_POSTGRES")
        && (url.starts_with("postgresql://") || url.starts_with("postgres://"))
    {
        let base = url::Url::parse(&url)
            .map_err(|e| format!("PMS_ONBOARD_TEST_POSTGRES is not a URL: {e}"))?;
        return Ok(Server { base, ca: None });
    }
    let bin = bindir().ok_or("initdb and pg_ctl are not installed (apt-get install postgresql)")?;
    let dir = tempfile::Builder::new()
        .prefix("pms-onboard-pg-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary folder: {e}"))?
        .keep();
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "running as root, and {} cannot be given to the postgres user",
                dir.display()
            ));
        }
    }
    let as_postgres = |program: &str| -> Command {
        let path = bin.join(program);
        match root {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            false => Command::new(path),
        }
    };
    let data = dir.join("data");
    let out = as_postgres("initdb")
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // TLS as a distribution's server has it (Debian's: on), with a certificate for 127.0.0.1
    // signed by a root of the test's own, so that every mode of `sslmode` can be tried.
    let ca = certificates(&data, root);
    let tls = match &ca {
        Some(_) => " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
        None => "",
    };
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port().ok_or("no free port on 127.0.0.1")?;
        let out = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-k {} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off \
                 -c max_connections=200{tls}",
                dir.display()
            ))
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            watchdog(&bin, &data, &dir, root);
            let base = url::Url::parse(&format!("postgresql://postgres@127.0.0.1:{port}/"))
                .map_err(|e| e.to_string())?;
            return Ok(Server { base, ca });
        }
        last = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    }
    Err(format!("the server did not start: {last}"))
}

/// A root and a server certificate for 127.0.0.1 signed by it, made with openssl in the data
/// folder (the key the server's own, mode 0600): the root's path, or `None` without openssl.
fn certificates(data: &Path, root: bool) -> Option<PathBuf> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(
        data.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let made = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pms-onboard test root",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
    if !made {
        return None;
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .ok()?;
    if root {
        let owned = Command::new("chown")
            .args(["postgres:postgres", "server.key", "server.crt"])
            .current_dir(data)
            .status()
            .is_ok_and(|s| s.success());
        if !owned {
            return None;
        }
    }
    Some(data.join("ca.crt"))
}

/// Stops the server and removes its folder once this process has ended.
fn watchdog(bin: &Path, data: &Path, dir: &Path, root: bool) {
    let stop = format!(
        "{}{} -D '{}' stop -m immediate",
        if root { "runuser -u postgres -- " } else { "" },
        bin.join("pg_ctl").display(),
        data.display()
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn free_port() -> Option<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    l.local_addr().ok().map(|a| a.port())
}

/// Where initdb and pg_ctl are: the newest /usr/lib/postgresql/N/bin, or `pg_config --bindir`.
fn bindir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((n, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some(bin)
}
