//! Rendering a [`Report`]: the live line, the human summary and the JSON object.
//!
//! The rule this module enforces: the JSON has stable snake_case keys, one object on one line,
//! and every number in it is finite or `null` (an unknown value is `null`, never a made-up 0).
//! Times are milliseconds with microsecond precision. The keys, in order:
//!
//! `stream_id` (hex string or null), `received`, `lost`, `duplicates`, `reordered`,
//! `longest_silence_ms`, `jitter_ms`, `owd_min_ms`, `owd_avg_ms`, `owd_max_ms`, `r_factor`,
//! `mos`, `sent`, `first_seq`, `last_seq`, `duration_ms`, `non_probe_datagrams`,
//! `other_stream_packets`, `stale`, `open_silence_ms`, and `gaps`: a list of
//! `{"start_ms", "length_ms"}`, longest first, `start_ms` counted from the first expected packet.

use std::fmt::Write as _;

use super::stats::Report;

/// The one-line live status, printed once a second.
pub fn live_line(r: &Report, elapsed_s: f64, expect_interval_ms: f64) -> String {
    let mut s = format!("probe recv {elapsed_s:6.1} s: ");
    if r.stream_id.is_none() {
        let _ = write!(
            s,
            "waiting for probe packets (non-probe datagrams {})",
            r.non_probe_datagrams
        );
        return s;
    }
    let _ = write!(
        s,
        "received {}, lost {} ({:.1} %), longest silence {}",
        r.received,
        r.lost,
        loss_pct(r),
        opt_ms(r.longest_silence_ms, 1)
    );
    if let Some(open) = r.open_silence_ms.filter(|&o| o > 3.0 * expect_interval_ms) {
        let _ = write!(s, ", silent for {open:.0} ms");
    }
    if r.sent.is_some() {
        s.push_str(", end of stream");
    }
    s
}

/// The human summary for stderr, several lines, no trailing newline.
pub fn summary(r: &Report, expect_pps: u32) -> String {
    let Some(id) = r.stream_id else {
        return format!(
            "probe recv: no probe packets received (non-probe datagrams {})",
            r.non_probe_datagrams
        );
    };
    let lines = [
        format!(
            "probe recv: summary of stream {id:016x} over {:.3} s",
            r.duration_ms / 1e3
        ),
        format!("  packets  {}", packets_line(r, expect_pps)),
        format!("  silence  {}", silence_line(r)),
        format!("  jitter   {}", opt_ms(r.jitter_ms, 3)),
        format!("  delay    {}", delay_line(r)),
        format!("  quality  {}", quality_line(r)),
        format!(
            "  other    non-probe datagrams {}, other streams {}, stale {}",
            r.non_probe_datagrams, r.other_stream, r.stale
        ),
    ];
    lines.join("\n")
}

fn packets_line(r: &Report, expect_pps: u32) -> String {
    let sent = r
        .sent
        .map_or("sent unknown".into(), |n| format!("{n} sent"));
    let mut s = format!(
        "received {} ({sent}), lost {} ({:.2} %), duplicates {}, reordered {}",
        r.received,
        r.lost,
        loss_pct(r),
        r.duplicates,
        r.reordered
    );
    if r.duration_ms > 0.0 {
        let rate = r.received as f64 * 1e3 / r.duration_ms;
        let _ = write!(s, "; {rate:.1} packets/s (expected {expect_pps})");
    }
    s
}

fn silence_line(r: &Report) -> String {
    let mut s = format!("longest {}", opt_ms(r.longest_silence_ms, 3));
    if let Some(open) = r.open_silence_ms.filter(|_| r.sent.is_none()) {
        let _ = write!(s, " (no end marker; silent for {open:.3} ms at the end)");
    }
    let top: Vec<String> = (r.gaps.iter().take(5))
        .map(|g| format!("{:.1} ms at {:.1} ms", g.length_ms, g.start_ms))
        .collect();
    if !top.is_empty() {
        let _ = write!(s, "; longest: {}", top.join(", "));
    }
    s
}

fn delay_line(r: &Report) -> String {
    match r.owd {
        Some(o) => format!(
            "one-way min/avg/max {:.3}/{:.3}/{:.3} ms",
            o.min_ms, o.avg_ms, o.max_ms
        ),
        None => "one-way unknown (clocks disagree or no samples)".into(),
    }
}

fn quality_line(r: &Report) -> String {
    let Some(q) = r.quality else {
        return "unknown (no media packet received)".into();
    };
    let assumption = if r.owd.is_none() {
        ", network delay unknown and left out"
    } else {
        ""
    };
    format!(
        "R {:.1}, MOS {:.2} (E-model, G.711 with PLC; loss {:.2} %, delay {:.1} ms{assumption})",
        q.r, q.mos, q.loss_pct, q.delay_ms
    )
}

