//! The TUI's state, with no terminal: actions change the policy or the replay, `refresh`
//! re-runs the simulation. Runs are synchronous and deterministic (the engine replays a week
//! in a fraction of a second), so tests drive an `App` exactly as the terminal loop does.

use provisioner_core::Duration;
use provisioner_core::forecast::{Predictive, ServiceLevel};
use provisioner_sim::cluster::{ClusterOptions, NodeCount, PRESETS};
use provisioner_sim::{BootTime, POLICY_NAMES, PolicyChoice, SimError, SimReport, Trace};

use crate::compare::{CompareRow, compare_runs};
use crate::controls::{Control, boot_range, cluster_name, values};
use crate::format::{clock, day_and_time, secs};
use crate::setup::{Setup, sample_every, simulate};

/// Replay speeds: simulated seconds per wall second, and their label.
pub const SPEEDS: [(f64, &str); 6] = [
    (60.0, "1m/s"),
    (600.0, "10m/s"),
    (3600.0, "1h/s"),
    (6.0 * 3600.0, "6h/s"),
    (86_400.0, "1d/s"),
    (7.0 * 86_400.0, "7d/s"),
];
const DEFAULT_SPEED: usize = 2;

/// Chart windows (simulated seconds shown up to the cursor); `None` shows the whole run.
pub const ZOOMS: [(Option<f64>, &str); 6] = [
    (Some(3600.0), "1h"),
    (Some(6.0 * 3600.0), "6h"),
    (Some(86_400.0), "1d"),
    (Some(3.0 * 86_400.0), "3d"),
    (Some(7.0 * 86_400.0), "7d"),
    (None, "all"),
];
const DEFAULT_ZOOM: usize = 2;

/// How far the help screen can scroll: its every line.
const HELP_LINES: u16 = (super::event::BINDINGS.len() + super::ui::CONTROL_HELP.len() + 3) as u16;

/// Idle-timeout steps; past the last one comes "never" (no idle power-off).
const IDLE_TIMEOUTS_S: [u64; 14] = [
    30, 60, 120, 180, 300, 600, 900, 1200, 1800, 2700, 3600, 7200, 14_400, 28_800,
];
const SCALE_DOWN_DELAYS_S: [u64; 9] = [0, 15, 30, 60, 120, 300, 600, 900, 1800];
/// Steps taken by `IncreaseMore` and `DecreaseMore`.
const BIG_STEP: u32 = 10;
/// Boot-time bounds move in steps of this.
const BOOT_STEP_S: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Dashboard,
    Compare,
    Help,
}

/// Everything the user can press, whatever the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    ToggleHelp,
    ToggleCompare,
    Back,
    NextControl,
    PrevControl,
    Increase,
    Decrease,
    /// Ten steps at once (a big trace wants maxReplicas in the hundreds).
    IncreaseMore,
    DecreaseMore,
    TogglePause,
    Faster,
    Slower,
    ZoomIn,
    ZoomOut,
    BusiestHour,
    /// On a short terminal, show VM-hours and the longest waits in place of the results.
    ToggleDetails,
    Start,
    End,
    Reset,
}

/// One finished run and the control values it ran with.
#[derive(Debug, Clone)]
pub struct Run {
    pub setup: Setup,
    pub report: SimReport,
    /// `Control::ALL`'s values, as shown.
    pub values: Vec<String>,
}

/// The hour of the trace with the most submitted jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Busiest {
    pub start_s: f64,
    pub jobs: usize,
}

