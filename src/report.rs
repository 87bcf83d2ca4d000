//! The HTML report (`report`, `run --report`): one self-contained file for the people who would
//! rather look than read. Counts, outcomes by mall, attempts, latency, throughput, and the rows
//! that need a person with what to do for each kind.
//!
//! Self-contained means it opens from a mail attachment on a machine without network: an inline
//! `<style>`, tables, and charts as inline SVG drawn by plotters. No scripts, fonts or links.
//! Every text taken from the ledger is user data and is escaped.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;
use rusqlite::Connection;

use crate::input::Reject;
use crate::ledger::queries::{
    self, Attention, DriftRow, LedgerRow, MallCounts, OutcomeCounts, RunInfo,
};

/// Rows listed per kind in "needs a person"; the rest are counted and left to `export`.
const LIST_LIMIT: usize = 500;
/// Malls drawn in the bar chart (the largest); the table lists them all.
const CHART_MALLS: usize = 30;
/// Points in the throughput chart at most; longer runs are averaged over wider buckets.
const THROUGHPUT_POINTS: usize = 600;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 300;
const OK_COLOR: RGBColor = RGBColor(46, 139, 87);
const FAIL_COLOR: RGBColor = RGBColor(200, 60, 50);
const PENDING_COLOR: RGBColor = RGBColor(170, 170, 170);
const BAR_COLOR: RGBColor = RGBColor(60, 110, 180);

