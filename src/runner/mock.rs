//! [`MockRunner`]: a `mockall`-generated double (feature `mock`).
//!
//! `mockall` cannot mock a method whose boxed future borrows its arguments, so the mock is
//! generated for a synchronous twin of [`ProcessRunner`] (`Calls`, private) and
//! [`ProcessRunner`] is implemented on top: each call asks the mock for its result and returns
//! it as a ready future.

use crate::error::Result;
use crate::result::ProcessResult;
use crate::running::RunningProcess;
use crate::Command;

use super::{BoxFuture, ProcessRunner};

/// The synchronous twin of [`ProcessRunner`] that `mockall` mocks.
pub(crate) trait Calls {
    fn output_bytes(&self, cmd: &Command) -> Result<ProcessResult<Vec<u8>>>;
    fn start(&self, cmd: &Command) -> Result<RunningProcess>;
}

mockall::mock! {
    /// A `mockall` mock of [`ProcessRunner`] (feature `mock`), for expectation-style tests:
    /// call counts, argument matchers, sequences.
    ///
    /// `expect_output_bytes()` serves every one-shot verb (`run`, `output_string`,
    /// `exit_code`, `probe`; once per attempt under a retry policy) and `expect_start()` serves
    /// live handles and `first_line`; the `returning` closure gets the [`Command`] and returns
    /// the result. A call without a matching expectation panics. Build canned results with
    /// [`ProcessResult::new_bytes`], and live handles with a
    /// [`ScriptedRunner`](crate::ScriptedRunner) if needed. The generated `expect_*` surface
    /// follows `mockall` 0.13, not this crate's semver.
    ///
    /// ```
    /// use processkit::{Command, MockRunner, ProcessResult, ProcessRunnerExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> processkit::Result<()> {
    /// let mut mock = MockRunner::new();
    /// mock.expect_output_bytes()
    ///     .withf(|cmd| cmd.get_program() == "git")
    ///     .times(1)
    ///     .returning(|_| Ok(ProcessResult::new_bytes("git", 0, "main\n", "")));
    /// assert_eq!(mock.run(&Command::new("git").arg("branch")).await?, "main");
    /// # Ok(())
    /// # }
    /// ```
    pub Runner {}

    impl Calls for Runner {
        fn output_bytes(&self, cmd: &Command) -> Result<ProcessResult<Vec<u8>>>;
        fn start(&self, cmd: &Command) -> Result<RunningProcess>;
    }
}

impl ProcessRunner for MockRunner {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        let r = Calls::output_bytes(self, cmd);
        Box::pin(std::future::ready(r))
    }

    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
        let r = Calls::start(self, cmd);
        Box::pin(std::future::ready(r))
    }
}
