//! Workbooks as operators keep them: read through the CLI with the row numbers Excel shows, the
//! same identity as the same rows in a CSV, and annotated back as a new workbook read here with
//! calamine. Workbooks come from two writers: rust_xlsxwriter (built here) and openpyxl, xlwt and
//! odfpy (the fixtures made by tests/data/make_workbooks.py).

use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use calamine::{Data, DataType as _, Reader as _, Xlsx, open_workbook};
use pms_onboard::input::{Encoding, Input, Item};
use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook, Worksheet};

use crate::util::{SandboxProcess, Scratch, bin, data, output, together};

const HEADER: &str = "save_way_type,ipay_trade_no,partner_id,merchant_id,merchant_name,store_id,store_name,mall_group_label,mall_label";

/// Row `i` of a MERCHANT_PMS sheet as text cells, exactly as `Scratch::sheet` writes it in CSV.
fn store(i: usize) -> [String; 7] {
    [
        format!("2088{:012}", i % 97),
        format!("M{:04}", i % 13),
        format!("測試商戶 {i}"),
        format!("S{i:06}"),
        format!("分店 {i}"),
        "20230316".to_string(),
        format!("20230316{:03}", i % 5 + 1),
    ]
}

fn write_header(ws: &mut Worksheet, row: u32) {
    for (col, name) in HEADER.split(',').enumerate() {
        ws.write_string(row, col as u16, name).unwrap();
    }
}

/// Writes row `i` of the sheet at `row`: ids as text, the labels as numbers (as Excel types
/// them: both fit in 15 digits).
fn write_store(ws: &mut Worksheet, row: u32, i: usize) {
    let cells = store(i);
    ws.write_string(row, 0, "MERCHANT_PMS").unwrap();
    for (col, text) in cells[..5].iter().enumerate() {
        ws.write_string(row, col as u16 + 2, text).unwrap();
    }
    ws.write_number(row, 7, cells[5].parse::<f64>().unwrap())
        .unwrap();
    ws.write_number(row, 8, cells[6].parse::<f64>().unwrap())
        .unwrap();
}

/// A workbook with every kind of cell an operator's sheet holds, row by row (0-based rows; the
/// comment says the row number Excel shows and what becomes of it).
fn damaged_workbook(path: &Path) {
    let mut wb = Workbook::new();
    // A hidden first sheet: the first *visible* one is read.
    let config = wb.add_worksheet().set_name("Config").unwrap();
    config.write_string(0, 0, "lookup").unwrap();
    config.set_hidden(true);
    // (Excel shows the active sheet first; a hidden sheet cannot be the active one.)
    let ws = wb
        .add_worksheet()
        .set_name("Stores")
        .unwrap()
        .set_active(true);
    ws.write_string(0, 0, "門店清單 2026 (title above the table)")
        .unwrap();
    write_header(ws, 2);
    ws.write_string(2, 9, "備註").unwrap();
    // 4: text ids and Traditional Chinese names.
    write_store(ws, 3, 1);
    // 5: a 15-digit number id: held exactly.
    write_store(ws, 4, 2);
    ws.write_number(4, 2, 208802196664123.0).unwrap();
    // 6: a 16-digit number id: rejected.
    write_store(ws, 5, 3);
    ws.write_number(5, 2, 2088021966641234.0).unwrap();
    // 7: a date in mall_label: rejected.
    write_store(ws, 6, 4);
    let date = Format::new().set_num_format("yyyy-mm-dd");
    ws.write_datetime_with_format(6, 8, ExcelDateTime::from_ymd(2023, 3, 16).unwrap(), &date)
        .unwrap();
    // 8: an error from a formula in merchant_id: rejected.
    write_store(ws, 7, 5);
    ws.write_formula(7, 3, Formula::new("=NA()").set_result("#N/A"))
        .unwrap();
    // 9: formulas count as their cached values: accepted.
    write_store(ws, 8, 6);
    ws.write_formula(8, 6, Formula::new("=\"分店\"&\"六\"").set_result("分店六"))
        .unwrap();
    ws.write_formula(
        8,
        8,
        Formula::new("=20230316000+3").set_result("20230316003"),
    )
    .unwrap();
    // 10, 11: blank. 12: a hidden row, read like the others.
    write_store(ws, 11, 7);
    ws.set_row_hidden(11).unwrap();
    // 13: a fraction in a label: rejected.
    write_store(ws, 12, 8);
    ws.write_number(12, 7, 20230316.25).unwrap();
    // 14: the same store as row 4: skipped.
    write_store(ws, 13, 1);
    // 15: a note right of the table only: a blank row to the tool.
    ws.write_string(14, 11, "checked by Mary").unwrap();
    // 16: a hidden column (merchant_name) is read too.
    write_store(ws, 15, 9);
    ws.set_column_hidden(4).unwrap();
    let archive = wb.add_worksheet().set_name("Archive").unwrap();
    write_header(archive, 0);
    write_store(archive, 1, 50);
    wb.save(path).unwrap();
}

