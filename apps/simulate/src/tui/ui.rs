//! Rendering: a pure function of the `App` onto a frame. Figures are the whole run's; charts
//! replay the run's samples up to the cursor.

use provisioner_sim::{Sample, SimReport};
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as CanvasLine};
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, TableState, Wrap,
};

use super::app::{App, Run, SPEEDS, View, ZOOMS};
use super::event::BINDINGS;
use crate::compare::CompareRow;
use crate::controls::Control;
use crate::format::{clock, clock_short, secs};

/// The smallest terminal the dashboard is laid out for.
const MIN_WIDTH: u16 = 80;
const MIN_HEIGHT: u16 = 24;

const BEFORE: Color = Color::DarkGray;

/// Below this many rows the dashboard has no room for VM-hours and the longest waits beside
/// the controls and results (`w` swaps them in).
const SHORT: u16 = 13 + 14 + 5;

/// What a result row measures and how to show it.
#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Hours,
    Count,
}

/// The result rows, most telling first (a short terminal shows the first few).
/// A result row: label, the figure, and how to show it.
type Metric = (&'static str, fn(&SimReport) -> f64, Unit);

const METRICS: [Metric; 11] = [
    ("wait p50", |r| r.wait_p50_s, Unit::Seconds),
    ("wait p95", |r| r.wait_p95_s, Unit::Seconds),
    ("wait p99", |r| r.wait_p99_s, Unit::Seconds),
    ("VM-hours", |r| r.vm_hours, Unit::Hours),
    (" idle", |r| r.idle_vm_hours, Unit::Hours),
    (" booting", |r| r.boot_vm_hours, Unit::Hours),
    (" busy", |r| r.busy_vm_hours, Unit::Hours),
    ("wait max", |r| r.wait_max_s, Unit::Seconds),
    ("wait mean", |r| r.wait_mean_s, Unit::Seconds),
    ("peak VMs", |r| f64::from(r.peak_vms), Unit::Count),
    ("VMs created", |r| r.vms_created as f64, Unit::Count),
];

fn show(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds => secs(v),
        Unit::Hours => format!("{v:.1}"),
        Unit::Count => format!("{v:.0}"),
    }
}

/// A relative change, lower being better for every metric shown.
fn delta(now: f64, before: f64) -> Span<'static> {
    if (now - before).abs() < 1e-9 {
        return Span::raw("=").fg(Color::DarkGray);
    }
    let text = if before.abs() < 1e-9 {
        "new".to_owned()
    } else {
        format!("{:+.0}%", (now - before) / before * 100.0)
    };
    Span::raw(text).fg(if now < before {
        Color::Green
    } else {
        Color::Red
    })
}

