//! Nothing lost when things go wrong at the worst moment: a second Ctrl-C while the ledger is
//! locked, a ledger busy past 10 s and a run then killed, a side file cut short inside a Chinese
//! store name; files only their owner can read; keys never overwritten by surprise; a ledger on a
//! network or FUSE filesystem refused with nothing sent. Judged by the sandbox's books as in
//! `safety`: every label it issued ends in the ledger, and no store is answered twice.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::safety::{circled_twice, done, every_label_kept, hold_write_lock_until};
use crate::util::{SandboxProcess, Scratch, bin, output, signal, together, wait_until};

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs the child under the usual umask (022), so that a mode of 0600 is the tool's doing.
fn with_umask_022(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: umask is async-signal-safe and touches only the child's own mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        })
    }
}

fn spawn_run(s: &Scratch, sandbox: &SandboxProcess, sheet: &Path, args: &[&str]) -> Child {
    with_umask_022(&mut s.run_cmd(&sandbox.endpoint, &[sheet]))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn status(s: &Scratch) -> (i32, String, String) {
    output(
        Command::new(bin())
            .arg("status")
            .arg("--ledger")
            .arg(s.ledger()),
    )
}

fn side_file(s: &Scratch) -> PathBuf {
    s.path("ledger.db.unwritten.jsonl")
}

fn set_aside(s: &Scratch) -> PathBuf {
    s.path("ledger.db.unwritten.jsonl.unreadable")
}

/// The side file was taken in and removed, and the line it could not read is kept aside as it
/// was, readable by its owner only.
fn kept_aside_byte_for_byte(s: &Scratch, torn: &[u8]) {
    assert!(!side_file(s).exists(), "taken in and removed");
    let mut kept = torn.to_vec();
    kept.push(b'\n');
    assert_eq!(
        std::fs::read(set_aside(s)).unwrap(),
        kept,
        "kept byte for byte"
    );
    assert_eq!(mode(&set_aside(s)), 0o600);
}

/// The same command again finishes the sheet without asking any store twice.
fn the_next_run_finishes_without_asking_twice(
    s: &Scratch,
    sandbox: &SandboxProcess,
    sheet: &Path,
    rows: i64,
) {
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[sheet]).args(["--rate", "0"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(circled_twice(sandbox), 0, "no store answered twice");
    assert_eq!(done(s), rows);
    every_label_kept(s, sandbox);
}

/// A run of 200 rows whose ledger another program locks while 8 requests are on their way;
/// once their answers are in (held, not written), Ctrl-C twice.
fn interrupted_twice_while_locked(s: &Scratch, sandbox: &SandboxProcess, sheet: &Path) -> Output {
    let child = spawn_run(s, sandbox, sheet, &["--rate", "0", "--concurrency", "8"]);
    assert!(wait_until(Duration::from_secs(30), || done(s) >= 20));
    let (holder, release) = hold_write_lock_until(&s.ledger(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let asked = Instant::now();
    let out = child.wait_with_output().unwrap();
    let exited_in = asked.elapsed();
    release.send(()).unwrap();
    holder.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        exited_in < Duration::from_secs(5),
        "the second Ctrl-C exits at once: {exited_in:?}"
    );
    assert!(side_file(s).exists(), "{err}");
    assert!(err.contains("pmsLabel"), "each answer on stderr too: {err}");
    out
}

#[test]
fn a_second_ctrl_c_while_the_ledger_is_locked_loses_no_answer() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 200);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "300"]);
    interrupted_twice_while_locked(&s, &sandbox, &sheet);
    assert_eq!(
        mode(&side_file(&s)),
        0o600,
        "it holds merchant ids and labels"
    );
    let (code, _, err) = status(&s);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("took in"), "{err}");
    assert!(!side_file(&s).exists(), "taken in and removed");
    every_label_kept(&s, &sandbox);
    the_next_run_finishes_without_asking_twice(&s, &sandbox, &sheet, 200);
}

#[test]
fn a_side_file_cut_inside_a_chinese_name_is_set_aside_and_no_answer_is_lost() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 200);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "300"]);
    interrupted_twice_while_locked(&s, &sandbox, &sheet);
    // A write cut short (a full disk, a power cut) in the middle of 測, the three bytes of the
    // store's name: a copy of an answer the file also holds whole, as a retried write leaves it.
    let text = std::fs::read_to_string(side_file(&s)).unwrap();
    let first = text.lines().next().unwrap();
    let torn = &first.as_bytes()[..first.find('測').expect("a Chinese name") + 2];
    std::fs::OpenOptions::new()
        .append(true)
        .open(side_file(&s))
        .unwrap()
        .write_all(torn)
        .unwrap();
    // No command is blocked by it: each takes in what it can read and sets the rest aside.
    let (code, _, err) = status(&s);
    assert_eq!(code, 0, "{err}");
    let aside = set_aside(&s);
    assert!(
        err.contains("cannot be read") && err.contains(&aside.display().to_string()),
        "a warning names where the line is kept: {err}"
    );
    kept_aside_byte_for_byte(&s, torn);
    every_label_kept(&s, &sandbox);
    let (code, _, err) = output(
        Command::new(bin())
            .arg("export")
            .arg("--ledger")
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{err}");
    the_next_run_finishes_without_asking_twice(&s, &sandbox, &sheet, 200);
}

