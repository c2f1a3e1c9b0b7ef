//! Job traces: read from CSV or generated, always sorted by arrival.

use std::path::Path;

use provisioner_core::ResourceClass;

use crate::SimError;
use crate::rng::SplitMix64;

/// The class jobs get when the trace has no `resource_class` column.
pub(crate) const DEFAULT_TRACE_CLASS: &str = "trace/default";

/// One job: when it was submitted and how long it runs once claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    /// Milliseconds from the start of the trace.
    pub arrival_ms: i64,
    pub duration_ms: i64,
    /// Index into [`Trace::classes`].
    pub class: u16,
}

/// Jobs sorted by arrival (ties keep file order), and the classes they use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    pub jobs: Vec<Job>,
    /// Sorted, unique.
    pub classes: Vec<ResourceClass>,
}

impl Trace {
    pub fn load_csv(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse_csv(&text)
    }

    /// Parse `submitted_at_s,duration_s[,resource_class]` (columns in any order, found by the
    /// header). A class without a `/` (the real trace uses language names) becomes
    /// `trace/<name>`. Bad rows are reported with their line and column.
    pub fn parse_csv(text: &str) -> Result<Self, SimError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.find(|(_, l)| !l.trim().is_empty()) else {
            return Err(SimError::Trace { line: 1, column: 1, message: "the trace is empty; expected a header \"submitted_at_s,duration_s,resource_class\"".to_owned() });
        };
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |want: &str| names.iter().position(|n| *n == want);
        let header_line = text
            .lines()
            .position(|l| !l.trim().is_empty())
            .map_or(1, |i| i + 1);
        let missing = |col: &str| SimError::Trace {
            line: header_line,
            column: 1,
            message: format!(
                "the header has no {col:?} column (expected \"submitted_at_s,duration_s,resource_class\", the class optional); found {header:?}"
            ),
        };
        let at_col = find("submitted_at_s").ok_or_else(|| missing("submitted_at_s"))?;
        let dur_col = find("duration_s").ok_or_else(|| missing("duration_s"))?;
        let class_col = find("resource_class");
        let mut class_names: Vec<String> = Vec::new();
        let mut raw: Vec<(i64, i64, usize)> = Vec::new();
        let mut fields: Vec<&str> = Vec::with_capacity(names.len());
        for (index, line) in lines {
            let line_no = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            fields.clear();
            fields.extend(line.split(','));
            if fields.len() != names.len() {
                return Err(SimError::Trace {
                    line: line_no,
                    column: fields.len().min(names.len()) + 1,
                    message: format!(
                        "expected {} fields as in the header, found {}",
                        names.len(),
                        fields.len()
                    ),
                });
            }
            let seconds = |col: usize| -> Result<i64, SimError> {
                let text = fields[col].trim();
                let bad = |why: &str| SimError::Trace {
                    line: line_no,
                    column: col + 1,
                    message: format!("{}: {text:?} {why}", names[col]),
                };
                let value: f64 = text
                    .parse()
                    .map_err(|_| bad("is not a number of seconds"))?;
                if !value.is_finite() {
                    return Err(bad("is not a finite number"));
                }
                if value < 0.0 {
                    return Err(bad("is negative"));
                }
                if value > 1e11 {
                    return Err(bad("is too large"));
                }
                Ok((value * 1000.0).round() as i64)
            };
            let at = seconds(at_col)?;
            let dur = seconds(dur_col)?;
            let class = match class_col {
                Some(col) => {
                    let name = fields[col].trim();
                    match class_names.iter().position(|c| c == name) {
                        Some(i) => i,
                        None => {
                            if class_names.len() > usize::from(u16::MAX) {
                                return Err(SimError::Trace {
                                    line: line_no,
                                    column: col + 1,
                                    message: format!(
                                        "resource_class: more than {} distinct classes",
                                        u16::MAX
                                    ),
                                });
                            }
                            class_names.push(name.to_owned());
                            class_names.len() - 1
                        }
                    }
                }
                None => usize::MAX,
            };
            raw.push((at, dur, class));
        }
        let mut resolved = Vec::with_capacity(class_names.len());
        for name in &class_names {
            let full = if name.contains('/') {
                name.clone()
            } else {
                format!("trace/{name}")
            };
            let class = ResourceClass::parse(&full).map_err(|e| {
                let line = text
                    .lines()
                    .position(|l| {
                        l.split(',').nth(class_col.unwrap_or(0)).map(str::trim)
                            == Some(name.as_str())
                    })
                    .map_or(0, |i| i + 1);
                SimError::Trace {
                    line,
                    column: class_col.unwrap_or(0) + 1,
                    message: format!("resource_class: {e}"),
                }
            })?;
            resolved.push(class);
        }
        if class_col.is_none() || raw.is_empty() {
            resolved.push(
                ResourceClass::parse(DEFAULT_TRACE_CLASS)
                    .map_err(|e| SimError::Internal(e.to_string()))?,
            );
        }
        Ok(Self::from_rows(raw, resolved))
    }

    /// Build from `(arrival_ms, duration_ms, class index)` rows, sorting rows and classes and
    /// merging classes named twice (`go` and `trace/go`).
    fn from_rows(rows: Vec<(i64, i64, usize)>, classes: Vec<ResourceClass>) -> Self {
        let mut sorted_classes = classes.clone();
        sorted_classes.sort();
        sorted_classes.dedup();
        let remap: Vec<u16> = classes
            .iter()
            .map(|c| sorted_classes.binary_search(c).unwrap_or_else(|i| i) as u16)
            .collect();
        let mut jobs: Vec<Job> = rows
            .into_iter()
            .map(|(arrival_ms, duration_ms, class)| Job {
                arrival_ms,
                duration_ms,
                class: if class == usize::MAX { 0 } else { remap[class] },
            })
            .collect();
        jobs.sort_by_key(|j| j.arrival_ms);
        Self {
            jobs,
            classes: sorted_classes,
        }
    }

    /// Run every job as one class (e.g. the real trace as the single class a config defines).
    pub fn with_single_class(mut self, class: ResourceClass) -> Self {
        for job in &mut self.jobs {
            job.class = 0;
        }
        self.classes = vec![class];
        self
    }

    /// The generator of the default workload: a diurnal and weekly cycle, fan-out builds
    /// arriving as bursts of jobs at one instant, log-normal durations.
    pub fn synthetic(options: &SyntheticOptions) -> Result<Self, SimError> {
        if !(options.jobs_per_hour.is_finite() && options.jobs_per_hour > 0.0) {
            return Err(SimError::Option(format!(
                "synthetic rate {} jobs/hour must be a positive number",
                options.jobs_per_hour
            )));
        }
        if !(options.days.is_finite() && options.days > 0.0 && options.days <= 366.0) {
            return Err(SimError::Option(format!(
                "synthetic days {} must be in (0, 366]",
                options.days
            )));
        }
        let expected_jobs = options.jobs_per_hour * options.days * 24.0;
        if expected_jobs > 50_000_000.0 {
            return Err(SimError::Option(format!(
                "synthetic workload of {} jobs/hour for {} days is about {expected_jobs:.0} jobs; at most 50 million",
                options.jobs_per_hour, options.days
            )));
        }
        if options.classes.is_empty() || options.classes.len() > usize::from(u16::MAX) {
            return Err(SimError::Option(
                "the synthetic generator needs between one and 65535 classes".to_owned(),
            ));
        }
        let mut rng = SplitMix64::stream(options.seed, 0x7ACE);
        let mean_fanout = options.mean_fanout.max(1.0);
        let builds_per_ms = options.jobs_per_hour / mean_fanout / 3_600_000.0;
        let end_ms = (options.days * 86_400_000.0) as i64;
        // Above the highest rate_shape (1.45 x 1.12).
        let peak = 1.7;
        let (mu, sigma) = (
            options.median_duration_s.max(1.0).ln(),
            options.duration_sigma.max(0.0),
        );
        let mut rows = Vec::new();
        let mut t = 0.0f64;
        loop {
            t += rng.exponential(1.0 / (builds_per_ms * peak));
            if t >= end_ms as f64 {
                break;
            }
            // Thinning: accept with the ratio of the rate now to the bounding peak rate.
            if rng.next_f64() * peak > rate_shape(t) {
                continue;
            }
            // Fan-out: geometric number of jobs with the given mean.
            let p = 1.0 / mean_fanout;
            let mut fanout = 1usize;
            while fanout < 64 && !rng.chance(p) {
                fanout += 1;
            }
            let class = (rng.next_u64() % options.classes.len() as u64) as usize;
            for _ in 0..fanout {
                let d = (mu + sigma * rng.normal()).exp().clamp(1.0, 6.0 * 3600.0);
                rows.push((t as i64, (d * 1000.0).round() as i64, class));
            }
        }
        Ok(Self::from_rows(rows, options.classes.clone()))
    }

    /// The sum of all job durations, in milliseconds.
    pub fn total_duration_ms(&self) -> i64 {
        self.jobs.iter().map(|j| j.duration_ms).sum()
    }
}