fn block(title: Line<'_>) -> Block<'_> {
    Block::bordered()
        .title(title)
        .border_style(Style::new().fg(Color::Gray))
}

impl App {
    pub fn render(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            too_small(frame, area);
            return;
        }
        let [header, body, status, keys] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.header(frame, header);
        match self.view {
            View::Dashboard => self.dashboard(frame, body),
            View::Compare => self.compare_view(frame, body),
            View::Help => self.help(frame, body),
        }
        let status_style = if self.status.starts_with("cannot") {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Cyan)
        };
        let mut text = self.status.clone();
        if self.pending() {
            text.push_str(" (re-running…)");
        }
        frame.render_widget(Paragraph::new(text).style(status_style), status);
        frame.render_widget(Paragraph::new(self.key_bar(body.height < SHORT)), keys);
    }

    fn header(&self, frame: &mut Frame, area: Rect) {
        let state = if self.paused { "paused" } else { "playing" };
        let line = Line::from(vec![
            Span::raw(" simulate ").add_modifier(Modifier::REVERSED | Modifier::BOLD),
            Span::raw(format!(" {} ", clock(self.cursor_s))).bold(),
            Span::raw(format!("of {} ", clock(self.end_s()))),
            Span::raw(format!("{state} {} ", SPEEDS[self.speed].1)).fg(Color::Cyan),
            Span::raw(format!("window {} ", ZOOMS[self.zoom].1)).fg(Color::Cyan),
            Span::raw(format!("· {}", self.workload)).fg(Color::Gray),
        ]);
        frame.render_widget(Paragraph::new(line), area);
    }

    fn key_bar(&self, short: bool) -> Line<'static> {
        let keys: &[(&str, &str)] = match self.view {
            View::Dashboard if short => &[
                ("?", "help"),
                ("q", "quit"),
                ("↑↓", "select"),
                ("←→", "change"),
                ("c", "compare"),
                ("w", "waits"),
                ("b", "busiest hour"),
                ("space", "pause"),
            ],
            View::Dashboard => &[
                ("?", "help"),
                ("q", "quit"),
                ("↑↓", "select"),
                ("←→", "change"),
                ("c", "compare"),
                ("b", "busiest hour"),
                ("space", "pause"),
                ("<>", "speed"),
                ("z/Z", "zoom"),
                ("r", "reset"),
            ],
            View::Compare => &[
                ("?", "help"),
                ("q", "quit"),
                ("↑↓", "select"),
                ("←→", "change"),
                ("c/Esc", "dashboard"),
                ("r", "reset"),
            ],
            View::Help => &[("?/Esc", "back"), ("↑↓", "scroll"), ("q", "quit")],
        };
        let mut spans = Vec::new();
        for (key, what) in keys {
            spans.push(Span::raw(format!(" {key} ")).add_modifier(Modifier::REVERSED));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        Line::from(spans)
    }

    fn dashboard(&self, frame: &mut Frame, area: Rect) {
        let wide = area.width >= 120;
        let [left, right] = Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Length(if wide { 46 } else { 36 }),
        ])
        .areas(area);
        let [jobs, vms] = Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(left);
        self.jobs_chart(frame, jobs);
        self.vms_chart(frame, vms);
        if area.height < SHORT && self.details {
            let [bars, worst] =
                Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(right);
            self.vm_hours_bars(frame, bars);
            self.worst_waits(frame, worst);
            return;
        }
        let results_rows = (METRICS.len() as u16 + 3).min(right.height.saturating_sub(13));
        let [controls, results, rest] = Layout::vertical([
            Constraint::Length(Control::ALL.len() as u16 + 2),
            Constraint::Length(results_rows),
            Constraint::Fill(1),
        ])
        .areas(right);
        self.controls(frame, controls);
        self.results(frame, results);
        if rest.height >= 5 {
            let [bars, worst] =
                Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(rest);
            self.vm_hours_bars(frame, bars);
            if worst.height >= 4 {
                self.worst_waits(frame, worst);
            }
        }
    }

    /// The x bounds of the chart window and the samples up to the cursor inside it.
    fn window(&self) -> (f64, f64) {
        let end = self.end_s().max(1.0);
        match ZOOMS[self.zoom].0 {
            None => (0.0, end),
            Some(width) => {
                let hi = self.cursor_s.max(width.min(end));
                ((hi - width).max(0.0), hi.max(1.0))
            }
        }
    }

    fn series(&self, run: &Run, lo: f64, f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
        run.report
            .samples
            .iter()
            .filter(|s| s.t_s >= lo && s.t_s <= self.cursor_s)
            .map(|s| (s.t_s, f(s)))
            .collect()
    }

    /// The highest value of `f` over the whole of both runs, so the scale holds during replay.
    fn y_max(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        let runs = std::iter::once(&self.current).chain(self.previous.as_ref());
        let max = runs
            .flat_map(|r| r.report.samples.iter())
            .map(&f)
            .fold(0.0, f64::max);
        max.max(1.0).ceil()
    }

    fn chart<'a>(
        &self,
        title: Line<'a>,
        datasets: Vec<Dataset<'a>>,
        (lo, hi): (f64, f64),
        y_max: f64,
    ) -> Chart<'a> {
        let x_labels = vec![
            Span::raw(clock_short(lo)),
            Span::raw(clock_short((lo + hi) / 2.0)),
            Span::raw(clock_short(hi)),
        ];
        let y_labels = vec![
            Span::raw("0"),
            Span::raw(format!("{:.0}", y_max / 2.0)),
            Span::raw(format!("{y_max:.0}")),
        ];
        Chart::new(datasets)
            .block(block(title))
            .legend_position(None)
            .x_axis(
                Axis::default()
                    .bounds([lo, hi])
                    .labels(x_labels)
                    .style(Style::new().fg(Color::Gray)),
            )
            .y_axis(
                Axis::default()
                    .bounds([0.0, y_max])
                    .labels(y_labels)
                    .style(Style::new().fg(Color::Gray)),
            )
    }

    fn jobs_chart(&self, frame: &mut Frame, area: Rect) {
        let (lo, hi) = self.window();
        let queued = self.series(&self.current, lo, |s| f64::from(s.unclaimed));
        let running = self.series(&self.current, lo, |s| f64::from(s.running_jobs));
        let before = self
            .previous
            .as_ref()
            .map(|p| self.series(p, lo, |s| f64::from(s.unclaimed)))
            .unwrap_or_default();
        let y_max = self.y_max(|s| f64::from(s.unclaimed.max(s.running_jobs)));
        let mut title = vec![
            Span::raw(" jobs "),
            Span::raw("■ queued ").fg(Color::Yellow),
            Span::raw("■ running ").fg(Color::Green),
        ];
        let mut sets = Vec::new();
        if self.previous.is_some() {
            title.push(Span::raw("■ queued before ").fg(BEFORE));
            sets.push(line_set(&before, BEFORE));
        }
        sets.push(line_set(&queued, Color::Yellow));
        sets.push(line_set(&running, Color::Green));
        frame.render_widget(self.chart(Line::from(title), sets, (lo, hi), y_max), area);
    }

    fn vms_chart(&self, frame: &mut Frame, area: Rect) {
        let (lo, hi) = self.window();
        let c = &self.current;
        let booting = self.series(c, lo, |s| f64::from(s.vms_booting));
        let idle = self.series(c, lo, |s| f64::from(s.vms_idle));
        let busy = self.series(c, lo, |s| f64::from(s.vms_busy));
        let stopped = self.series(c, lo, |s| f64::from(s.vms_stopped));
        let on = |s: &Sample| f64::from(s.vms_booting + s.vms_idle + s.vms_busy);
        let before = self
            .previous
            .as_ref()
            .map(|p| self.series(p, lo, on))
            .unwrap_or_default();
        let y_max = self.y_max(|s| {
            f64::from(
                s.vms_booting
                    .max(s.vms_idle)
                    .max(s.vms_busy)
                    .max(s.vms_stopped),
            )
            .max(on(s))
        });
        let mut title = vec![
            Span::raw(" VMs "),
            Span::raw("■ booting ").fg(Color::Blue),
            Span::raw("■ idle ").fg(Color::Yellow),
            Span::raw("■ busy ").fg(Color::Green),
            Span::raw("■ stopped ").fg(Color::Red),
        ];
        let mut sets = Vec::new();
        if self.previous.is_some() {
            title.push(Span::raw("■ on before ").fg(BEFORE));
            sets.push(line_set(&before, BEFORE));
        }
        sets.push(line_set(&stopped, Color::Red));
        sets.push(line_set(&booting, Color::Blue));
        sets.push(line_set(&idle, Color::Yellow));
        sets.push(line_set(&busy, Color::Green));
        frame.render_widget(self.chart(Line::from(title), sets, (lo, hi), y_max), area);
    }

    fn controls(&self, frame: &mut Frame, area: Rect) {
        let values = self.values();
        let ran = &self.current.values;
        let before = self.previous.as_ref().map(|p| &p.values);
        // As wide as the longest value, leaving the rest for what it was before.
        let value_width = values
            .iter()
            .map(|v| v.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, 16) as u16;
        let rows = Control::ALL.iter().enumerate().map(|(i, c)| {
            let selected = i == self.selected;
            let applies = c.applies(&self.setup);
            let mut note = String::new();
            if values[i] != ran[i] {
                note = format!("ran {}", ran[i]);
            } else if let Some(b) = before
                && b[i] != values[i]
            {
                note = format!("was {}", b[i]);
            }
            let style = match (selected, applies) {
                (true, _) => Style::new().add_modifier(Modifier::REVERSED),
                (false, false) => Style::new().fg(Color::DarkGray),
                (false, true) => Style::new(),
            };
            Row::new(vec![
                Cell::from(format!("{}{}", if selected { "▸" } else { " " }, c.label())),
                Cell::from(values[i].clone()).bold(),
                Cell::from(note).fg(Color::Magenta),
            ])
            .style(style)
        });
        let title = match self.config_classes() {
            Some(classes) if classes.len() > 1 => format!(
                " --config {} (+{} more class{}) ",
                classes[0],
                classes.len() - 1,
                if classes.len() > 2 { "es" } else { "" }
            ),
            Some(classes) => match classes.first() {
                Some(class) => format!(" --config {class} "),
                None => " policy from --config ".to_owned(),
            },
            None => " policy ".to_owned(),
        };
        let table = Table::new(
            rows,
            [
                Constraint::Length(15),
                Constraint::Length(value_width),
                Constraint::Fill(1),
            ],
        )
        .column_spacing(1)
        .block(block(Line::from(title)));
        // Scrolls to keep the selected control in view on a short terminal.
        let mut state = TableState::new().with_selected(Some(self.selected));
        frame.render_stateful_widget(table, area, &mut state);
    }

    fn results(&self, frame: &mut Frame, area: Rect) {
        let now = &self.current.report;
        let before = self.previous.as_ref().map(|p| &p.report);
        let header = Row::new(vec!["", "now", "before", "Δ"]).fg(Color::Gray);
        let rows = METRICS.iter().map(|(name, f, unit)| {
            let v = f(now);
            let (b, d) = match before {
                Some(b) => (show(f(b), *unit), delta(v, f(b))),
                None => ("-".to_owned(), Span::raw("")),
            };
            Row::new(vec![
                Cell::from(*name),
                Cell::from(show(v, *unit)).bold(),
                Cell::from(b).fg(Color::Gray),
                Cell::from(d),
            ])
        });
        let title = format!(
            " whole run: {} of {} jobs done ",
            now.jobs_completed, now.jobs
        );
        let table = Table::new(
            rows,
            [
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(header)
        .block(block(Line::from(title)));
        frame.render_widget(table, area);
    }

    fn vm_hours_bars(&self, frame: &mut Frame, area: Rect) {
        let width = usize::from(area.width.saturating_sub(2 + 7 + 8));
        let runs: Vec<(&str, &SimReport)> = std::iter::once(("now", &self.current.report))
            .chain(self.previous.as_ref().map(|p| ("before", &p.report)))
            .collect();
        let scale = runs.iter().map(|(_, r)| r.vm_hours).fold(0.0, f64::max);
        let lines: Vec<Line> = runs
            .iter()
            .map(|(name, r)| {
                let cells = |h: f64| {
                    if scale > 0.0 {
                        (h / scale * width as f64).round() as usize
                    } else {
                        0
                    }
                };
                Line::from(vec![
                    Span::raw(format!("{name:<7}")),
                    Span::raw("█".repeat(cells(r.busy_vm_hours))).fg(Color::Green),
                    Span::raw("▒".repeat(cells(r.idle_vm_hours))).fg(Color::Yellow),
                    Span::raw("░".repeat(cells(r.boot_vm_hours))).fg(Color::Blue),
                    Span::raw(format!(" {:.1}", r.vm_hours)),
                ])
            })
            .collect();
        let title = Line::from(vec![
            Span::raw(" VM-hours "),
            Span::raw("█ busy ").fg(Color::Green),
            Span::raw("▒ idle ").fg(Color::Yellow),
            Span::raw("░ booting ").fg(Color::Blue),
        ]);
        frame.render_widget(Paragraph::new(lines).block(block(title)), area);
    }

    fn worst_waits(&self, frame: &mut Frame, area: Rect) {
        let header = Row::new(vec!["waited", "submitted", "runs for"]).fg(Color::Gray);
        let rows = self
            .current
            .report
            .worst_waits
            .iter()
            .map(|w| Row::new(vec![secs(w.wait_s), clock(w.arrival_s), secs(w.duration_s)]));
        let table = Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(13),
                Constraint::Fill(1),
            ],
        )
        .header(header)
        .block(block(Line::from(" longest waits ")));
        frame.render_widget(table, area);
    }

    fn compare_view(&self, frame: &mut Frame, area: Rect) {
        let Some(rows) = &self.compare else {
            frame.render_widget(
                Paragraph::new("running the reference policies…")
                    .alignment(Alignment::Center)
                    .block(block(Line::from(" compare "))),
                area,
            );
            return;
        };
        let wide = area.width >= 120;
        let table_height = rows.len() as u16 + 3;
        let (chart, table, controls) = if wide {
            let [top, table] =
                Layout::vertical([Constraint::Fill(1), Constraint::Length(table_height)])
                    .areas(area);
            let [chart, controls] =
                Layout::horizontal([Constraint::Fill(1), Constraint::Length(46)]).areas(top);
            (chart, table, Some(controls))
        } else {
            let [chart, table] =
                Layout::vertical([Constraint::Fill(1), Constraint::Length(table_height)])
                    .areas(area);
            (chart, table, None)
        };
        self.scatter(frame, chart, rows);
        self.compare_table(frame, table, rows);
        if let Some(c) = controls {
            self.controls(frame, c);
        }
    }

    fn scatter(&self, frame: &mut Frame, area: Rect, rows: &[CompareRow]) {
        let outer = block(Line::from(vec![
            Span::raw(" VM-hours → against p95 wait ↑ · "),
            Span::raw("★ Pareto front").fg(Color::Magenta),
            Span::raw(": nothing beats it on both "),
        ]));
        let inner = outer.inner(area);
        frame.render_widget(outer, area);
        let before = self
            .previous
            .as_ref()
            .map(|p| (p.report.vm_hours, p.report.wait_p95_s / 60.0));
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.point.vm_hours, r.point.wait_p95_s / 60.0))
            .chain(before)
            .collect();
        // The x axis spans the points: costs are close together and would overlap from zero.
        let (lo, hi) = points
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
        let pad = ((hi - lo) * 0.1).max(hi * 0.02).max(1.0);
        let (x_min, x_max) = ((lo - pad).max(0.0), hi + pad);
        let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.15;
        let [rows_area, x_axis] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
        let [y_axis, plot] =
            Layout::horizontal([Constraint::Length(8), Constraint::Fill(1)]).areas(rows_area);
        let [y_top, _, y_mid, _, y_bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(y_axis);
        for (rect, v) in [(y_top, y_max), (y_mid, y_max / 2.0), (y_bottom, 0.0)] {
            frame.render_widget(
                Paragraph::new(format!("{v:.1}m ")).alignment(Alignment::Right),
                rect,
            );
        }
        let [_, x_axis] =
            Layout::horizontal([Constraint::Length(8), Constraint::Fill(1)]).areas(x_axis);
        let [x_lo, x_mid, x_hi] = Layout::horizontal([Constraint::Fill(1); 3]).areas(x_axis);
        frame.render_widget(Paragraph::new(format!("{x_min:.0} VM-h")), x_lo);
        frame.render_widget(
            Paragraph::new(format!("{:.0}", (x_min + x_max) / 2.0)).alignment(Alignment::Center),
            x_mid,
        );
        frame.render_widget(
            Paragraph::new(format!("{x_max:.0} VM-h")).alignment(Alignment::Right),
            x_hi,
        );
        let (width, height) = (i64::from(plot.width).max(2), i64::from(plot.height).max(2));
        let (x_span, y_span) = ((width - 1) as f64, (height - 1) as f64);
        // Cells (column, row from the top) holding the braille dot of a point, so marks sit
        // on the front's line: 2x4 dots a cell.
        let cell = |(x, y): (f64, f64)| {
            let dx = ((x - x_min) / (x_max - x_min) * (width * 2 - 1) as f64).floor() as i64;
            let dy = ((y_max - y) / y_max * (height * 4 - 1) as f64).floor() as i64;
            (dx / 2, dy / 4)
        };
        let named = rows
            .iter()
            .map(|r| {
                let (mark, color) = if r.is_current {
                    (if r.point.pareto { "★" } else { "●" }, Color::Cyan)
                } else if r.point.pareto {
                    ("★", Color::Magenta)
                } else {
                    ("●", Color::White)
                };
                (
                    (r.point.vm_hours, r.point.wait_p95_s / 60.0),
                    r.name.clone(),
                    mark,
                    color,
                )
            })
            .chain(before.map(|p| (p, "before".to_owned(), "○", BEFORE)));
        // Points in the same cell share one mark and label.
        let mut marks: Vec<Mark> = Vec::new();
        for (p, name, mark, color) in named {
            let at = cell(p);
            match marks.iter_mut().find(|m| m.cell == at) {
                Some(m) => m.label = format!("{} = {name}", m.label),
                None => marks.push(Mark {
                    cell: at,
                    label: name,
                    mark,
                    color,
                }),
            }
        }
        // Labels go right of their mark (left when there is no room), moving a row or two
        // to keep clear of labels already placed.
        let mut taken: Vec<(i64, i64, i64)> = marks
            .iter()
            .map(|m| (m.cell.1, m.cell.0, m.cell.0))
            .collect();
        let mut texts: Vec<((i64, i64), String, Color)> = Vec::new();
        for m in &marks {
            let len = m.label.chars().count() as i64;
            let start = if m.cell.0 + 2 + len <= width {
                m.cell.0 + 2
            } else {
                (m.cell.0 - 1 - len).max(0)
            };
            let end = start + len - 1;
            let row = [0, 1, -1, 2, -2]
                .iter()
                .map(|d| m.cell.1 + d)
                .filter(|r| (0..height).contains(r))
                .find(|r| {
                    !taken
                        .iter()
                        .any(|(tr, a, b)| tr == r && *a <= end && start <= *b)
                })
                .unwrap_or(m.cell.1);
            taken.push((row, start, end));
            texts.push(((start, row), m.label.clone(), m.color));
        }
        let to_x = |c: i64| x_min + (c as f64 + 0.5).min(x_span) / x_span * (x_max - x_min);
        let to_y = |r: i64| y_max * (1.0 - (r as f64 + 0.5).min(y_span) / y_span);
        let mut front: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.point.pareto)
            .map(|r| (r.point.vm_hours, r.point.wait_p95_s / 60.0))
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        let prints: Vec<(f64, f64, Span<'static>)> = marks
            .iter()
            .map(|m| {
                (
                    to_x(m.cell.0),
                    to_y(m.cell.1),
                    Span::raw(m.mark).fg(m.color),
                )
            })
            .chain(
                texts
                    .into_iter()
                    .map(|((c, r), label, color)| (to_x(c), to_y(r), Span::raw(label).fg(color))),
            )
            .collect();
        let canvas = Canvas::default()
            .marker(Marker::Braille)
            .x_bounds([x_min, x_max])
            .y_bounds([0.0, y_max])
            .paint(move |ctx| {
                for pair in front.windows(2) {
                    ctx.draw(&CanvasLine::new(
                        pair[0].0,
                        pair[0].1,
                        pair[1].0,
                        pair[1].1,
                        Color::Magenta,
                    ));
                }
                for (x, y, text) in &prints {
                    ctx.print(*x, *y, text.clone());
                }
            });
        frame.render_widget(canvas, plot);
    }

    fn compare_table(&self, frame: &mut Frame, area: Rect, rows: &[CompareRow]) {
        let header = Row::new(vec![
            "policy",
            "p50 wait",
            "p95 wait",
            "p99 wait",
            "VM-hours",
            "idle VM-h",
            "front",
        ])
        .fg(Color::Gray);
        let body = rows.iter().map(|r| {
            let p = &r.point;
            let row = Row::new(vec![
                r.name.clone(),
                secs(p.wait_p50_s),
                secs(p.wait_p95_s),
                secs(p.wait_p99_s),
                format!("{:.1}", p.vm_hours),
                format!("{:.1}", p.idle_vm_hours),
                r.front().to_owned(),
            ]);
            if r.is_current {
                row.fg(Color::Cyan).bold()
            } else {
                row
            }
        });
        let table = Table::new(
            body,
            [
                Constraint::Length(22),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Fill(1),
            ],
        )
        .header(header)
        .block(block(Line::from(
            " same trace and knobs; the oracle knows arrivals in advance (a bound) ",
        )));
        frame.render_widget(table, area);
    }

    fn help(&self, frame: &mut Frame, area: Rect) {
        let rows = |items: &'static [(&'static str, &'static str)]| {
            items
                .iter()
                .map(|(k, what)| Row::new(vec![Cell::from(*k).bold(), Cell::from(*what)]))
        };
        let widths = [Constraint::Length(17), Constraint::Fill(1)];
        if area.width >= 120 {
            let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
            frame.render_widget(
                Table::new(rows(&BINDINGS), widths).block(block(Line::from(" keys "))),
                l,
            );
            frame.render_widget(
                Table::new(rows(&CONTROL_HELP), widths)
                    .block(block(Line::from(" policy controls "))),
                r,
            );
            return;
        }
        // Narrow: one list that scrolls.
        let mut lines = vec![Line::from(" keys").bold().fg(Color::Cyan)];
        let entry = |(k, what): &(&str, &'static str)| {
            Line::from(vec![
                Span::raw(format!("{k:<17} ")).bold(),
                Span::raw(*what),
            ])
        };
        lines.extend(BINDINGS.iter().map(entry));
        lines.push(Line::from(""));
        lines.push(Line::from(" policy controls").bold().fg(Color::Cyan));
        lines.extend(CONTROL_HELP.iter().map(entry));
        let visible = area.height.saturating_sub(2);
        let max_scroll = (lines.len() as u16).saturating_sub(visible);
        frame.render_widget(
            Paragraph::new(lines)
                .scroll((self.help_scroll.min(max_scroll), 0))
                .block(block(Line::from(" help (↑↓ scroll) "))),
            area,
        );
    }
}

