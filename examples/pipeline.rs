//! Shell-free pipelines: `a | b | c` with native pipes, pipefail attribution, an unchecked
//! producer, a chain timeout, and a live pipeline.
//!
//! Run it with `cargo run --example pipeline`.

use processkit::{Command, Stdin, StreamExt};
use std::time::Duration;

#[tokio::main]
async fn main() -> processkit::Result<()> {
    let dir = env!("CARGO_MANIFEST_DIR");

    // sh: find src -name '*.rs' | xargs wc -l | sort -n | tail -n 3
    let biggest = (Command::new("find")
        .args(["src", "-name", "*.rs"])
        .current_dir(dir)
        | Command::new("xargs").arg("wc").arg("-l").current_dir(dir)
        | Command::new("sort").arg("-n")
        | Command::new("tail").args(["-n", "3"]))
    .run()
    .await?;
    println!("the largest source files (and the total):\n{biggest}\n");

    // sh: printf 'b\na\nb\n' | sort | uniq -c       (stdin of the first stage is honoured)
    let counts = Command::new("sort")
        .stdin(Stdin::from_string("b\na\nb\n"))
        .pipe(Command::new("uniq").arg("-c"))
        .output_string()
        .await?;
    println!("uniq -c:\n{}", counts.stdout());

    // Pipefail: the first stage that failed is reported, with its own stderr.
    let chain = Command::new("cat").arg("/no/such/file")
        | Command::new("sort")
        | Command::new("wc").arg("-l");
    let r = chain.output_string().await?;
    println!(
        "`{chain}` -> success={} blamed={}",
        r.success(),
        r.program()
    );
    for (i, stage) in r.stages().iter().enumerate() {
        println!(
            "  stage {i}: {} code={:?} stderr={:?}",
            stage.program,
            stage.code,
            stage.stderr.trim()
        );
    }
    assert_eq!(r.program(), "cat");

    // producer | head: the producer's SIGPIPE is expected, so it is unchecked.
    let first = (Command::new("yes").arg("hello").unchecked()
        | Command::new("head").args(["-n", "1"]))
    .run()
    .await?;
    println!("\nyes hello | head -n 1 -> {first:?}");

    // A timeout bounds the whole chain; every stage is killed at the deadline.
    let r = (Command::new("sh").args(["-c", "echo partial; exec sleep 60"]) | Command::new("cat"))
        .timeout(Duration::from_millis(500))
        .output_string()
        .await?;
    println!(
        "chain timeout: timed_out={} output so far={:?}",
        r.timed_out(),
        r.stdout()
    );

    // A live pipeline: write to the first stage, read the last stage line by line.
    let mut live = (Command::new("cat").keep_stdin_open()
        | Command::new("tr").args(["a-z", "A-Z"]))
    .start()
    .await?;
    println!("\nlive pipeline pids: {:?}", live.pids());
    let mut stdin = live.standard_input().expect("the first stage's stdin");
    let mut lines = live.stdout_lines();
    for word in ["shell", "free"] {
        stdin.write_line(word).await?;
    }
    // `tr` buffers its output when it writes to a pipe: end its input to flush it.
    stdin.finish().await?;
    while let Some(line) = lines.next().await {
        println!("  -> {line}");
    }
    drop(lines);
    let result = live.finish().await?;
    println!("live pipeline finished: success={}", result.success());
    Ok(())
}