#[derive(Debug)]
pub struct App {
    trace: Trace,
    /// What is replayed, e.g. "synthetic workload: 40 jobs/hour for 7 days, seed 1".
    pub workload: String,
    /// The policy and options being edited (runs with them once `refresh` is called).
    pub setup: Setup,
    initial: Setup,
    pub current: Run,
    pub previous: Option<Run>,
    /// The compare view's runs for the current setup; computed when the view opens.
    pub compare: Option<Vec<CompareRow>>,
    pending: bool,
    /// The replay cursor, in simulated seconds from the trace's start.
    pub cursor_s: f64,
    pub speed: usize,
    pub zoom: usize,
    pub paused: bool,
    pub view: View,
    /// Where `?` returns to.
    behind_help: View,
    /// Index into `Control::ALL`.
    pub selected: usize,
    /// Lines the help screen is scrolled by (a narrow terminal cannot show it all).
    pub help_scroll: u16,
    /// A short terminal shows VM-hours and the longest waits instead of the results table.
    pub details: bool,
    /// The last thing that happened, for the status line.
    pub status: String,
    pub quit: bool,
    pub busiest: Option<Busiest>,
}

impl App {
    /// Run the setup once (so a bad flag fails before the terminal is taken over).
    pub fn new(trace: Trace, workload: String, mut setup: Setup) -> Result<Self, SimError> {
        if setup.options.sample_every.is_none() {
            setup.options.sample_every = Some(sample_every(&trace));
        }
        let report = simulate(&trace, &setup)?;
        let current = Run {
            values: values(&setup),
            setup: setup.clone(),
            report,
        };
        let busiest = busiest_hour(&trace);
        let status = format!(
            "replayed {} jobs; ←/→ change the selected control, ? for help",
            current.report.jobs
        );
        Ok(Self {
            trace,
            workload,
            initial: setup.clone(),
            setup,
            current,
            previous: None,
            compare: None,
            pending: false,
            cursor_s: 0.0,
            speed: DEFAULT_SPEED,
            zoom: DEFAULT_ZOOM,
            paused: false,
            view: View::Dashboard,
            behind_help: View::Dashboard,
            selected: 1,
            help_scroll: 0,
            details: false,
            status,
            quit: false,
            busiest,
        })
    }

    /// Whether a policy change is waiting for `refresh`.
    pub fn pending(&self) -> bool {
        self.pending
    }

    pub fn selected_control(&self) -> Control {
        Control::ALL[self.selected]
    }

    /// Whether the policy comes from `--config` (its controls are read-only here).
    pub fn policy_from_config(&self) -> bool {
        self.setup.config_policy.is_some()
    }

    /// The classes a `--config` defines, the first being the one the controls show.
    pub fn config_classes(&self) -> Option<Vec<String>> {
        match &self.setup.config_policy {
            Some(PolicyChoice::Provisioner(s)) => {
                Some(s.classes.keys().map(ToString::to_string).collect())
            }
            Some(_) => Some(Vec::new()),
            None => None,
        }
    }

    /// The simulated length of the current run, in seconds.
    pub fn end_s(&self) -> f64 {
        self.current.report.sim_seconds
    }

    /// The control values of the setup being edited (`Control::ALL` order).
    pub fn values(&self) -> Vec<String> {
        values(&self.setup)
    }

