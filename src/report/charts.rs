//! The report's charts, as inline SVG written through maud (which escapes every text). Bars are
//! horizontal, one a line, with their labels and numbers as text beside them, so that they read
//! the same for 3 malls and for 3,000 (the first few, then one bar for all the others). The
//! throughput of a run is a line over a grid of round numbers.

use maud::{Markup, html};

use super::thousands;
use crate::ledger::queries::{Latency, MallCounts};

pub const OK_COLOR: &str = "#2e8b57";
pub const FAIL_COLOR: &str = "#c83c32";
pub const PENDING_COLOR: &str = "#aaaaaa";
pub const BAR_COLOR: &str = "#3c6eb4";

/// Malls drawn one by one (those with the most rows not done); the rest share one bar.
pub const TOP_MALLS: usize = 15;
/// Points in the throughput chart at most; longer runs are averaged over wider buckets.
const THROUGHPUT_POINTS: usize = 600;

/// The width of every chart, in SVG units (the page scales it down on a narrow screen).
const WIDTH: u32 = 960;
/// One bar's line, and the bar in it.
const LINE: u32 = 22;
const BAR: u32 = 14;
/// The title and the legend above the bars.
const TOP: u32 = 30;
/// Average width of a character of the 12-unit font, to size the label and note columns.
const CHAR: f64 = 7.6;

/// One horizontal bar: a label on its left, stacked parts, a note on its right.
pub struct Bar {
    pub label: String,
    pub parts: Vec<u64>,
    pub note: String,
}

/// How bars are scaled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Against the longest bar: the bars compare sizes.
    Absolute,
    /// Each bar full width: the bars compare shares.
    Shares,
}

/// Horizontal bars, the parts of each stacked in the colours of `legend`.
pub fn bars(title: &str, legend: &[(&str, &str)], bars: &[Bar], scale: Scale) -> Markup {
    let column = |texts: &mut dyn Iterator<Item = usize>, min: f64, max: f64| {
        (texts.max().unwrap_or(0) as f64 * CHAR).clamp(min, max)
    };
    let label_w = column(
        &mut bars.iter().map(|b| b.label.chars().count()),
        40.0,
        250.0,
    );
    let note_w = column(
        &mut bars.iter().map(|b| b.note.chars().count()),
        40.0,
        240.0,
    );
    let (x0, x1) = (label_w + 8.0, f64::from(WIDTH) - note_w - 8.0);
    let longest = bars.iter().map(|b| b.parts.iter().sum::<u64>()).max();
    let height = TOP + LINE * bars.len() as u32 + 6;
    // The legend, right-aligned on the title's line: each entry's x, from the right.
    let mut x = f64::from(WIDTH);
    let mut keys: Vec<(f64, &str, &str)> = legend
        .iter()
        .rev()
        .map(|(name, color)| {
            x -= name.chars().count() as f64 * CHAR + 26.0;
            (x, *name, *color)
        })
        .collect();
    keys.reverse();
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {height}"))
            width=(WIDTH) height=(height) role="img" aria-label=(title)
            font-family="system-ui, sans-serif" font-size="12" {
            text x="0" y="16" font-size="14" font-weight="bold" { (title) }
            @for (x, name, color) in &keys {
                rect x=(n1(*x)) y="6" width="12" height="12" fill=(color) {}
                text x=(n1(x + 16.0)) y="16" { (name) }
            }
            @for (i, bar) in bars.iter().enumerate() {
                @let y = TOP + LINE * i as u32;
                @let full = match scale {
                    Scale::Absolute => longest.unwrap_or(0),
                    Scale::Shares => bar.parts.iter().sum(),
                };
                @let (label, cut) = fit(&bar.label, (label_w / CHAR) as usize);
                text x=(n1(label_w)) y=(y + 15) text-anchor="end" {
                    (label)
                    @if cut { title { (bar.label) } }
                }
                @let (parts, end) = stacked(&bar.parts, legend, full, x0, x1);
                @for (at, w, color) in &parts {
                    rect x=(n1(*at)) y=(y + 4) width=(n1(*w)) height=(BAR) fill=(color) {}
                }
                @let note_x = match scale {
                    Scale::Absolute => end + 6.0,
                    Scale::Shares => x1 + 6.0,
                };
                text x=(n1(note_x)) y=(y + 15) { (bar.note) }
            }
        }
    }
}

