//! The VM's start-up script, run once by cloud-init as a user-data script.
//!
//! Every configured value is placed in a single-quoted shell variable at the top, and the
//! runner config's values are JSON strings (which YAML reads as double-quoted strings), so no
//! value can run a command or change the shape of the config file. The fixed body below only
//! ever expands those variables inside double quotes.

use std::fmt::Write as _;

use provisioner_core::ClassConfig;

use crate::error::KubeVirtError;
use crate::options::{BUNDLE_VOLUME, PROXY_PLACEHOLDER_TOKEN, VmOptions};
use crate::render::proxy_url;

/// Written in place of tokens and user data when secrets are not shown.
pub(crate) const REDACTED: &str = "<redacted>";

/// CircleCI's current defaults for the runner options a class leaves unset.
pub const DEFAULT_WORKING_DIRECTORY: &str = "/home/circleci/workdir";
pub const DEFAULT_TASK_AGENT_DIRECTORY: &str = "/tmp/libexec/circleci";
pub const DEFAULT_COMMAND_PREFIX: [&str; 5] = ["sudo", "PATH=$PATH", "-niHu", "circleci", "--"];

/// The start-up script for `class`, with the runner talking to `api_addr` directly (no sidecar,
/// no bundle disk).
pub fn user_data(class: &ClassConfig, api_addr: &str) -> Result<String, KubeVirtError> {
    script(class, api_addr, &VmOptions::default(), true)
}

/// The start-up script for `class` as VMs built with `opts` run it: with the sidecar, the
/// runner talks to the proxy in its pod and the script holds no class token.
pub fn user_data_with(
    class: &ClassConfig,
    api_addr: &str,
    opts: &VmOptions,
) -> Result<String, KubeVirtError> {
    script(class, api_addr, opts, true)
}

pub(crate) fn script(
    class: &ClassConfig,
    api_addr: &str,
    opts: &VmOptions,
    show_secrets: bool,
) -> Result<String, KubeVirtError> {
    let name = class.name.as_str();
    let invalid = |field: &str, message: &str| KubeVirtError::InvalidValue {
        class: name.to_owned(),
        field: field.to_owned(),
        message: message.to_owned(),
    };
    if class.runner.grant_sudo && !opts.sidecar {
        return Err(invalid(
            "runner.grantSudo",
            "needs the sidecar (sidecar.enabled: true): without it the class token is in the VM, where a job with root could read it",
        ));
    }
    // With the sidecar the guest gets the proxy's address and a placeholder, never the token.
    let (token, api_addr) = if opts.sidecar {
        (PROXY_PLACEHOLDER_TOKEN, proxy_url(class)?)
    } else if show_secrets {
        (class.token.expose(), api_addr.to_owned())
    } else {
        (REDACTED, api_addr.to_owned())
    };
    let user_data = match &class.user_data {
        Some(data) if show_secrets => data.expose(),
        Some(_) => "# <redacted>",
        None => "",
    };

    let mut api = String::from("api:\n");
    let _ = writeln!(api, "  auth_token: {}", yaml_string(token));
    let _ = write!(api, "  url: {}", yaml_string(&api_addr));

    let mut runner = String::from("  mode: single-task");
    let options = &class.runner;
    if let Some(idle) = class.scaling.idle_timeout.filter(|d| !d.is_zero()) {
        let _ = write!(
            runner,
            "\n  idle_timeout: {}",
            yaml_string(&idle.to_string())
        );
    }
    if let Some(max) = options.max_run_time.filter(|d| !d.is_zero()) {
        let _ = write!(
            runner,
            "\n  max_run_time: {}",
            yaml_string(&max.to_string())
        );
    }
    let dir = options
        .working_directory
        .as_deref()
        .unwrap_or(DEFAULT_WORKING_DIRECTORY);
    let _ = write!(runner, "\n  working_directory: {}", yaml_string(dir));
    let dir = options
        .task_agent_directory
        .as_deref()
        .unwrap_or(DEFAULT_TASK_AGENT_DIRECTORY);
    let _ = write!(runner, "\n  task_agent_directory: {}", yaml_string(dir));
    let items: Vec<String> = match &options.command_prefix {
        Some(prefix) => prefix.iter().map(|p| yaml_string(p)).collect(),
        None => DEFAULT_COMMAND_PREFIX
            .iter()
            .map(|p| yaml_string(p))
            .collect(),
    };
    let _ = write!(runner, "\n  command_prefix: [{}]", items.join(", "));
    if let Some(use_home) = options.use_home_ssh_dir_for_checkout_keys {
        let _ = write!(runner, "\n  use_home_ssh_dir_for_checkout_keys: {use_home}");
    }

    let mut mounts = String::from("mount_empty_disks() {\n  :\n");
    for (i, mount) in class.empty_disk_mounts.iter().enumerate() {
        let field = format!("emptyDiskMounts[{i}]");
        if mount.serial.is_empty()
            || !mount.serial.bytes().all(|b| b.is_ascii_alphanumeric())
            || mount.serial.len() > 20
        {
            return Err(invalid(
                &format!("{field}.serial"),
                "must be 1 to 20 letters or digits (virtio's serial)",
            ));
        }
        if !mount.path.starts_with('/') || mount.path.split('/').any(|part| part == "..") {
            return Err(invalid(
                &format!("{field}.path"),
                "must be an absolute path without '..'",
            ));
        }
        let _ = writeln!(
            mounts,
            "  mount_empty_disk {} {} {}",
            quote(&mount.serial, &invalid, &format!("{field}.serial"))?,
            quote(&mount.path, &invalid, &format!("{field}.path"))?,
            quote(mount.fs_type.as_str(), &invalid, &format!("{field}.fsType"))?,
        );
    }
    mounts.push('}');

    let mut out = String::with_capacity(BODY.len() + 1024);
    out.push_str("#!/bin/bash\n");
    let _ = writeln!(
        out,
        "# runner-provisioner start-up script for resource class {}.",
        comment_safe(name)
    );
    out.push_str("# Generated; run once by cloud-init at first boot.\n");
    // The values below are literal data: that `$` and backticks do not expand is the point.
    out.push_str("# shellcheck disable=SC2016\n\n");
    let _ = writeln!(out, "CLASS={}", quote(name, &invalid, "name")?);
    let _ = writeln!(out, "RUNNER_CONFIG_API={}", quote(&api, &invalid, "token")?);
    let _ = writeln!(
        out,
        "RUNNER_CONFIG_RUNNER={}",
        quote(&runner, &invalid, "runner")?
    );
    let _ = writeln!(out, "USER_DATA={}", quote(user_data, &invalid, "userData")?);
    let bundle = if opts.bundle.is_some() {
        BUNDLE_VOLUME
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "BUNDLE_SERIAL={}",
        quote(bundle, &invalid, "runnerBundle")?
    );
    let _ = writeln!(out, "GRANT_SUDO={}", u8::from(class.runner.grant_sudo));
    out.push_str(&mounts);
    out.push('\n');
    out.push_str(BODY);
    Ok(out)
}