    pub fn handle(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::ToggleHelp => {
                if self.view == View::Help {
                    self.view = self.behind_help;
                } else {
                    self.behind_help = self.view;
                    self.view = View::Help;
                }
            }
            Action::ToggleCompare => {
                self.view = if self.view == View::Compare {
                    View::Dashboard
                } else {
                    View::Compare
                };
            }
            Action::Back => {
                self.view = match self.view {
                    View::Help => self.behind_help,
                    _ => View::Dashboard,
                };
            }
            Action::NextControl if self.view == View::Help => {
                self.help_scroll = (self.help_scroll + 1).min(HELP_LINES);
            }
            Action::PrevControl if self.view == View::Help => {
                self.help_scroll = self.help_scroll.saturating_sub(1);
            }
            Action::NextControl => self.selected = (self.selected + 1) % Control::ALL.len(),
            Action::PrevControl => {
                self.selected = (self.selected + Control::ALL.len() - 1) % Control::ALL.len();
            }
            Action::Increase => self.adjust(true, 1),
            Action::Decrease => self.adjust(false, 1),
            Action::IncreaseMore => self.adjust(true, BIG_STEP),
            Action::DecreaseMore => self.adjust(false, BIG_STEP),
            Action::TogglePause => {
                if self.paused && self.cursor_s >= self.end_s() {
                    self.cursor_s = 0.0;
                }
                self.paused = !self.paused;
            }
            Action::Faster => self.speed = (self.speed + 1).min(SPEEDS.len() - 1),
            Action::Slower => self.speed = self.speed.saturating_sub(1),
            Action::ZoomIn => self.zoom = self.zoom.saturating_sub(1),
            Action::ZoomOut => self.zoom = (self.zoom + 1).min(ZOOMS.len() - 1),
            Action::BusiestHour => self.jump_to_busiest(),
            Action::ToggleDetails => self.details = !self.details,
            Action::Start => self.cursor_s = 0.0,
            Action::End => {
                self.cursor_s = self.end_s();
                self.paused = true;
            }
            Action::Reset => {
                if self.setup_differs(&self.initial) {
                    self.setup = self.initial.clone();
                    self.pending = true;
                    self.status = "policy reset to the command line's".to_owned();
                } else {
                    self.status = "the policy is already the command line's".to_owned();
                }
            }
        }
    }

    /// Move the replay on by `wall` real time at the current speed; stops at the end.
    pub fn advance(&mut self, wall: std::time::Duration) {
        if self.paused {
            return;
        }
        let end = self.end_s();
        self.cursor_s = (self.cursor_s + wall.as_secs_f64() * SPEEDS[self.speed].0).min(end);
        if self.cursor_s >= end {
            self.paused = true;
        }
    }

    /// Re-run after a policy change, and run the compare view's policies if it is open.
    pub fn refresh(&mut self) {
        if self.pending {
            self.pending = false;
            match simulate(&self.trace, &self.setup) {
                Ok(report) => {
                    let run = Run {
                        values: values(&self.setup),
                        setup: self.setup.clone(),
                        report,
                    };
                    let before = std::mem::replace(&mut self.current, run);
                    self.status = format!(
                        "re-ran: p95 wait {} → {}, VM-hours {:.1} → {:.1}",
                        secs(before.report.wait_p95_s),
                        secs(self.current.report.wait_p95_s),
                        before.report.vm_hours,
                        self.current.report.vm_hours
                    );
                    if let Some(c) = &self.current.report.cluster {
                        self.status.push_str(&format!(
                            "; cluster: peak {} nodes, {} VMs found unschedulable",
                            c.peak_nodes, c.unschedulable
                        ));
                    }
                    self.previous = Some(before);
                    self.compare = None;
                    self.cursor_s = self.cursor_s.min(self.end_s());
                }
                Err(e) => {
                    self.status = format!("cannot run this policy: {e}");
                    self.setup = self.current.setup.clone();
                }
            }
        }
        if self.view == View::Compare && self.compare.is_none() {
            match compare_runs(&self.trace, &self.current.setup, &self.current.report) {
                Ok(rows) => self.compare = Some(rows),
                Err(e) => self.status = format!("cannot run the reference policies: {e}"),
            }
        }
    }

    fn setup_differs(&self, other: &Setup) -> bool {
        values(&self.setup) != values(other)
    }

    /// Move the selected control `steps` steps (fewer if a limit or a check stops it).
    fn adjust(&mut self, up: bool, steps: u32) {
        let control = self.selected_control();
        if matches!(control, Control::NodesMin | Control::NodesMax)
            && self.setup.options.cluster.is_none()
        {
            self.status = format!(
                "{} needs the cluster model: turn it on with the cluster control",
                control.label()
            );
            return;
        }
        if control.is_policy() && self.policy_from_config() {
            self.status = format!(
                "{} comes from --config: edit the file, or run without --config to tune the flags",
                control.label()
            );
            return;
        }
        let mut next = self.setup.clone();
        let mut moved = 0;
        let mut stopped = None;
        for _ in 0..steps {
            let mut candidate = next.clone();
            if !step(&mut candidate, control, up) {
                stopped = Some(format!(
                    "{} is already at its {}",
                    control.label(),
                    if up { "highest" } else { "lowest" }
                ));
                break;
            }
            if let Err(why) = check(&candidate) {
                stopped = Some(why);
                break;
            }
            next = candidate;
            moved += 1;
        }
        if moved == 0 {
            self.status = stopped.unwrap_or_default();
            return;
        }
        let value = values(&next)[self.selected].clone();
        self.setup = next;
        self.pending = true;
        self.status = match stopped {
            Some(why) => format!("{} → {value} (stopped there: {why})", control.label()),
            None => format!("{} → {value}", control.label()),
        };
    }

    fn jump_to_busiest(&mut self) {
        match self.busiest {
            Some(b) => {
                self.cursor_s = (b.start_s + 3600.0).min(self.end_s());
                self.paused = true;
                self.zoom = 1;
                self.status = format!(
                    "busiest hour: {}-{}, {} jobs submitted (paused; space resumes)",
                    clock(b.start_s),
                    day_and_time(b.start_s + 3600.0).1,
                    b.jobs
                );
            }
            None => self.status = "the trace has no jobs".to_owned(),
        }
    }
}

