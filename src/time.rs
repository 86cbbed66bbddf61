//! Deadlines from user-supplied durations. `Duration::MAX` (or anything that would overflow the
//! clock) means "practically never", never a panic.

use std::time::Duration;

/// About thirty years: later than any run can last, early enough for every platform's clock.
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + d` on tokio's clock (which a test may pause), saturating at thirty years from now.
pub(crate) fn deadline_in(d: Duration) -> tokio::time::Instant {
    after(tokio::time::Instant::now(), d)
}

/// `at + d`, with `d` capped at thirty years: an instant at the very edge of the clock's range
/// would still overflow the timer's own arithmetic later (tokio adds to deadlines it is given).
pub(crate) fn after<I>(at: I, d: Duration) -> I
where
    I: Copy + CheckedAdd,
{
    at.checked_add_dur(d.min(FAR)).unwrap_or(at)
}

/// The instants `after` works on (std's and tokio's).
pub(crate) trait CheckedAdd: Sized {
    fn checked_add_dur(self, d: Duration) -> Option<Self>;
}

impl CheckedAdd for std::time::Instant {
    fn checked_add_dur(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

impl CheckedAdd for tokio::time::Instant {
    fn checked_add_dur(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let now = std::time::Instant::now();
        let far = after(now, Duration::MAX);
        assert!(far >= now + Duration::from_secs(86_400 * 365));
        // Capped, not merely non-overflowing: far from the clock's edge.
        assert!(far
            .checked_add(Duration::from_secs(86_400 * 365 * 100))
            .is_some());
        assert_eq!(after(now, Duration::MAX - Duration::from_secs(1)), far);
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[tokio::test]
    async fn tokio_deadlines_saturate_too() {
        let now = tokio::time::Instant::now();
        assert!(deadline_in(Duration::MAX) > now + Duration::from_secs(86_400 * 365));
    }
}
