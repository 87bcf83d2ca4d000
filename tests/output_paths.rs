//! Outputs never touch inputs (issue 21 item 2): every output path that names a sheet being read
//! or a file of the ledger, directly, through `../`, a hard link or a symlink, is refused with
//! exit 1 before anything is written, and the sheet and the ledger stay byte for byte. An output
//! that is written replaces its file whole, readable by its owner only.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{SandboxProcess, Scratch, bin, output, together};

/// A ledger filled by a real run of a 5-row sheet, and that sheet.
fn filled(s: &Scratch) -> (SandboxProcess, PathBuf) {
    let sheet = s.sheet("s.csv", 1, 5);
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let (code, _, err) = output(&mut s.run_cmd(&sandbox.endpoint, &[&sheet]));
    assert_eq!(code, 0, "{err}");
    (sandbox, sheet)
}

/// Every byte of the sheet and of each file of the ledger that exists.
fn snapshot(s: &Scratch, sheet: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut files = vec![sheet.to_owned()];
    files.extend(pms_onboard::ledger::filesystem::files_of(&s.ledger()));
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).ok();
            (f, bytes)
        })
        .collect()
}

fn pms(s: &Scratch, args: &[&str]) -> (i32, String, String) {
    output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .args(args)
            .env_remove("PMS_ONBOARD_LEDGER")
            .env_remove("RUST_LOG"),
    )
}

#[test]
fn each_output_over_an_input_is_refused_and_changes_nothing() {
    let _turn = together();
    let s = Scratch::new();
    let (_sandbox, sheet) = filled(&s);
    std::fs::create_dir(s.path("sub")).unwrap();
    std::fs::hard_link(&sheet, s.path("link.csv")).unwrap();
    std::os::unix::fs::symlink(&sheet, s.path("soft.csv")).unwrap();
    let ledger = s.ledger();
    let ledger = ledger.to_str().unwrap();
    let before = snapshot(&s, &sheet);
    let mistakes: [(&[&str], &str); 10] = [
        (
            &["export", "--annotate", "s.csv", "-o", "s.csv"],
            "the sheet",
        ),
        (
            &["export", "--annotate", "s.csv", "-o", "sub/../s.csv"],
            "the sheet",
        ),
        (
            &["export", "--annotate", "s.csv", "-o", "link.csv"],
            "the sheet",
        ),
        (
            &["export", "--annotate", "s.csv", "-o", "soft.csv"],
            "the sheet",
        ),
        (&["reconcile", "s.csv", "-o", "s.csv"], "the sheet"),
        (&["validate", "s.csv", "--rejects", "s.csv"], "the sheet"),
        (&["report", "-o", "ledger.db"], "the ledger"),
        (&["export", "-o", "ledger.db"], "the ledger"),
        (&["export", "-o", "sub/../ledger.db-wal"], "the ledger's"),
        (
            &["export", "-o", "ledger.db.unwritten.jsonl"],
            "the ledger's",
        ),
    ];
    for (args, role) in mistakes {
        let mut args = args.to_vec();
        if args[0] != "validate" {
            args.extend(["--ledger", ledger]);
        }
        let (code, out, err) = pms(&s, &args);
        assert_eq!(code, 1, "{args:?} must be refused: {out}{err}");
        assert!(
            err.contains(role) && err.contains("Nothing was written"),
            "{args:?} names what it would destroy: {err}"
        );
        assert_eq!(snapshot(&s, &sheet), before, "{args:?} changed nothing");
    }
    // `run --report` over the ledger: refused before a request is sent.
    let (code, _, err) = output(
        s.run_cmd(&_sandbox.endpoint, &[&sheet])
            .arg("--report")
            .arg(s.ledger()),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--report") && err.contains("the ledger"),
        "{err}"
    );
    assert_eq!(snapshot(&s, &sheet), before);
    // The settings file and the keys are inputs too.
    std::fs::write(s.path("settings.toml"), "rate = 5\n").unwrap();
    let (code, _, err) = pms(
        &s,
        &[
            "report",
            "--config",
            "settings.toml",
            "-o",
            "settings.toml",
            "--ledger",
            ledger,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the settings file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(s.path("settings.toml")).unwrap(),
        "rate = 5\n"
    );
    let key = s.keys().join("client_private.pem");
    let key_bytes = std::fs::read(&key).unwrap();
    let (code, _, err) = output(
        s.run_cmd(&_sandbox.endpoint, &[&sheet])
            .arg("--report")
            .arg(&key),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the private key"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);
    // validate reads no ledger, but its rejects never land on the one the settings name.
    let default = s.path("pms-ledger.db");
    let (code, _, err) =
        output(&mut s.run_cmd_overriding(&_sandbox.endpoint, &[&sheet], &[("--ledger", &default)]));
    assert_eq!(code, 0, "{err}");
    let default_ledger = std::fs::read(s.path("pms-ledger.db")).unwrap();
    let (code, _, err) = pms(&s, &["validate", "s.csv", "--rejects", "pms-ledger.db"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the ledger"), "{err}");
    assert_eq!(
        std::fs::read(s.path("pms-ledger.db")).unwrap(),
        default_ledger
    );
}

#[test]
fn an_output_replaces_its_file_whole_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let _turn = together();
    let s = Scratch::new();
    let (_sandbox, _sheet) = filled(&s);
    let ledger = s.ledger();
    let ledger = ledger.to_str().unwrap();
    std::fs::write(s.path("out.csv"), "an old export\n").unwrap();
    std::fs::set_permissions(s.path("out.csv"), PermissionsExt::from_mode(0o644)).unwrap();
    for args in [
        &["export", "-o", "out.csv", "--ledger", ledger][..],
        &["reconcile", "s.csv", "-o", "diff.csv", "--ledger", ledger],
        &[
            "export",
            "--annotate",
            "s.csv",
            "-o",
            "annotated.csv",
            "--ledger",
            ledger,
        ],
        &["report", "-o", "report.html", "--ledger", ledger],
    ] {
        let (code, _, err) = pms(&s, args);
        assert!(code == 0 || code == 3, "{args:?}: {err}");
        let written = s.path(args[args.iter().position(|a| *a == "-o").unwrap() + 1]);
        let mode = std::fs::metadata(&written).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{args:?}: {}", written.display());
    }
    let export = std::fs::read_to_string(s.path("out.csv")).unwrap();
    assert!(export.starts_with("key,"), "{export}");
    assert_eq!(export.lines().count(), 6, "{export}");
    // No temporary file is left beside them.
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A command that fails leaves the old file as it was (a write cut short part-way is the
    // unit test `an_output_dropped_before_its_commit_leaves_the_old_file`).
    std::fs::write(s.path("annotated.csv"), "kept\n").unwrap();
    let (code, _, _) = pms(
        &s,
        &[
            "export",
            "--annotate",
            "s.csv",
            "--encoding",
            "big5",
            "-o",
            "annotated.csv",
            "--ledger",
            ledger,
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_to_string(s.path("annotated.csv")).unwrap(),
        "kept\n"
    );
}
