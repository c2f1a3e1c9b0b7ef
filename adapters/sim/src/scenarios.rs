//! CircleCI's published MRO benchmark as ready inputs (`../shared/reference/mro-0.1.3-and-1.0.md`):
//! EKS nodes of 48 vCPU / 96 GiB autoscaled 2..6, 5-minute jobs, 5 s poll, `minReplicas` 2,
//! a large class (8 vCPU / 32 GiB) and a small one (2 vCPU / 8 GiB).
//!
//! Increasing load: 10-minute steps of 1, 2, 4 and 6 jobs a minute, evenly spaced. Bursts: one
//! warm-up job, then N jobs within 60 s, then one job every 2 minutes for 30 minutes. Mixed
//! runs split the stated load between the classes (the burst table says so: "12 of 20"), the
//! classes taking turns. Jobs start after a 10-minute lead-in, so the pool holds its
//! `minReplicas` warm VMs when the first job arrives, as a benchmark's would.

use std::collections::BTreeMap;

use provisioner_core::{Duration, ResourceClass, Scaling};

use crate::SimError;
use crate::cluster::{ClusterModel, ClusterOptions, Resources};
use crate::engine::run;
use crate::options::{PolicyChoice, Scalings, SimOptions};
use crate::policies::PolicyParams;
use crate::report::SimReport;
use crate::trace::{Job, Trace};

/// The scenario names, one command each (`simulate --scenario NAME`).
pub const SCENARIO_NAMES: [&str; 6] = [
    "mro-steps-large",
    "mro-steps-small",
    "mro-steps-mixed",
    "mro-burst-large",
    "mro-burst-small",
    "mro-burst-mixed",
];

const LEAD_IN_MS: i64 = 10 * 60_000;
const JOB_MS: i64 = 5 * 60_000;
const STEP_MS: i64 = 10 * 60_000;
const STEP_RATES: [u32; 4] = [1, 2, 4, 6];
const BURST_GAP_MS: i64 = 5 * 60_000;
const COOL_DOWN_EVERY_MS: i64 = 2 * 60_000;
const COOL_DOWN_MS: i64 = 30 * 60_000;

/// One of the benchmark's classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Large,
    Small,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Self::Large => "mro/large",
            Self::Small => "mro/small",
        }
    }

    fn size(self) -> Resources {
        match self {
            Self::Large => Resources::new(8_000, 32 << 30),
            Self::Small => Resources::new(2_000, 8 << 30),
        }
    }
}

/// A published figure: one class in one window, in seconds (`p99` only for bursts).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub class: &'static str,
    /// Index into [`Scenario::windows`].
    pub window: usize,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: Option<f64>,
}

/// A ready benchmark run: the trace, the per-class scaling and VM sizes, the cuts between its
/// phases and the figures CircleCI published for them.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub trace: Trace,
    pub scalings: Scalings,
    pub vm_sizes: Vec<(ResourceClass, Resources)>,
    pub poll_interval: Duration,
    /// `--phases` cuts; the windows they make are named by `windows` (the first is the lead-in).
    pub cuts: Vec<Duration>,
    pub windows: Vec<&'static str>,
    pub published: Vec<Published>,
}