/// Single-quotes `value` for bash: inside single quotes nothing is special except `'` itself,
/// which becomes `'\''`. NUL cannot be held by a shell variable at all, so it is refused.
fn quote(
    value: &str,
    invalid: &dyn Fn(&str, &str) -> KubeVirtError,
    field: &str,
) -> Result<String, KubeVirtError> {
    if value.contains('\0') {
        return Err(invalid(field, "contains a NUL character"));
    }
    Ok(format!("'{}'", value.replace('\'', r"'\''")))
}

/// A YAML scalar that is always a string: a JSON string is a valid YAML double-quoted scalar,
/// with every quote, backslash and control character escaped.
fn yaml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Class names hold only `[A-Za-z0-9_:+/-]`, but a comment must never end early.
fn comment_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The fixed part of the script. `PROVISIONER_ROOT`, `PROVISIONER_CONSOLE` and
/// `PROVISIONER_RETRY_DELAY` exist for tests that run it against a fake root; cloud-init sets
/// none of them.
const BODY: &str = r#"
set -uo pipefail
umask 022

ROOT="${PROVISIONER_ROOT:-}"
CONSOLE="${PROVISIONER_CONSOLE:-/dev/console}"
RETRY_DELAY="${PROVISIONER_RETRY_DELAY:-10}"
CONFIG_DIR="$ROOT/etc/circleci-runner"
CONFIG_FILE="$CONFIG_DIR/circleci-runner-config.yaml"
DROPIN_DIR="$ROOT/etc/systemd/system/circleci-runner.service.d"
STATE_DIR="$ROOT/var/lib/runner-provisioner"
OS_FAMILY=""

# Messages go to the serial console (kubectl logs <virt-launcher pod> -c guest-console-log)
# as well as to cloud-init's log.
log() {
  local line="runner-provisioner: $*"
  printf '%s\n' "$line" >&2
  if [ -w "$CONSOLE" ]; then
    printf '%s\n' "$line" >>"$CONSOLE" 2>/dev/null || true
  fi
}

power_off() {
  log "powering off"
  systemctl --no-block poweroff || shutdown -h now || poweroff -f
}

# A VM that cannot run jobs must not sit Running forever: say why and power off, so the
# provisioner sees it stopped and replaces it.
fail() {
  log "ERROR: $*"
  log "this VM cannot run CircleCI jobs for $CLASS"
  power_off
  exit 1
}

