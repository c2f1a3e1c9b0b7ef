#![allow(dead_code, missing_docs, missing_debug_implementations, clippy::all)]
pub mod provisioner_sim {
    pub mod shadow {
        use async_trait::async_trait;
        use provisioner_core::*;
        pub const DEFAULT_BOOT_TIME: Duration = Duration::from_secs(90);
        #[derive(Debug)]
        pub struct ShadowFleet;
        impl ShadowFleet {
            pub fn new(_b: Duration, _s: u64) -> Self {
                Self
            }
            pub fn advance(&self, _c: &ResourceClass, _n: Timestamp, _d: Demand) {}
        }
        #[async_trait]
        impl VmFleet for ShadowFleet {
            async fn observe(&self, _c: &ResourceClass) -> Result<FleetState, PortError> {
                Ok(FleetState::default())
            }
            async fn apply(&self, _c: &ResourceClass, _p: &Plan) -> Result<ApplyReport, PortError> {
                Ok(ApplyReport::default())
            }
        }
    }
}
