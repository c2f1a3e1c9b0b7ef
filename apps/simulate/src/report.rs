//! `--report FILE`: the run's charts and summary as one self-contained file to attach to a
//! design review: HTML with inline SVG, or a lone SVG. No scripts, fonts or links to fetch.
//!
//! Every summary figure carries `data-key` (the headless JSON's field name) and `data-value`
//! (the JSON's exact number), so a reader or a test can match it to `--headless --format json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use provisioner_sim::{Sample, SimReport};

use crate::cli::Args;
use crate::compare::{CompareRow, compare_runs};
use crate::controls::{Control, values};
use crate::format::{clock, secs};
use crate::headless::{print, verdict as exit_verdict};
use crate::setup::{CliError, Setup, exit_code, sample_every, setup, simulate, trace};

const BUSY: &str = "#2e7d32";
const IDLE: &str = "#f9a825";
const BOOTING: &str = "#1565c0";
const STOPPED: &str = "#c62828";
const QUEUED: &str = "#ef6c00";
const FRONT: &str = "#8e24aa";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Svg,
}

/// Everything the report shows.
#[derive(Debug)]
struct Document<'a> {
    workload: &'a str,
    setup: &'a Setup,
    report: &'a SimReport,
    compare: &'a [CompareRow],
}

pub fn main(args: &Args, path: &Path) -> ExitCode {
    exit_code(write_report(args, path).and_then(|(report, workload)| {
        if args.headless {
            print_headless(args, &workload, &report)?;
        }
        eprintln!(
            "wrote {}: {} policy, p95 wait {}, {:.1} VM-hours",
            path.display(),
            report.policy,
            secs(report.wait_p95_s),
            report.vm_hours
        );
        Ok(exit_verdict(&report))
    }))
}

/// What `--headless` prints without `--report`, so the flag only adds the file.
fn print_headless(args: &Args, workload: &str, report: &SimReport) -> Result<(), CliError> {
    let mut report = report.clone();
    if args.sample_every.is_none() {
        report.samples.clear();
    }
    print(args.format, workload, &report)
}

fn format_of(path: &Path) -> Result<Format, CliError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => Ok(Format::Html),
        Some("svg") => Ok(Format::Svg),
        _ => Err(CliError::Output(format!(
            "--report {}: the file name must end in .html or .svg",
            path.display()
        ))),
    }
}

/// Run, write the file, and give back the run and the workload's description.
fn write_report(args: &Args, path: &Path) -> Result<(SimReport, String), CliError> {
    let format = format_of(path)?;
    let (trace, workload) = trace(args)?;
    let mut setup = setup(args)?;
    if setup.options.sample_every.is_none() {
        setup.options.sample_every = Some(sample_every(&trace));
    }
    let report = simulate(&trace, &setup)?;
    let compare = compare_runs(&trace, &setup, &report)?;
    let doc = Document {
        workload: &workload,
        setup: &setup,
        report: &report,
        compare: &compare,
    };
    let text = match format {
        Format::Html => html(&doc),
        Format::Svg => svg(&doc),
    };
    std::fs::write(path, text).map_err(|e| CliError::Output(format!("{}: {e}", path.display())))?;
    Ok((report, workload))
}

/// Text safe inside XML elements and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A number exactly as the headless JSON writes it.
fn json_number(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "null".to_owned())
}

/// The summary rows: JSON field, label, value, and the value for people.
fn summary(r: &SimReport) -> Vec<(&'static str, &'static str, String, String)> {
    let n = |key, label, v: u64| (key, label, v.to_string(), v.to_string());
    let f = |key, label, v: f64| (key, label, json_number(v), format!("{v:.1}"));
    vec![
        n("jobs", "jobs", r.jobs),
        n("jobs_completed", "jobs completed", r.jobs_completed),
        f("wait_p50_s", "wait p50 (s)", r.wait_p50_s),
        f("wait_p95_s", "wait p95 (s)", r.wait_p95_s),
        f("wait_p99_s", "wait p99 (s)", r.wait_p99_s),
        f("wait_max_s", "wait max (s)", r.wait_max_s),
        f("wait_mean_s", "wait mean (s)", r.wait_mean_s),
        f("vm_hours", "VM-hours (powered on)", r.vm_hours),
        f("busy_vm_hours", "busy VM-hours", r.busy_vm_hours),
        f("idle_vm_hours", "idle VM-hours", r.idle_vm_hours),
        f("boot_vm_hours", "booting VM-hours", r.boot_vm_hours),
        f(
            "stopped_vm_hours",
            "stopped VM-hours (powered off, not counted above)",
            r.stopped_vm_hours,
        ),
        n("vms_created", "VMs created", r.vms_created),
        n("peak_vms", "peak VMs on", u64::from(r.peak_vms)),
        n("events", "events simulated", r.events),
        n(
            "controller_cycles",
            "controller cycles",
            r.controller_cycles,
        ),
        (
            "sim_seconds",
            "simulated seconds",
            json_number(r.sim_seconds),
            format!("{:.0}", r.sim_seconds),
        ),
    ]
}

