//! Reaching the cluster: a checked client, and the KubeVirt fleet on it.

use std::time::Duration as StdDuration;

use provisioner_kubevirt::VmOptions;

use crate::Error;

/// A cluster client, or why there is none. In shadow mode no cluster is fine.
pub(crate) async fn connect() -> Result<kube::Client, String> {
    let attempt = async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| e.to_string())?;
        client
            .apiserver_version()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(client)
    };
    match tokio::time::timeout(StdDuration::from_secs(5), attempt).await {
        Ok(result) => result,
        Err(_) => Err("the API server did not answer within 5s".to_owned()),
    }
}

/// The fleet for `namespace`, building VMs that talk to `api_addr` as `vm` says (sidecar,
/// runner bundle).
pub(crate) async fn kubevirt_fleet(
    client: kube::Client,
    namespace: &str,
    api_addr: &str,
    vm: &VmOptions,
) -> Result<provisioner_kubevirt::KubeVirtFleet, Error> {
    let mut options = provisioner_kubevirt::FleetOptions::new(namespace, api_addr);
    options.vm = vm.clone();
    provisioner_kubevirt::KubeVirtFleet::connect(client, options)
        .await
        .map_err(Error::from)
}