type Draw = Result<(), DrawingAreaErrorKind<std::io::Error>>;

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
    let malls = queries::by_mall(conn, run)?;
    let attempts = queries::attempts_per_row(conn, run)?;
    let latencies = queries::latencies_ms(conn, run)?;
    let throughput_run = match run {
        Some(id) => Some(id),
        None => queries::last_run_id(conn)?,
    };
    let per_second = match throughput_run {
        Some(id) => queries::requests_per_second(conn, id)?,
        None => Vec::new(),
    };

    let mut h = String::new();
    let title = match &info {
        Some(r) => format!("pms-onboard report: run #{}", r.id),
        None => "pms-onboard report: the whole ledger".to_owned(),
    };
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    )?;
    match &info {
        Some(r) => run_header(&mut h, r)?,
        None => writeln!(
            h,
            "<p class=\"note\">Every row the ledger holds, as it stands now. Drifted and rejected \
             rows are those of the latest run (the sheet as it was last read).</p>"
        )?,
    }
    outcome_section(&mut h, &counts)?;
    mall_section(&mut h, &malls)?;
    writeln!(h, "<h2>Attempts per row</h2>")?;
    if attempts.is_empty() {
        writeln!(h, "<p class=\"note\">No request was sent.</p>")?;
    } else {
        h.push_str(&svg(|area| attempts_chart(area, &attempts))?);
    }
    writeln!(h, "<h2>Latency</h2>")?;
    latency_section(&mut h, &latencies)?;
    match throughput_run {
        Some(id) if !per_second.is_empty() => {
            writeln!(h, "<h2>Throughput of run #{id}</h2>")?;
            let points = throughput(&per_second);
            h.push_str(&svg(|area| throughput_chart(area, &points))?);
        }
        _ => writeln!(
            h,
            "<h2>Throughput</h2>\n<p class=\"note\">No request was sent.</p>"
        )?,
    }
    attention_section(&mut h, conn, run, &counts)?;
    writeln!(
        h,
        "<footer>Written by pms-onboard {} at {}.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION"),
        esc(&crate::ledger::now())
    )?;
    Ok(h)
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}.note{color:#555}.todo{background:#fff8e0;padding:.5em;border-left:4px solid #e0a000}
footer{margin-top:3em;color:#777;font-size:.85em}svg{max-width:100%;height:auto}
";

fn run_header(h: &mut String, r: &RunInfo) -> std::fmt::Result {
    writeln!(
        h,
        "<table><tr><th>run</th><td>#{}</td></tr><tr><th>started</th><td>{}</td></tr>\
         <tr><th>ended</th><td>{}</td></tr><tr><th>outcome</th><td>{}</td></tr>{}</table>",
        r.id,
        esc(&r.started_at),
        esc(r.ended_at.as_deref().unwrap_or("")),
        esc(&r.outcome),
        r.message
            .as_deref()
            .map(|m| format!("<tr><th>message</th><td>{}</td></tr>", esc(m)))
            .unwrap_or_default()
    )
}

fn outcome_section(h: &mut String, c: &OutcomeCounts) -> std::fmt::Result {
    writeln!(h, "<h2>Outcomes</h2>\n<table>")?;
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
    for (name, n, what) in lines {
        writeln!(
            h,
            "<tr><th>{name}</th><td class=\"n\" id=\"count-{name}\">{n}</td><td>{what}</td></tr>"
        )?;
    }
    writeln!(h, "</table>")
}

fn mall_section(h: &mut String, malls: &[MallCounts]) -> anyhow::Result<()> {
    writeln!(h, "<h2>By mall group and mall</h2>")?;
    if malls.is_empty() {
        writeln!(h, "<p class=\"note\">No rows.</p>")?;
        return Ok(());
    }
    let mut largest: Vec<&MallCounts> = malls.iter().collect();
    largest.sort_by_key(|m| std::cmp::Reverse(m.total()));
    largest.truncate(CHART_MALLS);
    if malls.len() > CHART_MALLS {
        writeln!(
            h,
            "<p class=\"note\">The {CHART_MALLS} malls with the most rows; the table lists all {}.</p>",
            malls.len()
        )?;
    }
    h.push_str(&svg(|area| mall_chart(area, &largest))?);
    writeln!(
        h,
        "<table><tr><th>mall group</th><th>mall</th><th>done</th><th>failed</th><th>pending</th>\
         <th>total</th></tr>"
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
    writeln!(h, "</table>")?;
    Ok(())
}

fn latency_section(h: &mut String, sorted: &[u64]) -> anyhow::Result<()> {
    if sorted.is_empty() {
        writeln!(h, "<p class=\"note\">No answer was received.</p>")?;
        return Ok(());
    }
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    writeln!(
        h,
        "<table><tr><th>answers</th><th>median</th><th>p90</th><th>p99</th><th>max</th></tr>\
         <tr><td class=\"n\" id=\"latency-count\">{}</td><td class=\"n\">{} ms</td>\
         <td class=\"n\">{} ms</td><td class=\"n\">{} ms</td><td class=\"n\">{} ms</td></tr></table>",
        sorted.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        sorted[sorted.len() - 1]
    )?;
    h.push_str(&svg(|area| latency_chart(area, sorted))?);
    Ok(())
}

/// What a person does about each kind of row, in the order they are listed.
const KINDS: [(&str, &str, &str); 5] = [
    (
        "failed-permanent",
        "Failed for good",
        "AlipayHK refused the row (see the result code). Fix the row in the sheet, then run it \
         again with <code>pms-onboard run FILE --retry-failed</code>.",
    ),
    (
        "failed-transient",
        "Failed for now",
        "No usable answer after every attempt (time-outs, server errors). Run the same command \
         again; these rows are retried by themselves.",
    ),
    (
        "drifted",
        "Drifted",
        "Tagged earlier, but the sheet now gives another mall or other names. The API cannot move \
         a store: a person must ask AlipayHK to move it, or put the sheet back.",
    ),
    (
        "ambiguous",
        "Already circled, label not returned",
        "An earlier attempt had no answer, then AlipayHK said the store was already circled: most \
         likely our own earlier call went through. Ask AlipayHK for the pmsLabel.",
    ),
    (
        "rejected",
        "Rejected",
        "The row breaks a rule and was never sent. Fix the row in the sheet (the reason names the \
         column) and run the sheet again.",
    ),
];

fn attention_section(
    h: &mut String,
    conn: &Connection,
    run: Option<i64>,
    c: &OutcomeCounts,
) -> anyhow::Result<()> {
    writeln!(h, "<h2>Rows that need a person</h2>")?;
    let totals = [
        c.failed_permanent,
        c.failed_transient,
        c.drifted,
        c.ambiguous,
        c.rejected,
    ];
    if totals.iter().all(|n| *n == 0) {
        writeln!(
            h,
            "<p id=\"attention-none\">None: every row is done or on its way.</p>"
        )?;
        return Ok(());
    }
    for ((id, title, todo), total) in KINDS.into_iter().zip(totals) {
        if total == 0 {
            continue;
        }
        writeln!(
            h,
            "<h3 id=\"{id}\">{title}: {total}</h3>\n<p class=\"todo\">{todo}</p>"
        )?;
        match id {
            "failed-permanent" => rows_table(
                h,
                &queries::attention_rows(conn, run, Attention::FailedPermanent, LIST_LIMIT)?,
            )?,
            "failed-transient" => rows_table(
                h,
                &queries::attention_rows(conn, run, Attention::FailedTransient, LIST_LIMIT)?,
            )?,
            "ambiguous" => rows_table(
                h,
                &queries::attention_rows(conn, run, Attention::Ambiguous, LIST_LIMIT)?,
            )?,
            "drifted" => drift_table(h, &queries::drift(conn, run, LIST_LIMIT)?)?,
            _ => rejects_table(h, &queries::rejects_limited(conn, run, LIST_LIMIT)?)?,
        }
        if total as usize > LIST_LIMIT {
            writeln!(
                h,
                "<p class=\"note\">The first {LIST_LIMIT} of {total}: \
                 <code>pms-onboard export</code> or <code>reconcile -o</code> lists them all.</p>"
            )?;
        }
    }
    Ok(())
}

fn rows_table(h: &mut String, rows: &[LedgerRow]) -> std::fmt::Result {
    writeln!(
        h,
        "<table><tr><th>file:line</th><th>store</th><th>mall group / mall</th><th>result</th>\
         <th>message</th></tr>"
    )?;
    for r in rows {
        writeln!(
            h,
            "<tr><td>{}:{}</td><td>{}<br>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.source_file),
            r.source_line,
            esc(&r.key),
            esc(&r.store_name),
            esc(&r.mall_group_label),
            esc(&r.mall_label),
            esc(&r.result_code),
            esc(&r.result_message)
        )?;
    }
    writeln!(h, "</table>")
}

fn drift_table(h: &mut String, rows: &[DriftRow]) -> std::fmt::Result {
    writeln!(
        h,
        "<table><tr><th>file:line</th><th>store</th><th>what changed</th></tr>"
    )?;
    for r in rows {
        writeln!(
            h,
            "<tr><td>{}:{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.source_file),
            r.source_line,
            esc(&r.key),
            esc(&r.detail)
        )?;
    }
    writeln!(h, "</table>")
}

fn rejects_table(h: &mut String, rows: &[Reject]) -> std::fmt::Result {
    writeln!(
        h,
        "<table><tr><th>file:line</th><th>column</th><th>value</th><th>reason</th></tr>"
    )?;
    for r in rows {
        writeln!(
            h,
            "<tr><td>{}:{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.file),
            r.line,
            esc(&r.column),
            esc(&r.value),
            esc(&r.reason)
        )?;
    }
    writeln!(h, "</table>")
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

/// One chart as an inline `<svg>` element.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Draw) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        area.fill(&WHITE)
            .and_then(|()| draw(&area))
            .and_then(|()| area.present())
            .map_err(|e| anyhow::anyhow!("cannot draw a chart: {e}"))?;
    }
    out.push('\n');
    Ok(out)
}

/// Done, failed and pending stacked per mall.
fn mall_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, malls: &[&MallCounts]) -> Draw {
    let top = malls.iter().map(|m| m.total()).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption("rows by mall: done, failed, pending", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(50)
        .build_cartesian_2d(0..malls.len(), 0..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(malls.len())
        .x_label_formatter(&|i| {
            malls
                .get(*i)
                .map(|m| m.mall_label.clone())
                .unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 10)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc("rows")
        .draw()?;
    let stacks = [
        (OK_COLOR, "done"),
        (FAIL_COLOR, "failed"),
        (PENDING_COLOR, "pending"),
    ];
    for (layer, (color, name)) in stacks.into_iter().enumerate() {
        chart
            .draw_series(malls.iter().enumerate().map(|(i, m)| {
                let parts = [m.done, m.failed, m.pending];
                let base: u64 = parts[..layer].iter().sum();
                Rectangle::new([(i, base), (i + 1, base + parts[layer])], color.filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

fn attempts_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, counts: &[(u64, u64)]) -> Draw {
    let most = counts.iter().map(|c| c.0).max().unwrap_or(1);
    let top = counts.iter().map(|c| c.1).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption("rows by number of attempts", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d((1..most + 1).into_segmented(), 0..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("attempts")
        .y_desc("rows")
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BAR_COLOR.filled())
            .margin(4)
            .data(counts.iter().copied()),
    )?;
    Ok(())
}

/// About 30 buckets of a width that reads well (1, 2 or 5 times a power of ten).
fn bucket_width(max: u64) -> u64 {
    let raw = (max / 30).max(1);
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= raw {
                return step * m;
            }
        }
        step *= 10;
    }
}

fn latency_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, sorted: &[u64]) -> Draw {
    let max = sorted.last().copied().unwrap_or(0);
    let width = bucket_width(max);
    let buckets = (max / width + 1) as usize;
    let mut counts = vec![0u64; buckets];
    for l in sorted {
        counts[(l / width) as usize] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption("answers by latency", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0..buckets as u64 * width, 0..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("milliseconds")
        .y_desc("answers")
        .draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, n)| {
        let lo = i as u64 * width;
        Rectangle::new([(lo, 0), (lo + width, *n)], BAR_COLOR.filled())
    }))?;
    Ok(())
}

/// `(seconds since the first request, requests per second)`, averaged over buckets so that a
/// long run stays a readable line. Seconds with no request count as zero.
fn throughput(per_second: &[(String, u64)]) -> Vec<(f64, f64)> {
    let parse = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
            .map(|t| t.and_utc().timestamp())
            .ok()
    };
    let seconds: Vec<(i64, u64)> = per_second
        .iter()
        .filter_map(|(s, n)| parse(s).map(|t| (t, *n)))
        .collect();
    let (Some(first), Some(last)) = (seconds.first(), seconds.last()) else {
        return Vec::new();
    };
    let span = (last.0 - first.0 + 1) as usize;
    let width = span.div_ceil(THROUGHPUT_POINTS).max(1);
    let mut buckets = vec![0u64; span.div_ceil(width)];
    for (t, n) in &seconds {
        buckets[(t - first.0) as usize / width] += n;
    }
    buckets
        .iter()
        .enumerate()
        .map(|(i, n)| ((i * width) as f64, *n as f64 / width as f64))
        .collect()
}

fn throughput_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, points: &[(f64, f64)]) -> Draw {
    let end = points.last().map_or(1.0, |p| p.0).max(1.0);
    let top = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("requests per second", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first request")
        .y_desc("requests / s")
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        BAR_COLOR.stroke_width(2),
    ))?;
    Ok(())
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
    fn buckets_read_well() {
        assert_eq!(bucket_width(0), 1);
        assert_eq!(bucket_width(45), 1);
        assert_eq!(bucket_width(60), 2);
        assert_eq!(bucket_width(120), 5);
        assert_eq!(bucket_width(3000), 100);
    }

    #[test]
    fn throughput_averages_and_fills_gaps() {
        let points = throughput(&[
            ("2026-01-01T00:00:00".to_owned(), 10),
            ("2026-01-01T00:00:02".to_owned(), 4),
        ]);
        assert_eq!(points, vec![(0.0, 10.0), (1.0, 0.0), (2.0, 4.0)]);
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