/// The scenario called `name` (one of [`SCENARIO_NAMES`]).
pub fn scenario(name: &str) -> Result<Scenario, SimError> {
    let (kinds, burst): (&[Kind], Option<u32>) = match name {
        "mro-steps-large" => (&[Kind::Large], None),
        "mro-steps-small" => (&[Kind::Small], None),
        "mro-steps-mixed" => (&[Kind::Large, Kind::Small], None),
        "mro-burst-large" => (&[Kind::Large], Some(12)),
        "mro-burst-small" => (&[Kind::Small], Some(49)),
        "mro-burst-mixed" => (&[Kind::Large, Kind::Small], Some(20)),
        other => {
            return Err(SimError::Option(format!(
                "unknown scenario {other:?} (known: {})",
                SCENARIO_NAMES.join(", ")
            )));
        }
    };
    let mixed = kinds.len() > 1;
    let mut arrivals: Vec<(i64, Kind)> = Vec::new();
    // The classes take turns: 12 large of 20 puts the extra large ones at the end.
    let take_turns = |i: usize, large_share: Option<(usize, usize)>| -> Kind {
        let alternate = if i.is_multiple_of(2) {
            Kind::Large
        } else {
            Kind::Small
        };
        match (kinds, large_share) {
            ([only], _) => *only,
            (_, Some((large, total))) if i >= 2 * (total - large) => Kind::Large,
            _ => alternate,
        }
    };
    let (cuts, windows, published);
    match burst {
        None => {
            let mut i = 0;
            for (step, rate) in STEP_RATES.iter().enumerate() {
                let start = LEAD_IN_MS + step as i64 * STEP_MS;
                let every = 60_000 / i64::from(*rate);
                let mut t = start;
                while t < start + STEP_MS {
                    arrivals.push((t, take_turns(i, None)));
                    i += 1;
                    t += every;
                }
            }
            cuts = (0..4)
                .map(|s| ms(LEAD_IN_MS + s * STEP_MS))
                .collect::<Vec<_>>();
            windows = vec![
                "lead-in",
                "1 job/min",
                "2 jobs/min",
                "4 jobs/min",
                "6 jobs/min",
            ];
            published = steps_published(name);
        }
        Some(n) => {
            let n = n as usize;
            let burst_at = LEAD_IN_MS + BURST_GAP_MS;
            for kind in kinds {
                arrivals.push((LEAD_IN_MS, *kind));
            }
            let share = mixed.then_some((12, n));
            for i in 0..n {
                arrivals.push((
                    burst_at + (i as i64 * 60_000) / n as i64,
                    take_turns(i, share),
                ));
            }
            let cool_from = burst_at + 60_000;
            for (i, t) in (0..COOL_DOWN_MS / COOL_DOWN_EVERY_MS).enumerate() {
                arrivals.push((cool_from + t * COOL_DOWN_EVERY_MS, take_turns(i, None)));
            }
            cuts = vec![ms(burst_at), ms(cool_from)];
            windows = vec!["warm-up", "burst", "cool-down"];
            published = burst_published(name);
        }
    }
    arrivals.sort_by_key(|(t, _)| *t);
    let classes: Vec<ResourceClass> = kinds
        .iter()
        .map(|k| ResourceClass::parse(k.class()))
        .collect::<Result<_, _>>()
        .map_err(|e| SimError::Internal(e.to_string()))?;
    let index = |k: Kind| kinds.iter().position(|x| *x == k).unwrap_or(0) as u16;
    let trace = Trace {
        jobs: arrivals
            .iter()
            .map(|(t, k)| Job {
                arrival_ms: *t,
                duration_ms: JOB_MS,
                class: index(*k),
            })
            .collect(),
        classes: classes.clone(),
    };
    let mut per_class = BTreeMap::new();
    for (class, kind) in classes.iter().zip(kinds) {
        per_class.insert(class.clone(), scaling(*kind, burst.is_some())?);
    }
    Ok(Scenario {
        name: SCENARIO_NAMES
            .into_iter()
            .find(|n| *n == name)
            .unwrap_or("mro"),
        trace,
        scalings: Scalings {
            default: None,
            classes: per_class,
        },
        vm_sizes: classes
            .iter()
            .zip(kinds)
            .map(|(c, k)| (c.clone(), k.size()))
            .collect(),
        poll_interval: Duration::from_secs(5),
        cuts,
        windows,
        published,
    })
}

/// The containerDisk both classes boot (CircleCI's default VM image), so they share a node's
/// image cache.
const IMAGE: &str = "circleci/runner-containerdisk:ubuntu-24.04";

impl Scenario {
    /// The run's options: the scenario's poll interval, VM sizes and phases on `cluster`.
    pub fn options(&self, cluster: &ClusterOptions, seed: u64) -> SimOptions {
        let mut model = ClusterModel::new(cluster.clone());
        for (class, size) in &self.vm_sizes {
            model.sizes.insert(class.clone(), *size);
            model.images.insert(class.clone(), IMAGE.to_owned());
        }
        SimOptions {
            poll_interval: self.poll_interval,
            seed,
            cluster: Some(model),
            phases: self.cuts.clone(),
            ..SimOptions::default()
        }
    }

    pub fn run(&self, cluster: &ClusterOptions, seed: u64) -> Result<SimReport, SimError> {
        run(
            &self.trace,
            &self.options(cluster, seed),
            &PolicyChoice::Provisioner(self.scalings.clone()),
        )
    }
}

