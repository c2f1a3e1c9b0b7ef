//! The VM start-up script: syntax, shellcheck, and runs against a fake root with stubbed
//! package managers and systemd, for Ubuntu, RHEL, an unsupported OS and a failed install.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{EVIL, class, full_class};
use provisioner_core::Secret;
use provisioner_core::config::RunnerBundle;
use provisioner_kubevirt::{
    PROXY_PLACEHOLDER_TOKEN, PROXY_PORT, VmOptions, user_data, user_data_with,
};

const UBUNTU: &str = "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\n";
const RHEL: &str =
    "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\n";
const ALPINE: &str = "NAME=\"Alpine Linux\"\nID=alpine\n";

const DROPIN: &str = "[Service]\nRestart=no\nExecStopPost=+/bin/systemctl --no-block poweroff\nStandardOutput=journal+console\nStandardError=journal+console\n";

/// A fake machine: a root directory, stub commands on PATH that log their arguments, a console.
struct FakeVm {
    dir: tempfile::TempDir,
}

impl FakeVm {
    fn new(os_release: &str) -> Self {
        let vm = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        fs::create_dir_all(vm.root().join("etc")).expect("mkdir etc");
        fs::write(vm.root().join("etc/os-release"), os_release).expect("os-release");
        fs::create_dir_all(vm.root().join("dev/disk/by-id")).expect("mkdir dev");
        fs::write(vm.root().join("dev/disk/by-id/virtio-scratch1"), "").expect("fake disk");
        fs::write(vm.path("console"), "").expect("console");
        let bin = vm.path("bin");
        fs::create_dir_all(&bin).expect("mkdir bin");
        let log = r#"printf '%s\n' "$(basename "$0") $*" >>"$STUB_LOG""#;
        let stubs: &[(&str, String)] = &[
            ("apt-get", log.to_owned()),
            ("yum", log.to_owned()),
            ("systemctl", log.to_owned()),
            ("shutdown", log.to_owned()),
            ("poweroff", log.to_owned()),
            // `mount -o ro DEVICE DIR` is the bundle disk: the fake disk's files appear in DIR.
            (
                "mount",
                format!(
                    "{log}\nif [ \"$1\" = -o ] && [ -n \"${{STUB_BUNDLE_TREE:-}}\" ]; then cp -r \"$STUB_BUNDLE_TREE\"/. \"$4\"; fi"
                ),
            ),
            ("umount", log.to_owned()),
            ("dpkg", "echo amd64".to_owned()),
            ("uname", "echo x86_64".to_owned()),
            ("mkfs.ext4", log.to_owned()),
            ("mkfs.xfs", log.to_owned()),
            ("blkid", format!("{log}\nexit 2")),
            ("id", "exit 1".to_owned()),
            ("hostname", "echo runner-pool-abc-0".to_owned()),
            (
                "curl",
                format!(
                    "{log}\nif [ -n \"${{STUB_FAIL_CURL:-}}\" ]; then exit 7; fi\necho 'printf \"%s\\n\" \"repository-script\" >>\"$STUB_LOG\"'"
                ),
            ),
        ];
        for (name, body) in stubs {
            let path = bin.join(name);
            fs::write(&path, format!("#!/bin/bash\n{body}\n")).expect("write stub");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod stub");
        }
        vm
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn run(&self, script: &str, extra_env: &[(&str, &str)]) -> Output {
        let script_path = self.path("user-data.sh");
        fs::write(&script_path, script).expect("write script");
        let path = format!("{}:/usr/bin:/bin", self.path("bin").display());
        let mut cmd = Command::new("bash");
        cmd.arg(&script_path)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("PROVISIONER_ROOT", self.root())
            .env("PROVISIONER_CONSOLE", self.path("console"))
            .env("PROVISIONER_RETRY_DELAY", "0")
            .env("STUB_LOG", self.path("stub.log"));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().expect("run bash")
    }

    fn stub_log(&self) -> String {
        fs::read_to_string(self.path("stub.log")).unwrap_or_default()
    }

    fn console(&self) -> String {
        fs::read_to_string(self.path("console")).expect("console")
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// No `$(...)` or backtick in any value ran: none of the marker files exists anywhere.
    fn assert_nothing_injected(&self) {
        for marker in ["PWNED1", "PWNED2"] {
            for dir in [self.dir.path(), Path::new("/tmp"), &self.root()] {
                assert!(
                    !dir.join(marker).exists(),
                    "{marker} created in {}: a value was executed",
                    dir.display()
                );
            }
        }
    }
}

fn line_index(log: &str, prefix: &str) -> usize {
    log.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{log}"))
}

#[test]
fn script_is_valid_bash() {
    let mut evil = full_class("my-org/evil");
    evil.token = Secret::new(EVIL);
    evil.user_data = Some(Secret::new(EVIL));
    for c in [class("my-org/plain"), full_class("my-org/full"), evil] {
        let script = user_data(&c, "https://runner.circleci.com").expect("script");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sh");
        fs::write(&path, &script).expect("write");
        let out = Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("bash -n");
        assert!(
            out.status.success(),
            "bash -n failed for {}: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(script.starts_with("#!/bin/bash\n"));
    }
}

#[test]
fn script_passes_shellcheck() {
    let shellcheck = Path::new("/usr/bin/shellcheck");
    if !shellcheck.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "shellcheck is required in CI (install it via scripts/install-test-tools.sh)"
        );
        println!("skipping shellcheck: /usr/bin/shellcheck not installed");
        return;
    }
    let mut evil = full_class("my-org/evil");
    evil.token = Secret::new(EVIL);
    evil.user_data = Some(Secret::new("#!/bin/bash\necho hi\n"));
    for c in [class("my-org/plain"), evil] {
        let script = user_data(&c, "https://runner.circleci.com").expect("script");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sh");
        fs::write(&path, &script).expect("write");
        let out = Command::new(shellcheck)
            .arg("--shell=bash")
            .arg("--severity=style")
            .arg(&path)
            .output()
            .expect("run shellcheck");
        assert!(
            out.status.success(),
            "shellcheck found problems:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn ubuntu_installs_configures_and_starts_the_runner_in_order() {
    let vm = FakeVm::new(UBUNTU);
    let mut c = full_class("my-org/ubuntu");
    c.runner.use_home_ssh_dir_for_checkout_keys = Some(true);
    c.user_data = Some(Secret::new(
        "echo \"userdata $(id -u 2>/dev/null || echo ran)\" >>\"$STUB_LOG\"\ntouch \"$PROVISIONER_ROOT/userdata-ran\"\n",
    ));
    let out = vm.run(
        &user_data(&c, "https://circleci.example.com").expect("script"),
        &[],
    );
    assert!(
        out.status.success(),
        "script failed: {}\nconsole:\n{}",
        String::from_utf8_lossy(&out.stderr),
        vm.console()
    );

    let config = vm.read("etc/circleci-runner/circleci-runner-config.yaml");
    assert_eq!(
        config,
        "api:\n  auth_token: \"tok-plain-123\"\n  url: \"https://circleci.example.com\"\nrunner:\n  name: \"runner-pool-abc-0\"\n  mode: single-task\n  idle_timeout: \"10m\"\n  max_run_time: \"2h\"\n  working_directory: \"/var/lib/circleci/work\"\n  task_agent_directory: \"/opt/circleci/agent\"\n  command_prefix: [\"sudo\", \"-niHu\", \"circleci\", \"--\"]\n  use_home_ssh_dir_for_checkout_keys: true\n"
    );
    let mode = fs::metadata(
        vm.root()
            .join("etc/circleci-runner/circleci-runner-config.yaml"),
    )
    .expect("stat")
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o600, "config mode {mode:o}");
    assert_eq!(
        vm.read("etc/systemd/system/circleci-runner.service.d/10-provisioner.conf"),
        DROPIN
    );
    assert!(vm.root().join("userdata-ran").exists());
    assert_eq!(
        vm.read("etc/apt/apt.conf.d/90runner-provisioner"),
        "DPkg::Lock::Timeout \"300\";\n"
    );
    assert!(vm.root().join("mnt/scratch").is_dir());

    let log = vm.stub_log();
    let device = vm.root().join("dev/disk/by-id/virtio-scratch1");
    let order = [
        "userdata".to_owned(),
        "curl -fsSL https://packagecloud.io/install/repositories/circleci/runner/script.deb.sh?any=true".to_owned(),
        "repository-script".to_owned(),
        "apt-get install -y circleci-runner".to_owned(),
        format!("mkfs.ext4 {}", device.display()),
        format!("mount -t ext4 {} {}", device.display(), vm.root().join("mnt/scratch").display()),
        "systemctl daemon-reload".to_owned(),
        "systemctl enable circleci-runner".to_owned(),
        "systemctl start --no-block circleci-runner".to_owned(),
    ];
    let positions: Vec<usize> = order.iter().map(|p| line_index(&log, p)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "steps out of order {positions:?}:\n{log}"
    );
    assert!(!log.contains("yum"), "{log}");
    assert!(
        !log.contains("poweroff"),
        "a healthy start must not power off:\n{log}"
    );
    assert!(
        vm.console()
            .contains("circleci-runner started for my-org/ubuntu"),
        "{}",
        vm.console()
    );
}

#[test]
fn rhel_uses_the_rpm_repository_and_yum() {
    let vm = FakeVm::new(RHEL);
    let out = vm.run(
        &user_data(&class("my-org/rhel"), "https://runner.circleci.com").expect("script"),
        &[],
    );
    assert!(
        out.status.success(),
        "script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = vm.stub_log();
    assert!(
        line_index(
            &log,
            "curl -fsSL https://packagecloud.io/install/repositories/circleci/runner/script.rpm.sh?any=true"
        ) < line_index(&log, "yum install -y circleci-runner"),
        "{log}"
    );
    assert!(!log.contains("apt-get"), "{log}");
    assert_eq!(
        vm.read("etc/circleci-runner/circleci-runner-config.yaml"),
        "api:\n  auth_token: \"tok-plain-123\"\n  url: \"https://runner.circleci.com\"\nrunner:\n  name: \"runner-pool-abc-0\"\n  mode: single-task\n  working_directory: \"/home/circleci/workdir\"\n  task_agent_directory: \"/tmp/libexec/circleci\"\n  command_prefix: [\"sudo\", \"PATH=$PATH\", \"-niHu\", \"circleci\", \"--\"]\n"
    );
    assert_eq!(
        vm.read("etc/systemd/system/circleci-runner.service.d/10-provisioner.conf"),
        DROPIN
    );
}

#[test]
fn unsupported_os_says_so_on_the_console_and_powers_off() {
    let vm = FakeVm::new(ALPINE);
    let out = vm.run(
        &user_data(&class("my-org/alpine"), "https://runner.circleci.com").expect("script"),
        &[],
    );
    assert!(!out.status.success());
    let console = vm.console();
    assert!(console.contains("unsupported OS (ID=alpine"), "{console}");
    assert!(console.contains("powering off"), "{console}");
    let log = vm.stub_log();
    assert!(log.contains("systemctl --no-block poweroff"), "{log}");
    assert!(
        !log.contains("curl") && !log.contains("enable circleci-runner"),
        "{log}"
    );
    assert!(!vm.root().join("etc/circleci-runner").exists());
}

#[test]
fn failed_install_retries_then_powers_off() {
    let vm = FakeVm::new(UBUNTU);
    let out = vm.run(
        &user_data(&class("my-org/offline"), "https://runner.circleci.com").expect("script"),
        &[("STUB_FAIL_CURL", "1")],
    );
    assert!(!out.status.success());
    let log = vm.stub_log();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("curl ")).count(),
        3,
        "{log}"
    );
    assert!(log.contains("systemctl --no-block poweroff"), "{log}");
    assert!(
        !log.contains("apt-get install") && !log.contains("start --no-block circleci-runner"),
        "{log}"
    );
    assert!(
        vm.console()
            .contains("cannot add the circleci-runner package repository"),
        "{}",
        vm.console()
    );
}

#[test]
fn hostile_values_land_verbatim_and_execute_nothing() {
    let vm = FakeVm::new(UBUNTU);
    let mut c = full_class("my-org/hostile");
    c.token = Secret::new(EVIL);
    c.runner.working_directory = Some(EVIL.to_owned());
    c.runner.command_prefix = Some(vec![EVIL.to_owned(), "--".to_owned()]);
    c.empty_disk_mounts[0].path = format!("/mnt/{}", EVIL.replace('\n', " "));
    let api = format!("https://x.example/{EVIL}");
    let out = vm.run(&user_data(&c, &api).expect("script"), &[]);
    assert!(
        out.status.success(),
        "script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        vm.console()
    );
    vm.assert_nothing_injected();

    let text = vm.read("etc/circleci-runner/circleci-runner-config.yaml");
    let parsed: serde_json::Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("config is not valid YAML ({e}):\n{text}"));
    assert_eq!(parsed["api"]["auth_token"], EVIL, "{text}");
    assert_eq!(parsed["api"]["url"], api.as_str());
    assert_eq!(parsed["runner"]["working_directory"], EVIL);
    assert_eq!(
        parsed["runner"]["command_prefix"],
        serde_json::json!([EVIL, "--"])
    );
    assert_eq!(parsed["runner"]["mode"], "single-task");
    assert_eq!(
        parsed.as_object().map(|o| o.len()),
        Some(2),
        "no extra top-level keys: {text}"
    );
    let runner_keys = parsed["runner"].as_object().map(|o| o.len());
    assert_eq!(runner_keys, Some(7), "no injected runner keys: {text}");
    assert!(
        vm.root()
            .join(format!("mnt/{}", EVIL.replace('\n', " ")))
            .is_dir(),
        "the mount path was created verbatim"
    );
}

