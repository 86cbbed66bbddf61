//! The 60-second tour from the spec, against real programs on this machine.
//!
//! Run it with `cargo run --example tour`.

use processkit::{Command, ProcessGroup, Stdin};
use std::time::Duration;

#[tokio::main]
async fn main() -> processkit::Result<()> {
    // One-shot: capture everything. A non-zero exit is data, not an Err.
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output_string()
        .await?;
    match head.code() {
        Some(0) => println!("HEAD = {}", head.stdout().trim()),
        code => println!(
            "git rev-parse exited {code:?} (not a repository?): {}",
            head.stderr().trim()
        ),
    }

    // Success-checking: non-zero exit / timeout / signal-kill become typed errors.
    let version = Command::new("cargo").arg("--version").run().await?;
    println!("cargo says: {version}");

    // Stdin and a timeout.
    let sorted = Command::new("sort")
        .stdin(Stdin::from_string("b\na\n"))
        .timeout(Duration::from_secs(5))
        .run()
        .await?;
    println!("sorted: {sorted:?}");

    // A failure explains itself: the command line and the tail of stderr.
    if let Err(e) = Command::new("ls").arg("/no/such/dir").run().await {
        println!("a typed error:\n  {e}");
    }

    // Containment: anything spawned through a group dies with it — grandchildren included.
    let group = ProcessGroup::new()?;
    println!("containment mechanism: {}", group.mechanism());
    // A "dev server" that forks a helper of its own, as servers do.
    let server = group
        .start(&Command::new("sh").args(["-c", "sleep 300 & exec sleep 300"]))
        .await?;
    let server_pid = server.pid();
    // The live members: the whole tree on a cgroup or Job Object, the group leaders on a
    // process group. (`members` is part of the default-on `process-control` feature.)
    #[cfg(feature = "process-control")]
    {
        // The helper may need a moment to be forked; wait for it on a cgroup.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut members = group.members()?;
        while group.mechanism() == processkit::Mechanism::CgroupV2
            && members.len() < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            members = group.members()?;
        }
        println!("group members (server {server_pid} and its helper): {members:?}");
    }
    drop(group); // the server — and everything *it* spawned — is reaped
    drop(server);
    println!("dropped the group: server {server_pid} and its helper are gone");
    Ok(())
}
