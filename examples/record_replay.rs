//! Record real runs into a JSON cassette once, then replay them without spawning anything.
//!
//! Run it with `cargo run --example record_replay --features record`.

use processkit::{Cassette, Command, JobRunner, ProcessRunnerExt, RecordReplayRunner};

#[tokio::main]
async fn main() -> processkit::Result<()> {
    let cassette = std::env::temp_dir().join(format!("pk-example-{}.json", std::process::id()));
    let git_version = Command::new("git").arg("--version");
    let failing = Command::new("ls").arg("/no/such/dir");

    // Record against the real programs (a non-zero exit is recorded too).
    let recorder = RecordReplayRunner::record(&cassette, JobRunner::new());
    let live = recorder.run(&git_version).await?;
    let live_failure = recorder.output_string(&failing).await?;
    recorder.save()?;
    println!(
        "recorded {} runs into {}",
        recorder.len(),
        cassette.display()
    );
    println!(
        "{}",
        std::fs::read_to_string(&cassette).expect("read the cassette")
    );

    let loaded = Cassette::load(&cassette)?;
    println!("cassette holds: {:?}", loaded.command_lines());

    // Replay: identical results, no subprocess.
    let replayer = RecordReplayRunner::replay(&cassette)?;
    assert_eq!(replayer.run(&git_version).await?, live);
    let replayed_failure = replayer.output_string(&failing).await?;
    assert_eq!(replayed_failure.code(), live_failure.code());
    assert_eq!(replayed_failure.stderr(), live_failure.stderr());
    println!(
        "replayed: {live:?} and `ls` exiting {:?}",
        replayed_failure.code()
    );

    // An invocation that was never recorded is a strict error, never a surprise spawn.
    let miss = replayer.run(&Command::new("git").arg("status")).await;
    println!("unrecorded invocation -> {}", miss.expect_err("a miss"));

    std::fs::remove_file(&cassette).ok();
    Ok(())
}
