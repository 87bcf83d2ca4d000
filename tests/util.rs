//! Helpers for the integration tests: throw-away keys, the real sandbox as its own process, the
//! real binary, generated sheets, and plain-SQL reads of the ledger.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Test scheduling. On two cores a timing claim (the rate at the gateway, Ctrl-C within
/// seconds) only means something when no other test is loading the CPU: such tests run alone;
/// every other test may run beside any test but those.
static TURNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    TURNS.write().unwrap_or_else(|e| e.into_inner())
}

pub fn together() -> std::sync::RwLockReadGuard<'static, ()> {
    TURNS.read().unwrap_or_else(|e| e.into_inner())
}

pub const CLIENT_ID: &str = "2102000000000000044";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pms-onboard"))
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A scratch folder with a fresh key pair for the client and for the simulated gateway.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        pms_onboard::api::keys::keygen(&dir.path().join("keys")).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn keys(&self) -> PathBuf {
        self.path("keys")
    }

    pub fn ledger(&self) -> PathBuf {
        self.path("ledger.db")
    }

    /// `pms-onboard run` against `endpoint` with this scratch's keys and ledger.
    pub fn run_cmd(&self, endpoint: &str, files: &[&Path]) -> Command {
        self.run_cmd_with_key(endpoint, files, &self.keys().join("client_private.pem"))
    }

    /// The same, signing with another private key.
    pub fn run_cmd_with_key(&self, endpoint: &str, files: &[&Path], key: &Path) -> Command {
        self.run_cmd_overriding(endpoint, files, &[("--private-key", key)])
    }

    /// `pms-onboard run` with this scratch's settings, some of them replaced (`--ledger`,
    /// `--private-key`, `--alipay-public-key`).
    pub fn run_cmd_overriding(
        &self,
        endpoint: &str,
        files: &[&Path],
        overrides: &[(&str, &Path)],
    ) -> Command {
        let private = self.keys().join("client_private.pem");
        let public = self.keys().join("alipay_public.pem");
        let ledger = self.ledger();
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.dir.path())
            .arg("run")
            .args(files)
            .arg("--endpoint")
            .arg(endpoint)
            .arg("--client-id")
            .arg(CLIENT_ID)
            .env_remove("RUST_LOG");
        for (flag, default) in [
            ("--private-key", private.as_path()),
            ("--alipay-public-key", public.as_path()),
            ("--ledger", ledger.as_path()),
        ] {
            let value = overrides
                .iter()
                .find(|(f, _)| *f == flag)
                .map_or(default, |(_, v)| *v);
            cmd.arg(flag).arg(value);
        }
        cmd
    }

    /// `pms-onboard run samples/NAME --sandbox --ledger LEDGER`, from this scratch folder.
    pub fn run_sample(&self, name: &str, ledger: &Path) -> (i32, String, String) {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
        output(
            Command::new(bin())
                .current_dir(self.dir.path())
                .arg("run")
                .arg(samples.join(name))
                .arg("--sandbox")
                .arg("--ledger")
                .arg(ledger),
        )
    }

    pub fn ledger_query<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        let conn = rusqlite::Connection::open(self.ledger()).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Writes a sheet of `n` valid MERCHANT_PMS rows (store ids from `first`).
    pub fn sheet(&self, name: &str, first: usize, n: usize) -> PathBuf {
        let path = self.path(name);
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(
            f,
            "partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label"
        )
        .unwrap();
        for i in first..first + n {
            writeln!(
                f,
                "2088{:012},M{:04},測試商戶 {i},S{i:06},分店 {i},20230316,20230316{:03}",
                i % 97,
                i % 13,
                i % 5 + 1
            )
            .unwrap();
        }
        path
    }
}

/// The real sandbox, as its own process (so that the client can be killed on its own).
pub struct SandboxProcess {
    pub child: Child,
    pub endpoint: String,
}

impl SandboxProcess {
    pub fn start(keys: &Path, extra: &[&str]) -> SandboxProcess {
        let mut child = Command::new(bin())
            .arg("sandbox")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--keys")
            .arg(keys)
            .arg("--client-id")
            .arg(CLIENT_ID)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let endpoint = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("sandbox said {line:?}"))
            .to_owned();
        SandboxProcess { child, endpoint }
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(&self.endpoint, "/sandbox/stats")).unwrap()
    }

    /// The most arrivals in one whole second of the sandbox's books (`per_second`).
    pub fn busiest_second(stats: &serde_json::Value) -> u64 {
        stats["per_second"]
            .as_object()
            .map(|m| m.values().filter_map(|n| n.as_u64()).max().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn labels(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(&self.endpoint, "/sandbox/labels")).unwrap()
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET over loopback, returning the body.
pub fn http_get(endpoint: &str, path: &str) -> String {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// Polls `check` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Output of a finished command as (exit code, stdout, stderr).
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
