//! The dates a response and its access-log line carry, formatted at most
//! once a second: a keep-alive connection serving thousands of requests a
//! second should not format the same date thousands of times.

use std::time::SystemTime;

use crate::http::response::http_date;

/// Date strings, formatted at most once a second. The worker owns one and
/// lends it to each exchange.
#[derive(Default)]
pub struct Clock {
    /// Unix second the strings below were made for.
    second: u64,
    /// The `Date` header value for that second.
    http_date: String,
    /// The access log's `%(t)s` for that second, made only when asked
    /// (empty until then): without an access log it is never needed.
    log_time: String,
}

impl Clock {
    /// Bring the strings up to the current second.
    pub fn refresh(&mut self) {
        self.refresh_at(SystemTime::now());
    }

    fn refresh_at(&mut self, now: SystemTime) {
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.http_date.is_empty() {
            self.second = second;
            self.http_date = http_date(now);
            self.log_time.clear();
        }
    }

    /// The `Date` header value as of the last `refresh`.
    pub fn http_date(&self) -> &str {
        &self.http_date
    }

    /// The access log's time as of the last `refresh`.
    pub fn log_time(&mut self) -> &str {
        if self.log_time.is_empty() {
            self.log_time = crate::sys::clock::local_time("[%d/%b/%Y:%H:%M:%S %z]");
        }
        &self.log_time
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::Clock;

    #[test]
    fn the_date_changes_only_when_the_second_does() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut clock = Clock::default();
        clock.refresh_at(t);
        let first = clock.http_date().to_owned();
        assert!(first.ends_with(" GMT"), "{first}");
        clock.refresh_at(t + Duration::from_millis(999));
        assert_eq!(clock.http_date(), first, "same second, same string");
        clock.refresh_at(t + Duration::from_secs(1));
        assert_ne!(clock.http_date(), first, "a new second, a new date");
    }

    #[test]
    fn a_new_second_forgets_the_log_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut clock = Clock::default();
        clock.refresh_at(t);
        assert!(!clock.log_time().is_empty());
        clock.refresh_at(t + Duration::from_millis(500));
        assert!(!clock.log_time.is_empty(), "kept within the second");
        clock.refresh_at(t + Duration::from_secs(1));
        assert!(clock.log_time.is_empty(), "made again when next asked");
    }
}
