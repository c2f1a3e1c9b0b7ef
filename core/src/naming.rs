//! How a KubeVirt VirtualMachinePool names its VMs, in one place for every adapter that models
//! or drives a pool (the KubeVirt adapter sizes pool names by it; the simulator names VMs by it).

/// The name of the VM at `index` in the pool `pool`: KubeVirt's pool controller names its VMs
/// `<pool>-<index>`, re-using the lowest free index, so a replacement VM keeps its predecessor's
/// name.
pub fn vm_name(pool: &str, index: u32) -> String {
    format!("{pool}-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_are_pool_dash_index() {
        assert_eq!(vm_name("acme-medium", 0), "acme-medium-0");
        assert_eq!(vm_name("p", u32::MAX), "p-4294967295");
    }
}
