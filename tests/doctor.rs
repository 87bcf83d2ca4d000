//! `doctor` as a user runs it: the real binary against the real sandbox process. It passes on a
//! correct set-up and fails, naming the problem, for each first-run mistake it is there for.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{CLIENT_ID, SandboxProcess, Scratch, bin, output, together};

/// A scratch folder and a sandbox that knows its keys.
fn scratch_with_sandbox() -> (Scratch, SandboxProcess) {
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    (s, sandbox)
}

/// `doctor` with `scratch`'s ledger, the given endpoint and keys.
fn doctor(scratch: &Scratch, endpoint: &str, private: &Path, public: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(scratch.dir.path())
        .arg("doctor")
        .args(["--endpoint", endpoint, "--client-id", CLIENT_ID])
        .arg("--private-key")
        .arg(private)
        .arg("--alipay-public-key")
        .arg(public)
        .arg("--ledger")
        .arg(scratch.ledger())
        .env_remove("RUST_LOG");
    cmd
}

/// `doctor` set up right for `scratch`'s sandbox keys.
fn doctor_right(scratch: &Scratch, endpoint: &str) -> Command {
    let (private, public) = key_paths(scratch);
    doctor(scratch, endpoint, &private, &public)
}

fn key_paths(scratch: &Scratch) -> (PathBuf, PathBuf) {
    (
        scratch.keys().join("client_private.pem"),
        scratch.keys().join("alipay_public.pem"),
    )
}

/// The check called `name` in the section whose heading starts with `section`, as (status,
/// detail): the line `  STATUS  NAME  DETAIL`.
fn check<'a>(out: &'a str, section: &str, name: &str) -> (&'a str, &'a str) {
    out.lines()
        .skip_while(|line| !line.starts_with(section))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| {
            let status = line.get(2..6)?.trim();
            let rest = line.get(8..)?;
            let detail = rest.strip_prefix(name)?.strip_prefix(' ')?;
            Some((status, detail.trim_start()))
        })
        .find(|(status, _)| ["ok", "warn", "FAIL", "skip"].contains(status))
        .unwrap_or_else(|| panic!("no check {name:?} under {section:?} in:\n{out}"))
}

fn assert_fails(out: &str, section: &str, name: &str, says: &[&str]) {
    let (status, detail) = check(out, section, name);
    assert_eq!(status, "FAIL", "{name}: {detail}\n{out}");
    for word in says {
        assert!(
            detail.contains(word),
            "{name} should say {word:?}: {detail}"
        );
    }
}

#[test]
fn a_correct_set_up_passes_with_and_without_the_probe() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    // A ledger with a run in it, for the ledger's state.
    let sheet = s.sheet("stores.csv", 1, 3);
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = output(&mut doctor_right(&s, &sandbox.endpoint));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(
        check(&out, "settings", "client_id"),
        ("ok", "2102000000000000044 (from --client-id)")
    );
    assert_eq!(check(&out, "settings", "rate"), ("ok", "10 (default)"));
    let (_, private) = check(&out, "keys", "private_key");
    assert!(
        private.contains("RSA-2048 private key, PKCS#8 PEM"),
        "{private}"
    );
    assert_eq!(check(&out, "keys", "key pair").0, "ok");
    assert!(
        check(&out, "gateway", "clock").1.contains("agrees"),
        "{out}"
    );
    assert!(
        check(&out, "gateway", "answer")
            .1
            .contains("METHOD_NOT_SUPPORTED"),
        "{out}"
    );
    let (_, state) = check(&out, "ledger", "state");
    assert!(
        state.starts_with("3 rows: 3 succeeded") && state.contains("last run #1"),
        "{state}"
    );
    assert!(out.contains("ready for a first real run"), "{out}");
    assert!(!out.contains("\nprobe"), "no call without --probe: {out}");

    let (code, out, err) = output(doctor_right(&s, &sandbox.endpoint).arg("--probe"));
    assert_eq!(code, 0, "{out}\n{err}");
    let (status, signature) = check(&out, "probe", "signature");
    assert_eq!(status, "ok", "{out}");
    assert!(signature.contains("PARAM_ILLEGAL"), "{signature}");
    let tracer = signature.split("Tracer-Id ").nth(1).unwrap_or_default();
    assert!(
        tracer.len() > 32 && tracer[..32].bytes().all(|b| b.is_ascii_hexdigit()),
        "{signature}"
    );
    assert_eq!(check(&out, "probe", "answer signature").0, "ok");

    let stats = sandbox.stats();
    assert_eq!(
        stats["by_result_code"]["PARAM_ILLEGAL"], 1,
        "one probe: {stats}"
    );
    assert_eq!(
        stats["by_result_code"]["METHOD_NOT_SUPPORTED"], 2,
        "{stats}"
    );
    assert_eq!(
        stats["stores_circled"], 3,
        "the probe changed nothing: {stats}"
    );
}

