//! The HTML report (`report`, `run --report`): one self-contained file that answers the nightly
//! question on its first screen: how many stores are tagged, and which rows need a person, with
//! what to do about each. The numbers and the charts (malls, attempts, latency, throughput)
//! follow.
//!
//! Self-contained means it opens from a mail attachment on a machine without network: an inline
//! `<style>`, tables, and charts as inline SVG ([`charts`]). No scripts, fonts or links.
//! Every text taken from the ledger is user data and is escaped.

mod charts;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use rusqlite::Connection;

use crate::ledger::queries::{
    self, Attention, AttentionRow, Latency, MallCounts, OutcomeCounts, RunInfo,
};
use charts::{BAR_COLOR, FAIL_COLOR, OK_COLOR, PENDING_COLOR, Scale};

/// Rows listed per kind; the rest are counted and left to `export` and `reconcile -o`.
const LIST_LIMIT: usize = 500;

/// Writes the report for `run` (None: the whole ledger) to `path`.
pub fn write(conn: &Connection, run: Option<i64>, path: &Path) -> anyhow::Result<()> {
    let html = render(conn, run)?;
    std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))
}

/// The report as one HTML document.
pub fn render(conn: &Connection, run: Option<i64>) -> anyhow::Result<String> {
    let info = match run {
        Some(id) => Some(
            queries::run_info(conn, id)?
                .with_context(|| format!("no run #{id} in the ledger: see pms-onboard status"))?,
        ),
        None => None,
    };
    let counts = queries::outcome_counts(conn, run)?;
    let mut h = String::new();
    let title = match &info {
        Some(r) => format!("pms-onboard report: run #{}", r.id),
        None => "pms-onboard report: the whole ledger".to_owned(),
    };
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    )?;
    match &info {
        Some(r) => run_line(&mut h, r)?,
        None => writeln!(
            h,
            "<p class=\"run\">Every row the ledger holds, as it stands now; drifted and rejected \
             rows are those of the latest run (the sheet as it was last read).</p>"
        )?,
    }
    writeln!(h, "<p id=\"headline\">{}</p>", headline(&counts))?;
    if let Some(next) = next_run(&counts) {
        writeln!(h, "<p id=\"next-run\">{next}</p>")?;
    }
    summary(&mut h, &counts)?;
    attention_sections(&mut h, conn, run, &counts)?;
    outcome_section(&mut h, &counts)?;
    mall_section(&mut h, &queries::by_mall(conn, run)?)?;
    let attempts = queries::attempts_per_row(conn, run)?;
    writeln!(h, "<h2 id=\"attempts\">Attempts per row</h2>")?;
    if attempts.is_empty() {
        writeln!(h, "<p class=\"note\">No request was sent.</p>")?;
    } else {
        h.push_str(&charts::bars(
            "rows by the number of attempts they took",
            &[("rows", BAR_COLOR)],
            &charts::attempt_bars(&attempts),
            Scale::Absolute,
        ));
    }
    writeln!(h, "<h2 id=\"latency\">Latency</h2>")?;
    latency_section(&mut h, &queries::latencies(conn, run)?)?;
    throughput_section(&mut h, conn, run)?;
    writeln!(
        h,
        "<footer>Written by pms-onboard {} at {}.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION"),
        esc(&when(&crate::ledger::now()))
    )?;
    Ok(h)
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

fn run_line(h: &mut String, r: &RunInfo) -> std::fmt::Result {
    write!(
        h,
        "<p class=\"run\">Run #{}: started {}, ended {}, {}",
        r.id,
        esc(&when(&r.started_at)),
        esc(&r
            .ended_at
            .as_deref()
            .map(when)
            .unwrap_or_else(|| "not yet".to_owned())),
        esc(&r.outcome)
    )?;
    if let Some(m) = &r.message {
        write!(h, " ({})", esc(m))?;
    }
    writeln!(h, ".</p>")
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
    action: &'static str,
    todo: &'static str,
    count: fn(&OutcomeCounts) -> u64,
}