fn validate(files: &[&Path], extra: &[&str]) -> (i32, String, String) {
    output(Command::new(bin()).arg("validate").args(files).args(extra))
}

#[test]
fn a_workbook_is_validated_with_the_row_numbers_excel_shows() {
    let _turn = together();
    let s = Scratch::new();
    let book = s.path("stores.xlsx");
    damaged_workbook(&book);
    let rejects = s.path("rejects.csv");
    let (code, out, err) = validate(&[&book], &["--rejects", rejects.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert_eq!(out.trim(), "5 valid rows, 4 rejected, 1 duplicates skipped");
    let file = format!("{}[Stores]", book.display());
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&file)).collect();
    let starts = [
        ":6: column partner_id: partner_id is the number 2088021966641234 in the workbook",
        ":7: column mall_label: mall_label is the date 2023-03-16 in the workbook",
        ":8: column merchant_id: merchant_id shows the error #N/A",
        ":13: column mall_group_label: mall_group_label is the number 20230316.25 in the workbook, not a whole number",
    ];
    assert_eq!(lines.len(), starts.len(), "{err}");
    for (line, start) in lines.iter().zip(starts) {
        assert!(line.starts_with(&format!("{file}{start}")), "{line}");
    }
    for line in &lines {
        assert!(line.contains("format the column as Text"), "{line}");
    }
    let csv = std::fs::read_to_string(&rejects).unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("file,line,column,value,reason"));
    assert!(
        rows.next()
            .unwrap()
            .starts_with(&format!("{file},6,partner_id,2088021966641234,")),
        "{csv}"
    );

    // What the accepted rows hold: formulas as their cached values, a hidden row, a hidden
    // column, a 15-digit number id without a decimal point.
    let rows: Vec<_> = Input::open(std::slice::from_ref(&book), Encoding::Utf8)
        .unwrap()
        .filter_map(|item| match item.unwrap() {
            Item::Row(r) => Some((r.line, r.row)),
            _ => None,
        })
        .collect();
    let lines: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [4, 5, 9, 12, 16]);
    assert_eq!(rows[0].1.merchant_name, "測試商戶 1");
    assert_eq!(rows[1].1.partner_id, "208802196664123");
    assert_eq!(
        (rows[2].1.store_name.as_str(), rows[2].1.mall_label.as_str()),
        ("分店六", "20230316003")
    );
    assert_eq!(
        rows[3].1.key(),
        "MERCHANT_PMS|2088000000000007|M0007|S000007"
    );
    assert_eq!(rows[4].1.merchant_name, "測試商戶 9");

    // The second sheet, by name, ignoring case.
    let (code, out, err) = validate(&[&book], &["--sheet", "archive"]);
    assert_eq!(
        (code, out.trim()),
        (0, "1 valid rows, 0 rejected, 0 duplicates skipped"),
        "{err}"
    );
    let (code, _, err) = validate(&[&book], &["--sheet", "Shops"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no sheet named \"Shops\"; the workbook has: Config, Stores, Archive"),
        "{err}"
    );
}

#[test]
fn workbooks_from_other_writers_read_through_the_cli() {
    let _turn = together();
    for (name, valid, rejected) in [
        ("workbook_openpyxl.xlsx", 4, 8),
        ("workbook_xlwt.xls", 3, 3),
        ("workbook_odfpy.ods", 2, 4),
    ] {
        let (code, out, err) = validate(&[&data(name)], &[]);
        assert_eq!(code, 3, "{name}: {err}");
        assert!(
            out.starts_with(&format!("{valid} valid rows, {rejected} rejected")),
            "{name}: {out}"
        );
        assert!(err.contains(&format!("{name}[Stores]:")), "{name}: {err}");
    }
}

/// `FILE` run against the sandbox with `--rate 0`.
fn run(s: &Scratch, sandbox: &SandboxProcess, file: &Path) -> (i32, String, String) {
    output(s.run_cmd(&sandbox.endpoint, &[file]).args(["--rate", "0"]))
}

fn requests(sandbox: &SandboxProcess) -> u64 {
    sandbox.stats()["requests"].as_u64().unwrap()
}

fn reconcile_json(s: &Scratch, file: &Path) -> (i32, serde_json::Value) {
    let (code, out, err) = output(
        Command::new(bin())
            .arg("reconcile")
            .arg(file)
            .arg("--json")
            .arg("--ledger")
            .arg(s.ledger()),
    );
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}")),
    )
}

