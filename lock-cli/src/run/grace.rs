//! `--grace`: how long before its lease runs out a command is asked to stop.
//!
//! A lease is renewed every ttl/3, and each renewal moves its local deadline to
//! `ttl - min(ttl/10, 1s)` after the renewal was sent. Just before a renewal the deadline is
//! thus about `2/3 ttl - margin` away: a grace above about half the TTL would stop commands
//! whose lease renews normally, so it is refused.

use std::time::Duration;

use crate::error::CliError;

/// The grace when `--grace` is not given and the TTL is long: ttl/4 for shorter TTLs.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The grace for `ttl`: `given`, else the smaller of 10s and ttl/4.
///
/// # Errors
///
/// [`CliError::Config`] when `given` is more than half of `ttl`.
pub(crate) fn grace_for(ttl: Duration, given: Option<Duration>) -> Result<Duration, CliError> {
    let Some(grace) = given else {
        return Ok(DEFAULT_GRACE.min(ttl / 4));
    };
    let max = ttl / 2;
    if grace > max {
        return Err(CliError::Config(format!(
            "--grace {} is more than half of --ttl {}, so the command would be stopped \
                 between two normal renewals; pass --grace {} or less, or --ttl {} or more",
            humantime::format_duration(grace),
            humantime::format_duration(ttl),
            humantime::format_duration(max),
            humantime::format_duration(grace * 2),
        )));
    }
    Ok(grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_default_is_a_quarter_of_the_ttl_up_to_ten_seconds() {
        assert_eq!(grace_for(MS * 900, None).unwrap(), MS * 225);
        assert_eq!(grace_for(Duration::from_secs(30), None).unwrap(), MS * 7500);
        assert_eq!(
            grace_for(Duration::from_secs(120), None).unwrap(),
            DEFAULT_GRACE
        );
    }

    #[test]
    fn up_to_half_the_ttl_is_accepted() {
        let ttl = Duration::from_secs(2);
        assert_eq!(grace_for(ttl, Some(MS * 1000)).unwrap(), MS * 1000);
        assert_eq!(
            grace_for(ttl, Some(Duration::ZERO)).unwrap(),
            Duration::ZERO
        );
    }

    #[test]
    fn more_than_half_the_ttl_says_what_to_pass() {
        let error = grace_for(Duration::from_secs(2), Some(MS * 1001)).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, CliError::Config(_)), "{error:?}");
        assert_eq!(error.exit_code(), 78);
        assert!(
            text.contains("--grace 1s or less") && text.contains("--ttl 2s 2ms or more"),
            "{text}"
        );
    }
}