#[test]
fn swapped_keys_are_named_both() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    let (private, public) = key_paths(&s);
    let (code, out, _) = output(&mut doctor(&s, &sandbox.endpoint, &public, &private));
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "keys", "private_key", &["holds a public key"]);
    assert_fails(&out, "keys", "alipay_public_key", &["holds a private key"]);
    assert_fails(
        &out,
        "keys",
        "key pair",
        &[
            "swapped",
            &format!("private_key ({})", public.display()),
            &format!("alipay_public_key ({})", private.display()),
        ],
    );
    assert!(out.contains("doctor: 3 FAILED"), "{out}");
}

#[test]
fn the_clients_own_public_key_as_alipays_fails() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    let (private, _) = key_paths(&s);
    let own = s.keys().join("client_public.pem");
    let (code, out, _) = output(doctor(&s, &sandbox.endpoint, &private, &own).arg("--probe"));
    assert_eq!(code, 1, "{out}");
    assert_fails(
        &out,
        "keys",
        "key pair",
        &[
            "is the public half of your own private_key",
            "AlipayHK's public key",
        ],
    );
    assert_eq!(
        check(&out, "keys", "alipay_public_key").0,
        "ok",
        "the file itself is fine"
    );
    assert_eq!(
        check(&out, "probe", "signature").0,
        "skip",
        "no probe with keys known wrong"
    );
}

#[test]
fn a_refused_endpoint_fails_at_the_answer() {
    let _turn = together();
    let s = Scratch::new();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let (code, out, _) = output(doctor_right(&s, &endpoint).arg("--probe"));
    assert_eq!(code, 1, "{out}");
    assert_fails(
        &out,
        "gateway",
        "answer",
        &[&endpoint, "refused", "check endpoint"],
    );
    assert_eq!(check(&out, "gateway", "clock").0, "skip");
    assert_eq!(check(&out, "probe", "signature").0, "skip");
    assert_eq!(
        check(&out, "keys", "key pair").0,
        "ok",
        "the keys are still checked"
    );
}

#[test]
fn a_gateway_clock_an_hour_off_fails_naming_the_offset() {
    let _turn = together();
    let s = Scratch::new();
    for (offset, side) in [("3600", "behind"), ("-3600", "ahead of")] {
        let sandbox = SandboxProcess::start(&s.keys(), &["--clock-offset", offset]);
        let (code, out, _) = output(&mut doctor_right(&s, &sandbox.endpoint));
        assert_eq!(code, 1, "{out}");
        assert_fails(
            &out,
            "gateway",
            "clock",
            &[&format!("1 h 0 min 0 s {side} the gateway's"), "NTP"],
        );
    }
}

