//! Backpressure: a slow `stdout_lines` reader slows the child down instead of buffering its
//! output. Alone in its own test binary so no other test's allocations move our RSS.
//!
//! Linux-only: it reads this process's resident set size from `/proc/self/status`.
#![cfg(target_os = "linux")]
mod common;

use common::*;
use processkit::{Command, StreamExt};
use std::time::Duration;

/// Resident set size of this process, in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_keeps_memory_bounded_over_200_mb() {
    // Warm up the runtime, the pump and the allocator on a small run first.
    let mut warm = Command::new(pk_child())
        .args(["bytes", "4M"])
        .start()
        .await
        .unwrap();
    let mut warm_lines = warm.stdout_lines();
    let mut n = 0;
    while warm_lines.next().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 4 * 1024 * 1024 / 128);
    warm.finish_streamed().await.unwrap();

    let before = vm_rss_kib();
    let mut run = Command::new(pk_child())
        .args(["bytes", "200M"])
        .start()
        .await
        .unwrap();
    let mut lines = run.stdout_lines();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut peak = before;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(120), lines.next())
        .await
        .expect("the stream stalled")
    {
        count += 1;
        bytes += line.len() as u64 + 1;
        if count.is_multiple_of(4096) {
            peak = peak.max(vm_rss_kib());
            // The slow consumer: the child must wait for us, not the heap.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    peak = peak.max(vm_rss_kib());
    assert_eq!(bytes, 200 * 1024 * 1024, "every byte arrives");
    assert_eq!(count, 200 * 1024 * 1024 / 128);
    let (code, _) = run.finish_streamed().await.unwrap();
    assert_eq!(code, Some(0));
    let growth_kib = peak.saturating_sub(before);
    eprintln!("RSS before {before} KiB, peak {peak} KiB, growth {growth_kib} KiB");
    assert!(
        growth_kib < 6 * 1024,
        "RSS grew by {growth_kib} KiB while streaming 200 MB to a slow reader"
    );
}