fn title(doc: &Document<'_>) -> String {
    format!(
        "Runner provisioner simulation: {} policy",
        doc.report.policy
    )
}

fn options_line(setup: &Setup) -> String {
    let o = &setup.options;
    format!(
        "boot time {}, poll interval {}, API latency {}, seed {}, faults api={} k8s={} start={} restart={}",
        o.boot_time,
        o.poll_interval,
        o.api_latency,
        o.seed,
        o.faults.api,
        o.faults.k8s,
        o.faults.start,
        o.faults.restart
    )
}

fn verdict(r: &SimReport) -> String {
    if r.is_ok() {
        "every invariant held (no job lost, no busy VM deleted, pool within maxReplicas)".to_owned()
    } else {
        format!(
            "{} invariants BROKEN: {}",
            r.invariant_violations.len(),
            r.invariant_violations.join("; ")
        )
    }
}

// ---- HTML ----

fn html(doc: &Document<'_>) -> String {
    let r = doc.report;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>\nbody{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}}\ntable{{border-collapse:collapse;margin:0.5em 0 1.5em}}\ntd,th{{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left}}\ntd.n{{text-align:right;font-variant-numeric:tabular-nums}}\n.bad{{color:#c62828;font-weight:bold}}\nsvg{{display:block;margin:0.5em 0 1.5em}}\n</style>\n</head>\n<body>\n",
        esc(&title(doc))
    );
    let _ = writeln!(o, "<h1>{}</h1>", esc(&title(doc)));
    let _ = writeln!(
        o,
        "<p>{}<br/>{}</p>",
        esc(doc.workload),
        esc(&options_line(doc.setup))
    );
    let class = if r.is_ok() { "" } else { " class=\"bad\"" };
    let _ = writeln!(o, "<p{class}>{}</p>", esc(&verdict(r)));
    o.push_str("<h2>Policy</h2>\n<table id=\"policy\">\n");
    for (c, v) in Control::ALL.iter().zip(values(doc.setup)) {
        let _ = writeln!(
            o,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(c.label()),
            esc(&v)
        );
    }
    o.push_str("</table>\n<h2>Summary</h2>\n<table id=\"summary\">\n");
    for (key, label, value, shown) in summary(r) {
        let _ = writeln!(
            o,
            "<tr><th>{}</th><td class=\"n\" data-key=\"{key}\" data-value=\"{value}\">{}</td></tr>",
            esc(label),
            esc(&shown)
        );
    }
    o.push_str("</table>\n");
    if r.classes.len() > 1 {
        o.push_str("<h2>Per resource class</h2>\n<table id=\"classes\">\n<tr><th>class</th><th>jobs</th><th>p50 s</th><th>p95 s</th><th>p99 s</th><th>VM-hours</th><th>idle VM-hours</th><th>peak</th></tr>\n");
        for c in &r.classes {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td></tr>",
                esc(&c.class),
                c.jobs,
                c.wait_p50_s,
                c.wait_p95_s,
                c.wait_p99_s,
                c.vm_hours,
                c.idle_vm_hours,
                c.peak_vms
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h2>Over time</h2>\n");
    o.push_str(&jobs_chart(r, 0.0, 0.0));
    o.push_str(&vms_chart(r, 0.0, 0.0));
    o.push_str("<h2>Job waits</h2>\n");
    o.push_str(&waits_chart(doc, 0.0, 0.0));
    o.push_str("<h2>VM-hours</h2>\n");
    o.push_str(&hours_chart(doc, 0.0, 0.0));
    o.push_str("<h2>Against the reference policies</h2>\n<p>Same trace, same knobs. The oracle knows every arrival in advance: a bound, not a policy. Points on the Pareto front (★) are beaten by no other on both VM-hours and p95 wait.");
    if let Some(name) = doc
        .setup
        .advised
        .as_ref()
        .and_then(|a| a.config_name.as_ref())
    {
        let _ = write!(
            o,
            " The advised row is the policy in {}, written by <code>simulate advise</code>, replayed on this trace as <code>--config</code> replays it.",
            esc(name)
        );
    }
    o.push_str("</p>\n");
    o.push_str(&scatter(doc.compare, 0.0, 0.0));
    o.push_str("<table id=\"compare\">\n<tr><th>policy</th><th>p50 wait s</th><th>p95 wait s</th><th>p99 wait s</th><th>VM-hours</th><th>idle VM-hours</th><th>Pareto front</th></tr>\n");
    for row in doc.compare {
        let p = &row.point;
        let _ = write!(
            o,
            "<tr data-policy=\"{}\"><td>{}</td>",
            esc(&row.name),
            esc(&row.name)
        );
        for (key, v) in [
            ("wait_p50_s", p.wait_p50_s),
            ("wait_p95_s", p.wait_p95_s),
            ("wait_p99_s", p.wait_p99_s),
            ("vm_hours", p.vm_hours),
            ("idle_vm_hours", p.idle_vm_hours),
        ] {
            let _ = write!(
                o,
                "<td class=\"n\" data-compare=\"{key}\" data-value=\"{}\">{v:.1}</td>",
                json_number(v)
            );
        }
        let _ = writeln!(o, "<td>{}</td></tr>", row.front());
    }
    o.push_str("</table>\n");
    if !r.worst_waits.is_empty() {
        o.push_str("<h2>Longest waits</h2>\n<table id=\"worst\">\n<tr><th>waited</th><th>submitted</th><th>runs for</th><th>class</th></tr>\n");
        for w in &r.worst_waits {
            let _ = writeln!(
                o,
                "<tr><td class=\"n\">{:.1} s</td><td>{}</td><td class=\"n\">{:.0} s</td><td>{}</td></tr>",
                w.wait_s,
                esc(&clock(w.arrival_s)),
                w.duration_s,
                esc(&w.class)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("</body>\n</html>\n");
    o
}

// ---- SVG ----

const WIDTH: f64 = 900.0;
const CHART_H: f64 = 260.0;

/// One SVG: the title and summary as text, then the charts stacked.
fn svg(doc: &Document<'_>) -> String {
    let r = doc.report;
    let rows = summary(r);
    let header_h = 130.0 + rows.len() as f64 * 18.0;
    let total = header_h + 5.0 * (CHART_H + 20.0);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{total}\" viewBox=\"0 0 {WIDTH} {total}\" font-family=\"system-ui,sans-serif\" font-size=\"13\">"
    );
    let _ = writeln!(
        o,
        "<rect width=\"{WIDTH}\" height=\"{total}\" fill=\"#fff\"/>\n<text x=\"20\" y=\"30\" font-size=\"20\">{}</text>",
        esc(&title(doc))
    );
    let _ = writeln!(
        o,
        "<text x=\"20\" y=\"52\">{}</text>\n<text x=\"20\" y=\"70\">{}</text>\n<text x=\"20\" y=\"88\"{}>{}</text>",
        esc(doc.workload),
        esc(&options_line(doc.setup)),
        if r.is_ok() { "" } else { " fill=\"#c62828\"" },
        esc(&verdict(r))
    );
    let policy: Vec<String> = Control::ALL
        .iter()
        .zip(values(doc.setup))
        .map(|(c, v)| format!("{} {v}", c.label()))
        .collect();
    let half = policy.len().div_ceil(2);
    let _ = writeln!(
        o,
        "<text x=\"20\" y=\"106\">controls: {}</text>\n<text x=\"20\" y=\"124\">{}</text>",
        esc(&policy[..half].join(", ")),
        esc(&policy[half..].join(", "))
    );
    for (i, (key, label, value, shown)) in rows.iter().enumerate() {
        let y = 146.0 + i as f64 * 18.0;
        let _ = writeln!(
            o,
            "<text x=\"20\" y=\"{y}\">{}</text><text x=\"420\" y=\"{y}\" text-anchor=\"end\" data-key=\"{key}\" data-value=\"{value}\">{}</text>",
            esc(label),
            esc(shown)
        );
    }
    let step = CHART_H + 20.0;
    o.push_str(&jobs_chart(r, 0.0, header_h));
    o.push_str(&vms_chart(r, 0.0, header_h + step));
    o.push_str(&waits_chart(doc, 0.0, header_h + 2.0 * step));
    o.push_str(&hours_chart(doc, 0.0, header_h + 3.0 * step));
    o.push_str(&scatter(doc.compare, 0.0, header_h + 4.0 * step));
    o.push_str("</svg>\n");
    o
}

// ---- charts (each an <svg> element, placed at x, y when nested in the lone SVG) ----

const LEFT: f64 = 70.0;
const RIGHT: f64 = 45.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

/// A round number at or above `v` (1, 2 or 5 times a power of ten).
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v * 0.999_999)
        .unwrap_or(10.0 * mag)
}

fn open_chart(title: &str, x: f64, y: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" x=\"{x}\" y=\"{y}\" width=\"{WIDTH}\" height=\"{CHART_H}\" viewBox=\"0 0 {WIDTH} {CHART_H}\" font-family=\"system-ui,sans-serif\" font-size=\"12\">\n<text x=\"{LEFT}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    )
}

/// Axes with y ticks at 0, half and the top; `x_ticks` are (value, label).
fn axes(
    o: &mut String,
    y_max: f64,
    y_unit: &str,
    x_ticks: &[(f64, String)],
    (x_min, x_max): (f64, f64),
) {
    let (w, h) = (WIDTH - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
    let _ = writeln!(
        o,
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#888\"/>",
        TOP + h,
        LEFT + w,
        TOP + h,
        TOP + h
    );
    for frac in [0.0, 0.5, 1.0] {
        let yy = TOP + h - frac * h;
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + w,
            LEFT - 6.0,
            yy + 4.0,
            esc(&format!("{}{y_unit}", trim(frac * y_max)))
        );
    }
    for (v, label) in x_ticks {
        let xx = LEFT + (v - x_min) / (x_max - x_min).max(1e-9) * w;
        let _ = writeln!(
            o,
            "<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + h + 18.0,
            esc(label)
        );
    }
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn legend(o: &mut String, items: &[(&str, &str)]) {
    let mut x = WIDTH - RIGHT;
    for (name, color) in items.iter().rev() {
        x -= 14.0 + 7.0 * name.chars().count() as f64 + 16.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"10\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"19\">{}</text>",
            x + 14.0,
            esc(name)
        );
    }
}

/// Time ticks over `[0, span_s]`: days when the run is long, hours otherwise.
fn time_ticks(span_s: f64) -> Vec<(f64, String)> {
    let (step, label): (f64, fn(f64) -> String) = if span_s > 2.0 * 86_400.0 {
        let days = (span_s / 86_400.0 / 10.0).ceil().max(1.0);
        (days * 86_400.0, |t| {
            format!("day {:.0}", t / 86_400.0 + 1.0)
        })
    } else {
        let hours = (span_s / 3600.0 / 10.0).ceil().max(1.0);
        (hours * 3600.0, |t| format!("{:.0}h", t / 3600.0))
    };
    let mut ticks = Vec::new();
    let mut t = 0.0;
    while t <= span_s {
        ticks.push((t, label(t)));
        t += step;
    }
    ticks
}

/// A chart line: name, colour and the value of a sample.
type Series = (&'static str, &'static str, fn(&Sample) -> f64);

/// A stacked band: colour, the sample's bottom and top.
type Band = (&'static str, fn(&Sample) -> u32, fn(&Sample) -> u32);

fn lines_chart(title: &str, samples: &[Sample], series: &[Series], x: f64, y: f64) -> String {
    let mut o = open_chart(title, x, y);
    let span = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let top = series
        .iter()
        .flat_map(|(_, _, f)| samples.iter().map(f))
        .fold(0.0, f64::max);
    let y_max = nice_ceil(top.max(1.0));
    axes(&mut o, y_max, "", &time_ticks(span), (0.0, span));
    let (w, h) = (WIDTH - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
    for (_, color, f) in series {
        let mut points = String::new();
        for s in samples {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                LEFT + s.t_s / span * w,
                TOP + h - f(s) / y_max * h
            );
        }
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" points=\"{}\"/>",
            points.trim_end()
        );
    }
    let items: Vec<(&str, &str)> = series.iter().map(|(n, c, _)| (*n, *c)).collect();
    legend(&mut o, &items);
    if samples.is_empty() {
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no samples</text>",
            LEFT + w / 2.0,
            TOP + h / 2.0
        );
    }
    o.push_str("</svg>\n");
    o
}

fn jobs_chart(r: &SimReport, x: f64, y: f64) -> String {
    lines_chart(
        "Jobs: queued (unclaimed) and running",
        &r.samples,
        &[
            ("queued", QUEUED, |s| f64::from(s.unclaimed)),
            ("running", BUSY, |s| f64::from(s.running_jobs)),
        ],
        x,
        y,
    )
}

/// Powered-on VMs stacked (busy, idle, booting: the height is the VMs on), stopped VMs as a
/// line.
fn vms_chart(r: &SimReport, x: f64, y: f64) -> String {
    let samples = &r.samples;
    let mut o = open_chart(
        "VMs by state (stacked: busy, idle, booting; stopped as a line)",
        x,
        y,
    );
    let span = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let top = samples
        .iter()
        .map(|s| f64::from((s.vms_busy + s.vms_idle + s.vms_booting).max(s.vms_stopped)))
        .fold(0.0, f64::max);
    let y_max = nice_ceil(top.max(1.0));
    axes(&mut o, y_max, "", &time_ticks(span), (0.0, span));
    let (w, h) = (WIDTH - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
    let px = |s: &Sample| LEFT + s.t_s / span * w;
    let py = |v: u32| TOP + h - f64::from(v) / y_max * h;
    let layers: [Band; 3] = [
        (BUSY, |_| 0, |s| s.vms_busy),
        (IDLE, |s| s.vms_busy, |s| s.vms_busy + s.vms_idle),
        (
            BOOTING,
            |s| s.vms_busy + s.vms_idle,
            |s| s.vms_busy + s.vms_idle + s.vms_booting,
        ),
    ];
    for (color, below, above) in layers {
        let mut points = String::new();
        for s in samples {
            let _ = write!(points, "{:.1},{:.1} ", px(s), py(above(s)));
        }
        for s in samples.iter().rev() {
            let _ = write!(points, "{:.1},{:.1} ", px(s), py(below(s)));
        }
        let _ = writeln!(
            o,
            "<polygon fill=\"{color}\" stroke=\"none\" points=\"{}\"/>",
            points.trim_end()
        );
    }
    let stopped: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.1},{:.1}", px(s), py(s.vms_stopped)))
        .collect();
    let _ = writeln!(
        o,
        "<polyline fill=\"none\" stroke=\"{STOPPED}\" stroke-width=\"1.2\" points=\"{}\"/>",
        stopped.join(" ")
    );
    legend(
        &mut o,
        &[
            ("busy", BUSY),
            ("idle", IDLE),
            ("booting", BOOTING),
            ("stopped", STOPPED),
        ],
    );
    o.push_str("</svg>\n");
    o
}

/// Horizontal bars, one group per policy; `parts` are stacked (or side by side when
/// `stacked` is false, each on its own row).
fn bars_chart(
    title: &str,
    rows: &[(String, Vec<f64>)],
    parts: &[(&str, &str)],
    unit: &str,
    stacked: bool,
    x: f64,
    y: f64,
) -> String {
    let mut o = open_chart(title, x, y);
    let label_w = 170.0;
    let (w, h) = (WIDTH - label_w - RIGHT - 70.0, CHART_H - TOP - 10.0);
    let top = rows
        .iter()
        .map(|(_, v)| {
            if stacked {
                v.iter().sum::<f64>()
            } else {
                v.iter().copied().fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max)
        .max(1e-9);
    let lines_per_row = if stacked { 1 } else { parts.len() };
    let slot = h / (rows.len() * lines_per_row).max(1) as f64;
    let bar = (slot * 0.8).min(22.0);
    for (i, (name, values)) in rows.iter().enumerate() {
        let row_y = TOP + (i * lines_per_row) as f64 * slot;
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            row_y + bar * 0.75,
            esc(name)
        );
        let mut at = label_w;
        for (j, (v, (_, color))) in values.iter().zip(parts).enumerate() {
            let len = v / top * w;
            let by = if stacked {
                row_y
            } else {
                row_y + j as f64 * slot
            };
            let bx = if stacked { at } else { label_w };
            let _ = writeln!(
                o,
                "<rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{len:.1}\" height=\"{bar:.1}\" fill=\"{color}\"/>",
            );
            if !stacked {
                let _ = writeln!(
                    o,
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}{unit}</text>",
                    bx + len + 4.0,
                    by + bar * 0.75,
                    trim(*v)
                );
            }
            at += len;
        }
        if stacked {
            let _ = writeln!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\">{:.1}{unit}</text>",
                at + 4.0,
                row_y + bar * 0.75,
                values.iter().sum::<f64>()
            );
        }
    }
    legend(&mut o, parts);
    o.push_str("</svg>\n");
    o
}