/// The relative arrival rate at `t_ms` from the start (a Monday 00:00): busiest mid-afternoon,
/// weekends quieter; averages about 1 over a week.
fn rate_shape(t_ms: f64) -> f64 {
    let hours = t_ms / 3_600_000.0;
    let hour_of_day = hours % 24.0;
    let day = ((hours / 24.0) as i64) % 7;
    let diurnal = 1.0 + 0.45 * ((hour_of_day - 9.0) / 24.0 * std::f64::consts::TAU).sin();
    let weekly = if day >= 5 { 0.7 } else { 1.12 };
    diurnal * weekly
}

/// The synthetic generator's knobs (defaults resemble the real four-week trace).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticOptions {
    pub jobs_per_hour: f64,
    pub days: f64,
    pub seed: u64,
    pub mean_fanout: f64,
    pub median_duration_s: f64,
    /// The log-normal's sigma: 1.2 gives a p95 about 7x the median, as in the real trace.
    pub duration_sigma: f64,
    pub classes: Vec<ResourceClass>,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        Self {
            jobs_per_hour: 20.0,
            days: 7.0,
            seed: 1,
            mean_fanout: 2.5,
            median_duration_s: 148.0,
            duration_sigma: 1.2,
            classes: ResourceClass::parse(DEFAULT_TRACE_CLASS)
                .map(|c| vec![c])
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_at(text: &str) -> (usize, usize, String) {
        match Trace::parse_csv(text) {
            Err(SimError::Trace {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("expected a trace error, got {other:?}"),
        }
    }

    #[test]
    fn parses_and_sorts_unsorted_rows() {
        let t = Trace::parse_csv(
            "submitted_at_s,duration_s,resource_class\n10,5,python\n2,1.5,go\n10,7,python\n",
        )
        .expect("valid");
        assert_eq!(
            t.classes
                .iter()
                .map(ResourceClass::as_str)
                .collect::<Vec<_>>(),
            ["trace/go", "trace/python"]
        );
        assert_eq!(
            t.jobs
                .iter()
                .map(|j| (j.arrival_ms, j.duration_ms, j.class))
                .collect::<Vec<_>>(),
            [(2000, 1500, 0), (10_000, 5000, 1), (10_000, 7000, 1)]
        );
    }

    #[test]
    fn a_bare_class_name_and_its_trace_form_are_one_class() {
        let t = Trace::parse_csv(
            "submitted_at_s,duration_s,resource_class\n1,1,go\n2,1,trace/go\n3,1,a/b\n",
        )
        .expect("valid");
        assert_eq!(
            t.classes
                .iter()
                .map(ResourceClass::as_str)
                .collect::<Vec<_>>(),
            ["a/b", "trace/go"]
        );
        assert_eq!(
            t.jobs.iter().map(|j| j.class).collect::<Vec<_>>(),
            [1, 1, 0]
        );
    }

    #[test]
    fn class_column_is_optional_and_order_free() {
        let t = Trace::parse_csv("\u{feff}duration_s,submitted_at_s\r\n5,1\r\n").expect("valid");
        assert_eq!(t.classes[0].as_str(), DEFAULT_TRACE_CLASS);
        assert_eq!(
            t.jobs,
            [Job {
                arrival_ms: 1000,
                duration_ms: 5000,
                class: 0
            }]
        );
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let (l, c, m) = err_at("submitted_at_s,duration_s,resource_class\n1,2,a\n3,x,b\n");
        assert_eq!((l, c), (3, 2), "{m}");
        assert!(m.contains("duration_s") && m.contains("\"x\""), "{m}");
        let (l, c, m) = err_at("submitted_at_s,duration_s\n1,2\n-4,2\n");
        assert_eq!((l, c), (3, 1));
        assert!(m.contains("negative"), "{m}");
        let (l, _, m) = err_at("submitted_at_s,duration_s\n1,2,3\n");
        assert_eq!(l, 2);
        assert!(m.contains("expected 2 fields"), "{m}");
        let (l, c, m) = err_at("submitted_at_s,duration_s,resource_class\n1,2,Bad Class\n");
        assert_eq!((l, c), (2, 3), "{m}");
        let (l, _, m) = err_at("when,duration_s\n");
        assert_eq!(l, 1);
        assert!(m.contains("submitted_at_s"), "{m}");
    }

    #[test]
    fn synthetic_is_deterministic_and_near_its_rate() {
        let opts = SyntheticOptions {
            days: 7.0,
            jobs_per_hour: 240.0,
            ..SyntheticOptions::default()
        };
        let a = Trace::synthetic(&opts).expect("synthetic");
        let b = Trace::synthetic(&opts).expect("synthetic");
        assert_eq!(a, b);
        let expected = 240.0 * 24.0 * 7.0;
        let n = a.jobs.len() as f64;
        assert!(
            (n - expected).abs() < expected * 0.15,
            "{n} jobs vs {expected}"
        );
        assert!(
            a.jobs
                .windows(2)
                .all(|w| w[0].arrival_ms <= w[1].arrival_ms)
        );
        let other = Trace::synthetic(&SyntheticOptions { seed: 2, ..opts }).expect("synthetic");
        assert_ne!(a, other);
    }
}
