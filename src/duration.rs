//! Durations as people write them in settings and read them in messages: `15`, `15s`, `500ms`,
//! `2m`, and lists of them (`10m,30m`).

use std::time::Duration;

/// Reads `15`, `15s`, `500ms`, `1.5s`, `2m` as a duration (a bare number is seconds); positive
/// and under a day.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number.trim().parse().ok()?;
    let secs = value * scale;
    (secs.is_finite() && secs > 0.0 && secs < 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// `10m,30m`: durations separated by commas (at most 10); empty or `none` for none.
pub fn parse_list(s: &str) -> Option<Vec<Duration>> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    let list = s.split(',').map(parse).collect::<Option<Vec<_>>>()?;
    (list.len() <= 10).then_some(list)
}

/// `15s`, `500ms`: the form [`parse`] reads back.
pub fn format(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// For a person: `0.1 ms`, `20 ms`, `2 s`, `2.5 s`, `4 min 10 s`, `1 h 0 min 2 s` (to the
/// nearest second from a minute on). The one formatter of durations people read; [`format`] is
/// the form a setting is written in.
pub fn human(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1000 {
        return format!("{} ms", micros as f64 / 1000.0);
    }
    if micros < 1_000_000 {
        return format!("{} ms", micros / 1000);
    }
    let secs = d.as_secs_f64().round() as u64;
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, _) if d.subsec_millis() == 0 => format!("{} s", d.as_secs()),
        (0, 0, _) => format!("{:.1} s", d.as_secs_f64()),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, s) => format!("{h} h {m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_users_write_them() {
        assert_eq!(parse("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("0"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_secs(15)), "15s");
        assert_eq!(human(Duration::from_micros(100)), "0.1 ms");
        assert_eq!(human(Duration::from_millis(300)), "300 ms");
        assert_eq!(human(Duration::from_secs(2)), "2 s");
        assert_eq!(human(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(human(Duration::from_secs(250)), "4 min 10 s");
        assert_eq!(human(Duration::from_secs(3602)), "1 h 0 min 2 s");
        assert_eq!(human(Duration::from_millis(3_599_700)), "1 h 0 min 0 s");
        assert_eq!(
            parse_list("10m, 30m"),
            Some(vec![Duration::from_secs(600), Duration::from_secs(1800)])
        );
        assert_eq!(parse_list("none"), Some(vec![]));
        assert_eq!(parse_list("10m,soon"), None);
    }
}
