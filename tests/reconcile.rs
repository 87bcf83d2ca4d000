//! The nightly side: `reconcile` of a changed master sheet, `export --annotate` of an Excel
//! export, and the HTML report, all on a real ledger after real runs against the sandbox.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use crate::util::{SandboxProcess, Scratch, bin, data, output, together};

const HEADER: &str =
    "partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label";

/// Row `i` of a master sheet, in mall `mall` of group 20230316.
fn line(i: usize, mall: &str) -> String {
    format!("2088{i:012},M{i:04},測試商戶 {i},S{i:06},分店 {i},20230316,{mall}")
}

fn write_sheet(s: &Scratch, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = s.path(name);
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{HEADER}").unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    path
}

/// The malls that exist in the sandbox: 20230316001..005 and 20230316009 (not 999).
fn malls(s: &Scratch) -> std::path::PathBuf {
    let path = s.path("malls.csv");
    let mut body = String::from("mall_group_label,mall_label\n");
    for m in ["001", "002", "003", "004", "005", "009"] {
        body.push_str(&format!("20230316,20230316{m}\n"));
    }
    std::fs::write(&path, body).unwrap();
    path
}

fn reconcile(s: &Scratch, sheet: &Path, extra: &[&str]) -> (i32, String, String) {
    output(
        Command::new(bin())
            .current_dir(s.dir.path())
            .arg("reconcile")
            .arg(sheet)
            .arg("--ledger")
            .arg(s.ledger())
            .args(extra),
    )
}

fn counts(s: &Scratch, sheet: &Path) -> (i32, serde_json::Value) {
    let (code, out, err) = reconcile(s, sheet, &["--json"]);
    let counts = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, counts)
}

fn requests(sandbox: &SandboxProcess) -> u64 {
    sandbox.stats()["requests"].as_u64().unwrap()
}

#[test]
fn a_changed_master_sheet_is_reconciled_exactly_and_drift_is_never_resent() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &["--malls", malls(&s).to_str().unwrap()]);
    let mall = |i: usize| format!("20230316{:03}", i % 5 + 1);

    // The rollout: 20 rows, every one done.
    let v1: Vec<String> = (1..=20).map(|i| line(i, &mall(i))).collect();
    let v1 = write_sheet(&s, "master-v1.csv", &v1);
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&v1]).args(["--rate", "0"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(requests(&sandbox), 20);
    let (code, c) = counts(&s, &v1);
    assert_eq!(code, 0, "{c}");
    assert_eq!(
        c,
        serde_json::json!({"done": 20, "drifted": 0, "pending": 0, "failed": 0, "invalid": 0, "orphan": 0})
    );

    // The master sheet changes: 15 and 16 move to mall 009, 17 and 18 are dropped, 21 to 23 are
    // new, 24 is new in a mall that does not exist, and two rows are broken.
    let mut v2: Vec<String> = Vec::new();
    for i in 1..=20 {
        match i {
            15 | 16 => v2.push(line(i, "20230316009")),
            17 | 18 => {}
            _ => v2.push(line(i, &mall(i))),
        }
    }
    for i in 21..=23 {
        v2.push(line(i, &mall(i)));
    }
    v2.push(line(24, "20230316999"));
    v2.push(line(25, "2023O316001"));
    v2.push("2.08802E+15,M0026,商戶,S000026,分店,20230316,20230316001".to_owned());
    let v2 = write_sheet(&s, "master-v2.csv", &v2);

    let before = requests(&sandbox);
    let (code, c) = counts(&s, &v2);
    assert_eq!(code, 3);
    assert_eq!(
        c,
        serde_json::json!({"done": 16, "drifted": 2, "pending": 4, "failed": 0, "invalid": 2, "orphan": 2})
    );
    assert_eq!(requests(&sandbox), before, "reconcile sends nothing");

    // -o: every row that is not done, with what is wrong.
    let report = s.path("reconcile-before.csv");
    let (code, _, err) = reconcile(&s, &v2, &["-o", report.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    let text = std::fs::read_to_string(&report).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("category,key,source_file,source_line,state,pms_label,detail")
    );
    assert_eq!(lines.count(), 2 + 4 + 2 + 2, "{text}");
    let drifted = text
        .lines()
        .find(|l| l.starts_with("drifted,MERCHANT_PMS|2088000000000015|M0015|S000015,"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        drifted.contains(",succeeded,")
            && drifted.contains("mall_label")
            && drifted.contains("20230316009"),
        "{drifted}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("orphan,MERCHANT_PMS|2088000000000017|M0017|S000017,")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("invalid,,") && l.contains("mall_label")),
        "{text}"
    );
    let (code, human, _) = reconcile(&s, &v2, &[]);
    assert_eq!(code, 3);
    assert!(
        human.contains("drifted") && human.contains("a person must act"),
        "{human}"
    );

    // The new sheet runs: only the four new rows are sent; the moved rows are not.
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&v2]).args(["--rate", "0"]));
    assert_eq!(code, 3, "{out}\n{err}");
    let stats = sandbox.stats();
    assert_eq!(requests(&sandbox), before + 4, "{stats}");
    assert_eq!(stats["by_result_code"]["BUSINESS_DISTRICT_NOT_EXIST"], 1);
    assert!(stats["by_result_code"].get("STORE_IS_CIRCLED").is_none());
    let moved_attempts: i64 = s.ledger_query(
        "SELECT count(*) FROM attempts WHERE key IN
           ('MERCHANT_PMS|2088000000000015|M0015|S000015', 'MERCHANT_PMS|2088000000000016|M0016|S000016')",
    );
    assert_eq!(moved_attempts, 2, "one each, from the rollout");

    let before = requests(&sandbox);
    let (code, c) = counts(&s, &v2);
    assert_eq!(code, 3);
    assert_eq!(
        c,
        serde_json::json!({"done": 19, "drifted": 2, "pending": 0, "failed": 1, "invalid": 2, "orphan": 2})
    );
    // Running it again changes nothing, and neither does reconciling.
    let (code, _, _) = output(s.run_cmd(&sandbox.endpoint, &[&v2]).args(["--rate", "0"]));
    assert_eq!(code, 3);
    assert_eq!(counts(&s, &v2).1, c);
    assert_eq!(requests(&sandbox), before);
}