/// One published figure beside the simulator's.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub scenario: &'static str,
    pub class: &'static str,
    pub window: &'static str,
    /// `p50`, `p90` or `p99`.
    pub metric: &'static str,
    pub published_s: f64,
    pub simulated_s: f64,
}

impl Cell {
    /// Simulated over published (a zero against a zero counts as 1).
    pub fn ratio(&self) -> f64 {
        if self.published_s == self.simulated_s {
            1.0
        } else {
            self.simulated_s / self.published_s
        }
    }

    /// Within a factor of 1.5 either way.
    pub fn within(&self, factor: f64) -> bool {
        let r = self.ratio();
        r <= factor && r >= 1.0 / factor
    }
}

/// Every published cell of every scenario beside the simulator's figure on `cluster`.
pub fn calibration(cluster: &ClusterOptions, seed: u64) -> Result<Vec<Cell>, SimError> {
    let mut cells = Vec::new();
    for name in SCENARIO_NAMES {
        let s = scenario(name)?;
        let report = s.run(cluster, seed)?;
        if !report.is_ok() {
            return Err(SimError::Internal(format!(
                "scenario {name} broke invariants: {:?}",
                report.invariant_violations
            )));
        }
        cells.extend(s.cells(&report)?);
    }
    Ok(cells)
}

impl Scenario {
    /// The published figures beside `report`'s (a run of this scenario).
    pub fn cells(&self, report: &SimReport) -> Result<Vec<Cell>, SimError> {
        let s = self;
        let name = self.name;
        let mut cells = Vec::new();
        for p in &s.published {
            let class = report
                .classes
                .iter()
                .find(|c| c.class == p.class)
                .ok_or_else(|| SimError::Internal(format!("{name}: no class {}", p.class)))?;
            let phase = class
                .phases
                .get(p.window)
                .ok_or_else(|| SimError::Internal(format!("{name}: no window {}", p.window)))?;
            let window = s.windows[p.window];
            let mut cell = |metric, published_s, simulated_s| {
                cells.push(Cell {
                    scenario: s.name,
                    class: p.class,
                    window,
                    metric,
                    published_s,
                    simulated_s,
                });
            };
            cell("p50", p.p50_s, phase.wait_p50_s);
            cell("p90", p.p90_s, phase.wait_p90_s);
            if let Some(p99) = p.p99_s {
                cell("p99", p99, phase.wait_p99_s);
            }
        }
        Ok(cells)
    }
}

/// The calibration table of the README: one row per class and phase, published beside
/// simulated waits and their ratio (cells outside 1.5x in bold), then the count within 1.5x.
pub fn calibration_table(cells: &[Cell]) -> String {
    let mut out = String::from(
        "| scenario | class | phase | published p50 / p90 / p99 (s) | simulated (s) | ratio |\n|---|---|---|---|---|---|\n",
    );
    let mut rows: Vec<Vec<&Cell>> = Vec::new();
    for cell in cells {
        match rows.last_mut() {
            Some(row)
                if row[0].scenario == cell.scenario
                    && row[0].class == cell.class
                    && row[0].window == cell.window =>
            {
                row.push(cell);
            }
            _ => rows.push(vec![cell]),
        }
    }
    let join = |row: &[&Cell], f: &dyn Fn(&Cell) -> String| {
        row.iter().map(|c| f(c)).collect::<Vec<_>>().join(" / ")
    };
    for row in &rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row[0].scenario,
            row[0].class,
            row[0].window,
            join(row, &|c| format!("{:.0}", c.published_s)),
            join(row, &|c| format!("{:.0}", c.simulated_s)),
            join(row, &|c| if c.within(1.5) {
                format!("{:.2}", c.ratio())
            } else {
                format!("**{:.2}**", c.ratio())
            }),
        ));
    }
    let within = cells.iter().filter(|c| c.within(1.5)).count();
    out.push_str(&format!(
        "\n{within} of {} cells within 1.5x ({:.0} %).\n",
        cells.len(),
        100.0 * within as f64 / cells.len().max(1) as f64
    ));
    out
}

fn ms(t: i64) -> Duration {
    Duration::from_millis(t.max(0) as u64)
}