/// The lines of the side file that hold a whole, checksummed answer.
fn answers_in(side_file: &Path) -> usize {
    let Ok(bytes) = std::fs::read(side_file) else {
        return 0;
    };
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter(|v| v["sha256"].is_string() && v["answer"]["attempt"].is_object())
        .count()
}

#[test]
fn a_ledger_busy_past_10_s_has_the_answers_in_the_side_file_while_the_run_waits_and_a_kill_loses_none()
 {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 100);
    let sandbox = SandboxProcess::start(&s.keys(), &["--latency-ms", "300"]);
    let mut child = spawn_run(&s, &sandbox, &sheet, &["--rate", "0", "--concurrency", "8"]);
    assert!(wait_until(Duration::from_secs(30), || done(&s) >= 10));
    let (holder, release) = hold_write_lock_until(&s.ledger(), Duration::from_secs(60));
    // A line an earlier write left cut short, inside 測, with no line end: the run's next
    // append must not be glued to it.
    let record = format!(
        r#"{{"sha256":"{}","answer":{{"run_id":1,"row":{{"merchant_name":"測試商戶"#,
        "0".repeat(64)
    );
    let torn = &record.as_bytes()[..record.find('測').unwrap() + 1];
    std::fs::write(side_file(&s), torn).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let requests = sandbox.stats()["requests"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(25), || answers_in(&side_file(&s)) > 0),
        "past 10 s the answers held are in the side file"
    );
    assert!(child.try_wait().unwrap().is_none(), "while the run waits");
    assert_eq!(sandbox.stats()["requests"].as_u64().unwrap(), requests);
    let bytes = std::fs::read(side_file(&s)).unwrap();
    assert_eq!(
        bytes[torn.len()],
        b'\n',
        "the append starts on a fresh line"
    );
    // A power cut now: only the side file knows these answers.
    child.kill().unwrap();
    child.wait().unwrap();
    release.send(()).unwrap();
    holder.join().unwrap();
    let (code, _, err) = status(&s);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("took in"), "{err}");
    assert!(err.contains(&set_aside(&s).display().to_string()), "{err}");
    kept_aside_byte_for_byte(&s, torn);
    every_label_kept(&s, &sandbox);
    the_next_run_finishes_without_asking_twice(&s, &sandbox, &sheet, 100);
}

#[test]
fn the_ledger_and_the_wal_and_shm_beside_it_are_private() {
    let _turn = together();
    let s = Scratch::new();
    let sheet = s.sheet("stores.csv", 1, 60);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let child = spawn_run(&s, &sandbox, &sheet, &["--rate", "20"]);
    let ledger = s.ledger();
    // Looked at only once the run made it (opening it first would create it).
    assert!(wait_until(Duration::from_secs(30), || ledger.exists() && done(&s) >= 3));
    let beside = |suffix: &str| s.path(&format!("ledger.db{suffix}"));
    for path in [ledger.clone(), beside("-wal"), beside("-shm")] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What doctor is to show about an older ledger, made with the umask.
    use pms_onboard::ledger::filesystem::readable_by_others;
    assert_eq!(readable_by_others(&ledger), None);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = readable_by_others(&ledger).unwrap();
    assert!(
        said.contains("mode 644") && said.contains("chmod 600"),
        "{said}"
    );
}

#[test]
fn keygen_refuses_to_overwrite_a_key_and_force_replaces_it_readable_by_its_owner_only() {
    let _turn = together();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let keygen = |force: bool| {
        let mut cmd = Command::new(bin());
        cmd.arg("keygen").arg(&keys);
        if force {
            cmd.arg("--force");
        }
        output(with_umask_022(&mut cmd))
    };
    let (code, _, err) = keygen(false);
    assert_eq!(code, 0, "{err}");
    for (name, expected) in [
        ("client_private.pem", 0o600),
        ("alipay_private.pem", 0o600),
        ("client_public.pem", 0o644),
        ("alipay_public.pem", 0o644),
    ] {
        assert_eq!(mode(&keys.join(name)), expected, "{name}");
    }
    // A real key kept under that name, readable by all, as an operator may have left it.
    let real = keys.join("client_private.pem");
    std::fs::write(&real, "a real key\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = keygen(false);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&real.display().to_string()) && err.contains("--force"),
        "names the file and the way to replace it: {err}"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "a real key\n");
    let (code, _, err) = keygen(true);
    assert_eq!(code, 0, "{err}");
    let replaced = std::fs::read_to_string(&real).unwrap();
    assert!(
        replaced.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{replaced}"
    );
    assert_eq!(mode(&real), 0o600);
}