/// The JSON object (one line, no trailing newline).
pub fn json(r: &Report) -> String {
    let mut o = JsonObject::new();
    o.raw(
        "stream_id",
        &r.stream_id
            .map_or("null".into(), |id| quote(&format!("{id:016x}"))),
    );
    o.uint("received", Some(r.received));
    o.uint("lost", Some(r.lost));
    o.uint("duplicates", Some(r.duplicates));
    o.uint("reordered", Some(r.reordered));
    o.num("longest_silence_ms", r.longest_silence_ms, 3);
    o.num("jitter_ms", r.jitter_ms, 3);
    o.num("owd_min_ms", r.owd.map(|x| x.min_ms), 3);
    o.num("owd_avg_ms", r.owd.map(|x| x.avg_ms), 3);
    o.num("owd_max_ms", r.owd.map(|x| x.max_ms), 3);
    o.num("r_factor", r.quality.map(|q| q.r), 2);
    o.num("mos", r.quality.map(|q| q.mos), 2);
    o.uint("sent", r.sent);
    o.uint("first_seq", r.first_seq);
    o.uint("last_seq", r.last_seq);
    o.num("duration_ms", Some(r.duration_ms), 3);
    o.uint("non_probe_datagrams", Some(r.non_probe_datagrams));
    o.uint("other_stream_packets", Some(r.other_stream));
    o.uint("stale", Some(r.stale));
    o.num("open_silence_ms", r.open_silence_ms, 3);
    let gaps: Vec<String> = r
        .gaps
        .iter()
        .map(|g| {
            let mut go = JsonObject::new();
            go.num("start_ms", Some(g.start_ms), 3);
            go.num("length_ms", Some(g.length_ms), 3);
            go.finish()
        })
        .collect();
    o.raw("gaps", &format!("[{}]", gaps.join(",")));
    o.finish()
}

fn loss_pct(r: &Report) -> f64 {
    let expected = r.received + r.lost;
    if expected == 0 {
        0.0
    } else {
        r.lost as f64 * 100.0 / expected as f64
    }
}

fn opt_ms(v: Option<f64>, decimals: usize) -> String {
    v.map_or("unknown".into(), |v| format!("{v:.decimals$} ms"))
}

/// A JSON object built key by key. Keys are written as given (callers pass snake_case
/// literals); values are already-rendered JSON.
struct JsonObject(String);

impl JsonObject {
    fn new() -> Self {
        JsonObject(String::from("{"))
    }

    fn raw(&mut self, key: &str, value: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&quote(key));
        self.0.push(':');
        self.0.push_str(value);
    }

    fn uint(&mut self, key: &str, v: Option<u64>) {
        self.raw(key, &v.map_or("null".into(), |v| v.to_string()));
    }

    /// A finite number with `decimals` places; `null` when unknown or not finite.
    fn num(&mut self, key: &str, v: Option<f64>, decimals: usize) {
        let text = match v {
            Some(v) if v.is_finite() => format!("{v:.decimals$}"),
            _ => "null".into(),
        };
        self.raw(key, &text);
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::stats::{GapReport, Owd, Report};

    fn empty() -> Report {
        Report {
            stream_id: None,
            received: 0,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            stale: 0,
            other_stream: 0,
            non_probe_datagrams: 2,
            sent: None,
            first_seq: None,
            last_seq: None,
            longest_silence_ms: None,
            open_silence_ms: None,
            jitter_ms: None,
            owd: None,
            quality: None,
            duration_ms: 0.0,
            gaps: vec![],
        }
    }

    fn full() -> Report {
        Report {
            stream_id: Some(0xab),
            received: 49,
            lost: 1,
            sent: Some(50),
            first_seq: Some(0),
            last_seq: Some(49),
            longest_silence_ms: Some(40.0005),
            jitter_ms: Some(f64::NAN),
            owd: Some(Owd {
                min_ms: 0.1,
                avg_ms: 0.2,
                max_ms: 0.3,
            }),
            quality: Some(crate::probe::quality::estimate(0.02, Some(0.2), 0.0)),
            duration_ms: 1000.0,
            gaps: vec![GapReport {
                start_ms: 480.0,
                length_ms: 40.0005,
            }],
            ..empty()
        }
    }

    #[test]
    fn json_has_every_key_and_nulls_for_unknowns() {
        let j = json(&empty());
        for key in [
            "received",
            "lost",
            "duplicates",
            "reordered",
            "longest_silence_ms",
            "jitter_ms",
            "owd_min_ms",
            "owd_avg_ms",
            "owd_max_ms",
            "r_factor",
            "mos",
            "sent",
            "first_seq",
            "last_seq",
            "duration_ms",
            "non_probe_datagrams",
            "gaps",
        ] {
            assert!(j.contains(&format!("\"{key}\":")), "{key} missing in {j}");
        }
        assert!(j.contains("\"owd_avg_ms\":null") && j.contains("\"sent\":null"));
        assert!(j.contains("\"gaps\":[]") && !j.contains('\n'));
    }

    #[test]
    fn json_numbers_are_finite_and_rounded_to_microseconds() {
        let j = json(&full());
        assert!(
            j.contains("\"jitter_ms\":null"),
            "NaN must become null: {j}"
        );
        assert!(j.contains("\"longest_silence_ms\":40.001"), "{j}");
        assert!(j.contains("\"gaps\":[{\"start_ms\":480.000,\"length_ms\":40.001}]"));
        assert!(j.contains("\"stream_id\":\"00000000000000ab\""));
    }

    #[test]
    fn json_parses_with_python_when_available() {
        for j in [json(&empty()), json(&full())] {
            match crate::probe::tests_support::python_json_ok(&j) {
                Some(ok) => assert!(ok, "python3 rejected {j}"),
                None => eprintln!("python3 not found; JSON syntax not checked by python"),
            }
        }
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn human_lines_mention_the_numbers() {
        let live = live_line(&full(), 3.0, 20.0);
        assert!(live.contains("received 49, lost 1 (2.0 %), longest silence 40.0 ms"));
        let waiting = live_line(&empty(), 1.0, 20.0);
        assert!(waiting.contains("waiting for probe packets"));
        let s = summary(&full(), 50);
        assert!(s.contains("received 49 (50 sent), lost 1 (2.00 %)"), "{s}");
        assert!(s.contains("MOS"), "{s}");
        assert!(summary(&empty(), 50).contains("no probe packets received"));
    }
}