retry() {
  local attempt
  for attempt in 1 2 3; do
    if "$@"; then
      return 0
    fi
    log "attempt $attempt of 3 failed: $1"
    if [ "$attempt" -lt 3 ]; then
      sleep "$RETRY_DELAY"
    fi
  done
  return 1
}

os_release_value() {
  sed -n "s/^$1=//p" "$ROOT/etc/os-release" | head -n 1 | tr -d "\"'" | tr '[:upper:]' '[:lower:]'
}

detect_os() {
  if [ ! -r "$ROOT/etc/os-release" ]; then
    fail "/etc/os-release is missing: cannot tell the OS (supported: Debian/Ubuntu and RHEL/CentOS based images)"
  fi
  local id like
  id=$(os_release_value ID)
  like=$(os_release_value ID_LIKE)
  case " $id $like " in
    *" debian "* | *" ubuntu "*) OS_FAMILY=debian ;;
    *" rhel "* | *" centos "* | *" fedora "* | *" rocky "* | *" almalinux "*) OS_FAMILY=rhel ;;
    *) fail "unsupported OS (ID=$id ID_LIKE=$like): only Debian/Ubuntu and RHEL/CentOS based images are supported" ;;
  esac
  log "detected a $OS_FAMILY-family OS (ID=$id)"
}

run_user_data() {
  if [ -z "$USER_DATA" ]; then
    return 0
  fi
  { mkdir -p "$STATE_DIR" && chmod 700 "$STATE_DIR"; } || fail "cannot create $STATE_DIR"
  local script="$STATE_DIR/user-data"
  { printf '%s\n' "$USER_DATA" >"$script" && chmod 700 "$script"; } || fail "cannot write $script"
  log "running the class's userData"
  local status=0
  case "$USER_DATA" in
    '#!'*) "$script" || status=$? ;;
    *) bash "$script" || status=$? ;;
  esac
  if [ "$status" -ne 0 ]; then
    fail "userData exited with status $status"
  fi
}

add_package_repository() {
  curl -fsSL "https://packagecloud.io/install/repositories/circleci/runner/script.$1.sh?any=true" | bash
}

# The runner bundle disk (bundle/README.md): an ext4 filesystem with deb/ and rpm/ holding the
# circleci-runner packages and SHA256SUMS over them. Any problem falls back to the repository.
install_from_bundle() {
  if [ -z "$BUNDLE_SERIAL" ]; then
    return 1
  fi
  local device="$ROOT/dev/disk/by-id/virtio-$BUNDLE_SERIAL"
  if [ ! -e "$device" ]; then
    log "runner bundle disk $BUNDLE_SERIAL not found; installing from the package repository"
    return 1
  fi
  local dir="$ROOT/run/runner-bundle"
  mkdir -p "$dir" || return 1
  if ! mount -o ro "$device" "$dir"; then
    log "cannot mount the runner bundle disk; installing from the package repository"
    return 1
  fi
  local arch pattern candidate package="" status=1
  case "$OS_FAMILY" in
    debian)
      arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
      case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
      pattern="$dir/deb/circleci-runner_*_$arch.deb"
      ;;
    rhel)
      arch=$(uname -m)
      pattern="$dir/rpm/circleci-runner-*.$arch.rpm"
      ;;
  esac
  # The glob sorts by name: the last match is the newest version.
  # shellcheck disable=SC2086 # the pattern is meant to glob
  for candidate in $pattern; do
    if [ -f "$candidate" ]; then
      package=$candidate
    fi
  done
  if [ -z "$package" ]; then
    log "the runner bundle has no $OS_FAMILY package for $arch; installing from the package repository"
  elif ! (cd "$dir" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
    log "the runner bundle fails its SHA256SUMS check; installing from the package repository"
  else
    log "installing circleci-runner from the runner bundle (${package#"$dir"/})"
    case "$OS_FAMILY" in
      debian) DEBIAN_FRONTEND=noninteractive apt-get install -y "$package" && status=0 ;;
      rhel) yum install -y "$package" && status=0 ;;
    esac
    if [ "$status" -ne 0 ]; then
      log "installing from the runner bundle failed; installing from the package repository"
    fi
  fi
  umount "$dir" 2>/dev/null || true
  return "$status"
}