const KINDS: [Kind; 6] = [
    Kind {
        attention: Attention::FailedPermanent,
        id: "failed-permanent",
        title: "Failed for good",
        short: "failed for good",
        person: true,
        action: "fix the row in the sheet, then run it with <code>--retry-failed</code>",
        todo: "AlipayHK refused the row (see the result code). Fix the row in the sheet, then run \
               it again with <code>pms-onboard run FILE --retry-failed</code>.",
        count: |c| c.failed_permanent,
    },
    Kind {
        attention: Attention::Drifted,
        id: "drifted",
        title: "Drifted",
        short: "drifted",
        person: true,
        action: "ask AlipayHK to move the store, or put the sheet back",
        todo: "Tagged earlier, but the sheet now gives another mall or other names. The API \
               cannot move a store: a person must ask AlipayHK to move it, or put the sheet back.",
        count: |c| c.drifted,
    },
    Kind {
        attention: Attention::Ambiguous,
        id: "ambiguous",
        title: "Already circled, label not returned",
        short: "circled without a label",
        person: true,
        action: "ask AlipayHK for the pmsLabel",
        todo: "An earlier attempt had no answer, then AlipayHK said the store was already \
               circled: most likely our own earlier call went through. Ask AlipayHK for the \
               pmsLabel.",
        count: |c| c.ambiguous,
    },
    Kind {
        attention: Attention::Unverified,
        id: "unverified",
        title: "Answer not verified",
        short: "with an answer not verified",
        person: true,
        action: "check alipay_public_key, then run again",
        todo: "AlipayHK answered (the label it sent is kept, see detail), but the answer's \
               signature did not verify with alipay_public_key: a wrong key, a key AlipayHK has \
               rotated, or a proxy that rewrites answers. Put AlipayHK's current public key in \
               alipay_public_key and run again: the kept answers are checked again first, and \
               those that verify are not sent again.",
        count: |c| c.unverified,
    },
    Kind {
        attention: Attention::Rejected,
        id: "rejected",
        title: "Rejected",
        short: "rejected",
        person: true,
        action: "fix the row in the sheet and run it again",
        todo: "The row breaks a rule and was never sent. Fix the row in the sheet (the reason \
               names the column) and run the sheet again.",
        count: |c| c.rejected,
    },
    Kind {
        attention: Attention::FailedTransient,
        id: "failed-transient",
        title: "Failed for now",
        short: "failed for now",
        person: false,
        action: "nothing: the next run sends them again",
        todo: "No usable answer after every attempt (time-outs, server errors). Nothing to do: \
               the next run sends them again. Look into them if they stay here night after night.",
        count: |c| c.failed_transient,
    },
];

/// The columns of every list: a header, a class for the page's style, and the cell of a row as
/// HTML (escaped). A column added here shows in the lists of every kind.
type Column = (&'static str, &'static str, fn(&AttentionRow) -> String);

const COLUMNS: [Column; 6] = [
    // The file's name, and its whole path when the pointer rests on it.
    ("file:line", "place", |r| {
        let name = Path::new(&r.source_file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&r.source_file);
        format!(
            "<span title=\"{}\">{}:{}</span>",
            esc(&r.source_file),
            esc(name),
            r.source_line
        )
    }),
    ("store", "store", |r| {
        [&r.key, &r.store_name]
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| esc(t))
            .collect::<Vec<_>>()
            .join("<br>")
    }),
    ("mall group / mall", "mall", |r| {
        match r.mall_label.is_empty() {
            true => String::new(),
            false => format!("{} / {}", esc(&r.mall_group_label), esc(&r.mall_label)),
        }
    }),
    ("result", "code", |r| esc(&r.code)),
    ("detail", "detail", |r| esc(&r.detail)),
    // What AlipayHK support asks for when a person writes to them about the row.
    ("Tracer-Id", "tracer", |r| esc(&r.tracer_id)),
];

