//! The advisor's time-of-day schedules: found in the asked time zone, written as the config's
//! `schedules` in that zone, and the written config replays exactly what the advisor measured.

use provisioner_core::config::{ConfigSources, Source, load};
use provisioner_core::policy::Timezone;
use provisioner_sim::advise::{AdviseOptions, Target, advise, config_yaml, helm_values};
use provisioner_sim::{PolicyChoice, SimOptions, SyntheticOptions, Trace, run};

fn trace() -> Trace {
    Trace::synthetic(&SyntheticOptions {
        jobs_per_hour: 20.0,
        days: 2.0,
        seed: 5,
        ..SyntheticOptions::default()
    })
    .expect("synthetic trace")
}

#[test]
fn schedules_in_the_asked_time_zone_replay_as_measured() {
    let trace = trace();
    let zone = "America/New_York";
    let options = AdviseOptions {
        target: Target::parse("p95=4m").expect("target"),
        test_from: None,
        max_replicas: 30,
        timezone: Timezone::parse(zone).expect("zone"),
        sim: SimOptions {
            seed: 5,
            ..SimOptions::default()
        },
    };
    let advice = advise(&trace, &options).expect("advice");
    assert!(!advice.busy_hours.is_empty(), "the workload has busy hours");
    let (index, scheduled) = advice
        .tried
        .iter()
        .enumerate()
        .find(|(_, c)| !c.scaling.schedules.is_empty())
        .expect("schedules were tried");
    assert!(
        scheduled
            .scaling
            .schedules
            .iter()
            .all(|s| s.timezone.name() == zone && s.overrides.service_level.is_some())
    );
    // Written as the choice, the config holds the same scaling, schedules and zone included.
    let mut as_chosen = advice.clone();
    as_chosen.chosen = index;
    let text = config_yaml(&trace, &as_chosen);
    assert!(text.contains(&format!("timezone: \"{zone}\"")), "{text}");
    let config = load(&ConfigSources {
        config: Some(Source {
            name: "advised.yaml",
            text: &text,
        }),
        require_tokens: false,
        ..ConfigSources::default()
    })
    .unwrap_or_else(|e| panic!("the written config loads: {e}\n{text}"));
    for class in &config.classes {
        assert_eq!(class.scaling, scheduled.scaling, "{}", class.name);
    }
    // Replayed as `simulate --config` replays it, it gives the figures the advisor measured.
    let sim = SimOptions {
        poll_interval: config.poll_interval,
        phases: vec![provisioner_core::Duration::from_millis(
            (advice.test_from_s * 1000.0) as u64,
        )],
        ..options.sim.clone()
    };
    let replay = run(&trace, &sim, &PolicyChoice::from_config(&config)).expect("replay");
    assert_eq!(replay.phases[0], scheduled.fit);
    assert_eq!(replay.phases[1], scheduled.test);
    // The Helm values carry the same schedules.
    let values = helm_values(&trace, &as_chosen);
    for s in &scheduled.scaling.schedules {
        assert!(
            values.contains(&format!("start: \"{}\"", s.start)),
            "{values}"
        );
    }
    assert!(values.contains(&format!("timezone: \"{zone}\"")));
}

#[test]
fn busy_hours_follow_the_time_zone() {
    let trace = trace();
    let find = |zone: &str| {
        provisioner_sim::advise::busy_windows(
            &trace,
            36 * 3_600_000,
            SimOptions::default().start_at_ms,
            &Timezone::parse(zone).expect("zone"),
        )
        .expect("windows")
    };
    let (utc, tokyo) = (find("UTC"), find("Asia/Tokyo"));
    assert!(!utc.is_empty() && !tokyo.is_empty());
    // The first busy hour is the same instant, on Tokyo's clock 9 hours later (no summer
    // time there); the windows differ after it, as each fills its own local days.
    let first = |w: &provisioner_sim::advise::BusyWindow| {
        u32::from(w.days[0]) * 24 + u32::from(w.start_hour)
    };
    assert_eq!(first(&tokyo[0]), first(&utc[0]) + 9, "{utc:?} / {tokyo:?}");
    assert_ne!(utc, tokyo);
}
