//! Figures and simulated times for people, shared by the tables, the TUI and the report.

/// Print a line to stdout. A closed pipe (`simulate ... | head`) ends the output quietly
/// instead of panicking as `println!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
pub(crate) use say;

/// Seconds for people: `42.0s`, `12.3m`, `2.1h`.
pub fn secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1}s")
    } else if s < 7200.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// A simulated time's day (1 is the trace's first) and "hh:mm".
pub fn day_and_time(t_s: f64) -> (i64, String) {
    let t = t_s.max(0.0) as i64;
    (
        t / 86_400 + 1,
        format!("{:02}:{:02}", t % 86_400 / 3600, t % 3600 / 60),
    )
}

/// A simulated time as "day 3 14:05".
pub fn clock(t_s: f64) -> String {
    let (day, time) = day_and_time(t_s);
    format!("day {day} {time}")
}

/// "d3 14:05", for chart axes.
pub fn clock_short(t_s: f64) -> String {
    let (day, time) = day_and_time(t_s);
    format!("d{day} {time}")
}
