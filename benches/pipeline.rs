//! 1 GiB through a three-stage pipeline: processkit's native pipes against the same chain run
//! by `sh` (the shell-pipeline speed processkit must match; data never passes through us).
//!
//! `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 5 --sample-size 10`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use processkit::{Command, OutputMode};

const SIZE: &str = "1G";
const BYTES: u64 = 1 << 30;

fn pk_child() -> &'static str {
    env!("CARGO_BIN_EXE_pk-child")
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut g = c.benchmark_group("pipeline_1gib_3_stages");
    g.throughput(Throughput::Bytes(BYTES));
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(10);

    // pk-child bytes 1G | pk-child cat | pk-child cat > /dev/null
    let chain = Command::new(pk_child()).args(["bytes", SIZE])
        | Command::new(pk_child()).arg("cat")
        | Command::new(pk_child()).arg("cat").stdout(OutputMode::Null);
    g.bench_function("processkit", |b| {
        b.to_async(&rt).iter(|| async {
            let r = chain.output_bytes().await.expect("pipeline runs");
            assert_eq!(r.code(), Some(0), "{:?}", r.stages());
        })
    });

    #[cfg(unix)]
    {
        let script = format!(
            "'{pk}' bytes {SIZE} | '{pk}' cat | '{pk}' cat > /dev/null",
            pk = pk_child()
        );
        g.bench_function("sh", |b| {
            b.iter(|| {
                let st = std::process::Command::new("sh")
                    .args(["-c", &script])
                    .status()
                    .expect("sh runs");
                assert!(st.success());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