#[test]
fn the_probe_names_what_the_gateway_refused() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    let stranger = Scratch::new();
    let (private, public) = key_paths(&s);
    let (stranger_private, stranger_public) = key_paths(&stranger);

    // A private key the gateway does not know: the signature is refused.
    let (code, out, _) =
        output(doctor(&s, &sandbox.endpoint, &stranger_private, &public).arg("--probe"));
    assert_eq!(code, 1, "{out}");
    assert_fails(
        &out,
        "probe",
        "signature",
        &["INVALID_SIGNATURE", "Tracer-Id", "portal"],
    );
    assert_eq!(check(&out, "probe", "answer signature").0, "ok");

    // Another key as AlipayHK's: the signature is accepted, the answer does not verify.
    let (code, out, _) =
        output(doctor(&s, &sandbox.endpoint, &private, &stranger_public).arg("--probe"));
    assert_eq!(code, 1, "{out}");
    assert_eq!(check(&out, "probe", "signature").0, "ok");
    assert_fails(
        &out,
        "probe",
        "answer signature",
        &["does not verify with alipay_public_key", "proxy"],
    );

    // A key version the gateway has no key for.
    let (code, out, _) =
        output(doctor_right(&s, &sandbox.endpoint).args(["--probe", "--key-version", "2"]));
    assert_eq!(code, 1, "{out}");
    assert_fails(
        &out,
        "probe",
        "signature",
        &["KEY_NOT_FOUND", "key_version 2"],
    );
}

/// A private key others can read is a warning in `doctor` as in `run` (which goes on with it):
/// the verdict of `api::checks::key_permissions`, shared by both.
#[test]
fn a_ledger_in_use_fails_and_a_key_others_can_read_is_warned() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    drop(pms_onboard::ledger::open(&s.ledger()).unwrap());
    let _held = pms_onboard::ledger::LedgerLock::acquire(&s.ledger()).unwrap();
    let open_key = s.path("open_private.pem");
    std::fs::copy(s.keys().join("client_private.pem"), &open_key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (_, public) = key_paths(&s);
    let (code, out, _) = output(&mut doctor(&s, &sandbox.endpoint, &open_key, &public));
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "ledger", "in use", &["in use"]);
    assert_eq!(
        check(&out, "ledger", "state").1,
        "0 rows: 0 succeeded, 0 already circled, 0 pending, 0 in flight, 0 failed; no run yet"
    );
    #[cfg(unix)]
    {
        let (status, detail) = check(&out, "keys", "permissions");
        assert_eq!(status, "warn", "{out}");
        assert!(
            detail.contains("mode 644") && detail.contains("chmod 600"),
            "{detail}"
        );
    }
}

#[test]
fn missing_and_bad_settings_fail_saying_how_to_set_them() {
    let _turn = together();
    let s = Scratch::new();
    let (code, out, _) = output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .args([
                "doctor",
                "--rate",
                "fast",
                "--endpoint",
                "http://example.com",
            ])
            .env_remove("RUST_LOG"),
    );
    assert_eq!(code, 1, "{out}");
    assert_fails(
        &out,
        "settings",
        "client_id",
        &["--client-id", "PMS_ONBOARD_CLIENT_ID"],
    );
    assert_fails(&out, "settings", "private_key", &["--private-key"]);
    assert_eq!(check(&out, "keys", "key pair").0, "skip");
    assert_fails(&out, "settings", "endpoint", &["https://"]);
}