/// Where each non-empty part of a bar starts, how wide it is and its colour; and where the bar
/// ends.
fn stacked<'a>(
    parts: &[u64],
    legend: &[(&str, &'a str)],
    full: u64,
    x0: f64,
    x1: f64,
) -> (Vec<(f64, f64, &'a str)>, f64) {
    let mut at = x0;
    let mut out = Vec::new();
    for (part, (_, color)) in parts.iter().zip(legend.iter().cycle()) {
        if *part == 0 || full == 0 {
            continue;
        }
        let w = (x1 - x0) * *part as f64 / full as f64;
        out.push((at, w.max(1.0), *color));
        at += w;
    }
    (out, at)
}

/// A coordinate as SVG takes it, to a tenth of a unit.
fn n1(v: f64) -> String {
    format!("{v:.1}")
}

/// `text` cut to `chars` characters with an ellipsis, and whether it was cut.
fn fit(text: &str, chars: usize) -> (String, bool) {
    if text.chars().count() <= chars {
        return (text.to_owned(), false);
    }
    let cut: String = text.chars().take(chars.saturating_sub(1)).collect();
    (format!("{cut}…"), true)
}

/// The malls with the most rows not done (then the largest), one bar each, and one bar for all
/// the others: done, failed and pending as shares of each.
pub fn mall_bars(malls: &[MallCounts]) -> Vec<Bar> {
    let mut order: Vec<&MallCounts> = malls.iter().collect();
    order.sort_by(|a, b| {
        (b.failed + b.pending)
            .cmp(&(a.failed + a.pending))
            .then(b.total().cmp(&a.total()))
    });
    let bar = |label: String, m: &MallCounts| {
        let not_done: Vec<String> = [(m.failed, "failed"), (m.pending, "pending")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{} {what}", thousands(*n)))
            .collect();
        Bar {
            note: match not_done.is_empty() {
                true => format!("{} rows, all done", thousands(m.total())),
                false => format!("{} rows: {}", thousands(m.total()), not_done.join(", ")),
            },
            label,
            parts: vec![m.done, m.failed, m.pending],
        }
    };
    let mut out: Vec<Bar> = order
        .iter()
        .take(TOP_MALLS)
        .map(|m| bar(format!("{} / {}", m.mall_group_label, m.mall_label), m))
        .collect();
    let rest = &order[order.len().min(TOP_MALLS)..];
    if !rest.is_empty() {
        let mut sum = MallCounts::default();
        for m in rest {
            sum.done += m.done;
            sum.failed += m.failed;
            sum.pending += m.pending;
        }
        out.push(bar(
            format!("the other {} malls", thousands(rest.len() as u64)),
            &sum,
        ));
    }
    out
}

/// `(attempts, rows)` as one bar per number of attempts.
pub fn attempt_bars(counts: &[(u64, u64)]) -> Vec<Bar> {
    counts
        .iter()
        .map(|(attempts, rows)| Bar {
            label: format!(
                "{attempts} attempt{}",
                if *attempts == 1 { "" } else { "s" }
            ),
            parts: vec![*rows],
            note: format!(
                "{} row{}",
                thousands(*rows),
                if *rows == 1 { "" } else { "s" }
            ),
        })
        .collect()
}

/// Answers by latency, in buckets of 1, 2 and 5 times a power of ten: from 0.1 ms when the
/// ledger has microseconds, from 1 ms when some answers are in whole milliseconds only.
pub fn latency_bars(latencies: &[Latency]) -> Vec<Bar> {
    let fine = !latencies.iter().any(|l| l.whole_ms && l.micros < 1000);
    let max = latencies.last().map_or(0, |l| l.micros);
    // Upper bounds, in microseconds, until one is above the slowest answer.
    let mut edges = Vec::new();
    let mut decade = if fine { 100 } else { 1000 };
    while edges.last().is_none_or(|e| *e <= max) {
        for m in [1, 2, 5] {
            edges.push(decade * m);
        }
        decade *= 10;
    }
    let mut counts = vec![0u64; edges.len()];
    for l in latencies {
        let i = edges.partition_point(|e| *e <= l.micros);
        counts[i.min(edges.len() - 1)] += l.answers;
    }
    let first = counts.iter().position(|n| *n > 0).unwrap_or(0);
    let last = counts.iter().rposition(|n| *n > 0).unwrap_or(0);
    (first..=last)
        .map(|i| Bar {
            label: match i {
                0 => format!("< {}", duration(edges[0])),
                _ => format!("{} – {}", duration(edges[i - 1]), duration(edges[i])),
            },
            parts: vec![counts[i]],
            note: thousands(counts[i]),
        })
        .collect()
}

/// A bucket edge: `0.1 ms`, `20 ms`, `2 s`.
fn duration(micros: u64) -> String {
    crate::duration::human(std::time::Duration::from_micros(micros))
}

/// `(seconds since the first request, requests per second)`, averaged over buckets so that a
/// long run stays a readable line. Seconds with no request count as zero.
pub fn throughput(per_second: &[(String, u64)]) -> Vec<(f64, f64)> {
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

/// Requests per second over the run, in minutes when the run took more than five: a line over
/// a grid of round numbers, each point marked when there are few.
pub fn throughput_chart(points: &[(f64, f64)]) -> Markup {
    const HEIGHT: f64 = 260.0;
    // The plot's corners: room on the left for the numbers and the axis' name, below for the
    // numbers and the other axis' name.
    let (left, right, top, bottom) = (70.0, f64::from(WIDTH) - 12.0, 12.0, HEIGHT - 45.0);
    let minutes = points.last().is_some_and(|p| p.0 > 300.0);
    let (unit, per) = if minutes {
        ("minutes", 60.0)
    } else {
        ("seconds", 1.0)
    };
    let points: Vec<(f64, f64)> = points.iter().map(|(t, r)| (t / per, *r)).collect();
    let end = points.last().map_or(1.0, |p| p.0).max(1.0 / per);
    let high = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let x = |v: f64| left + (right - left) * v / end;
    let y = |v: f64| bottom - (bottom - top) * v / high;
    let line: Vec<String> = points
        .iter()
        .map(|(t, r)| format!("{:.1},{:.1}", x(*t), y(*r)))
        .collect();
    let (x_decimals, y_decimals) = (usize::from(end < 5.0), usize::from(high < 5.0));
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            width=(WIDTH) height=(HEIGHT) role="img"
            aria-label=(format!("requests a second over the {unit} since the first request"))
            font-family="system-ui, sans-serif" font-size="12" {
            @for v in ticks(high) {
                line x1=(n1(left)) x2=(n1(right)) y1=(n1(y(v))) y2=(n1(y(v))) stroke="#e4e4e4" {}
                text x=(n1(left - 6.0)) y=(n1(y(v) + 4.0)) text-anchor="end" {
                    (format!("{v:.y_decimals$}"))
                }
            }
            @for v in ticks(end) {
                line x1=(n1(x(v))) x2=(n1(x(v))) y1=(n1(top)) y2=(n1(bottom)) stroke="#e4e4e4" {}
                text x=(n1(x(v))) y=(n1(bottom + 16.0)) text-anchor="middle" {
                    (format!("{v:.x_decimals$}"))
                }
            }
            rect x=(n1(left)) y=(n1(top)) width=(n1(right - left)) height=(n1(bottom - top))
                fill="none" stroke="#888" {}
            text x=(n1((left + right) / 2.0)) y=(n1(HEIGHT - 6.0)) text-anchor="middle" {
                (unit) " since the first request"
            }
            text transform=(format!("rotate(-90) translate({:.1} 16)", -(top + bottom) / 2.0))
                text-anchor="middle" { "requests a second" }
            polyline points=(line.join(" ")) fill="none" stroke=(BAR_COLOR) stroke-width="2" {}
            // A short run has few points: each is marked, so that one alone still shows.
            @if points.len() <= 60 {
                @for (t, r) in &points {
                    circle cx=(n1(x(*t))) cy=(n1(y(*r))) r="3" fill=(BAR_COLOR) {}
                }
            }
        }
    }
}

/// Round numbers from 0 to `max` (1, 2 or 5 times a power of ten apart), four to seven of them.
fn ticks(max: f64) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0];
    }
    let rough = max / 6.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|v| *v <= max * (1.0 + 1e-9))
        .take(50)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mall(label: &str, done: u64, failed: u64, pending: u64) -> MallCounts {
        MallCounts {
            mall_group_label: "1".into(),
            mall_label: label.into(),
            done,
            failed,
            pending,
        }
    }

    #[test]
    fn the_malls_with_most_rows_not_done_come_first_then_the_others_in_one_bar() {
        let mut malls: Vec<MallCounts> = (0..3000)
            .map(|i| mall(&format!("m{i}"), 100, 0, 0))
            .collect();
        malls[2500] = mall("late", 90, 3, 7);
        malls[7] = mall("big", 5000, 0, 0);
        let bars = mall_bars(&malls);
        assert_eq!(bars.len(), TOP_MALLS + 1);
        assert_eq!(bars[0].label, "1 / late");
        assert_eq!(bars[0].note, "100 rows: 3 failed, 7 pending");
        assert_eq!(bars[1].label, "1 / big");
        assert_eq!(bars[TOP_MALLS].label, "the other 2,985 malls");
        assert_eq!(bars[TOP_MALLS].parts, vec![298_500, 0, 0]);
        let few = mall_bars(&malls[..3]);
        assert_eq!(few.len(), 3);
    }

    #[test]
    fn latency_buckets_start_below_a_millisecond_when_the_ledger_has_microseconds() {
        let l = |micros, whole_ms, answers| Latency {
            micros,
            whole_ms,
            answers,
        };
        let fine = latency_bars(&[l(80, false, 5), l(450, false, 90), l(2_500, false, 1)]);
        let labels: Vec<&str> = fine.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "< 0.1 ms",
                "0.1 ms – 0.2 ms",
                "0.2 ms – 0.5 ms",
                "0.5 ms – 1 ms",
                "1 ms – 2 ms",
                "2 ms – 5 ms"
            ]
        );
        assert_eq!(fine[2].parts, vec![90]);
        // Whole milliseconds: 0 means under one.
        let coarse = latency_bars(&[l(0, true, 7), l(15_000_000, true, 1)]);
        assert_eq!(coarse[0].label, "< 1 ms");
        assert_eq!(coarse[0].parts, vec![7]);
        assert_eq!(coarse.last().unwrap().label, "10 s – 20 s");
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
    fn a_long_label_is_cut_and_kept_whole_in_its_title() {
        let svg = bars(
            "t <&>",
            &[("n", BAR_COLOR)],
            &[Bar {
                label: "x".repeat(100),
                parts: vec![1],
                note: "1".into(),
            }],
            Scale::Absolute,
        )
        .into_string();
        assert!(svg.contains(&format!("<title>{}</title>", "x".repeat(100))));
        assert!(svg.contains('…'));
        assert!(svg.contains(">t &lt;&amp;&gt;</text>"), "{svg}");
        assert!(!svg.contains("/>"), "every element closed in full: {svg}");
    }

    #[test]
    fn ticks_are_round_numbers_up_to_the_top() {
        assert_eq!(ticks(11.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let small: Vec<String> = ticks(1.1).iter().map(|v| format!("{v:.1}")).collect();
        assert_eq!(small, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(ticks(0.0), vec![0.0]);
        assert_eq!(ticks(f64::NAN), vec![0.0]);
    }

    #[test]
    fn the_throughput_is_a_line_with_its_points_marked() {
        let svg = throughput_chart(&throughput(&[
            ("2026-01-01T00:00:00".to_owned(), 10),
            ("2026-01-01T00:00:02".to_owned(), 4),
        ]))
        .into_string();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("<polyline points=\""), "{svg}");
        assert!(svg.contains(">seconds since the first request<"), "{svg}");
    }
}