#[test]
fn an_annotated_excel_export_keeps_every_original_byte_in_order() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let sheet = data("excel_annotate.csv");
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 3, "two rows are rejected: {out}\n{err}");
    let annotated = s.path("annotated.csv");
    let (code, _, err) = output(
        Command::new(bin())
            .arg("export")
            .arg("--annotate")
            .arg(&sheet)
            .arg("-o")
            .arg(&annotated)
            .arg("--ledger")
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{err}");
    let input = std::fs::read(&sheet).unwrap();
    let got = std::fs::read(&annotated).unwrap();
    assert!(got.starts_with(b"\xEF\xBB\xBF"), "the BOM is kept");

    // Split both into physical lines (keeping their ends): each original line that ends a record
    // comes back as itself, then the four cells, then its own line end; lines inside a quoted
    // cell and blank lines come back untouched.
    let physical = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split_inclusive(|c| *c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    let (want, have) = (physical(&input), physical(&got));
    assert_eq!(want.len(), have.len(), "{}", String::from_utf8_lossy(&got));
    let mut extra = Vec::new();
    for (w, h) in want.iter().zip(&have) {
        let body = w
            .strip_suffix(b"\r\n")
            .or(w.strip_suffix(b"\n"))
            .unwrap_or(w);
        let end = &w[body.len()..];
        assert!(h.starts_with(body), "{:?}", String::from_utf8_lossy(h));
        assert!(h.ends_with(end), "{:?}", String::from_utf8_lossy(h));
        extra.push(String::from_utf8(h[body.len()..h.len() - end.len()].to_vec()).unwrap());
    }
    assert!(
        input.windows(2).filter(|w| w == b"\r\n").count() >= 6,
        "the fixture has CRLF ends"
    );
    assert!(!input.ends_with(b"\n") && !got.ends_with(b"\n"));
    // Line 1 header; 2 succeeded; 3-4 one record over two lines, rejected; 5 blank; 6 rejected;
    // 7 all empty (skipped like a blank line); 8 succeeded, without a final line break.
    assert_eq!(extra[0], ",status,pms_label,result_code,message");
    let label = |e: &str| e.split(',').nth(2).unwrap().to_owned();
    for i in [1, 7] {
        assert!(extra[i].starts_with(",succeeded,"), "{}", extra[i]);
        let l = label(&extra[i]);
        assert!(
            l.len() == 31 && l.bytes().all(|b| b.is_ascii_digit()),
            "{l}"
        );
        assert!(extra[i].ends_with(",SUCCESS,success."), "{}", extra[i]);
    }
    assert_ne!(label(&extra[1]), label(&extra[7]));
    assert_eq!(extra[2], "", "inside the quoted cell: untouched");
    assert!(
        extra[3].starts_with(",rejected,,,")
            && extra[3].contains("store_name")
            && extra[3].contains("line break"),
        "{}",
        extra[3]
    );
    assert_eq!(extra[4], "", "a blank line stays blank");
    assert!(
        extra[5].starts_with(",rejected,,,\"column mall_label: ")
            && extra[5].contains("digits only"),
        "{}",
        extra[5]
    );
    assert_eq!(extra[6], ",,,,");
    // The annotated sheet is itself a sheet the tool reads, with the same rows.
    let (code, out, _) = output(Command::new(bin()).arg("validate").arg(&annotated));
    assert_eq!(code, 3);
    assert!(out.contains("2 valid rows, 2 rejected"), "{out}");
}

#[test]
fn the_report_is_one_offline_file_whose_numbers_are_the_ledgers() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &["--malls", malls(&s).to_str().unwrap()]);
    let mut rows: Vec<String> = (1..=30)
        .map(|i| line(i, &format!("20230316{:03}", i % 5 + 1)))
        .collect();
    // Two rows to a mall that does not exist, one with a name full of markup; one broken row.
    rows.push(line(31, "20230316999"));
    rows.push("2088000000000032,M0032,\"<b>Tom & \"\"Jerry's\"\"</b>\",S000032,<script>x</script>,20230316,20230316999".to_owned());
    rows.push(line(33, "ABC"));
    let sheet = write_sheet(&s, "stores.csv", &rows);
    let html_path = s.path("run-report.html");
    let (code, out, err) = output(s.run_cmd(&sandbox.endpoint, &[&sheet]).args([
        "--rate",
        "0",
        "--report",
        html_path.to_str().unwrap(),
    ]));
    assert_eq!(code, 3, "{out}\n{err}");
    let whole = s.path("ledger-report.html");
    let (code, _, err) = output(
        Command::new(bin())
            .arg("report")
            .arg("-o")
            .arg(&whole)
            .arg("--ledger")
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{err}");

    for path in [&html_path, &whole] {
        let html = std::fs::read_to_string(path).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.matches("<svg").count() >= 4, "four charts");
        // Offline: no link, script, stylesheet or font from anywhere; the only URL is the SVG
        // namespace name, which is never fetched.
        let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for banned in [
            "http://", "https://", "src=", "href=", "<script", "<link", "@import", "url(",
        ] {
            assert!(
                !without_ns.contains(banned),
                "{banned} in {}",
                path.display()
            );
        }
        // User data is escaped.
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        // The counts shown are the ledger's.
        let shown = |id: &str| -> i64 {
            let marker = format!("id=\"count-{id}\">");
            let at = html.find(&marker).unwrap_or_else(|| panic!("no {marker}")) + marker.len();
            html[at..].split('<').next().unwrap().parse().unwrap()
        };
        let sql = |q: &str| -> i64 { s.ledger_query(q) };
        assert_eq!(shown("total"), sql("SELECT count(*) FROM rows"));
        assert_eq!(shown("total"), 32);
        assert_eq!(
            shown("succeeded"),
            sql("SELECT count(*) FROM rows WHERE state = 'succeeded'")
        );
        assert_eq!(shown("succeeded"), 30);
        assert_eq!(
            shown("failed_permanent"),
            sql("SELECT count(*) FROM rows WHERE state = 'failed' AND failure = 'permanent'")
        );
        assert_eq!(shown("failed_permanent"), 2);
        assert_eq!(shown("failed_transient"), 0);
        assert_eq!(
            shown("rejected"),
            sql("SELECT count(*) FROM rejects WHERE run_id = (SELECT max(id) FROM runs)")
        );
        assert_eq!(shown("rejected"), 1);
        assert_eq!(shown("drifted"), 0);
        let answers: i64 = sql("SELECT count(*) FROM attempts WHERE latency_ms IS NOT NULL");
        assert!(html.contains(&format!("id=\"latency-count\">{answers}<")));
        // Each kind that needs a person says what to do.
        assert!(html.contains("id=\"failed-permanent\">Failed for good: 2<"));
        assert!(html.contains("--retry-failed"));
        assert!(html.contains("id=\"rejected\">Rejected: 1<"));
        assert!(html.contains("BUSINESS_DISTRICT_NOT_EXIST"));

        // The headline comes first and is the ledger's numbers.
        let tagged =
            sql("SELECT count(*) FROM rows WHERE state IN ('succeeded', 'already_circled')");
        let failed =
            sql("SELECT count(*) FROM rows WHERE state = 'failed' AND failure = 'permanent'");
        let rejected =
            sql("SELECT count(*) FROM rejects WHERE run_id = (SELECT max(id) FROM runs)");
        assert_eq!(
            text_of(&html, "<p id=\"headline\">"),
            format!(
                "{tagged} of {} stores tagged; {} need a person: {failed} failed for good, \
                 {rejected} rejected.",
                shown("total"),
                failed + rejected
            )
        );
        assert!(html.find("id=\"headline\"") < html.find("<svg"));
        assert!(html.find("id=\"headline\"") < html.find("id=\"failed-permanent\""));
        // The lists are the ledger's rows, in sheet order.
        let places = |q: &str| -> Vec<String> {
            let conn = rusqlite::Connection::open(s.ledger()).unwrap();
            let mut st = conn.prepare(q).unwrap();
            st.query_map([], |r| Ok(format!("stores.csv:{}", r.get::<_, i64>(0)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            first_cells(&html, "list-failed-permanent"),
            places("SELECT source_line FROM rows WHERE state = 'failed' ORDER BY source_line")
        );
        assert_eq!(first_cells(&html, "list-failed-permanent").len(), 2);
        assert_eq!(
            first_cells(&html, "list-rejected"),
            places(
                "SELECT line FROM rejects WHERE run_id = (SELECT max(id) FROM runs) ORDER BY line"
            )
        );
        assert!(!html.contains("id=\"list-drifted\""), "no drift, no list");
    }
}

/// The text of the element that starts with `open`, its tags removed.
fn text_of(html: &str, open: &str) -> String {
    let at = html.find(open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let inner = &html[at..at + html[at..].find("</p>").unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for c in inner.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// The text of the first cell of each row of the table `id` (its header row left out).
fn first_cells(html: &str, id: &str) -> Vec<String> {
    let open = format!("<table id=\"{id}\">");
    let at = html.find(&open).unwrap_or_else(|| panic!("no {open}"));
    let table = &html[at..at + html[at..].find("</table>").unwrap()];
    table
        .split("<tr>")
        .skip(2)
        .map(|row| {
            let cell = row.split("</td>").next().unwrap();
            let span = cell.rsplit("\">").next().unwrap();
            span.trim_end_matches("</span>").to_owned()
        })
        .collect()
}

/// What the tool prints when the identities of a sheet outgrow the in-memory budget.
const SPILLED: &str = "more identities than the in-memory budget";

/// The environment that makes the budget 40 identities and shows that it was outgrown.
fn small_budget(cmd: &mut Command) -> &mut Command {
    cmd.env("PMS_ONBOARD_IDENTITIES_IN_MEMORY", "40")
        .env("RUST_LOG", "pms_onboard=debug")
}

/// The duplicate and conflict lines of a run's stderr.
fn dedupe_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains("same store and payload as line") || l.contains("conflicts with line")
        })
        .collect()
}

#[test]
fn a_sheet_past_the_in_memory_budget_is_read_through_a_temporary_file_with_the_same_results() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    // 300 rows: every 20th repeats the line above (15 duplicates); lines 5, 35, ..., 295 give the
    // store two lines up another mall (10 conflicts).
    let rows: Vec<String> = (1..=300usize)
        .map(|i| match i {
            _ if i % 20 == 0 => line(i - 1, "20230316001"),
            _ if i % 30 == 5 => line(i - 2, "20230316002"),
            _ => line(i, "20230316001"),
        })
        .collect();
    let v1 = write_sheet(&s, "master-v1.csv", &rows);

    // The run: its duplicates and conflicts are those the in-memory check finds.
    let (code, out, err) = output(small_budget(
        s.run_cmd(&sandbox.endpoint, &[&v1]).args(["--rate", "0"]),
    ));
    assert_eq!(code, 3, "conflicts are rejected: {out}\n{err}");
    assert!(err.contains(SPILLED), "{err}");
    // The same sheet in memory, on a ledger of its own (the same keys: the same sandbox).
    let memory_run = Scratch::new();
    for key in ["client_private.pem", "alipay_public.pem"] {
        std::fs::copy(s.keys().join(key), memory_run.keys().join(key)).unwrap();
    }
    let (_, _, in_memory) = output(
        memory_run
            .run_cmd(&sandbox.endpoint, &[&v1])
            .args(["--rate", "0"]),
    );
    assert!(!in_memory.contains(SPILLED));
    let dedupe = dedupe_lines(&err);
    assert_eq!(dedupe.len(), 15 + 10, "{err}");
    assert_eq!(dedupe, dedupe_lines(&in_memory));
    let (_, validated, rejects) = output(Command::new(bin()).arg("validate").arg(&v1));
    assert!(validated.contains("15 duplicates skipped"), "{validated}");
    let conflicts: Vec<&str> = dedupe
        .iter()
        .copied()
        .filter(|l| l.contains("conflicts"))
        .collect();
    assert_eq!(conflicts, rejects.lines().collect::<Vec<_>>());

    // The next master sheet drops its first 30 rows, 28 stores: reconcile finds them orphan, and
    // everything else the same, through the temporary file as in memory.
    let v2 = write_sheet(&s, "master-v2.csv", &rows[30..]);
    // `bounded` with the small budget, then without: the same exit code and output.
    let compare = |bounded: &[&str], memory: &[&str]| {
        let with_budget = output(small_budget(
            Command::new(bin())
                .arg("reconcile")
                .arg(&v2)
                .arg("--ledger")
                .arg(s.ledger())
                .args(bounded),
        ));
        let without = reconcile(&s, &v2, memory);
        assert!(with_budget.2.contains(SPILLED), "{}", with_budget.2);
        assert!(!without.2.contains(SPILLED), "{}", without.2);
        assert_eq!((with_budget.0, &with_budget.1), (without.0, &without.1));
        with_budget.1
    };
    let json: serde_json::Value = serde_json::from_str(&compare(&["--json"], &["--json"])).unwrap();
    assert_eq!(json["orphan"], 28, "{json}");
    let (bounded_csv, memory_csv) = (s.path("todo-bounded.csv"), s.path("todo-memory.csv"));
    compare(
        &["-o", bounded_csv.to_str().unwrap()],
        &["-o", memory_csv.to_str().unwrap()],
    );
    let todo = std::fs::read_to_string(&bounded_csv).unwrap();
    assert_eq!(todo, std::fs::read_to_string(&memory_csv).unwrap());
    let orphans = todo.lines().filter(|l| l.starts_with("orphan,")).count();
    assert_eq!(orphans, 28, "{todo}");

    // The annotated sheet is the same, byte for byte.
    let annotate = |budget: bool, to: &Path| {
        let mut cmd = Command::new(bin());
        cmd.arg("export")
            .arg("--annotate")
            .arg(&v1)
            .arg("-o")
            .arg(to)
            .arg("--ledger")
            .arg(s.ledger());
        if budget {
            small_budget(&mut cmd);
        }
        let (code, _, err) = output(&mut cmd);
        assert_eq!(code, 0, "{err}");
        assert_eq!(err.contains(SPILLED), budget, "{err}");
        std::fs::read(to).unwrap()
    };
    let bounded = annotate(true, &s.path("annotated-bounded.csv"));
    assert_eq!(bounded, annotate(false, &s.path("annotated-memory.csv")));
    let text = String::from_utf8(bounded).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains(",succeeded,")).count(),
        290
    );
}

