//! The one-shot commands: `validate`, `tasks`, `render` and `scale-to-zero`, and `proxy`, the
//! token-proxy sidecar.

use provisioner_kubevirt::VmOptions;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::Error;
use crate::cli::{Output, ProxyArgs, RenderArgs, ScaleToZeroArgs, TasksArgs, ValidateArgs};
use crate::cluster::{connect, kubevirt_fleet};
use crate::sidecar::proxy::ProxyConfig;
use crate::sources;

/// `provisioner validate`: 0 and a summary on stdout, or every error.
pub fn validate(args: &ValidateArgs) -> Result<(), Error> {
    let raw = args.config.paths().read(sources::env_token().as_ref())?;
    let config = raw.load(true)?;
    let names: Vec<&str> = config.classes.iter().map(|c| c.name.as_str()).collect();
    match args.output {
        Output::Text => println!(
            "configuration is valid: {} resource class(es): {}",
            names.len(),
            names.join(", ")
        ),
        Output::Json => println!(
            "{}",
            serde_json::json!({ "valid": true, "resource_classes": names })
        ),
    }
    Ok(())
}

/// `provisioner tasks`: both counts, as a line of text or one JSON line.
pub async fn tasks(args: &TasksArgs) -> Result<(), Error> {
    let report = provisioner_circleci::tasks_command(
        args.resource_class.as_str(),
        Some(&args.api_addr),
        sources::env_token(),
    )
    .await?;
    match args.output {
        Output::Text => println!(
            "{}: {} unclaimed, {} running",
            report.resource_class, report.unclaimed_tasks, report.running_tasks
        ),
        Output::Json => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(())
}

/// `provisioner render`: the YAML the provisioner would apply; no cluster needed.
pub fn render(args: &RenderArgs) -> Result<(), Error> {
    let raw = args.config.paths().read(sources::env_token().as_ref())?;
    let config = raw.load(false)?;
    let namespace = crate::cli::resolve_namespace(args.namespace.as_deref());
    let mut vm = VmOptions::from_config(&config);
    if let Some(sidecar) = args.sidecar() {
        vm.sidecar = sidecar;
    }
    let yaml = provisioner_kubevirt::render_with(&config, &namespace, args.show_secrets, &vm)?;
    print!("{yaml}");
    Ok(())
}

/// `provisioner scale-to-zero`: the Helm pre-delete hook.
pub async fn scale_to_zero(args: &ScaleToZeroArgs) -> Result<(), Error> {
    // Uninstall must not be blocked by a broken config: the pools are found by label.
    let api_addr = match args
        .config
        .paths()
        .read(None)
        .and_then(|raw| raw.load(false))
    {
        Ok(config) => config.circleci_api_addr,
        Err(e) => {
            warn!(error = %e, "configuration unreadable; scaling every managed pool to zero anyway");
            provisioner_core::config::DEFAULT_API_ADDR.to_owned()
        }
    };
    let namespace = crate::cli::resolve_namespace(args.namespace.as_deref());
    let client = connect().await.map_err(Error::Cluster)?;
    // Scaling to zero builds no VM: how VMs are built does not matter here.
    let fleet = kubevirt_fleet(client, &namespace, &api_addr, &VmOptions::default()).await?;
    // Every pool the provisioner manages, including classes since removed from the config.
    let reports = fleet.scale_all_to_zero().await?;
    for (class, report) in &reports {
        info!(
            resource_class = %class,
            scaled_from = report.scaled.map(|s| s.0),
            retired = report.retired,
            refused = report.refused,
            "pool scaled to zero; running VMs are left to finish their job"
        );
    }
    info!(pools = reports.len(), "scale-to-zero done");
    Ok(())
}

/// `provisioner proxy`: the token proxy in a VM's `virt-launcher` pod, until SIGTERM.
pub async fn proxy(args: &ProxyArgs) -> Result<(), Error> {
    let sidecar = |source| Error::Sidecar {
        what: "token proxy",
        source,
    };
    let config = ProxyConfig::load(&args.secret_dir).map_err(sidecar)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: args.listen,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    info!(listen = %bound, upstream = %config.upstream, "token proxy listening");
    crate::sidecar::proxy::serve(listener, config, crate::run::shutdown_signal())
        .await
        .map_err(sidecar)?;
    info!("token proxy stopped");
    Ok(())
}