/// "318,220 of 320,000 stores tagged; 12 need a person: 5 rejected, 4 drifted, 3 failed for
/// good." The kinds with the most rows first.
fn headline(c: &OutcomeCounts) -> String {
    if c.total == 0 && c.rejected == 0 {
        return "No rows yet.".to_owned();
    }
    let mut kinds: Vec<(u64, &str)> = KINDS
        .iter()
        .filter(|k| k.person)
        .map(|k| ((k.count)(c), k.short))
        .filter(|(n, _)| *n > 0)
        .collect();
    kinds.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let need: u64 = kinds.iter().map(|(n, _)| n).sum();
    let tagged = match c.total {
        // Every row of the run was rejected, or read again by a later run.
        0 => "<strong>No store in the ledger</strong>".to_owned(),
        total => format!(
            "<strong>{} of {} stores tagged</strong>",
            thousands(c.succeeded + c.already_circled),
            thousands(total)
        ),
    };
    if need == 0 {
        return format!("{tagged}; none needs a person.");
    }
    let list: Vec<String> = kinds
        .iter()
        .map(|(n, what)| format!("{} {what}", thousands(*n)))
        .collect();
    format!(
        "{tagged}; <strong>{} {} a person</strong>: {}.",
        thousands(need),
        if need == 1 { "needs" } else { "need" },
        list.join(", ")
    )
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
fn summary(h: &mut String, c: &OutcomeCounts) -> std::fmt::Result {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| (k.count)(c) > 0).collect();
    if kinds.is_empty() {
        return Ok(());
    }
    writeln!(h, "<table id=\"todo\">")?;
    for k in kinds {
        writeln!(
            h,
            "<tr><th>{}</th><td class=\"n\">{}</td><td>{}</td></tr>",
            k.title,
            thousands((k.count)(c)),
            k.action
        )?;
    }
    writeln!(h, "</table>")
}

/// The lists: the kinds only a person can settle, then those the next run retries.
fn attention_sections(
    h: &mut String,
    conn: &Connection,
    run: Option<i64>,
    c: &OutcomeCounts,
) -> anyhow::Result<()> {
    for person in [true, false] {
        let kinds: Vec<&Kind> = KINDS
            .iter()
            .filter(|k| k.person == person && (k.count)(c) > 0)
            .collect();
        match (person, kinds.is_empty()) {
            (true, true) => {
                writeln!(
                    h,
                    "<h2 id=\"need-a-person\">Rows that need a person</h2>\n<p id=\"attention-none\">None: every row \
                     is done or on its way.</p>"
                )?;
                continue;
            }
            (true, false) => writeln!(h, "<h2 id=\"need-a-person\">Rows that need a person</h2>")?,
            (false, true) => continue,
            (false, false) => writeln!(h, "<h2 id=\"next-run-rows\">Left for the next run</h2>")?,
        }
        for kind in kinds {
            let total = (kind.count)(c);
            writeln!(
                h,
                "<h3 id=\"{}\">{}: {}</h3>\n<p class=\"todo\">{}</p>",
                kind.id,
                kind.title,
                thousands(total),
                kind.todo
            )?;
            let rows = queries::attention(conn, run, kind.attention, LIST_LIMIT)?;
            list_table(h, kind.id, &rows)?;
            if total > rows.len() as u64 {
                writeln!(
                    h,
                    "<p class=\"note\">The first {} of {}: <code>pms-onboard export</code> or \
                     <code>pms-onboard reconcile FILE -o PATH</code> lists them all.</p>",
                    rows.len(),
                    thousands(total)
                )?;
            }
        }
    }
    Ok(())
}

fn list_table(h: &mut String, id: &str, rows: &[AttentionRow]) -> std::fmt::Result {
    write!(h, "<div class=\"list\"><table id=\"list-{id}\"><tr>")?;
    for (header, _, _) in COLUMNS {
        write!(h, "<th>{header}</th>")?;
    }
    writeln!(h, "</tr>")?;
    for r in rows {
        write!(h, "<tr>")?;
        for (_, class, cell) in COLUMNS {
            write!(h, "<td class=\"{class}\">{}</td>", cell(r))?;
        }
        writeln!(h, "</tr>")?;
    }
    writeln!(h, "</table></div>")
}

fn outcome_section(h: &mut String, c: &OutcomeCounts) -> std::fmt::Result {
    writeln!(h, "<h2 id=\"numbers\">All the numbers</h2>\n<table>")?;
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
    for (name, n, what) in lines {
        writeln!(
            h,
            "<tr><th>{name}</th><td class=\"n\" id=\"count-{name}\">{n}</td><td>{what}</td></tr>"
        )?;
    }
    writeln!(h, "</table>")
}