/// What each control does, for the help screen.
pub const CONTROL_HELP: [(&str, &str); 20] = [
    ("minReplicas", "VMs kept even with no demand"),
    ("maxReplicas", "never more VMs than this"),
    (
        "idleTimeout",
        "a VM powers itself off after this long without a job",
    ),
    ("headroom", "extra VMs while there is demand"),
    (
        "maxSurge",
        "at most this many VMs above the ready ones per cycle",
    ),
    (
        "scaleDownDelay",
        "demand must stay low this long before scaling down",
    ),
    ("idleBuffer", "idle VMs on top of demand (ARC minRunners)"),
    ("scaleFactor", "GitLab: idle VMs as a share of busy ones"),
    ("boot time", "each VM boots in a time drawn from [min, max]"),
    (
        "cluster",
        "off, or a preset: nodes, VM sizes, image pulls, boots",
    ),
    (
        "nodes min/max",
        "the node autoscaler's range (equal: fixed)",
    ),
    ("policy", "the rule that picks the VM count:"),
    ("  provisioner", "this controller, every control"),
    (
        "  seed",
        "preview 0.1.0: minReplicas, maxReplicas, idleTimeout",
    ),
    (
        "  circleci-0.1.2",
        "adds headroom, maxSurge, scaleDownDelay",
    ),
    ("  arc", "GitHub ARC: an idle buffer over demand, no floor"),
    ("  gitlab", "GitLab's autoscaler: idle_count, scale_factor"),
    ("  oracle", "knows every arrival in advance: a bound"),
    (
        "dimmed",
        "controls the run does not read (policy, cluster off)",
    ),
    (
        "figures",
        "are the whole run's; charts replay it to the cursor",
    ),
];

/// A point of the compare chart: its cell (column, row from the top), label, mark, colour.
#[derive(Debug)]
struct Mark {
    cell: (i64, i64),
    label: String,
    mark: &'static str,
    color: Color,
}

fn line_set(data: &[(f64, f64)], color: Color) -> Dataset<'_> {
    Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(color))
        .data(data)
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("The terminal is too small.").bold(),
        Line::from(format!(
            "It is {}x{}; simulate needs at least {MIN_WIDTH}x{MIN_HEIGHT}.",
            area.width, area.height
        )),
        Line::from("Enlarge the window, or run `simulate --headless`."),
        Line::from("q quits."),
    ];
    let height = (text.len() as u16).min(area.height);
    let [_, middle, _] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(height),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(text)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        middle,
    );
}