fn waits_chart(doc: &Document<'_>, x: f64, y: f64) -> String {
    let r = doc.report;
    let rows = vec![
        ("p50".to_owned(), vec![r.wait_p50_s]),
        ("p95".to_owned(), vec![r.wait_p95_s]),
        ("p99".to_owned(), vec![r.wait_p99_s]),
        ("max".to_owned(), vec![r.wait_max_s]),
    ];
    bars_chart(
        "Job wait time percentiles (seconds from submission to a VM claiming the job)",
        &rows,
        &[("wait", QUEUED)],
        " s",
        false,
        x,
        y,
    )
}

fn hours_chart(doc: &Document<'_>, x: f64, y: f64) -> String {
    let rows: Vec<(String, Vec<f64>)> = doc
        .compare
        .iter()
        .map(|c| {
            let r = &c.report;
            let (busy, idle, boot) = (r.busy_vm_hours, r.idle_vm_hours, r.boot_vm_hours);
            (c.name.clone(), vec![busy, idle, boot])
        })
        .collect();
    bars_chart(
        "VM-hours powered on: busy, idle and booting",
        &rows,
        &[("busy", BUSY), ("idle", IDLE), ("booting", BOOTING)],
        " h",
        true,
        x,
        y,
    )
}

fn scatter(rows: &[CompareRow], x: f64, y: f64) -> String {
    let mut o = open_chart(
        "Cost against wait: VM-hours and p95 wait, with the Pareto front",
        x,
        y,
    );
    // The x axis spans the points (costs are close together; from zero they would overlap).
    let (lo, hi) = rows.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
        (lo.min(r.point.vm_hours), hi.max(r.point.vm_hours))
    });
    let pad = ((hi - lo) * 0.15).max(hi * 0.02).max(1.0);
    let (x_min, x_max) = ((lo - pad).max(0.0).floor(), (hi + pad).ceil());
    let y_max = nice_ceil(rows.iter().map(|r| r.point.wait_p95_s).fold(0.0, f64::max) * 1.1);
    let ticks: Vec<(f64, String)> = (0..=4)
        .map(|i| {
            let v = x_min + (x_max - x_min) * f64::from(i) / 4.0;
            (v, format!("{v:.0} VM-h"))
        })
        .collect();
    axes(&mut o, y_max, " s", &ticks, (x_min, x_max));
    let (w, h) = (WIDTH - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
    let at = |vm: f64, wait: f64| {
        (
            LEFT + (vm - x_min) / (x_max - x_min) * w,
            TOP + h - wait / y_max * h,
        )
    };
    let mut front: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.point.pareto)
        .map(|r| at(r.point.vm_hours, r.point.wait_p95_s))
        .collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path: Vec<String> = front
        .iter()
        .map(|(a, b)| format!("{a:.1},{b:.1}"))
        .collect();
    let _ = writeln!(
        o,
        "<polyline fill=\"none\" stroke=\"{FRONT}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\" points=\"{}\"/>",
        path.join(" ")
    );
    // Labels alternate above and below their points, in order of cost, to keep them apart.
    let mut order: Vec<&CompareRow> = rows.iter().collect();
    order.sort_by(|a, b| a.point.vm_hours.total_cmp(&b.point.vm_hours));
    for (i, r) in order.iter().enumerate() {
        let (px, py) = at(r.point.vm_hours, r.point.wait_p95_s);
        let color = if r.is_current {
            "#00838f"
        } else if r.point.pareto {
            FRONT
        } else {
            "#555"
        };
        // Right of the point, or left of it near the right edge.
        let (lx, anchor) = if px > LEFT + 0.7 * w {
            (px - 8.0, "end")
        } else {
            (px + 8.0, "start")
        };
        let _ = writeln!(
            o,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"{color}\"/><text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{color}\">{}{}</text>",
            py + if i % 2 == 0 { -8.0 } else { 16.0 },
            esc(&r.name),
            if r.point.pareto { " ★" } else { "" }
        );
    }
    legend(&mut o, &[("Pareto front", FRONT)]);
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_rounds_axes() {
        assert_eq!(esc("a<b & \"c\"'"), "a&lt;b &amp; &quot;c&quot;&#39;");
        assert_eq!(nice_ceil(7.3), 10.0);
        assert_eq!(nice_ceil(120.0), 200.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(json_number(1877.6), "1877.6");
        assert!(format_of(Path::new("r.txt")).is_err());
        assert_eq!(format_of(Path::new("R.SVG")).ok(), Some(Format::Svg));
    }
}