/// `minReplicas` 2; `maxReplicas` as published: 9 and 34 under increasing load, 12 and 48
/// in the bursts. No headroom, no idle timeout (the benchmark names neither).
fn scaling(kind: Kind, burst: bool) -> Result<Scaling, SimError> {
    let max_replicas = match (kind, burst) {
        (Kind::Large, false) => 9,
        (Kind::Small, false) => 34,
        (Kind::Large, true) => 12,
        (Kind::Small, true) => 48,
    };
    let params = PolicyParams {
        min_replicas: 2,
        max_replicas,
        ..PolicyParams::default()
    };
    match PolicyChoice::reference("circleci-0.1.2", &params)? {
        PolicyChoice::Provisioner(s) => s
            .default
            .ok_or_else(|| SimError::Internal("circleci-0.1.2 has no scaling".to_owned())),
        _ => Err(SimError::Internal(
            "circleci-0.1.2 is not a provisioner policy".to_owned(),
        )),
    }
}

/// The increasing-load table: p50 / p90 per step (windows 1..=4).
fn steps_published(name: &str) -> Vec<Published> {
    const LARGE_ALONE: [(f64, f64); 4] = [
        (35.0, 106.0),
        (49.0, 82.0),
        (304.0, 518.0),
        (1140.0, 1574.0),
    ];
    const SMALL_ALONE: [(f64, f64); 4] = [(3.0, 4.0), (37.0, 53.0), (43.0, 86.0), (45.0, 54.0)];
    const LARGE_MIXED: [(f64, f64); 4] =
        [(35.0, 47.0), (74.0, 115.0), (95.0, 170.0), (327.0, 417.0)];
    const SMALL_MIXED: [(f64, f64); 4] = [(31.0, 35.0), (33.0, 50.0), (33.0, 36.0), (36.0, 57.0)];
    let rows: &[(&'static str, [(f64, f64); 4])] = match name {
        "mro-steps-large" => &[("mro/large", LARGE_ALONE)],
        "mro-steps-small" => &[("mro/small", SMALL_ALONE)],
        _ => &[("mro/large", LARGE_MIXED), ("mro/small", SMALL_MIXED)],
    };
    rows.iter()
        .flat_map(|(class, cells)| {
            cells
                .iter()
                .enumerate()
                .map(|(step, (p50, p90))| Published {
                    class,
                    window: step + 1,
                    p50_s: *p50,
                    p90_s: *p90,
                    p99_s: None,
                })
        })
        .collect()
}

/// The burst table: p50 / p90 / p99 for the burst (window 1) and the cool-down (window 2).
fn burst_published(name: &str) -> Vec<Published> {
    let rows: &[(&'static str, [f64; 3], [f64; 3])] = match name {
        "mro-burst-large" => &[("mro/large", [153.0, 157.0, 255.0], [32.0, 181.0, 305.0])],
        "mro-burst-small" => &[("mro/small", [171.0, 198.0, 209.0], [4.0, 34.0, 128.0])],
        _ => &[
            ("mro/large", [151.0, 156.0, 287.0], [3.0, 31.0, 32.0]),
            ("mro/small", [34.0, 63.0, 122.0], [8.0, 44.0, 111.0]),
        ],
    };
    rows.iter()
        .flat_map(|(class, burst, cool)| {
            [(1, burst), (2, cool)].map(|(window, [p50, p90, p99])| Published {
                class,
                window,
                p50_s: *p50,
                p90_s: *p90,
                p99_s: Some(*p99),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_class_in(s: &Scenario, from_ms: i64, until_ms: i64) -> Vec<usize> {
        (0..s.trace.classes.len())
            .map(|c| {
                s.trace
                    .jobs
                    .iter()
                    .filter(|j| {
                        usize::from(j.class) == c
                            && j.arrival_ms >= from_ms
                            && j.arrival_ms < until_ms
                    })
                    .count()
            })
            .collect()
    }

    #[test]
    fn steps_are_ten_minutes_of_one_two_four_and_six_jobs_a_minute() {
        let s = scenario("mro-steps-large").expect("scenario");
        let bounds: Vec<i64> = s.cuts.iter().map(|c| c.as_millis() as i64).collect();
        assert_eq!(bounds, [600_000, 1_200_000, 1_800_000, 2_400_000]);
        let counts: Vec<usize> = [
            (600_000, 1_200_000),
            (1_200_000, 1_800_000),
            (1_800_000, 2_400_000),
            (2_400_000, 3_000_000),
        ]
        .iter()
        .map(|(a, b)| per_class_in(&s, *a, *b)[0])
        .collect();
        assert_eq!(counts, [10, 20, 40, 60]);
        assert_eq!(s.trace.jobs.len(), 130);
        assert!(s.trace.jobs.iter().all(|j| j.duration_ms == 300_000));
        assert_eq!(s.windows.len(), s.cuts.len() + 1);
        assert_eq!(s.published.len(), 4);
        assert_eq!(s.published[3].p50_s, 1140.0);
        let sc = &s.scalings.classes[&s.trace.classes[0]];
        assert_eq!((sc.min_replicas.get(), sc.max_replicas.get()), (2, 9));
        assert_eq!(s.vm_sizes[0].1.to_string(), "8/32Gi");
    }

    #[test]
    fn mixed_steps_split_the_load_between_the_classes() {
        let s = scenario("mro-steps-mixed").expect("scenario");
        assert_eq!(
            s.trace
                .classes
                .iter()
                .map(ResourceClass::as_str)
                .collect::<Vec<_>>(),
            ["mro/large", "mro/small"]
        );
        assert_eq!(per_class_in(&s, 600_000, 1_200_000), [5, 5]);
        assert_eq!(per_class_in(&s, 2_400_000, 3_000_000), [30, 30]);
        assert_eq!(s.published.len(), 8);
        assert_eq!(s.scalings.classes.len(), 2);
    }

    #[test]
    fn bursts_have_a_warm_up_job_a_minute_of_burst_and_a_half_hour_cool_down() {
        let s = scenario("mro-burst-small").expect("scenario");
        let cuts: Vec<i64> = s.cuts.iter().map(|c| c.as_millis() as i64).collect();
        assert_eq!(cuts, [900_000, 960_000]);
        assert_eq!(per_class_in(&s, 0, cuts[0]), [1]);
        assert_eq!(per_class_in(&s, cuts[0], cuts[1]), [49]);
        assert_eq!(per_class_in(&s, cuts[1], i64::MAX), [15]);
        let sc = &s.scalings.classes[&s.trace.classes[0]];
        assert_eq!(sc.max_replicas.get(), 48);
        let mixed = scenario("mro-burst-mixed").expect("scenario");
        assert_eq!(per_class_in(&mixed, 900_000, 960_000), [12, 8]);
        assert_eq!(per_class_in(&mixed, 0, 900_000), [1, 1]);
        assert_eq!(mixed.published.len(), 4);
        assert_eq!(mixed.published[3].p99_s, Some(111.0));
    }

    #[test]
    fn the_table_groups_cells_by_class_and_phase_and_marks_misses() {
        let cell = |window, metric, published_s, simulated_s| Cell {
            scenario: "mro-burst-small",
            class: "mro/small",
            window,
            metric,
            published_s,
            simulated_s,
        };
        let table = calibration_table(&[
            cell("burst", "p50", 100.0, 120.0),
            cell("burst", "p90", 100.0, 200.0),
            cell("cool-down", "p50", 4.0, 4.0),
        ]);
        assert!(
            table.contains(
                "| mro-burst-small | mro/small | burst | 100 / 100 | 120 / 200 | 1.20 / **2.00** |"
            ),
            "{table}"
        );
        assert!(table.contains("| cool-down | 4 | 4 | 1.00 |"), "{table}");
        assert!(
            table.ends_with("2 of 3 cells within 1.5x (67 %).\n"),
            "{table}"
        );
    }

    #[test]
    fn every_named_scenario_builds_and_an_unknown_one_is_named() {
        for name in SCENARIO_NAMES {
            let s = scenario(name).expect(name);
            assert_eq!(s.name, name);
            assert!(
                s.trace
                    .jobs
                    .windows(2)
                    .all(|w| w[0].arrival_ms <= w[1].arrival_ms)
            );
        }
        let err = scenario("mro-steps").expect_err("unknown").to_string();
        assert!(
            err.contains("\"mro-steps\"") && err.contains("mro-burst-mixed"),
            "{err}"
        );
    }
}
