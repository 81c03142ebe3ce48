//! Per-user message rate limit: a token bucket. Past the burst, messages are
//! refused with an error; a client that keeps sending regardless (a second
//! burst's worth of refused messages) is flooding and gets disconnected.

use std::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: refuse this message, keep the connection.
    Refuse,
    /// Kept sending while refused: close the connection.
    Flood,
}

#[derive(Debug)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    /// Goes below zero while messages are refused; `-burst` means flooding.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst);
        TokenBucket { per_sec: f64::from(per_sec), burst, tokens: burst, last: now }
    }

    pub fn take(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Verdict::Allow
        } else if self.tokens > -self.burst {
            Verdict::Refuse
        } else {
            Verdict::Flood
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refuse_then_flood_then_recover() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, t0);
        let verdicts: Vec<_> = (0..7).map(|_| bucket.take(t0)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Allow, Allow, Allow, Refuse, Refuse, Flood, Flood]);

        let mut bucket = TokenBucket::new(10, 3, t0);
        for _ in 0..4 {
            bucket.take(t0);
        }
        // 0.5 s at 10/s refills the bucket to its burst, no further.
        let later = t0 + Duration::from_millis(500);
        let verdicts: Vec<_> = (0..4).map(|_| bucket.take(later)).collect();
        assert_eq!(verdicts, [Allow, Allow, Allow, Refuse]);
    }

    #[test]
    fn steady_rate_is_allowed() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(20, 1, t0);
        for i in 1..100 {
            assert_eq!(bucket.take(t0 + Duration::from_millis(50 * i)), Verdict::Allow);
        }
    }
}
