//! The HTML report (`report`, `run --report`): one self-contained file that answers the nightly
//! question on its first screen: how many stores are tagged, and which rows need a person, with
//! what to do about each. The numbers and the charts (malls, attempts, latency, throughput)
//! follow.
//!
//! Self-contained means it opens from a mail attachment on a machine without network: an inline
//! `<style>`, tables, and charts as inline SVG ([`charts`]). No scripts, fonts or links.
//!
//! The data is gathered first ([`ReportData::gather`], whose SQL is `ledger::queries`'), then
//! the page is one pure function of it ([`page`]), written with maud: every text is escaped
//! unless the code says otherwise, and it never does for text from the ledger.

mod charts;
mod data;

use std::path::Path;

use maud::{DOCTYPE, Markup, html};
use rusqlite::Connection;

use crate::ledger::queries::{
    Attention, AttentionRow, Latency, MallCounts, OutcomeCounts, RunInfo,
};
use charts::{BAR_COLOR, FAIL_COLOR, OK_COLOR, PENDING_COLOR, Scale};
pub use data::ReportData;

/// The report as one HTML document: its data gathered, then drawn.
pub fn render(conn: &Connection, run: Option<i64>) -> anyhow::Result<String> {
    Ok(page(&ReportData::gather(conn, run)?).into_string())
}

