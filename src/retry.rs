//! One retry policy for every HTTP call, sources and sinks alike (Vector's `RetryLogic`):
//! one classification of outcomes, exponential backoff with full jitter and a cap, `Retry-After`
//! honoured, and every wait cut short by shutdown.

use std::future::Future;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable as _};
use tokio_util::sync::CancellationToken;

/// Retry policy of every HTTP call (`[agent]` `retry_*`): defined here, with the policy that
/// uses it, so that retrying knows nothing of the configuration (`config` re-exports it).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub initial: Duration,
    pub max_delay: Duration,
    /// Attempts of one request before the poll gives up; `None` retries while the agent runs.
    pub max_attempts: Option<usize>,
}

/// What to do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worth another try; `after` is the server's `Retry-After`, if it sent one.
    Retry { after: Option<Duration> },
    /// Retrying cannot help (a 4xx other than 408/429, a bad request of ours).
    Stop,
}

/// An error that knows whether it is worth retrying.
pub trait Retryable: std::fmt::Display {
    fn verdict(&self) -> Verdict;
}

/// The classification of an HTTP status that is not a success.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        408 | 429 | 500..=599 => Verdict::Retry { after: retry_after },
        _ => Verdict::Stop,
    }
}

/// Longest `Retry-After` we honour as given; longer ones are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?;
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(when.as_second().max(0) as u64);
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Why a retried operation gave up.
#[derive(Debug)]
pub enum Gave<E> {
    /// Shutdown was requested while waiting or trying.
    Cancelled,
    /// A permanent error, or the last of the allowed attempts.
    Up(E),
}

/// Full jitter: a uniformly random delay between zero and the exponential step.
fn full_jitter(step: Duration) -> Duration {
    let ms = step.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// Runs `op` until it succeeds, fails permanently, runs out of attempts, or `cancel` fires.
/// `on_retry` hears of each retry (for logs and metrics) with the delay chosen.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryConfig,
    cancel: &CancellationToken,
    mut on_retry: impl FnMut(&E, Duration),
    op: F,
) -> Result<T, Gave<E>>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(policy.initial)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0);
    backoff = match policy.max_attempts {
        Some(n) => backoff.with_max_times(n.saturating_sub(1)),
        None => backoff.without_max_times(),
    };
    let attempts = op
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &E| matches!(e.verdict(), Verdict::Retry { .. }))
        .adjust(|e: &E, step: Option<Duration>| {
            // `None` means the attempts are used up: keep it so.
            let step = step?;
            Some(match e.verdict() {
                Verdict::Retry { after: Some(after) } => after,
                _ => full_jitter(step),
            })
        })
        .notify(|e: &E, d: Duration| on_retry(e, d));
    tokio::select! {
        r = attempts => r.map_err(Gave::Up),
        _ = cancel.cancelled() => Err(Gave::Cancelled),
    }
}

/// Characters of an HTTP answer quoted in a log line or error.
pub const SNIPPET_CHARS: usize = 200;

/// The first characters of an HTTP answer (a vendor's or a receiver's error body), trimmed and
/// on one line, `…` marking a cut: for log lines and errors. The one place such text is made.
pub fn snippet(body: &str) -> String {
    let mut out: String = body
        .trim()
        .chars()
        .take(SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.trim().chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        "(empty body)".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(Verdict);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl Retryable for E {
        fn verdict(&self) -> Verdict {
            self.0
        }
    }

    fn policy(attempts: Option<usize>) -> RetryConfig {
        RetryConfig {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_attempts: attempts,
        }
    }

    #[test]
    fn statuses_are_classified() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                matches!(classify_status(s, None), Verdict::Retry { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert_eq!(classify_status(s, None), Verdict::Stop, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn full_jitter_stays_within_the_step() {
        for _ in 0..1000 {
            assert!(full_jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds_and_stops_on_permanent() {
        let n = AtomicU32::new(0);
        let r: Result<u32, Gave<E>> = retry(
            &policy(Some(5)),
            &CancellationToken::new(),
            |_, _| {},
            || async {
                let i = n.fetch_add(1, Ordering::SeqCst);
                if i < 3 {
                    Err(E(Verdict::Retry { after: None }))
                } else {
                    Ok(i)
                }
            },
        )
        .await;
        assert_eq!(r.ok(), Some(3));

        let n = AtomicU32::new(0);
        let r: Result<(), Gave<E>> = retry(
            &policy(Some(5)),
            &CancellationToken::new(),
            |_, _| {},
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(E(Verdict::Stop))
            },
        )
        .await;
        assert!(matches!(r, Err(Gave::Up(E(Verdict::Stop)))));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_retry_after_is_used() {
        let n = AtomicU32::new(0);
        let mut delays = Vec::new();
        let r: Result<(), Gave<E>> = retry(
            &policy(Some(3)),
            &CancellationToken::new(),
            |_, d| delays.push(d),
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(E(Verdict::Retry {
                    after: Some(Duration::from_millis(7)),
                }))
            },
        )
        .await;
        assert!(matches!(r, Err(Gave::Up(_))));
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert_eq!(delays, vec![Duration::from_millis(7); 2]);
    }

    #[tokio::test]
    async fn cancellation_cuts_a_long_wait_short() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c2.cancel();
        });
        let started = std::time::Instant::now();
        let r: Result<(), Gave<E>> = retry(
            &policy(None),
            &cancel,
            |_, _| {},
            || async {
                Err(E(Verdict::Retry {
                    after: Some(Duration::from_secs(3600)),
                }))
            },
        )
        .await;
        assert!(matches!(r, Err(Gave::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(snippet("  a\nb "), "a b");
        assert_eq!(snippet(""), "(empty body)");
        assert_eq!(snippet(&"x".repeat(500)).chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(snippet(&"é".repeat(200)), "é".repeat(200));
    }
}
