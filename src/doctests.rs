//! The README and every guide under `docs/`, compiled and run as doctests.
//!
//! Each file is attached to a hidden item, gated on the features its snippets need (and on
//! `unix`: the snippets run `sh`, `sort`, `python3` and friends), so
//! `cargo test --all-features --doc` runs every snippet a reader can copy. Nothing here is
//! compiled outside `cargo test --doc`.

#[doc = include_str!("../README.md")]
#[cfg(all(unix, feature = "limits", feature = "cancellation", feature = "record"))]
pub struct Readme;

#[doc = include_str!("../docs/README.md")]
#[cfg(unix)]
pub struct DocsIndex;

#[doc = include_str!("../docs/cookbook.md")]
#[cfg(all(
    unix,
    feature = "limits",
    feature = "cancellation",
    feature = "record",
    feature = "mock",
    feature = "tracing"
))]
pub struct Cookbook;

#[doc = include_str!("../docs/commands.md")]
#[cfg(unix)]
pub struct CommandsGuide;

#[doc = include_str!("../docs/streaming.md")]
#[cfg(unix)]
pub struct StreamingGuide;

#[doc = include_str!("../docs/pipelines.md")]
#[cfg(unix)]
pub struct PipelinesGuide;

#[doc = include_str!("../docs/timeouts-and-cancellation.md")]
#[cfg(all(unix, feature = "cancellation"))]
pub struct TimeoutsGuide;

#[doc = include_str!("../docs/process-groups.md")]
#[cfg(all(unix, feature = "limits", feature = "process-control"))]
pub struct ProcessGroupsGuide;

#[doc = include_str!("../docs/supervision.md")]
#[cfg(all(unix, feature = "cancellation"))]
pub struct SupervisionGuide;

#[doc = include_str!("../docs/testing.md")]
#[cfg(unix)]
pub struct TestingGuide;

#[doc = include_str!("../docs/platform-support.md")]
#[cfg(unix)]
pub struct PlatformSupportGuide;

#[doc = include_str!("../docs/performance.md")]
#[cfg(unix)]
pub struct PerformanceGuide;