/// The page, from its data alone.
pub fn page(d: &ReportData) -> Markup {
    let title = match &d.run {
        Some(r) => format!("pms-onboard report: run #{}", r.id),
        None => "pms-onboard report: the whole ledger".to_owned(),
    };
    let c = &d.counts;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                @match &d.run {
                    Some(r) => (run_line(r)),
                    None => p.run {
                        "Every row the ledger holds, as it stands now; drifted and rejected rows \
                         are those of the latest run (the sheet as it was last read)."
                    },
                }
                p id="headline" { (headline(c)) }
                @if let Some(next) = next_run(c) {
                    p id="next-run" { (next) }
                }
                (summary(c))
                (attention_sections(d))
                (outcome_section(c))
                (mall_section(&d.malls))
                h2 id="attempts" { "Attempts per row" }
                @if d.attempts.is_empty() {
                    p.note { "No request was sent." }
                } @else {
                    (charts::bars(
                        "rows by the number of attempts they took",
                        &[("rows", BAR_COLOR)],
                        &charts::attempt_bars(&d.attempts),
                        Scale::Absolute,
                    ))
                }
                h2 id="latency" { "Latency" }
                (latency_section(&d.latencies))
                (throughput_section(d.throughput.as_ref()))
                footer {
                    "Written by pms-onboard " (env!("CARGO_PKG_VERSION")) " at "
                    (when(&d.written_at)) "."
                }
            }
        }
    }
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:72em;color:#222;padding:0 1em}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:1.2em 0 .3em}
#headline{font-size:1.35em;margin:.6em 0 .2em}#next-run{margin:.2em 0 1em;color:#444}
.run{color:#555;margin:0}
table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top;overflow-wrap:break-word}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}.note{color:#555}
.todo{background:#fff8e0;padding:.4em .6em;border-left:4px solid #e0a000;margin:.3em 0}
#todo th{background:none}#todo td,#todo th{border:none;border-bottom:1px solid #eee}
.list{max-height:16em;overflow:auto;border-bottom:1px solid #ddd;font-size:.9em}
.list table{margin:0;width:100%}.list th{position:sticky;top:0}
.list td.store{overflow-wrap:anywhere}.list td.code,.list td.place{white-space:nowrap}.list td.tracer{font-family:monospace;font-size:85%;overflow-wrap:anywhere}
summary{cursor:pointer;margin:.5em 0}
footer{margin-top:3em;color:#777;font-size:.85em}svg{max-width:100%;height:auto}
";

/// `n` with thousands separated: `318,220`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A time as stored (RFC 3339, UTC) as a person reads it: `2026-11-26 18:30:05 UTC`.
fn when(stored: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(stored)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| stored.to_owned())
}

fn run_line(r: &RunInfo) -> Markup {
    html! {
        p.run {
            "Run #" (r.id) ": started " (when(&r.started_at)) ", ended "
            (r.ended_at.as_deref().map(when).unwrap_or_else(|| "not yet".to_owned()))
            ", " (r.outcome)
            @if let Some(m) = &r.message { " (" (m) ")" }
            "."
        }
    }
}

/// One kind of row in the lists: how it is named, whether only a person can settle it, and what
/// to do. In the order the lists come.
struct Kind {
    attention: Attention,
    id: &'static str,
    title: &'static str,
    /// As the headline counts it: "3 failed for good".
    short: &'static str,
    /// Only a person can settle it; the others are retried by the next run by themselves.
    person: bool,
    /// What to do, in a few words (the summary at the top), then in full (above the list).
    action: fn() -> Markup,
    todo: fn() -> Markup,
}

impl Kind {
    fn count(&self, c: &OutcomeCounts) -> u64 {
        data::count(c, self.attention)
    }
}

const KINDS: [Kind; 6] = [
    Kind {
        attention: Attention::FailedPermanent,
        id: "failed-permanent",
        title: "Failed for good",
        short: "failed for good",
        person: true,
        action: || html! { "fix the row in the sheet, then run it with " code { "--retry-failed" } },
        todo: || {
            html! {
                "AlipayHK refused the row (see the result code). Fix the row in the sheet, then \
                 run it again with " code { "pms-onboard run FILE --retry-failed" } "."
            }
        },
    },
    Kind {
        attention: Attention::Drifted,
        id: "drifted",
        title: "Drifted",
        short: "drifted",
        person: true,
        action: || html! { "ask AlipayHK to move the store, or put the sheet back" },
        todo: || {
            html! {
                "Tagged earlier, but the sheet now gives another mall or other names. The API \
                 cannot move a store: a person must ask AlipayHK to move it, or put the sheet \
                 back."
            }
        },
    },
    Kind {
        attention: Attention::Ambiguous,
        id: "ambiguous",
        title: "Already circled, label not returned",
        short: "circled without a label",
        person: true,
        action: || html! { "ask AlipayHK for the pmsLabel" },
        todo: || {
            html! {
                "An earlier attempt had no answer, then AlipayHK said the store was already \
                 circled: most likely our own earlier call went through. Ask AlipayHK for the \
                 pmsLabel."
            }
        },
    },
    Kind {
        attention: Attention::Unverified,
        id: "unverified",
        title: "Answer not verified",
        short: "with an answer not verified",
        person: true,
        action: || html! { "check alipay_public_key, then run again" },
        todo: || {
            html! {
                "AlipayHK answered (the label it sent is kept, see detail), but the answer's \
                 signature did not verify with alipay_public_key: a wrong key, a key AlipayHK \
                 has rotated, or a proxy that rewrites answers. Put AlipayHK's current public \
                 key in alipay_public_key and run again: the kept answers are checked again \
                 first, and those that verify are not sent again."
            }
        },
    },
    Kind {
        attention: Attention::Rejected,
        id: "rejected",
        title: "Rejected",
        short: "rejected",
        person: true,
        action: || html! { "fix the row in the sheet and run it again" },
        todo: || {
            html! {
                "The row breaks a rule and was never sent. Fix the row in the sheet (the reason \
                 names the column) and run the sheet again."
            }
        },
    },
    Kind {
        attention: Attention::FailedTransient,
        id: "failed-transient",
        title: "Failed for now",
        short: "failed for now",
        person: false,
        action: || html! { "nothing: the next run sends them again" },
        todo: || {
            html! {
                "No usable answer after every attempt (time-outs, server errors). Nothing to do: \
                 the next run sends them again. Look into them if they stay here night after \
                 night."
            }
        },
    },
];

/// The columns of every list: a header, a class for the page's style, and the cell of a row. A
/// column added here shows in the lists of every kind.
type Column = (&'static str, &'static str, fn(&AttentionRow) -> Markup);

const COLUMNS: [Column; 6] = [
    // The file's name, and its whole path when the pointer rests on it.
    ("file:line", "place", |r| {
        let name = Path::new(&r.source_file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&r.source_file);
        html! { span title=(r.source_file) { (name) ":" (r.source_line) } }
    }),
    ("store", "store", |r| {
        let parts: Vec<&String> = [&r.key, &r.store_name]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        html! {
            @for (i, part) in parts.iter().enumerate() {
                @if i > 0 { br; }
                (part)
            }
        }
    }),
    ("mall group / mall", "mall", |r| {
        html! {
            @if !r.mall_label.is_empty() { (r.mall_group_label) " / " (r.mall_label) }
        }
    }),
    ("result", "code", |r| html! { (r.code) }),
    ("detail", "detail", |r| html! { (r.detail) }),
    // What AlipayHK support asks for when a person writes to them about the row.
    ("Tracer-Id", "tracer", |r| html! { (r.tracer_id) }),
];

/// "318,220 of 320,000 stores tagged; 12 need a person: 5 rejected, 4 drifted, 3 failed for
/// good." The kinds with the most rows first.
fn headline(c: &OutcomeCounts) -> Markup {
    if c.total == 0 && c.rejected == 0 {
        return html! { "No rows yet." };
    }
    let mut kinds: Vec<(u64, &str)> = KINDS
        .iter()
        .filter(|k| k.person)
        .map(|k| (k.count(c), k.short))
        .filter(|(n, _)| *n > 0)
        .collect();
    kinds.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let need: u64 = kinds.iter().map(|(n, _)| n).sum();
    let list: Vec<String> = kinds
        .iter()
        .map(|(n, what)| format!("{} {what}", thousands(*n)))
        .collect();
    html! {
        @match c.total {
            // Every row of the run was rejected, or read again by a later run.
            0 => strong { "No store in the ledger" },
            total => strong {
                (thousands(c.succeeded + c.already_circled)) " of " (thousands(total))
                " stores tagged"
            },
        }
        @if need == 0 {
            "; none needs a person."
        } @else {
            "; " strong {
                (thousands(need)) " " (if need == 1 { "needs" } else { "need" }) " a person"
            }
            ": " (list.join(", ")) "."
        }
    }
}

/// What the next run takes up by itself, if anything.
fn next_run(c: &OutcomeCounts) -> Option<String> {
    let waiting = c.pending + c.in_flight;
    let parts: Vec<String> = [
        (waiting, "not sent yet"),
        (c.failed_transient, "failed for now"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{} {what}", thousands(*n)))
    .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "{} left for the next run, which sends them by itself: {}.",
            thousands(waiting + c.failed_transient),
            parts.join(", ")
        )
    })
}

/// Each kind there are rows of, with how many and what to do, in a few words.
fn summary(c: &OutcomeCounts) -> Markup {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.count(c) > 0).collect();
    html! {
        @if !kinds.is_empty() {
            table id="todo" {
                @for k in &kinds {
                    tr { th { (k.title) } td.n { (thousands(k.count(c))) } td { ((k.action)()) } }
                }
            }
        }
    }
}

/// The lists: the kinds only a person can settle, then those the next run retries.
fn attention_sections(d: &ReportData) -> Markup {
    let c = &d.counts;
    let of = |person: bool| -> Vec<&Kind> {
        KINDS
            .iter()
            .filter(|k| k.person == person && k.count(c) > 0)
            .collect()
    };
    let (person, later) = (of(true), of(false));
    html! {
        h2 id="need-a-person" { "Rows that need a person" }
        @if person.is_empty() {
            p id="attention-none" { "None: every row is done or on its way." }
        }
        @for kind in &person { (kind_section(kind, d)) }
        @if !later.is_empty() {
            h2 id="next-run-rows" { "Left for the next run" }
            @for kind in &later { (kind_section(kind, d)) }
        }
    }
}

fn kind_section(kind: &Kind, d: &ReportData) -> Markup {
    let total = kind.count(&d.counts);
    let rows = d.list(kind.attention);
    html! {
        h3 id=(kind.id) { (kind.title) ": " (thousands(total)) }
        p.todo { ((kind.todo)()) }
        div.list {
            table id=(format!("list-{}", kind.id)) {
                tr { @for (header, _, _) in COLUMNS { th { (header) } } }
                @for r in rows {
                    tr { @for (_, class, cell) in COLUMNS { td class=(class) { (cell(r)) } } }
                }
            }
        }
        @if total > rows.len() as u64 {
            p.note {
                "The first " (rows.len()) " of " (thousands(total)) ": "
                code { "pms-onboard export" } " or " code { "pms-onboard reconcile FILE -o PATH" }
                " lists them all."
            }
        }
    }
}

fn outcome_section(c: &OutcomeCounts) -> Markup {
    let lines: [(&str, u64, &str); 10] = [
        ("total", c.total, "rows in the ledger"),
        ("succeeded", c.succeeded, "tagged; the label is kept"),
        (
            "already_circled",
            c.already_circled,
            "the store had a mall already",
        ),
        (
            "ambiguous",
            c.ambiguous,
            "of those: most likely our own earlier call, label not returned",
        ),
        (
            "failed_permanent",
            c.failed_permanent,
            "refused by AlipayHK: fix the row",
        ),
        (
            "failed_transient",
            c.failed_transient,
            "no answer in time: run again",
        ),
        ("pending", c.pending, "not sent yet"),
        ("in_flight", c.in_flight, "sent, no answer recorded"),
        (
            "drifted",
            c.drifted,
            "done earlier, the sheet now says otherwise",
        ),
        (
            "rejected",
            c.rejected,
            "rows of the sheet that break a rule",
        ),
    ];
    // The count cells hold the bare number, for whoever scrapes them.
    html! {
        h2 id="numbers" { "All the numbers" }
        table {
            @for (name, n, what) in lines {
                tr { th { (name) } td class="n" id=(format!("count-{name}")) { (n) } td { (what) } }
            }
        }
    }
}

fn mall_section(malls: &[MallCounts]) -> Markup {
    let title = if malls.len() > charts::TOP_MALLS {
        format!(
            "the {} malls with the most rows not done, then the other {}",
            charts::TOP_MALLS,
            thousands((malls.len() - charts::TOP_MALLS) as u64)
        )
    } else {
        "each mall's rows".to_owned()
    };
    html! {
        h2 id="malls" { "By mall" }
        @if malls.is_empty() {
            p.note { "No rows." }
        } @else {
            (charts::bars(
                &title,
                &[("done", OK_COLOR), ("failed", FAIL_COLOR), ("pending", PENDING_COLOR)],
                &charts::mall_bars(malls),
                Scale::Shares,
            ))
            details open[malls.len() <= 20] {
                summary { "All " (thousands(malls.len() as u64)) " malls, by mall group and mall" }
                table {
                    tr {
                        th { "mall group" } th { "mall" } th { "done" } th { "failed" }
                        th { "pending" } th { "total" }
                    }
                    @for m in malls {
                        tr {
                            td { (m.mall_group_label) } td { (m.mall_label) }
                            td.n { (m.done) } td.n { (m.failed) } td.n { (m.pending) }
                            td.n { (m.total()) }
                        }
                    }
                }
            }
        }
    }
}

/// The latency at `p` (0..=1) of answers sorted by latency, as it is written.
fn percentile(latencies: &[Latency], answers: u64, p: f64) -> String {
    let rank = ((answers - 1) as f64 * p).round() as u64;
    let mut seen = 0;
    for l in latencies {
        seen += l.answers;
        if seen > rank {
            return latency(l);
        }
    }
    String::new()
}

/// One latency as a person reads it: `0.734 ms`, `12.3 ms`, `1,520 ms`; one held in whole
/// milliseconds only is `< 1 ms` below a millisecond.
fn latency(l: &Latency) -> String {
    let ms = l.micros as f64 / 1000.0;
    match l.micros {
        0..1000 if l.whole_ms => "< 1 ms".to_owned(),
        _ if l.whole_ms => format!("{} ms", thousands(l.micros / 1000)),
        0..1000 => format!("{ms:.3} ms"),
        1000..10_000 => format!("{ms:.2} ms"),
        10_000..100_000 => format!("{ms:.1} ms"),
        _ => format!("{} ms", thousands(ms.round() as u64)),
    }
}

fn latency_section(latencies: &[Latency]) -> Markup {
    let answers: u64 = latencies.iter().map(|l| l.answers).sum();
    let Some(slowest) = latencies.last() else {
        return html! { p.note { "No answer was received." } };
    };
    html! {
        table {
            tr { th { "answers" } th { "median" } th { "p90" } th { "p99" } th { "max" } }
            tr {
                td class="n" id="latency-count" { (answers) }
                td.n { (percentile(latencies, answers, 0.5)) }
                td.n { (percentile(latencies, answers, 0.9)) }
                td.n { (percentile(latencies, answers, 0.99)) }
                td.n { (latency(slowest)) }
            }
        }
        @if latencies.iter().any(|l| l.whole_ms) {
            p.note {
                "Some answers were recorded in whole milliseconds only: those under one show as \
                 < 1 ms."
            }
        }
        (charts::bars(
            "answers by latency",
            &[("answers", BAR_COLOR)],
            &charts::latency_bars(latencies),
            Scale::Absolute,
        ))
    }
}

fn throughput_section(throughput: Option<&(i64, Vec<(String, u64)>)>) -> Markup {
    let (id, per_second) = match throughput {
        Some((id, per_second)) => (Some(*id), per_second.as_slice()),
        None => (None, &[][..]),
    };
    let points = charts::throughput(per_second);
    let (Some(id), Some(last)) = (id, points.last()) else {
        return html! {
            h2 id="throughput" { "Throughput" }
            p.note { "No request was sent." }
        };
    };
    let requests: u64 = per_second.iter().map(|(_, n)| n).sum();
    let seconds = last.0 + 1.0;
    html! {
        h2 id="throughput" { "Throughput of run #" (id) }
        p {
            (thousands(requests)) " requests in " (span(seconds as u64)) ": "
            (format!("{:.1}", requests as f64 / seconds)) " a second on average."
        }
        (charts::throughput_chart(&points))
    }
}

/// `4 min 29 s`, `2 h 5 min`, `12 s`.
fn span(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_latencies_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(318_220), "318,220");
        assert_eq!(thousands(1_000_000), "1,000,000");
        let l = |micros, whole_ms| {
            latency(&Latency {
                micros,
                whole_ms,
                answers: 1,
            })
        };
        assert_eq!(l(734, false), "0.734 ms");
        assert_eq!(l(1_234, false), "1.23 ms");
        assert_eq!(l(12_345, false), "12.3 ms");
        assert_eq!(l(1_520_400, false), "1,520 ms");
        assert_eq!(l(0, true), "< 1 ms");
        assert_eq!(l(15_000, true), "15 ms");
    }

    #[test]
    fn the_headline_counts_the_rows_that_need_a_person_largest_first() {
        let c = OutcomeCounts {
            total: 320_000,
            succeeded: 318_000,
            already_circled: 220,
            failed_permanent: 3,
            drifted: 4,
            rejected: 5,
            failed_transient: 7,
            pending: 1_766,
            ..OutcomeCounts::default()
        };
        assert_eq!(
            headline(&c).into_string(),
            "<strong>318,220 of 320,000 stores tagged</strong>; <strong>12 need a person</strong>: \
             5 rejected, 4 drifted, 3 failed for good."
        );
        assert_eq!(
            next_run(&c).unwrap(),
            "1,773 left for the next run, which sends them by itself: 1,766 not sent yet, 7 failed \
             for now."
        );
        let done = OutcomeCounts {
            total: 3,
            succeeded: 3,
            ..OutcomeCounts::default()
        };
        assert_eq!(
            headline(&done).into_string(),
            "<strong>3 of 3 stores tagged</strong>; none needs a person."
        );
        assert_eq!(next_run(&done), None);
    }

    #[test]
    fn latencies_in_microseconds_give_sub_millisecond_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::ledger::open(&dir.path().join("l.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, started_at, config) VALUES (1, '2026-01-01T00:00:00.000Z', '{}');
             INSERT INTO rows (key, save_way_type, ipay_trade_no, partner_id, merchant_id,
                 merchant_name, store_id, store_name, mall_group_label, mall_label, state,
                 pms_label, attempts, source_file, source_line, run_id, seq, created_at, updated_at)
             VALUES ('IPAY_TRADE_NO|1', 'IPAY_TRADE_NO', '1', '', '', '', '', '', '1', '2',
                 'succeeded', '1', 10, 'a.csv', 2, 1, 1, 't', 't');",
        )
        .unwrap();
        // Ten answers: 0.3 ms to 1.2 ms, as the writer records them with the new column.
        for (i, us) in [300, 310, 320, 330, 340, 350, 360, 370, 380, 1200]
            .iter()
            .enumerate()
        {
            conn.execute(
                "INSERT INTO attempts (key, run_id, attempt, started_at, latency_ms, latency_us,
                     outcome)
                 VALUES ('IPAY_TRADE_NO|1', 1, ?1, '2026-01-01T00:00:00.000Z', ?2, ?3, 'success')",
                rusqlite::params![i as i64 + 1, us / 1000, us],
            )
            .unwrap();
        }
        let html = render(&conn, Some(1)).unwrap();
        assert!(html.contains("id=\"latency-count\">10<"), "{html}");
        assert!(
            html.contains(
                "<td class=\"n\">0.350 ms</td><td class=\"n\">0.380 ms</td>\
                 <td class=\"n\">1.20 ms</td><td class=\"n\">1.20 ms</td>"
            ),
            "{html}"
        );
        assert!(!html.contains("whole milliseconds only"));
        assert!(html.contains(">0.2 ms – 0.5 ms<"));
    }

    #[test]
    fn an_empty_ledger_gives_a_report_without_charts() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::ledger::open(&dir.path().join("l.db")).unwrap();
        let html = render(&conn, None).unwrap();
        assert!(html.contains("id=\"count-total\">0<"), "{html}");
        assert!(html.contains("attention-none"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn the_page_is_drawn_from_its_data_alone_and_escapes_every_text() {
        let hostile = AttentionRow {
            source_file: "dir/a\"b.csv".into(),
            source_line: 7,
            key: "MERCHANT_PMS|P|M|S".into(),
            store_name: "<script>alert(1)</script>".into(),
            mall_group_label: "1".into(),
            mall_label: "2".into(),
            code: "PROCESS_FAIL".into(),
            detail: "\"><img src=x onerror=alert(2)>".into(),
            tracer_id: "t&t".into(),
        };
        let data = ReportData {
            run: None,
            counts: OutcomeCounts {
                total: 1,
                failed_permanent: 1,
                ..OutcomeCounts::default()
            },
            lists: vec![(Attention::FailedPermanent, vec![hostile])],
            malls: Vec::new(),
            attempts: Vec::new(),
            latencies: Vec::new(),
            throughput: None,
            written_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let html = page(&data).into_string();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
            "{html}"
        );
        assert!(
            html.contains("title=\"dir/a&quot;b.csv\">a&quot;b.csv:7<"),
            "{html}"
        );
        assert!(html.contains(">t&amp;t<"), "{html}");
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("Written by pms-onboard"), "{html}");
        assert!(html.contains("2026-01-01 00:00:00 UTC"), "{html}");
    }
}