/// The hour (from the trace's start) in which the most jobs were submitted; the first on ties.
pub fn busiest_hour(trace: &Trace) -> Option<Busiest> {
    let mut best: Option<(i64, usize)> = None;
    let mut hour = -1;
    let mut count = 0usize;
    for job in &trace.jobs {
        let h = job.arrival_ms / 3_600_000;
        if h != hour {
            hour = h;
            count = 0;
        }
        count += 1;
        if best.is_none_or(|(_, n)| count > n) {
            best = Some((h, count));
        }
    }
    best.map(|(h, jobs)| Busiest {
        start_s: h as f64 * 3600.0,
        jobs,
    })
}

/// The service levels the TUI steps through, in basis points ("off" below the first).
const SERVICE_LEVELS_BP: [u64; 11] = [
    5000, 7000, 8000, 8500, 9000, 9300, 9500, 9700, 9800, 9900, 9950,
];

/// Change one control by one step; false when it is already at the end of its range.
fn step(setup: &mut Setup, control: Control, up: bool) -> bool {
    let count = |v: &mut u32| {
        let next = if up {
            v.checked_add(1)
                .filter(|n| *n <= provisioner_core::Replicas::MAX)
        } else {
            v.checked_sub(1)
        };
        next.map(|n| *v = n).is_some()
    };
    let p = &mut setup.params;
    match control {
        Control::Policy => {
            let i = POLICY_NAMES
                .iter()
                .position(|n| *n == setup.policy_name)
                .unwrap_or(0);
            let n = POLICY_NAMES.len();
            let next = if up { (i + 1) % n } else { (i + n - 1) % n };
            setup.policy_name = POLICY_NAMES[next].to_owned();
            true
        }
        Control::MinReplicas => count(&mut p.min_replicas),
        Control::MaxReplicas => count(&mut p.max_replicas),
        Control::Headroom => count(&mut p.headroom),
        Control::MaxSurge => count(&mut p.max_surge),
        Control::IdleBuffer => count(&mut p.idle_buffer),
        Control::ServiceLevel => {
            // "off" sits below the lowest step.
            let now = p.predictive.map_or(0, |x| {
                (x.service_level.fraction() * 10_000.0).round() as u64
            });
            let steps = SERVICE_LEVELS_BP.iter().copied();
            let next = if up {
                steps.clone().find(|s| *s > now)
            } else {
                steps.rev().find(|s| *s < now).or((now > 0).then_some(0))
            };
            match next {
                Some(0) => p.predictive = None,
                Some(bp) => {
                    let level = ServiceLevel::from_fraction(bp as f64 / 10_000.0);
                    let base = p.predictive.unwrap_or_default();
                    p.predictive = level.map(|service_level| Predictive {
                        service_level,
                        ..base
                    });
                }
                None => return false,
            }
            true
        }
        Control::IdleTimeout => {
            // "never" sits past the longest step.
            let now = p.idle_timeout.map_or(u64::MAX, |d| d.as_millis());
            let next = ladder(&IDLE_TIMEOUTS_S, now, up, true);
            match next {
                Some(Some(s)) => p.idle_timeout = Some(Duration::from_secs(s)),
                Some(None) => p.idle_timeout = None,
                None => return false,
            }
            true
        }
        Control::ScaleDownDelay => {
            match ladder(
                &SCALE_DOWN_DELAYS_S,
                p.scale_down_delay.as_millis(),
                up,
                false,
            ) {
                Some(Some(s)) => p.scale_down_delay = Duration::from_secs(s),
                _ => return false,
            }
            true
        }
        Control::ScaleFactor => {
            let tenths = (p.scale_factor * 10.0).round() as i64 + if up { 1 } else { -1 };
            if !(0..=100).contains(&tenths) {
                return false;
            }
            p.scale_factor = tenths as f64 / 10.0;
            true
        }
        Control::Cluster => {
            // off, then each preset; a cluster changed on the command line ("custom") sits
            // between off and the first preset.
            let at = match cluster_name(setup) {
                "off" => Some(0),
                name => PRESETS.iter().position(|(n, _)| *n == name).map(|i| i + 1),
            };
            let n = PRESETS.len() + 1;
            let next = match (at, up) {
                (Some(i), true) => (i + 1) % n,
                (Some(i), false) => (i + n - 1) % n,
                (None, true) => 1,
                (None, false) => 0,
            };
            setup.options.cluster = match next {
                0 => None,
                i => {
                    let mut model = setup
                        .options
                        .cluster
                        .take()
                        .unwrap_or_else(|| setup.cluster_template.clone());
                    match ClusterOptions::preset(PRESETS[i - 1].0) {
                        Ok(options) => model.options = options,
                        Err(_) => return false,
                    }
                    Some(model)
                }
            };
            true
        }
        Control::NodesMin | Control::NodesMax => {
            let Some(model) = &mut setup.options.cluster else {
                return false;
            };
            let NodeCount { min, max } = &mut model.options.nodes;
            let bound = if control == Control::NodesMin {
                min
            } else {
                max
            };
            count(bound)
        }
        Control::BootMin | Control::BootMax => {
            let (mut lo, mut hi) = boot_range(&setup.options.boot_time);
            let bound = if control == Control::BootMin {
                &mut lo
            } else {
                &mut hi
            };
            let ms = bound.as_millis();
            let step_ms = BOOT_STEP_S * 1000;
            let next = if up {
                (ms / step_ms + 1) * step_ms
            } else if ms == 0 {
                return false;
            } else {
                (ms - 1) / step_ms * step_ms
            };
            *bound = Duration::from_millis(next);
            setup.options.boot_time = BootTime::Uniform { min: lo, max: hi };
            true
        }
    }
}