/// A FUSE mount of one folder on another (`bindfs`), unmounted when dropped.
struct FuseMount {
    point: PathBuf,
}

impl FuseMount {
    /// `None` (after one line saying why) when bindfs or FUSE is not at hand outside CI; in CI
    /// (where `.ci/run` installs bindfs) a missing mount is a failure.
    fn bind(from: &Path, point: &Path) -> Option<FuseMount> {
        std::fs::create_dir_all(from).unwrap();
        std::fs::create_dir_all(point).unwrap();
        let mounted = Command::new("bindfs")
            .arg(from)
            .arg(point)
            .stdout(Stdio::null())
            .output();
        let why = match mounted {
            Ok(o) if o.status.success() => {
                return Some(FuseMount {
                    point: point.to_owned(),
                });
            }
            Ok(o) => format!(
                "bindfs failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("bindfs not found ({e}); apt-get install bindfs"),
        };
        assert!(std::env::var_os("CI").is_none(), "in CI: {why}");
        eprintln!("skipped: a ledger on a FUSE mount needs bindfs and /dev/fuse: {why}");
        None
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        for (tool, args) in [
            ("fusermount", &["-u"][..]),
            ("fusermount3", &["-u"][..]),
            ("umount", &[][..]),
        ] {
            let done = Command::new(tool)
                .args(args)
                .arg(&self.point)
                .stderr(Stdio::null())
                .status();
            if done.is_ok_and(|s| s.success()) {
                return;
            }
        }
    }
}

#[test]
fn a_ledger_on_a_fuse_mount_is_refused_with_nothing_sent() {
    let _turn = together();
    let s = Scratch::new();
    let Some(mount) = FuseMount::bind(&s.path("disk"), &s.path("mnt")) else {
        return;
    };
    let sheet = s.sheet("stores.csv", 1, 5);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let ledger = mount.point.join("ledger.db");
    let (code, out, err) =
        output(&mut s.run_cmd_overriding(&sandbox.endpoint, &[&sheet], &[("--ledger", &ledger)]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("(FUSE") && err.contains("local disk") && err.contains("PostgreSQL"),
        "names the filesystem and the way out: {err}"
    );
    assert_eq!(sandbox.stats()["requests"], 0, "nothing sent");
    let created: Vec<_> = std::fs::read_dir(s.path("disk")).unwrap().collect();
    assert!(created.is_empty(), "nothing created there: {created:?}");
}

#[test]
fn a_ledger_on_a_faked_network_filesystem_is_refused_and_reading_commands_warn() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let first = s.sheet("first.csv", 1, 5);
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&first])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{err}");
    let hook = "PMS_ONBOARD_TEST_FILESYSTEM";
    let more = s.sheet("more.csv", 6, 5);
    for (fs, named) in [
        ("nfs4", "(NFS)"),
        ("cifs", "(SMB/CIFS)"),
        ("fuse.sshfs", "(FUSE (sshfs))"),
    ] {
        let (code, _, err) = output(
            s.run_cmd(&sandbox.endpoint, &[&more])
                .args(["--rate", "0"])
                .env(hook, fs),
        );
        assert_eq!(code, 1, "{fs}: {err}");
        assert!(err.contains(named) && err.contains("local disk"), "{err}");
    }
    // A new ledger there is not even created.
    let elsewhere = s.path("new.db");
    let (code, _, err) = output(
        s.run_cmd_overriding(&sandbox.endpoint, &[&more], &[("--ledger", &elsewhere)])
            .env(hook, "nfs"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(!elsewhere.exists());
    assert_eq!(
        sandbox.stats()["requests"],
        5,
        "nothing sent after the first run"
    );
    // Reading commands read it, and say what a run will do.
    let (code, out, err) = output(
        Command::new(bin())
            .arg("status")
            .arg("--ledger")
            .arg(s.ledger())
            .env(hook, "smbfs"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('5'), "{out}");
    assert!(
        err.contains("(SMB/CIFS)") && err.contains("a run refuses it"),
        "{err}"
    );
    // The hook names a local filesystem: nothing refused.
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&more])
            .args(["--rate", "0"])
            .env(hook, "ext4"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(done(&s), 10);
}
