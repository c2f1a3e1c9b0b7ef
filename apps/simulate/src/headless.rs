//! `--headless`: one run, printed as JSON or a table.

use std::process::ExitCode;

use provisioner_sim::SimReport;
use provisioner_sim::cluster::ClusterOptions;
use provisioner_sim::scenarios::{self, calibration_table, scenario};

use crate::cli::{Args, Format};
use crate::format::{say, secs};
use crate::setup::{CliError, setup, simulate, trace};

pub fn main(args: &Args) -> Result<ExitCode, CliError> {
    let (trace, what) = trace(args)?;
    let setup = setup(args)?;
    let report = simulate(&trace, &setup)?;
    print(args.format, &what, &report)?;
    if let (Some(name), Format::Table) = (&args.scenario, args.format) {
        let cells = scenario(name)?.cells(&report)?;
        say!(
            "published beside simulated (ratio = simulated / published; bold: outside 1.5x)\n{}",
            calibration_table(&cells)
        );
    }
    Ok(verdict(&report))
}

/// `--calibration`: every published benchmark figure beside the simulator's, on `--preset`
/// (default `mro-eks`) as the cluster flags tune it.
pub fn calibration(args: &Args) -> Result<ExitCode, CliError> {
    let cluster = match args.cluster_flags().model(&[])? {
        Some(model) => model.options,
        None => ClusterOptions::preset("mro-eks")?,
    };
    let cells = scenarios::calibration(&cluster, args.seed)?;
    say!("{}", calibration_table(&cells));
    Ok(ExitCode::SUCCESS)
}

/// Print a run as `--format` asks: pretty JSON, or the workload's line and the table.
pub fn print(format: Format, workload: &str, report: &SimReport) -> Result<(), CliError> {
    let out = match format {
        Format::Json => {
            serde_json::to_string_pretty(report).map_err(|e| CliError::Output(e.to_string()))?
        }
        Format::Table => {
            let mut out = format!("{workload}\n");
            table(report, &mut out);
            out
        }
    };
    say!("{out}");
    Ok(())
}

/// Exit 0 when every invariant held; otherwise name the broken ones and exit 1.
pub fn verdict(report: &SimReport) -> ExitCode {
    if report.is_ok() {
        return ExitCode::SUCCESS;
    }
    for v in &report.invariant_violations {
        eprintln!("invariant broken: {v}");
    }
    ExitCode::from(1)
}

/// The report for people.
fn table(r: &SimReport, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "policy            {}", r.policy);
    let _ = writeln!(
        out,
        "jobs              {} ({} completed)",
        r.jobs, r.jobs_completed
    );
    let _ = writeln!(
        out,
        "wait              mean {:.1}s  p50 {:.1}s  p95 {:.1}s  p99 {:.1}s  max {:.1}s",
        r.wait_mean_s, r.wait_p50_s, r.wait_p95_s, r.wait_p99_s, r.wait_max_s
    );
    let _ = writeln!(
        out,
        "VM-hours          {:.1} (busy {:.1}, idle {:.1}, boot {:.1}); stopped {:.1}",
        r.vm_hours, r.busy_vm_hours, r.idle_vm_hours, r.boot_vm_hours, r.stopped_vm_hours
    );
    let _ = writeln!(
        out,
        "VMs               {} created, peak {} on",
        r.vms_created, r.peak_vms
    );
    let _ = writeln!(
        out,
        "simulated         {:.1} days, {} events, {} controller cycles, {:.3}s wall",
        r.sim_seconds / 86_400.0,
        r.events,
        r.controller_cycles,
        r.wall_seconds
    );
    let f = &r.faults;
    let _ = writeln!(
        out,
        "faults            api errors {}, api timeouts {}, k8s errors {}, start failures {}, restarts {}",
        f.api_errors, f.api_timeouts, f.k8s_errors, f.start_failures, f.controller_restarts
    );
    if f.outages
        + f.lost_nodes
        + f.stuck_starts
        + f.unschedulable_vms
        + f.never_connecting_vms
        + f.vms_reclaimed
        > 0
    {
        let _ = writeln!(
            out,
            "                  outages {} (pool kept through {}), lost nodes {} ({} VMs, {} jobs re-run), stuck starts {}, unschedulable {}, never connecting {}, VMs reclaimed {}",
            f.outages,
            f.outages_pool_kept,
            f.lost_nodes,
            f.vms_on_lost_nodes,
            f.jobs_rerun,
            f.stuck_starts,
            f.unschedulable_vms,
            f.never_connecting_vms,
            f.vms_reclaimed
        );
    }
    for o in &r.outages {
        let total = |v: &[u32]| v.iter().sum::<u32>();
        let _ = writeln!(
            out,
            "                  outage {:.0}s..{}: pool {} before, {} one poll after{}",
            o.start_s,
            o.end_s.map_or("end".to_owned(), |e| format!("{e:.0}s")),
            total(&o.replicas_before),
            o.replicas_after
                .as_deref()
                .map_or("-".to_owned(), |a| total(a).to_string()),
            if o.pool_back { "" } else { " (not back)" }
        );
    }
    if let Some(c) = &r.cluster {
        let _ = writeln!(
            out,
            "cluster           {} unschedulable, {} image pulls, nodes +{} -{}, peak {} nodes",
            c.unschedulable, c.image_pulls, c.nodes_added, c.nodes_removed, c.peak_nodes
        );
    }
    let _ = writeln!(
        out,
        "invariants        {}",
        if r.is_ok() {
            "all held".to_owned()
        } else {
            format!("{} BROKEN", r.invariant_violations.len())
        }
    );
    let _ = writeln!(
        out,
        "\n{:<28} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6}",
        "class", "jobs", "p50 s", "p95 s", "max s", "VM-h", "idle VM-h", "peak"
    );
    for c in &r.classes {
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>6}",
            c.class,
            c.jobs,
            c.wait_p50_s,
            c.wait_p95_s,
            c.wait_max_s,
            c.vm_hours,
            c.idle_vm_hours,
            c.peak_vms
        );
    }
    if !r.phases.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<28} {:>19} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "phase", "from..to", "jobs", "p50 s", "p90 s", "p95 s", "p99 s", "VM-h"
        );
        let rows = std::iter::once(("all", &r.phases))
            .chain(r.classes.iter().map(|c| (c.class.as_str(), &c.phases)));
        for (who, phases) in rows.filter(|(_, p)| !p.is_empty()) {
            for p in phases {
                let _ = writeln!(
                    out,
                    "{:<28} {:>19} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.2}",
                    who,
                    format!("{}..{}", secs(p.start_s), secs(p.end_s)),
                    p.jobs,
                    p.wait_p50_s,
                    p.wait_p90_s,
                    p.wait_p95_s,
                    p.wait_p99_s,
                    p.vm_hours
                );
            }
        }
    }
    if !r.worst_waits.is_empty() {
        let _ = writeln!(out, "\nlongest waits");
        for w in &r.worst_waits {
            let _ = writeln!(
                out,
                "  {:>8.1}s  {} job at {:.0}s ({:.0}s long)",
                w.wait_s, w.class, w.arrival_s, w.duration_s
            );
        }
    }
}