#[test]
fn the_same_rows_as_csv_then_as_a_workbook_are_not_sent_again() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    let csv = s.sheet("stores.csv", 1, 30);
    // The same rows, in another order, under a title, labels typed as numbers.
    let book = s.path("stores.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.write_string(0, 0, "Stores").unwrap();
    write_header(ws, 1);
    for (row, i) in (1..=30).rev().enumerate() {
        write_store(ws, row as u32 + 2, i);
    }
    wb.save(&book).unwrap();

    let (code, out, err) = run(&s, &sandbox, &csv);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(requests(&sandbox), 30);
    let (code, out, err) = run(&s, &sandbox, &book);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(requests(&sandbox), 30, "nothing is sent again");
    assert!(out.contains("already done           30"), "{out}");
    let done = serde_json::json!({"done": 30, "drifted": 0, "pending": 0, "failed": 0, "invalid": 0, "orphan": 0});
    for sheet in [&csv, &book] {
        assert_eq!(
            reconcile_json(&s, sheet),
            (0, done.clone()),
            "{}",
            sheet.display()
        );
    }
}

/// Every cell of `sheet` in `original`, and what is at the same place in `annotated`.
fn cells(path: &Path, sheet: &str) -> calamine::Range<Data> {
    let mut wb: Xlsx<_> = open_workbook(path).unwrap();
    wb.worksheet_range(sheet).unwrap()
}

/// The sheet XML of the first worksheet of an `.xlsx`, for what calamine does not read.
fn sheet_xml(path: &Path) -> String {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut xml = String::new();
    zip.by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut xml)
        .unwrap();
    xml
}

fn annotate(s: &Scratch, sheet: &Path, extra: &[&str]) -> (i32, String, String) {
    output(
        Command::new(bin())
            .arg("export")
            .arg("--annotate")
            .arg(sheet)
            .arg("--ledger")
            .arg(s.ledger())
            .args(extra),
    )
}

/// The fill colour of a status cell, as `RRGGBB`.
fn fill(styles: &calamine::StyleRange, pos: (u32, u32)) -> String {
    let color = styles
        .get(pos)
        .and_then(|s| s.fill.as_ref())
        .and_then(|f| f.foreground_color.or(f.background_color))
        .unwrap_or_else(|| panic!("no fill at {pos:?}"));
    format!("{:02X}{:02X}{:02X}", color.red, color.green, color.blue)
}