install_runner() {
  if command -v circleci-runner >/dev/null 2>&1; then
    log "circleci-runner is already installed; skipping installation"
    return 0
  fi
  if install_from_bundle; then
    return 0
  fi
  log "installing circleci-runner from packagecloud.io"
  case "$OS_FAMILY" in
    debian)
      export DEBIAN_FRONTEND=noninteractive
      # At first boot unattended-upgrades often holds the dpkg lock: wait for it instead of
      # failing (apt >= 1.9.11; older apt ignores the setting).
      if ! { mkdir -p "$ROOT/etc/apt/apt.conf.d" &&
        printf 'DPkg::Lock::Timeout "300";\n' >"$ROOT/etc/apt/apt.conf.d/90runner-provisioner"; }; then
        log "cannot write the apt lock timeout; continuing"
      fi
      retry add_package_repository deb || fail "cannot add the circleci-runner package repository"
      retry apt-get install -y circleci-runner || fail "apt-get install circleci-runner failed"
      ;;
    rhel)
      retry add_package_repository rpm || fail "cannot add the circleci-runner package repository"
      retry yum install -y circleci-runner || fail "yum install circleci-runner failed"
      ;;
  esac
}

write_runner_config() {
  local name
  name=$(hostname) || fail "cannot read the hostname"
  case "$name" in
    '' | *[!A-Za-z0-9._-]*) fail "hostname '$name' cannot be a runner name (letters, digits, '.', '_', '-')" ;;
  esac
  mkdir -p "$CONFIG_DIR" || fail "cannot create $CONFIG_DIR"
  local tmp="$CONFIG_FILE.new"
  (
    umask 077
    {
      printf '%s\n' "$RUNNER_CONFIG_API"
      printf 'runner:\n  name: "%s"\n' "$name"
      printf '%s\n' "$RUNNER_CONFIG_RUNNER"
    } >"$tmp"
  ) || fail "cannot write $tmp"
  # Keep the owner the package gave its own config file (the agent must be able to read it).
  if [ -e "$CONFIG_FILE" ]; then
    chown --reference="$CONFIG_FILE" "$tmp" 2>/dev/null || true
  fi
  { chmod 600 "$tmp" && mv -f "$tmp" "$CONFIG_FILE"; } || fail "cannot write $CONFIG_FILE"
  log "wrote $CONFIG_FILE (runner name $name)"
}

# runner.grantSudo: passwordless root for the job user. Allowed only with the sidecar, so root
# in the guest still finds no class token.
grant_sudo() {
  if [ "$GRANT_SUDO" != 1 ]; then
    return 0
  fi
  local dir="$ROOT/etc/sudoers.d" file="$ROOT/etc/sudoers.d/90-circleci-grant-sudo"
  mkdir -p "$dir" || fail "cannot create $dir"
  (
    umask 337
    printf '%s\n' 'circleci ALL=(ALL:ALL) NOPASSWD: ALL' >"$file.new"
  ) || fail "cannot write $file"
  { chmod 440 "$file.new" && mv -f "$file.new" "$file"; } || fail "cannot write $file"
  log "granted passwordless sudo to the circleci user"
}

mount_empty_disk() {
  local serial="$1" path="$2" fs="$3"
  local device="$ROOT/dev/disk/by-id/virtio-$serial"
  local waited=0
  while [ ! -e "$device" ]; do
    if [ "$waited" -ge 60 ]; then
      fail "emptyDisk with serial $serial not found at $device"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  if ! blkid "$device" >/dev/null 2>&1; then
    log "formatting $device as $fs"
    "mkfs.$fs" "$device" || fail "mkfs.$fs $device failed"
  fi
  mkdir -p "$ROOT$path" || fail "cannot create $path"
  mount -t "$fs" "$device" "$ROOT$path" || fail "cannot mount $device on $path"
  if id -u circleci >/dev/null 2>&1; then
    chown circleci: "$ROOT$path" || fail "cannot hand $path to the circleci user"
  fi
  log "mounted emptyDisk $serial on $path"
}

# Single-task mode exits after one job (or after idle_timeout); the VM then powers off, and the
# provisioner deletes it. The runner's output goes to the serial console too.
write_dropin() {
  mkdir -p "$DROPIN_DIR" || fail "cannot create $DROPIN_DIR"
  printf '%s\n' \
    '[Service]' \
    'Restart=no' \
    'ExecStopPost=+/bin/systemctl --no-block poweroff' \
    'StandardOutput=journal+console' \
    'StandardError=journal+console' >"$DROPIN_DIR/10-provisioner.conf" ||
    fail "cannot write $DROPIN_DIR/10-provisioner.conf"
}

start_runner() {
  systemctl daemon-reload || fail "systemctl daemon-reload failed"
  systemctl enable circleci-runner || fail "cannot enable circleci-runner"
  systemctl start --no-block circleci-runner || fail "cannot start circleci-runner"
  log "circleci-runner started for $CLASS"
}

detect_os
run_user_data
install_runner
write_runner_config
grant_sudo
mount_empty_disks
write_dropin
start_runner
"#;
