//! Leader election over a `coordination.k8s.io` Lease, against the local fake API server. One replica leads; the standby takes over within the
//! lease duration once the leader releases it.

use std::time::{Duration, Instant};

use provisioner::leader::Leadership;
use provisioner_testkit::{FakeKube, NS};

const LEASE: &str = "runner-provisioner";

async fn until_leader(l: &mut Leadership, within: Duration) -> Duration {
    let started = Instant::now();
    while !l.is_leader() {
        let left = within
            .checked_sub(started.elapsed())
            .expect("did not become leader in time");
        tokio::time::timeout(left, l.changed())
            .await
            .expect("did not become leader in time")
            .expect("lease manager running");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_the_standby_takes_over_after_release() {
    let (fake, _, client) = FakeKube::start().await;
    let mut a = Leadership::start(client.clone(), NS, LEASE, "pod-a")
        .await
        .expect("start a");
    until_leader(&mut a, Duration::from_secs(10)).await;
    assert_eq!(fake.holder().as_deref(), Some("pod-a"));

    let mut b = Leadership::start(client, NS, LEASE, "pod-b")
        .await
        .expect("start b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b.is_leader(), "two leaders");
    assert!(a.is_leader());
    assert_eq!(fake.holder().as_deref(), Some("pod-a"));

    // The leader shuts down and releases; the standby takes over within the lease duration.
    a.release().await;
    assert_eq!(fake.holder(), None, "released lease still held");
    let took = until_leader(&mut b, Duration::from_secs(15)).await;
    assert_eq!(fake.holder().as_deref(), Some("pod-b"));
    println!("standby took over {took:?} after the release");
}
