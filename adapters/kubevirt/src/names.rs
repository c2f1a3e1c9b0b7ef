//! Kubernetes names derived from resource class names.
//!
//! A class name (`my-org/my-runner`) always holds a `/`, which no Kubernetes name may, so every
//! name is a sanitised form of the class plus a hash of the full class name: stable across
//! restarts, unique across classes even when two classes sanitise alike (`a/b-c`, `a-b/c`).

use provisioner_core::ResourceClass;

/// Marks every object the provisioner manages; the VM watch selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "runner-provisioner";
/// Names the pool an object belongs to (pool, Secret, VM template, VMI template).
pub const POOL_LABEL: &str = "runner-provisioner/pool";
/// The full resource class name, which labels cannot hold (`/`, `:`, `+`, uppercase).
pub(crate) const CLASS_ANNOTATION: &str = "runner-provisioner/resource-class";

/// VM names are `<pool>-<index>` ([`provisioner_core::vm_name`]) and become guest hostnames, which are DNS labels
/// of at most 63 characters; 52 leaves room for an index of up to 10 digits.
const MAX_POOL_NAME: usize = 52;
const HASH_LEN: usize = 8;

/// The pool's name: lowercase, `[a-z0-9-]`, at most 52 characters, ending in a hash of the class.
pub fn pool_name(class: &ResourceClass) -> String {
    let mut base = String::with_capacity(class.as_str().len());
    for c in class.as_str().chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (base.is_empty() || base.ends_with('-'))) {
            base.push(c);
        }
    }
    base.truncate(MAX_POOL_NAME - HASH_LEN - 1);
    while base.ends_with('-') {
        base.pop();
    }
    if base.is_empty() {
        base.push_str("class");
    }
    format!(
        "{base}-{:0width$x}",
        fnv1a_32(class.as_str()),
        width = HASH_LEN
    )
}

/// The Secret holding the class's cloud-init user data.
pub fn secret_name(class: &ResourceClass) -> String {
    format!("{}-userdata", pool_name(class))
}

/// FNV-1a, folded to 32 bits: a fixed algorithm, so names never change between Rust versions
/// (unlike `DefaultHasher`).
fn fnv1a_32(text: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32
}

/// A DNS-1123 label: what namespaces and label values the provisioner writes must be.
pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str) -> ResourceClass {
        ResourceClass::parse(name).expect("valid class")
    }

    #[test]
    fn names_are_dns_labels_with_room_for_an_index() {
        let long = format!("{}/{}", "a".repeat(40), "B:c+d_".repeat(30));
        for name in [
            "my-org/my-runner",
            "acme_corp/large-gpu",
            "dev-team/custom:arm64",
            "_/_",
            &long,
        ] {
            let pool = pool_name(&class(name));
            assert!(is_dns_label(&pool), "{name} -> {pool}");
            assert!(pool.len() <= MAX_POOL_NAME, "{name} -> {pool}");
            assert!(
                is_dns_label(&provisioner_core::vm_name(&pool, u32::MAX)),
                "{pool}"
            );
        }
        assert!(pool_name(&class("my-org/my-runner")).starts_with("my-org-my-runner-"));
        assert!(pool_name(&class("_/_")).starts_with("class-"));
    }

    #[test]
    fn names_are_stable_and_unique() {
        // Pinned: a changed name would orphan every existing pool on upgrade.
        assert_eq!(
            pool_name(&class("my-org/my-runner")),
            "my-org-my-runner-1acd84b9"
        );
        assert_eq!(
            pool_name(&class("my-org/my-runner")),
            pool_name(&class("my-org/my-runner"))
        );
        let clashing = ["a/b-c", "a-b/c", "a/B-c", "a/b:c", "a/b+c", "a/b_c"];
        let mut names: Vec<String> = clashing.iter().map(|n| pool_name(&class(n))).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), clashing.len(), "{names:?}");
        assert_eq!(
            secret_name(&class("a/b")),
            format!("{}-userdata", pool_name(&class("a/b")))
        );
    }
}