#[test]
fn hostile_user_data_is_written_verbatim_and_runs_as_a_script() {
    let vm = FakeVm::new(UBUNTU);
    let mut c = class("my-org/ud");
    // Runs as the user's own script (that is its job), but is never expanded by ours first.
    let script = "cat >\"$PROVISIONER_ROOT/copy\" <<'X'\nit's $(touch PWNED1) `touch PWNED2`\nX\n";
    c.user_data = Some(Secret::new(script));
    let out = vm.run(
        &user_data(&c, "https://runner.circleci.com").expect("script"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vm.assert_nothing_injected();
    assert_eq!(vm.read("copy"), "it's $(touch PWNED1) `touch PWNED2`\n");
    assert_eq!(
        vm.read("var/lib/runner-provisioner/user-data"),
        format!("{script}\n")
    );
}

#[test]
fn failing_user_data_powers_off() {
    let vm = FakeVm::new(UBUNTU);
    let mut c = class("my-org/ud-fails");
    c.user_data = Some(Secret::new("exit 3"));
    let out = vm.run(
        &user_data(&c, "https://runner.circleci.com").expect("script"),
        &[],
    );
    assert!(!out.status.success());
    assert!(
        vm.console().contains("userData exited with status 3"),
        "{}",
        vm.console()
    );
    let log = vm.stub_log();
    assert!(
        log.contains("systemctl --no-block poweroff") && !log.contains("curl"),
        "{log}"
    );
}

#[test]
fn nul_bytes_and_bad_mounts_are_refused_with_the_field_named() {
    let mut c = class("my-org/nul");
    c.user_data = Some(Secret::new("a\0b"));
    let err = user_data(&c, "https://runner.circleci.com")
        .expect_err("NUL refused")
        .to_string();
    assert!(
        err.contains("my-org/nul") && err.contains("userData") && err.contains("NUL"),
        "{err}"
    );
    assert!(!err.contains("a\0b"));

    let mut c = full_class("my-org/mount");
    c.empty_disk_mounts[0].path = "relative/path".to_owned();
    let err = user_data(&c, "https://runner.circleci.com")
        .expect_err("relative path refused")
        .to_string();
    assert!(err.contains("emptyDiskMounts[0].path"), "{err}");
}

#[test]
fn a_baked_image_skips_installation_and_a_formatted_disk_is_not_reformatted() {
    let vm = FakeVm::new(UBUNTU);
    for (name, body) in [
        ("circleci-runner", ""),
        (
            "blkid",
            "printf '%s\\n' \"blkid $*\" >>\"$STUB_LOG\"\nexit 0",
        ),
    ] {
        let path = vm.path("bin").join(name);
        fs::write(&path, format!("#!/bin/bash\n{body}\n")).expect("write stub");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod stub");
    }
    let mut c = full_class("my-org/baked");
    c.empty_disk_mounts[0].fs_type = provisioner_core::config::FsType::Xfs;
    let out = vm.run(
        &user_data(&c, "https://runner.circleci.com").expect("script"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = vm.stub_log();
    assert!(!log.contains("curl") && !log.contains("apt-get"), "{log}");
    assert!(
        !log.contains("mkfs"),
        "an existing filesystem must not be reformatted:\n{log}"
    );
    assert!(log.contains("mount -t xfs "), "{log}");
    assert!(
        vm.console().contains("already installed"),
        "{}",
        vm.console()
    );
    assert!(
        log.contains("systemctl start --no-block circleci-runner"),
        "{log}"
    );
}

// --- runner bundle, grantSudo, sidecar -----------------------------------------------------

const BUNDLE_DEB: &str = "circleci-runner_3.0.19-1_amd64.deb";
const BUNDLE_RPM: &str = "circleci-runner-3.0.19-1.x86_64.rpm";

fn bundle_opts(sidecar: bool) -> VmOptions {
    VmOptions {
        sidecar,
        bundle: Some(RunnerBundle {
            image: "registry.example.com/runner-bundle:1.0.0".to_owned(),
            pull_policy: None,
            pull_secret: None,
        }),
    }
}

/// Runs `bundle/build.sh` on fake packages: what the Dockerfile runs, without Docker.
fn build_bundle(dir: &Path, packages: &[&str]) -> Output {
    let pkgs = dir.join("packages");
    fs::create_dir_all(&pkgs).expect("mkdir packages");
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bundle/build.sh"))
        .arg(dir.join("out"))
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin");
    for name in packages {
        let path = pkgs.join(name);
        fs::write(&path, format!("fake package {name}\n")).expect("write package");
        cmd.arg(path);
    }
    cmd.output().expect("run build.sh")
}

fn bundle_tree(dir: &Path) -> PathBuf {
    let out = build_bundle(
        dir,
        &[BUNDLE_DEB, "circleci-runner_3.0.19-1_arm64.deb", BUNDLE_RPM],
    );
    assert!(
        out.status.success(),
        "build.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("out/tree")
}

#[test]
fn bundle_build_writes_the_documented_layout_and_an_ext4_image() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = bundle_tree(dir.path());
    assert_eq!(
        fs::read_to_string(tree.join("BUNDLE")).expect("BUNDLE"),
        format!(
            "format 1\npackage deb/circleci-runner_3.0.19-1_amd64.deb\npackage deb/circleci-runner_3.0.19-1_arm64.deb\npackage rpm/{BUNDLE_RPM}\n"
        )
    );
    let sums = fs::read_to_string(tree.join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(sums.lines().count(), 3, "{sums}");
    assert!(sums.contains(&format!("  deb/{BUNDLE_DEB}")), "{sums}");
    assert!(sums.contains(&format!("  rpm/{BUNDLE_RPM}")), "{sums}");
    let check = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&tree)
        .output()
        .expect("sha256sum");
    assert!(check.status.success(), "{check:?}");
    // An ext4 superblock: magic 0xEF53 at byte 1080, volume label at 1144.
    let image = fs::read(dir.path().join("out/disk/runner-bundle.img")).expect("image");
    assert_eq!(&image[1080..1082], &[0x53, 0xEF], "not an ext4 image");
    assert_eq!(&image[1144..1156], b"runnerbundle");
    // The packages are inside the filesystem, not only in the tree.
    let needle = b"fake package circleci-runner_3.0.19-1_amd64.deb";
    assert!(image.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn bundle_build_refuses_what_is_not_a_runner_package() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = build_bundle(dir.path(), &["docker-ce_27.0_amd64.deb"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a circleci-runner package"),
        "{out:?}"
    );
}

#[test]
fn ubuntu_installs_from_the_bundle_disk_without_network() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = bundle_tree(dir.path());
    let vm = FakeVm::new(UBUNTU);
    fs::write(vm.root().join("dev/disk/by-id/virtio-runnerbundle"), "").expect("fake disk");
    let script = user_data_with(
        &class("my-org/bundle"),
        "https://runner.circleci.com",
        &bundle_opts(false),
    )
    .expect("script");
    let tree_str = tree.to_str().expect("utf-8 path");
    let out = vm.run(
        &script,
        &[("STUB_FAIL_CURL", "1"), ("STUB_BUNDLE_TREE", tree_str)],
    );
    assert!(
        out.status.success(),
        "script failed: {}\nconsole:\n{}",
        String::from_utf8_lossy(&out.stderr),
        vm.console()
    );
    let log = vm.stub_log();
    let mounted = vm.root().join("run/runner-bundle");
    line_index(
        &log,
        &format!(
            "mount -o ro {} {}",
            vm.root()
                .join("dev/disk/by-id/virtio-runnerbundle")
                .display(),
            mounted.display()
        ),
    );
    line_index(
        &log,
        &format!("apt-get install -y {}/deb/{BUNDLE_DEB}", mounted.display()),
    );
    line_index(&log, &format!("umount {}", mounted.display()));
    assert!(!log.contains("curl"), "no network at all:\n{log}");
    assert!(!log.contains("install -y circleci-runner"), "{log}");
    assert!(
        vm.console().contains("from the runner bundle"),
        "{}",
        vm.console()
    );
}

#[test]
fn rhel_installs_the_rpm_from_the_bundle_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = bundle_tree(dir.path());
    let vm = FakeVm::new(RHEL);
    fs::write(vm.root().join("dev/disk/by-id/virtio-runnerbundle"), "").expect("fake disk");
    let script = user_data_with(
        &class("my-org/bundle"),
        "https://runner.circleci.com",
        &bundle_opts(false),
    )
    .expect("script");
    let out = vm.run(
        &script,
        &[
            ("STUB_FAIL_CURL", "1"),
            ("STUB_BUNDLE_TREE", tree.to_str().expect("utf-8")),
        ],
    );
    assert!(out.status.success(), "{}", vm.console());
    let log = vm.stub_log();
    line_index(
        &log,
        &format!(
            "yum install -y {}/rpm/{BUNDLE_RPM}",
            vm.root().join("run/runner-bundle").display()
        ),
    );
    assert!(!log.contains("curl"), "{log}");
}

#[test]
fn without_the_bundle_disk_or_with_a_corrupt_one_the_repository_is_used() {
    // No disk attached.
    let vm = FakeVm::new(UBUNTU);
    let script = user_data_with(
        &class("my-org/bundle"),
        "https://runner.circleci.com",
        &bundle_opts(false),
    )
    .expect("script");
    let out = vm.run(&script, &[]);
    assert!(out.status.success(), "{}", vm.console());
    let log = vm.stub_log();
    line_index(&log, "apt-get install -y circleci-runner");
    assert!(log.contains("curl"), "{log}");
    assert!(
        vm.console()
            .contains("runner bundle disk runnerbundle not found"),
        "{}",
        vm.console()
    );

    // A disk whose package does not match SHA256SUMS.
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = bundle_tree(dir.path());
    fs::write(tree.join("deb").join(BUNDLE_DEB), "tampered").expect("tamper");
    let vm = FakeVm::new(UBUNTU);
    fs::write(vm.root().join("dev/disk/by-id/virtio-runnerbundle"), "").expect("fake disk");
    let out = vm.run(
        &script,
        &[("STUB_BUNDLE_TREE", tree.to_str().expect("utf-8"))],
    );
    assert!(out.status.success(), "{}", vm.console());
    let log = vm.stub_log();
    line_index(&log, "apt-get install -y circleci-runner");
    assert!(!log.contains("apt-get install -y /"), "{log}");
    assert!(vm.console().contains("SHA256SUMS"), "{}", vm.console());
}

#[test]
fn grant_sudo_writes_the_sudoers_drop_in_only_when_set() {
    let mut c = class("my-org/sudo");
    c.runner.grant_sudo = true;
    let vm = FakeVm::new(UBUNTU);
    let sidecar = VmOptions {
        sidecar: true,
        bundle: None,
    };
    let out = vm.run(
        &user_data_with(&c, "https://runner.circleci.com", &sidecar).expect("script"),
        &[],
    );
    assert!(out.status.success(), "{}", vm.console());
    assert_eq!(
        vm.read("etc/sudoers.d/90-circleci-grant-sudo"),
        "circleci ALL=(ALL:ALL) NOPASSWD: ALL\n"
    );
    let mode = fs::metadata(vm.root().join("etc/sudoers.d/90-circleci-grant-sudo"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o440, "sudoers mode {mode:o}");

    let vm = FakeVm::new(UBUNTU);
    let out = vm.run(
        &user_data_with(
            &class("my-org/nosudo"),
            "https://runner.circleci.com",
            &sidecar,
        )
        .expect("script"),
        &[],
    );
    assert!(out.status.success(), "{}", vm.console());
    assert!(!vm.root().join("etc/sudoers.d").exists());

    let err = user_data_with(&c, "https://runner.circleci.com", &VmOptions::default())
        .expect_err("grantSudo without the sidecar");
    let msg = err.to_string();
    assert!(
        msg.contains("runner.grantSudo") && msg.contains("sidecar.enabled"),
        "{msg}"
    );
}

#[test]
fn with_the_sidecar_the_runner_talks_to_the_proxy_and_holds_no_token() {
    let vm = FakeVm::new(UBUNTU);
    let c = class("my-org/proxied");
    let sidecar = VmOptions {
        sidecar: true,
        bundle: None,
    };
    let script = user_data_with(&c, "https://runner.circleci.com", &sidecar).expect("script");
    assert!(!script.contains(c.token.expose()), "{script}");
    let out = vm.run(&script, &[]);
    assert!(out.status.success(), "{}", vm.console());
    let config = vm.read("etc/circleci-runner/circleci-runner-config.yaml");
    assert!(!config.contains(c.token.expose()), "{config}");
    assert!(
        config.starts_with(&format!(
            "api:\n  auth_token: \"{PROXY_PLACEHOLDER_TOKEN}\"\n  url: \"http://10.0.2.1:{PROXY_PORT}\"\n"
        )),
        "{config}"
    );

    // A custom masquerade network moves the gateway.
    let mut c = class("my-org/custom-net");
    c.spec["domain"]["devices"]["interfaces"] =
        serde_json::json!([{ "name": "default", "masquerade": {} }]);
    c.spec["networks"] =
        serde_json::json!([{ "name": "default", "pod": { "vmNetworkCIDR": "10.11.12.0/24" } }]);
    let script = user_data_with(&c, "https://runner.circleci.com", &sidecar).expect("script");
    assert!(
        script.contains(&format!("url: \"http://10.11.12.1:{PROXY_PORT}\"")),
        "{script}"
    );
}

#[test]
fn unset_runner_options_get_circlecis_current_defaults() {
    let vm = FakeVm::new(UBUNTU);
    let out = vm.run(
        &user_data(&class("my-org/defaults"), "https://runner.circleci.com").expect("script"),
        &[],
    );
    assert!(out.status.success(), "{}", vm.console());
    let config = vm.read("etc/circleci-runner/circleci-runner-config.yaml");
    assert!(
        config.ends_with(
            "  working_directory: \"/home/circleci/workdir\"\n  task_agent_directory: \"/tmp/libexec/circleci\"\n  command_prefix: [\"sudo\", \"PATH=$PATH\", \"-niHu\", \"circleci\", \"--\"]\n"
        ),
        "{config}"
    );
}
