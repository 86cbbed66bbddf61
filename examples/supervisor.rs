//! Supervision: keep a crashing "server" alive with bounded restarts and backoff, stop on a
//! clean exit, guard against crash loops, and supervise inside a shared group.
//!
//! Run it with `cargo run --example supervisor`.

use processkit::{Command, ProcessGroup, RestartPolicy, StopReason, Supervisor};
use std::time::Duration;

#[tokio::main]
async fn main() -> processkit::Result<()> {
    let state = std::env::temp_dir().join(format!("pk-supervisor-example-{}", std::process::id()));

    // A server that crashes on its first two starts and then exits cleanly: it counts its
    // starts in a file.
    let script = r#"n=$(cat "$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1"
echo "incarnation $n starting"
if [ $n -lt 3 ]; then echo "crash!" >&2; exit 1; fi
echo "clean shutdown"; exit 0"#;
    let server = Command::new("sh")
        .args(["-c", script, "server"])
        .arg(&state);

    let outcome = Supervisor::new(server)
        .restart(RestartPolicy::OnCrash) // a clean exit ends supervision
        .max_restarts(5)
        .backoff(Duration::from_millis(100), 2.0) // 100 ms, 200 ms, … (jittered)
        .storm_pause(Duration::from_secs(5)) // crash-loop guard
        .run()
        .await?;
    let last = outcome
        .result
        .as_ref()
        .map(|r| r.stdout().trim().to_owned());
    println!(
        "OnCrash: stopped ({}) after {} restarts; last output: {last:?}",
        outcome.stopped, outcome.restarts
    );
    assert_eq!(
        (outcome.restarts, &outcome.stopped),
        (2, &StopReason::Policy)
    );
    std::fs::remove_file(&state).ok();

    // A crash loop hits the restart-intensity window (at most 3 restarts per minute).
    let outcome = Supervisor::new(Command::new("sh").args(["-c", "exit 1"]))
        .restart(RestartPolicy::Always)
        .backoff(Duration::from_millis(10), 2.0)
        .intensity(3, Duration::from_secs(60))
        .run()
        .await?;
    println!(
        "crash loop: stopped ({}) after {} restarts",
        outcome.stopped, outcome.restarts
    );

    // Every incarnation inside one shared kill-on-drop group.
    let group = ProcessGroup::new()?;
    let outcome = Supervisor::new(Command::new("sh").args(["-c", "sleep 0.05"]))
        .restart(RestartPolicy::Always)
        .max_restarts(3)
        .backoff(Duration::from_millis(10), 2.0)
        .with_runner(&group)
        .run()
        .await?;
    println!(
        "in a shared group ({}): stopped ({}) after {} restarts",
        group.mechanism(),
        outcome.stopped,
        outcome.restarts
    );
    Ok(())
}
