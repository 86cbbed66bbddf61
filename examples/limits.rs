//! Whole-tree resource limits: a memory cap that OOM-kills a hog, a process cap that stops a
//! fork storm, and a CPU quota — or a clear `Error::ResourceLimit` where the host cannot
//! enforce them.
//!
//! Run it with `cargo run --example limits --features limits` (needs `python3` on `PATH`).

use processkit::{Command, Error, ProcessGroup, ProcessGroupOptions, ProcessRunnerExt};
use std::time::Duration;

#[tokio::main]
async fn main() -> processkit::Result<()> {
    let options = ProcessGroupOptions::default()
        .memory_max(64 << 20) // 64 MiB across the tree
        .max_processes(16)
        .cpu_quota(0.5); // half of one core
    let group = match ProcessGroup::with_options(options) {
        Ok(group) => group,
        Err(Error::ResourceLimit { what, reason }) => {
            // Never a silently unbounded group.
            println!("this host cannot enforce `{what}`: {reason}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    println!("a limited group on {}", group.mechanism());

    // Memory: a 256 MiB string in a 64 MiB group is OOM-killed.
    let hog = Command::new("python3").args(["-c", "s = 'x' * (256 << 20)"]);
    let r = group.output_string(&hog).await?;
    println!(
        "memory hog: oom_killed={} signal={:?}",
        r.oom_killed(),
        r.signal()
    );
    match group.run(&hog).await {
        Err(Error::ResourceLimit { what, reason }) => {
            println!("run() -> ResourceLimit {what}: {reason}")
        }
        other => println!("run() -> {other:?}"),
    }

    // CPU: a busy loop gets about half a core.
    let spin = Command::new("python3")
        .args([
            "-c",
            "import time\nt = time.time()\nwhile time.time() - t < 1: pass",
        ])
        .timeout(Duration::from_secs(10));
    let run = group.start(&spin).await?;
    let mut run = run;
    let profile = run.profile(Duration::from_millis(100)).await?;
    println!(
        "1 s busy loop under cpu_quota(0.5): avg {:.2} cores (cpu {:?} over {:?})",
        profile.avg_cpu().unwrap_or(f64::NAN),
        profile.cpu_time,
        profile.duration
    );

    // Processes: a fork storm is capped (fork fails inside the tree; nothing is killed).
    let storm_script = r#"
import os, time
ok = refused = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        os.close(1)
        time.sleep(30)
        os._exit(0)
    ok += 1
print(f"forked={ok} refused={refused}")
"#;
    let r = group
        .output_string(&Command::new("python3").args(["-c", storm_script]))
        .await?;
    println!(
        "fork storm of 40 under max_processes(16): {} {}",
        r.stdout().trim(),
        r.stderr().trim()
    );
    group.kill()?; // the sleeps that did start

    let stats = group.stats()?;
    println!(
        "group totals: cpu={:?} peak memory={:?} processes seen={:?}",
        stats.cpu_total(),
        stats.peak_memory_bytes,
        stats.total_process_count
    );
    Ok(())
}
