//! The README's calibration table is what the simulator computes today: a change to the
//! model or the `mro-eks` preset that moves a figure fails here until the table is updated
//! (`simulate --calibration` prints the new one). The published benchmark's qualitative
//! findings are checked on the same runs.

use provisioner_sim::cluster::ClusterOptions;
use provisioner_sim::scenarios::{Cell, calibration, calibration_table};

const START: &str = "<!-- calibration:start -->\n";
const END: &str = "<!-- calibration:end -->";

fn cells() -> Vec<Cell> {
    let preset = ClusterOptions::preset("mro-eks").expect("preset");
    calibration(&preset, 1).expect("calibration runs")
}

fn simulated(cells: &[Cell], scenario: &str, class: &str, window: &str, metric: &str) -> f64 {
    cells
        .iter()
        .find(|c| {
            c.scenario == scenario && c.class == class && c.window == window && c.metric == metric
        })
        .unwrap_or_else(|| panic!("no cell {scenario} {class} {window} {metric}"))
        .simulated_s
}

#[test]
fn the_readme_table_matches_the_simulator() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let from = readme.find(START).expect("calibration start marker") + START.len();
    let to = readme.find(END).expect("calibration end marker");
    let table = calibration_table(&cells());
    assert_eq!(
        &readme[from..to],
        table,
        "the README's calibration table is stale; the simulator now gives:\n{table}"
    );
}

#[test]
fn the_published_findings_show() {
    let c = cells();
    let large = |scenario, window| simulated(&c, scenario, "mro/large", window, "p50");
    let small = |scenario, window| simulated(&c, scenario, "mro/small", window, "p50");
    // The small class barely notices the load: 6 jobs/min waits under twice 1 job/min's.
    let (low, high) = (
        small("mro-steps-small", "1 job/min"),
        small("mro-steps-small", "6 jobs/min"),
    );
    assert!(
        high < 2.0 * low,
        "small alone: {low} s at 1/min, {high} s at 6/min"
    );
    // The large class saturates from 4 jobs/min: waits jump, then keep growing.
    let (two, four, six) = (
        large("mro-steps-large", "2 jobs/min"),
        large("mro-steps-large", "4 jobs/min"),
        large("mro-steps-large", "6 jobs/min"),
    );
    assert!(
        four > 3.0 * two && six > four,
        "large alone: {two} / {four} / {six} s"
    );
    // Mixing helps the large class (it gets half the load).
    for step in ["4 jobs/min", "6 jobs/min"] {
        let (alone, mixed) = (
            large("mro-steps-large", step),
            large("mro-steps-mixed", step),
        );
        assert!(
            mixed < alone,
            "large at {step}: alone {alone} s, mixed {mixed} s"
        );
    }
    // After a burst, the pool recovers: cool-down waits are below the burst's.
    for (scenario, class) in [
        ("mro-burst-large", "mro/large"),
        ("mro-burst-small", "mro/small"),
        ("mro-burst-mixed", "mro/large"),
        ("mro-burst-mixed", "mro/small"),
    ] {
        let burst = simulated(&c, scenario, class, "burst", "p50");
        let cool = simulated(&c, scenario, class, "cool-down", "p50");
        assert!(
            cool < burst,
            "{scenario} {class}: burst {burst} s, cool-down {cool} s"
        );
    }
}
