//! Line streaming throughput: processkit's `stdout_lines` against `std::io::BufRead::lines`
//! and tokio's `BufReader::lines`, all reading the same child output (`pk-child lines
//! 2000000 128`: 2M lines of 128 bytes + `\n`) in the same run.
//!
//! ```text
//! cargo bench --bench lines -- --warm-up-time 1 --measurement-time 5 --sample-size 10
//! ```

use std::io::BufRead as _;
use std::process::Stdio;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const LINES: u64 = 2_000_000;
const WIDTH: u64 = 128;

fn pk_child() -> &'static str {
    env!("CARGO_BIN_EXE_pk-child")
}

fn args() -> [String; 3] {
    ["lines".into(), LINES.to_string(), WIDTH.to_string()]
}

/// Checks what each reader saw, so no variant can win by skipping work.
fn check(lines: u64, bytes: u64) {
    assert_eq!(lines, LINES);
    assert_eq!(bytes, LINES * WIDTH);
}

fn bench_lines(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut g = c.benchmark_group("lines_2M_x128");
    g.throughput(Throughput::Bytes(LINES * (WIDTH + 1)));

    g.bench_function("std_bufread_lines", |b| {
        b.iter(|| {
            let mut child = std::process::Command::new(pk_child())
                .args(args())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn");
            let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            let (mut n, mut bytes) = (0u64, 0u64);
            for line in out.lines() {
                let line = line.expect("line");
                n += 1;
                bytes += line.len() as u64;
            }
            assert!(child.wait().expect("wait").success());
            check(n, bytes);
        })
    });

    g.bench_function("tokio_bufreader_lines", |b| {
        b.to_async(&rt).iter(|| async {
            use tokio::io::AsyncBufReadExt as _;
            let mut child = tokio::process::Command::new(pk_child())
                .args(args())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn");
            let out = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
            let mut lines = out.lines();
            let (mut n, mut bytes) = (0u64, 0u64);
            while let Some(line) = lines.next_line().await.expect("line") {
                n += 1;
                bytes += line.len() as u64;
            }
            assert!(child.wait().await.expect("wait").success());
            check(n, bytes);
        })
    });

    g.bench_function("processkit_stdout_lines", |b| {
        b.to_async(&rt).iter(|| async {
            use processkit::StreamExt as _;
            let mut run = processkit::Command::new(pk_child())
                .args(args())
                .start()
                .await
                .expect("start");
            let mut lines = run.stdout_lines();
            let (mut n, mut bytes) = (0u64, 0u64);
            while let Some(line) = lines.next().await {
                n += 1;
                bytes += line.len() as u64;
            }
            let (code, _) = run.finish_streamed().await.expect("finish");
            assert_eq!(code, Some(0));
            check(n, bytes);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_lines);
criterion_main!(benches);