#[test]
fn json_lists_every_check_with_its_level_and_the_overall_verdict() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    let (code, out, err) = output(doctor_right(&s, &sandbox.endpoint).arg("--json"));
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {out}"));
    let checks = v["checks"].as_array().expect("a checks array");
    let find = |group: &str, name: &str| {
        checks
            .iter()
            .find(|c| c["group"] == group && c["name"] == name)
            .unwrap_or_else(|| panic!("no {group}/{name} in {out}"))
    };
    for (group, name) in [
        ("settings", "client_id"),
        ("keys", "key pair"),
        ("gateway", "clock"),
        ("ledger", "folder"),
        ("ledger", "filesystem"),
    ] {
        assert_eq!(find(group, name)["level"], "ok", "{group}/{name}: {out}");
    }
    assert!(
        find("gateway", "answer")["detail"]
            .as_str()
            .unwrap()
            .contains("METHOD_NOT_SUPPORTED")
    );
    assert_eq!(v["overall"]["ready"], true, "{out}");
    assert_eq!(v["overall"]["failed"], 0, "{out}");
    // The global convention for machine-readable output gives the same object.
    let (code, same, _) =
        output(doctor_right(&s, &sandbox.endpoint).args(["--log-format", "json"]));
    assert_eq!(code, 0, "{same}");
    let same: serde_json::Value = serde_json::from_str(same.trim()).unwrap();
    assert_eq!(same["checks"].as_array().unwrap().len(), checks.len());
    assert!(
        v["overall"]["ok"].as_u64().unwrap() as usize >= checks.len() - 2,
        "{out}"
    );
    // A failure carries what to do apart from what was found, and the exit code is 1.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{closed}");
    let (code, out, _) = output(doctor_right(&s, &endpoint).args(["--json", "--probe"]));
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let answer = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "answer")
        .unwrap();
    assert_eq!(answer["level"], "fail", "{out}");
    assert!(answer["detail"].as_str().unwrap().contains(&endpoint));
    assert!(answer["fix"].as_str().unwrap().contains("check endpoint"));
    assert_eq!(v["overall"]["level"], "fail");
    assert_eq!(v["overall"]["ready"], false);
    assert!(v["overall"]["skipped"].as_u64().unwrap() >= 2, "{out}");
}

#[test]
fn the_gateway_a_ledger_belongs_to_is_shown_and_another_fails() {
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    let sheet = s.sheet("stores.csv", 1, 2);
    let (code, _, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = output(&mut doctor_right(&s, &sandbox.endpoint));
    assert_eq!(code, 0, "{out}");
    let (status, detail) = check(&out, "ledger", "gateway");
    assert_eq!(status, "ok", "{out}");
    assert!(
        detail.contains(&format!("{} with client id {CLIENT_ID}", sandbox.endpoint))
            && detail.contains("the gateway these settings name"),
        "{detail}"
    );
    // The same ledger with the settings of another gateway: what a run would refuse.
    let other = SandboxProcess::start(&s.keys(), &[]);
    let (code, out, _) = output(&mut doctor_right(&s, &other.endpoint));
    assert_eq!(code, 1, "{out}");
    assert_fails(
        &out,
        "ledger",
        "gateway",
        &[
            &format!("belongs to {} with client id {CLIENT_ID}", sandbox.endpoint),
            &format!("these settings name {}", other.endpoint),
            "--ledger",
        ],
    );
}

#[cfg(unix)]
#[test]
fn a_ledger_others_can_read_is_warned_and_one_on_a_network_filesystem_fails() {
    use std::os::unix::fs::PermissionsExt as _;
    let _turn = together();
    let (s, sandbox) = scratch_with_sandbox();
    drop(pms_onboard::ledger::open(&s.ledger()).unwrap());
    let (code, out, _) = output(&mut doctor_right(&s, &sandbox.endpoint));
    assert_eq!(code, 0, "{out}");
    assert_eq!(check(&out, "ledger", "permissions").0, "ok", "{out}");
    std::fs::set_permissions(s.ledger(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, _) = output(&mut doctor_right(&s, &sandbox.endpoint));
    assert_eq!(code, 0, "a warning is advice: {out}");
    let (status, detail) = check(&out, "ledger", "permissions");
    assert_eq!(status, "warn", "{out}");
    assert!(
        detail.contains("mode 644") && detail.contains("chmod 600"),
        "{detail}"
    );
    assert!(out.contains("1 warning"), "{out}");
    // On a network filesystem (the test hook fakes one), a run refuses the ledger: doctor fails.
    let (code, out, _) = output(
        doctor_right(&s, &sandbox.endpoint).env(pms_onboard::ledger::filesystem::TEST_HOOK, "nfs4"),
    );
    assert_eq!(code, 1, "{out}");
    assert_fails(&out, "ledger", "filesystem", &["NFS", "local disk"]);
    assert_eq!(check(&out, "ledger", "in use").0, "skip", "{out}");
}