/// The next step of a ladder of seconds above (or below) `now_ms`. With `never_on_top`,
/// `u64::MAX` stands for "never", reached past the last step: `Some(None)`.
fn ladder(steps_s: &[u64], now_ms: u64, up: bool, never_on_top: bool) -> Option<Option<u64>> {
    let ms = |s: &u64| s * 1000;
    if up {
        match steps_s.iter().find(|s| ms(s) > now_ms) {
            Some(s) => Some(Some(*s)),
            None if never_on_top && now_ms != u64::MAX => Some(None),
            None => None,
        }
    } else {
        steps_s
            .iter()
            .rev()
            .find(|s| ms(s) < now_ms)
            .map(|s| Some(*s))
    }
}

/// Whether a setup can run: the engine's own checks, plus the boot-time bounds' order and the
/// node range (at least one node, min not above max, as `--nodes` checks it).
fn check(setup: &Setup) -> Result<(), String> {
    let (lo, hi) = boot_range(&setup.options.boot_time);
    if lo > hi {
        return Err(format!(
            "boot time min {lo} cannot go above boot time max {hi}"
        ));
    }
    if let Some(model) = &setup.options.cluster {
        NodeCount::parse(&model.options.nodes.to_string()).map_err(|e| e.to_string())?;
    }
    setup.policy().map(|_| ()).map_err(|e| e.to_string())
}
