//! Shared test fixtures: class configurations.
#![allow(dead_code)]

use provisioner_core::config::{EmptyDiskMount, FsType, RunnerOptions};
use provisioner_core::{ClassConfig, Config, Duration, ResourceClass, Scaling, Secret};

/// A value that would run commands or break out of quotes if anything interpolated it unquoted.
pub const EVIL: &str = "it's \"q\" $(touch PWNED1) `touch PWNED2` ${HOME} \\n\nline2: x\n- y\t#z";

pub fn class(name: &str) -> ClassConfig {
    ClassConfig {
        name: ResourceClass::parse(name).expect("valid class name"),
        token: Secret::new("tok-plain-123"),
        user_data: None,
        scaling: Scaling::default(),
        runner: RunnerOptions::default(),
        empty_disk_mounts: Vec::new(),
        spec: provisioner_core::config::default_spec(),
    }
}

/// A class using every option the start-up script writes.
pub fn full_class(name: &str) -> ClassConfig {
    let mut c = class(name);
    c.scaling.idle_timeout = Some(Duration::parse("10m").expect("duration"));
    c.runner = RunnerOptions {
        working_directory: Some("/var/lib/circleci/work".to_owned()),
        task_agent_directory: Some("/opt/circleci/agent".to_owned()),
        command_prefix: Some(vec![
            "sudo".into(),
            "-niHu".into(),
            "circleci".into(),
            "--".into(),
        ]),
        max_run_time: Some(Duration::parse("2h").expect("duration")),
        ..RunnerOptions::default()
    };
    c.empty_disk_mounts = vec![EmptyDiskMount {
        serial: "scratch1".into(),
        path: "/mnt/scratch".into(),
        fs_type: FsType::Ext4,
    }];
    c.spec = serde_json::json!({
        "domain": {
            "resources": { "requests": { "memory": "4Gi", "cpu": "2" } },
            "devices": { "disks": [
                { "name": "disk", "disk": { "bus": "virtio" } },
                { "name": "scratch", "serial": "scratch1", "disk": { "bus": "virtio" } }
            ] }
        },
        "volumes": [
            { "name": "disk", "containerDisk": { "image": "quay.io/containerdisks/ubuntu:22.04" } },
            { "name": "scratch", "emptyDisk": { "capacity": "20Gi" } }
        ]
    });
    c
}

pub fn config(classes: Vec<ClassConfig>) -> Config {
    Config {
        circleci_api_addr: "https://runner.circleci.com".to_owned(),
        poll_interval: Duration::from_secs(5),
        log_level: None,
        circle_token: Some(Secret::new("circle-api-token-xyz")),
        classes,
        // The rendering tests without the sidecar check the token where the runner needs it.
        sidecar: false,
        runner_bundle: None,
    }
}