#[test]
fn an_annotated_workbook_keeps_every_cell_and_adds_each_rows_outcome() {
    let _turn = together();
    let s = Scratch::new();
    let malls = s.path("malls.csv");
    std::fs::write(&malls, "mall_group_label,mall_label\n20230316,20230316001\n20230316,20230316002\n20230316,20230316003\n20230316,20230316004\n").unwrap();
    let sandbox = SandboxProcess::start(&s.keys(), &["--malls", malls.to_str().unwrap()]);
    // The rollout: rows 1..=5 (row 4 is in mall 005, which does not exist: it fails).
    let v1 = s.path("v1.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet().set_name("門店").unwrap();
    write_header(ws, 0);
    for i in 1..=5 {
        write_store(ws, i as u32, i);
    }
    wb.save(&v1).unwrap();
    let (code, out, err) = run(&s, &sandbox, &v1);
    assert_eq!(code, 3, "{out}\n{err}");

    // The sheet grows: a title above, a new row never sent, a rejected row, a blank row.
    let v2 = s.path("v2.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet().set_name("門店").unwrap();
    ws.write_string(0, 0, "Rollout, week 2").unwrap();
    write_header(ws, 1);
    for i in 1..=5 {
        write_store(ws, i as u32 + 1, i);
    }
    write_store(ws, 7, 6);
    write_store(ws, 8, 7);
    ws.write_string(8, 8, "2023A316001").unwrap();
    wb.save(&v2).unwrap();

    let (code, _, err) = annotate(&s, &v2, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("name it with -o, e.g. -o v2-annotated.xlsx"),
        "{err}"
    );
    let (code, _, err) = annotate(&s, &v2, &["-o", v2.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("that is the workbook being annotated"),
        "{err}"
    );
    let result = s.path("result.xlsx");
    let (code, out, err) = annotate(&s, &v2, &["-o", result.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");

    let original = cells(&v2, "門店");
    let annotated = cells(&result, "門店");
    let appended = 9u32;
    for (row, col, value) in original.used_cells() {
        let at = (row as u32, col as u32);
        assert_eq!(annotated.get_value(at), Some(value), "{at:?}");
    }
    for (row, col, value) in annotated.used_cells() {
        if (col as u32) < appended {
            assert_eq!(original.get_value((row as u32, col as u32)), Some(value));
        }
    }
    // Ids are text still.
    assert_eq!(
        annotated.get_value((2, 2)),
        Some(&Data::String("2088000000000001".into()))
    );
    let status = |row: u32| {
        (0..4)
            .map(|i| {
                annotated
                    .get_value((row, appended + i))
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(status(1), ["status", "pms_label", "result_code", "message"]);
    assert_eq!(status(2)[0], "succeeded");
    assert_eq!(status(2)[1].len(), 31, "{:?}", status(2));
    assert_eq!(status(2)[2], "SUCCESS");
    assert_eq!(status(5)[0], "failed");
    assert_eq!(status(5)[2], "BUSINESS_DISTRICT_NOT_EXIST");
    assert_eq!(status(7)[0], "not_sent");
    assert_eq!(status(8)[0], "rejected");
    assert!(status(8)[3].starts_with("column mall_label: mall_label must be digits only"));
    assert!(
        status(0).iter().all(String::is_empty),
        "the title row has no status"
    );

    // Coloured: done, failed, not sent, rejected.
    let mut wb: Xlsx<_> = open_workbook(&result).unwrap();
    let styles = wb.worksheet_style("門店").unwrap();
    let colors: Vec<String> = [2, 5, 7, 8].map(|r| fill(&styles, (r, appended))).to_vec();
    assert_eq!(colors, ["C6EFCE", "FFC7CE", "E7E6E6", "FFEB9C"]);
    // The header row is frozen and the table has a filter.
    let xml = sheet_xml(&result);
    assert!(
        xml.contains(
            r#"<pane ySplit="2" topLeftCell="A3" activePane="bottomLeft" state="frozen"/>"#
        ),
        "{xml}"
    );
    assert!(xml.contains(r#"<autoFilter ref="A2:M9"/>"#), "{xml}");
}

#[test]
fn a_workbook_from_openpyxl_is_annotated_cell_for_cell() {
    let _turn = together();
    let s = Scratch::new();
    let sandbox = SandboxProcess::start(&s.keys(), &[]);
    // A copy, so that the malls and trade numbers beside the fixtures are not used.
    let book = s.path("stores.xlsx");
    std::fs::copy(data("workbook_openpyxl.xlsx"), &book).unwrap();
    let (code, out, err) = run(&s, &sandbox, &book);
    assert_eq!(code, 3, "{out}\n{err}");
    let result = s.path("annotated.xlsx");
    let (code, out, err) = annotate(&s, &book, &["-o", result.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");

    let original = cells(&book, "Stores");
    let annotated = cells(&result, "Stores");
    for (row, col, value) in original.used_cells() {
        let at = (row as u32, col as u32);
        assert_eq!(annotated.get_value(at), Some(value), "{at:?}");
    }
    // The `expect` column (J) says what each row is; the status is in K.
    let text = |r: u32, c: u32| {
        annotated
            .get_value((r, c))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    let mut checked = 0;
    for row in 4..original.end().unwrap().0 + 1 {
        let expect = text(row, 9);
        if expect.is_empty() {
            continue;
        }
        let want = if expect.starts_with("reject") {
            "rejected"
        } else {
            "succeeded"
        };
        assert_eq!(text(row, 10), want, "row {}", row + 1);
        checked += 1;
    }
    assert_eq!(checked, 13);
    // The 16-digit number is still the number it was; the text ids are text.
    assert!(annotated.get_value((6, 2)).unwrap().is_float());
    assert!(annotated.get_value((4, 2)).unwrap().is_string());
    assert_eq!(text(3, 10), "status");
}

#[test]
fn the_sample_workbook_runs_on_the_sandbox_and_resumes_after_the_csv() {
    let _turn = together();
    let s = Scratch::new();
    let ledger = s.path("demo.db");
    let (code, out, err) = s.run_sample("stores.xlsx", &ledger);
    assert_eq!(code, 3, "{out}\n{err}");
    for line in [
        "succeeded             320",
        "failed                  2",
        "rejected                7",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let file = format!("{}[Stores]", samples.join("stores.xlsx").display());
    for (row, column) in [
        (327, "partner_id"),
        (333, "mall_label"),
        (334, "merchant_id"),
    ] {
        let start = format!("{file}:{row}: column {column}: ");
        let line = err.lines().find(|l| l.starts_with(&start));
        assert!(
            line.is_some_and(|l| l.ends_with(
                "format the column as Text in Excel, re-enter the id as it should be, and save"
            )),
            "{start}: {err}"
        );
    }
    // The CSV holds the same stores: every good row is done already.
    let (code, out, err) = s.run_sample("stores.csv", &ledger);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("already done          320"), "{out}");
    assert!(out.contains("sent this run           0"), "{out}");
}