fn mall_section(h: &mut String, malls: &[MallCounts]) -> std::fmt::Result {
    writeln!(h, "<h2 id=\"malls\">By mall</h2>")?;
    if malls.is_empty() {
        return writeln!(h, "<p class=\"note\">No rows.</p>");
    }
    let title = if malls.len() > charts::TOP_MALLS {
        format!(
            "the {} malls with the most rows not done, then the other {}",
            charts::TOP_MALLS,
            thousands((malls.len() - charts::TOP_MALLS) as u64)
        )
    } else {
        "each mall's rows".to_owned()
    };
    h.push_str(&charts::bars(
        &title,
        &[
            ("done", OK_COLOR),
            ("failed", FAIL_COLOR),
            ("pending", PENDING_COLOR),
        ],
        &charts::mall_bars(malls),
        Scale::Shares,
    ));
    writeln!(
        h,
        "<details{}><summary>All {} malls, by mall group and mall</summary>\n\
         <table><tr><th>mall group</th><th>mall</th><th>done</th><th>failed</th><th>pending</th>\
         <th>total</th></tr>",
        if malls.len() <= 20 { " open" } else { "" },
        thousands(malls.len() as u64)
    )?;
    for m in malls {
        writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&m.mall_group_label),
            esc(&m.mall_label),
            m.done,
            m.failed,
            m.pending,
            m.total()
        )?;
    }
    writeln!(h, "</table></details>")
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

fn latency_section(h: &mut String, latencies: &[Latency]) -> anyhow::Result<()> {
    let answers: u64 = latencies.iter().map(|l| l.answers).sum();
    let Some(slowest) = latencies.last() else {
        writeln!(h, "<p class=\"note\">No answer was received.</p>")?;
        return Ok(());
    };
    writeln!(
        h,
        "<table><tr><th>answers</th><th>median</th><th>p90</th><th>p99</th><th>max</th></tr>\
         <tr><td class=\"n\" id=\"latency-count\">{answers}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        percentile(latencies, answers, 0.5),
        percentile(latencies, answers, 0.9),
        percentile(latencies, answers, 0.99),
        latency(slowest)
    )?;
    if latencies.iter().any(|l| l.whole_ms) {
        writeln!(
            h,
            "<p class=\"note\">Some answers were recorded in whole milliseconds only: those \
             under one show as &lt; 1 ms.</p>"
        )?;
    }
    h.push_str(&charts::bars(
        "answers by latency",
        &[("answers", BAR_COLOR)],
        &charts::latency_bars(latencies),
        Scale::Absolute,
    ));
    Ok(())
}

fn throughput_section(h: &mut String, conn: &Connection, run: Option<i64>) -> anyhow::Result<()> {
    let id = match run {
        Some(id) => Some(id),
        None => queries::last_run_id(conn)?,
    };
    let per_second = match id {
        Some(id) => queries::requests_per_second(conn, id)?,
        None => Vec::new(),
    };
    let points = charts::throughput(&per_second);
    let (Some(id), Some(last)) = (id, points.last()) else {
        writeln!(
            h,
            "<h2 id=\"throughput\">Throughput</h2>\n<p class=\"note\">No request was sent.</p>"
        )?;
        return Ok(());
    };
    let requests: u64 = per_second.iter().map(|(_, n)| n).sum();
    let seconds = last.0 + 1.0;
    writeln!(
        h,
        "<h2 id=\"throughput\">Throughput of run #{id}</h2>\n<p>{} requests in {}: {:.1} a second on average.</p>",
        thousands(requests),
        span(seconds as u64),
        requests as f64 / seconds
    )?;
    h.push_str(&charts::throughput_chart(&points)?);
    Ok(())
}

/// `4 min 29 s`, `2 h 5 min`, `12 s`.
fn span(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Text for HTML, in an element or an attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<b>&\"x\"'</b>"),
            "&lt;b&gt;&amp;&quot;x&quot;&#39;&lt;/b&gt;"
        );
    }

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
            headline(&c),
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
            headline(&done),
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
}