/// Text from the sheet and from the gateway lands in the report inert: the template escapes it,
/// in an element and in an attribute (the sheet's path is the title of its `file:line` cell).
#[test]
fn the_report_escapes_a_store_name_a_gateway_message_and_a_file_name() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &["--malls", malls(&s).to_str().unwrap()]);
    // A mall that does not exist: the row fails for good, with its store name kept.
    let rows = vec![
        line(1, "20230316001"),
        "2088000000000002,M0002,m,S000002,<script>alert(1)</script>,20230316,20230316999"
            .to_owned(),
    ];
    let sheet = write_sheet(&s, "q\"><i>x.csv", &rows);
    let (code, out, err) = output(
        s.run_cmd(&sandbox.endpoint, &[&sheet])
            .args(["--rate", "0"]),
    );
    assert_eq!(code, 3, "{out}\n{err}");
    // What a hostile gateway's answer leaves in the ledger: its resultMessage, as it came.
    let hostile = "\"><img src=x onerror=alert(2)>";
    let conn = rusqlite::Connection::open(s.ledger()).unwrap();
    let changed = conn
        .execute(
            "UPDATE rows SET result_message = ?1 WHERE state = 'failed'",
            [hostile],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let html_path = s.path("report.html");
    let (code, _, err) = output(
        Command::new(bin())
            .arg("report")
            .arg("-o")
            .arg(&html_path)
            .arg("--ledger")
            .arg(s.ledger()),
    );
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the store name, escaped"
    );
    assert!(
        html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "the gateway's message, escaped"
    );
    assert!(
        html.contains("q&quot;&gt;&lt;i&gt;x.csv:3"),
        "the file name, escaped"
    );
    for raw in ["<script", "<img", "<i>", "onerror=alert(2)>"] {
        assert!(!html.contains(raw), "{raw} unescaped in the report");
    }
    assert!(html.contains("id=\"failed-permanent\">Failed for good: 1<"));
}
