//! Samples, their percentiles and the table; the daemon's own figures from its log.

use super::*;

/// Latency samples of one method, in microseconds.
#[derive(Debug)]
pub(crate) struct Samples {
    pub(crate) label: String,
    pub(crate) micros: Vec<f64>,
}

impl Samples {
    pub(crate) fn new(label: impl Into<String>) -> Samples {
        Samples {
            label: label.into(),
            micros: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, d: Duration) {
        self.micros.push(d.as_secs_f64() * 1e6);
    }

    /// Nearest-rank percentile, in milliseconds.
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        let mut v = self.micros.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] / 1000.0
    }

    pub(crate) fn mean(&self) -> f64 {
        self.micros.iter().sum::<f64>() / self.micros.len() as f64 / 1000.0
    }
}

pub(crate) fn print_table(rows: &[&Samples]) {
    println!(
        "{:<44} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "method (ms)", "n", "p50", "p90", "p99", "mean", "max"
    );
    for s in rows {
        if s.micros.is_empty() {
            println!("{:<44} {:>5}", s.label, 0);
            continue;
        }
        println!(
            "{:<44} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            s.label,
            s.micros.len(),
            s.percentile(50.0),
            s.percentile(90.0),
            s.percentile(99.0),
            s.mean(),
            s.percentile(100.0)
        );
    }
}

/// The daemon's own timing of the attaches of the first run (one connection): `micros=N` of
/// its `attached` log lines, held ports and warm-up skipped.
pub(crate) fn daemon_side(log: &str, args: &Args) -> Samples {
    let mut s = Samples::new("  daemon side: build + journal (its log)");
    s.micros = log
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" attached"))
        .filter_map(|l| {
            let rest = l.split("micros=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .skip(args.held + args.warmup)
        .take(args.attaches)
        .collect();
    s
}

/// A log line without its colour codes (`ESC [ ... m`): the daemon's log is a file, but
/// tracing-subscriber colours it anyway.
pub(crate) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub(crate) fn gone_note(r: &Result<Duration, String>) -> String {
    match r {
        Ok(d) => format!("all gone {:.0} ms after the phase", d.as_secs_f64() * 1e3),
        Err(left) => format!("LEFT after {CLEANUP_DEADLINE:?}: {left}"),
    }
}

/// `name=N` of the daemon's log lines containing `marker`, warm-up skipped.
pub(crate) fn log_field(log: &str, marker: &str, name: &str, args: &Args, label: &str) -> Samples {
    let mut s = Samples::new(label);
    let key = format!("{name}=");
    s.micros = log
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = l.split(key.as_str()).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .skip(args.warmup)
        .take(args.attaches)
        .collect();
    s
}
