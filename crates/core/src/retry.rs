//! Retry policies for activities and sub-orchestrations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FailureDetails;

/// How a failed activity or sub-orchestration is retried. Waits are durable timers, so the
/// backoff survives restarts and is computed from history timestamps.
///
/// ```
/// use std::time::Duration;
/// use perdure_core::RetryPolicy;
/// let p = RetryPolicy::new(5, Duration::from_secs(1)).with_backoff_coefficient(2.0);
/// assert_eq!(p.delay_before_attempt(2), Duration::from_secs(1));
/// assert_eq!(p.delay_before_attempt(4), Duration::from_secs(4));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub first_retry_interval: Duration,
    /// The factor applied to the wait after each retry (at least 1.0).
    pub backoff_coefficient: f64,
    /// The longest wait between attempts.
    pub max_retry_interval: Duration,
    /// Give up when this much time has passed since the first attempt was scheduled.
    pub retry_timeout: Option<Duration>,
    /// Retry only failures whose error type (or an inner failure's) is in this list; empty
    /// means retry every failure.
    pub retry_on_error_types: Vec<String>,
}

impl RetryPolicy {
    /// A policy with `max_attempts` attempts and a fixed first interval, coefficient 1.
    pub fn new(max_attempts: u32, first_retry_interval: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            first_retry_interval,
            backoff_coefficient: 1.0,
            max_retry_interval: Duration::from_secs(3600),
            retry_timeout: None,
            retry_on_error_types: Vec::new(),
        }
    }

    /// Sets the backoff coefficient.
    pub fn with_backoff_coefficient(mut self, c: f64) -> Self {
        self.backoff_coefficient = c;
        self
    }

    /// Sets the maximum interval.
    pub fn with_max_retry_interval(mut self, d: Duration) -> Self {
        self.max_retry_interval = d;
        self
    }

    /// Sets the overall retry timeout.
    pub fn with_retry_timeout(mut self, d: Duration) -> Self {
        self.retry_timeout = Some(d);
        self
    }

    /// Retries only failures of these error types.
    pub fn retry_on(mut self, error_types: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.retry_on_error_types = error_types.into_iter().map(Into::into).collect();
        self
    }

    /// The wait before attempt `attempt` (2 is the first retry). Pure arithmetic.
    pub fn delay_before_attempt(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let coefficient = if self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0
        {
            self.backoff_coefficient
        } else {
            1.0
        };
        let exp = i32::try_from(attempt - 2).unwrap_or(i32::MAX);
        let secs = self.first_retry_interval.as_secs_f64() * coefficient.powi(exp);
        let max = self.max_retry_interval.as_secs_f64();
        // `Duration::MAX` as f64 rounds up past what a Duration holds: saturate, not panic.
        Duration::try_from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
            .map_or(self.max_retry_interval, |d| d.min(self.max_retry_interval))
    }

    /// Whether this failure should be retried (by type only; attempts and timeout are
    /// checked by the caller).
    pub fn should_retry(&self, failure: &FailureDetails) -> bool {
        self.retry_on_error_types.is_empty()
            || self
                .retry_on_error_types
                .iter()
                .any(|t| failure.is_caused_by(t))
    }

    /// Checks the policy's fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if !(self.backoff_coefficient.is_finite() && self.backoff_coefficient >= 1.0) {
            return Err("backoff_coefficient must be a finite number >= 1.0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod extreme_tests {
    use super::*;

    /// Before issue 12, a policy with `Duration::MAX` as its largest interval panicked in
    /// `Duration::from_secs_f64` ("value is either too big or NaN").
    #[test]
    fn huge_intervals_saturate() {
        let p = RetryPolicy::new(u32::MAX, Duration::MAX)
            .with_backoff_coefficient(f64::MAX)
            .with_max_retry_interval(Duration::MAX);
        for attempt in [2, 3, 1000, u32::MAX] {
            assert_eq!(p.delay_before_attempt(attempt), Duration::MAX);
        }
        let p = RetryPolicy::new(3, Duration::from_secs(1)).with_backoff_coefficient(f64::NAN);
        assert_eq!(p.delay_before_attempt(3), Duration::from_secs(1));
    }
}
