//! Budgets for what clients may cause: the per-user message rate limit (a
//! token bucket: past the burst, messages are refused; a second burst's
//! worth of refused messages is a flood and disconnects), the per-user byte
//! budget (a bucket of bytes), and the log budget (one line per interval).

use std::time::{Duration, Instant};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: refuse this message, keep the connection.
    Refuse,
    /// Kept sending while refused: close the connection.
    Flood,
}

/// The rate and the burst are the config's (`Limits`), passed in rather
/// than kept in every connection's bucket.
#[derive(Debug)]
pub struct TokenBucket {
    /// Goes below zero while messages are refused; `-burst` means flooding.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, now: Instant) -> Self {
        TokenBucket { tokens: f64::from(burst), last: now }
    }

    pub fn take(&mut self, now: Instant, per_sec: u32, burst: u32) -> Verdict {
        self.take_n(now, 1, per_sec, burst)
    }

    /// Takes `n` tokens at once (`0`: only says where the bucket stands).
    pub fn take_n(&mut self, now: Instant, n: u32, per_sec: u32, burst: u32) -> Verdict {
        let (per_sec, burst) = (f64::from(per_sec), f64::from(burst));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * per_sec).min(burst) - f64::from(n);
        if self.tokens >= 0.0 {
            Verdict::Allow
        } else if self.tokens > -burst {
            Verdict::Refuse
        } else {
            Verdict::Flood
        }
    }

    /// The tokens there would be at `now`, taking none.
    pub fn level(&self, now: Instant, per_sec: u32, burst: u32) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * f64::from(per_sec)).min(f64::from(burst))
    }

    /// A reload changed the burst: the bucket holds at most the new burst,
    /// and one deep in refusals is lifted to half a burst below empty, so
    /// that a smaller burst does not make a flood of what was not one.
    pub fn fit(&mut self, burst: u32) {
        let burst = f64::from(burst.max(1));
        self.tokens = self.tokens.clamp(-burst / 2.0, burst);
    }

    /// Charges an allowed message for work beyond one token (a large reply):
    /// what follows waits until the bucket has refilled. The bucket never
    /// goes below empty this way, so this alone never makes a flood.
    pub fn charge(&mut self, extra: u32) {
        self.tokens = (self.tokens - f64::from(extra)).max(0.0);
    }
}

/// A user's budget of bytes: a token bucket of `burst` bytes refilled at
/// `per_sec` (the config's, passed in), kept as the one moment it will be
/// full again (the generic cell rate algorithm: the same bucket as
/// [`TokenBucket`], in one `Instant` where that takes a float and an
/// `Instant`: it makes every chatting session 8 bytes larger, not 16). A
/// message the bucket cannot pay for in full is refused and costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBucket {
    /// Before this moment the bucket is short of `burst` by the bytes it
    /// refills until then; from it on, full.
    full_at: Instant,
}

impl ByteBucket {
    /// A full bucket.
    pub fn new(now: Instant) -> Self {
        ByteBucket { full_at: now }
    }

    /// Takes `bytes` if the bucket holds that many now (`true`); else
    /// takes nothing (`false`). A rate of 0 allows everything.
    pub fn take(&mut self, now: Instant, per_sec: u32, burst: u32, bytes: usize) -> bool {
        if per_sec == 0 {
            return true;
        }
        // How long `n` bytes take to refill, to the nanosecond.
        let refill = |n: u128| {
            let nanos = n.saturating_mul(1_000_000_000) / u128::from(per_sec);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        let owed = self.full_at.saturating_duration_since(now);
        let cost = refill(bytes as u128);
        if owed.saturating_add(cost) > refill(u128::from(burst)) {
            return false;
        }
        match now.max(self.full_at).checked_add(cost) {
            Some(full_at) => {
                self.full_at = full_at;
                true
            }
            None => false,
        }
    }
}

/// Lets one log line through per `LOG_INTERVAL` and counts the rest, so
/// that whatever a client does, its share of the log stays a few lines a
/// minute.
#[derive(Debug, Default)]
pub struct LogBudget {
    /// When the current interval began (`None`: no line logged in it).
    since: Option<Instant>,
    unlogged: u64,
}

pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

impl LogBudget {
    /// `true`: log this one now; `false`: it was counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.since.is_some() {
            self.unlogged += 1;
            return false;
        }
        self.since = Some(now);
        true
    }

    /// Once an interval is over: how many went unlogged in it, if any (for
    /// one summary line); a new interval begins with the next event.
    pub fn unlogged(&mut self, now: Instant) -> Option<u64> {
        let since = self.since?;
        if now.saturating_duration_since(since) < LOG_INTERVAL {
            return None;
        }
        let n = std::mem::take(&mut self.unlogged);
        self.since = None;
        (n > 0).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_lets_one_line_through_per_interval() {
        let t0 = Instant::now();
        let mut budget = LogBudget::default();
        assert!(budget.allow(t0));
        assert!(!budget.allow(t0));
        assert!(!budget.allow(t0 + Duration::from_secs(30)));
        assert_eq!(budget.unlogged(t0 + Duration::from_secs(30)), None, "interval not over");
        assert_eq!(budget.unlogged(t0 + LOG_INTERVAL), Some(2));
        assert_eq!(budget.unlogged(t0 + LOG_INTERVAL * 3), None);
        assert!(budget.allow(t0 + LOG_INTERVAL * 3));
    }

    #[test]
    fn burst_then_refuse_then_flood_then_recover() {
        let t0 = Instant::now();
        let (rate, burst) = (10, 3);
        let mut bucket = TokenBucket::new(burst, t0);
        let verdicts: Vec<_> = (0..7).map(|_| bucket.take(t0, rate, burst)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Allow, Allow, Allow, Refuse, Refuse, Flood, Flood]);

        let (rate, burst) = (10, 3);
        let mut bucket = TokenBucket::new(burst, t0);
        for _ in 0..4 {
            bucket.take(t0, rate, burst);
        }
        // 0.5 s at 10/s refills the bucket to its burst, no further.
        let later = t0 + Duration::from_millis(500);
        let verdicts: Vec<_> = (0..4).map(|_| bucket.take(later, rate, burst)).collect();
        assert_eq!(verdicts, [Allow, Allow, Allow, Refuse]);
    }

    #[test]
    fn a_smaller_burst_fits_without_making_a_flood() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(40, t0);
        for _ in 0..40 {
            assert_eq!(b.take(t0, 1, 40), Verdict::Allow);
        }
        for _ in 0..30 {
            assert_eq!(b.take(t0, 1, 40), Verdict::Refuse);
        }
        b.fit(10);
        let verdicts: Vec<_> = (0..5).map(|_| b.take(t0, 1, 10)).collect();
        assert_eq!(
            verdicts[..4],
            [Verdict::Refuse, Verdict::Refuse, Verdict::Refuse, Verdict::Refuse]
        );
        assert_eq!(verdicts[4], Verdict::Flood, "half a burst later");
        // A full bucket holds the new burst, no more.
        let mut b = TokenBucket::new(40, t0);
        b.fit(2);
        let verdicts: Vec<_> = (0..3).map(|_| b.take(t0, 1, 2)).collect();
        assert_eq!(verdicts, [Verdict::Allow, Verdict::Allow, Verdict::Refuse]);
        b.fit(0); // never with a rate (the config refuses it), and no panic
    }

    #[test]
    fn a_charge_makes_what_follows_wait() {
        let t0 = Instant::now();
        let (rate, burst) = (10, 5);
        let mut bucket = TokenBucket::new(burst, t0);
        assert_eq!(bucket.take(t0, rate, burst), Verdict::Allow);
        bucket.charge(100);
        assert_eq!(bucket.take(t0, rate, burst), Verdict::Refuse, "emptied, not a flood");
        let later = t0 + Duration::from_millis(300);
        assert_eq!(bucket.take(later, rate, burst), Verdict::Allow, "refilled at 10/s");
    }

    #[test]
    fn a_byte_bucket_pays_whole_messages_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let (rate, burst) = (1000, 4000);
        let mut bucket = ByteBucket::new(t0);
        let taken: Vec<_> = (0..5).map(|_| bucket.take(t0, rate, burst, 1000)).collect();
        assert_eq!(taken, [true, true, true, true, false], "the burst, then nothing");
        // A refused message costs nothing: a small one still fits once
        // enough has refilled, whatever was refused meanwhile.
        let later = t0 + Duration::from_millis(500);
        assert!(!bucket.take(later, rate, burst, 1000), "500 bytes back, not 1000");
        assert!(!bucket.take(later, rate, burst, 501));
        assert!(bucket.take(later, rate, burst, 500));
        assert!(!bucket.take(later, rate, burst, 1), "empty again");
        // Refilled at 1000 a second, never past the burst.
        let much_later = later + Duration::from_secs(60);
        assert!(bucket.take(much_later, rate, burst, 4000));
        assert!(!bucket.take(much_later, rate, burst, 1));
        // What is larger than the burst never passes (the config rules it
        // out for messages: rate_limit_bytes_burst >= max_message_bytes).
        assert!(!ByteBucket::new(t0).take(t0, rate, burst, 4001));
        // A rate of 0 is no budget.
        assert!(ByteBucket::new(t0).take(t0, 0, 0, usize::MAX));
    }

    #[test]
    fn a_byte_bucket_at_its_steady_rate_refuses_nothing() {
        let t0 = Instant::now();
        let (rate, burst) = (32768, 16384);
        let mut bucket = ByteBucket::new(t0);
        for i in 0..100 {
            let now = t0 + Duration::from_millis(500) * i;
            assert!(bucket.take(now, rate, burst, 16384), "{i}");
        }
        assert!(!bucket.take(t0 + Duration::from_millis(49_999), rate, burst, 16384));
    }

    #[test]
    fn steady_rate_is_allowed() {
        let t0 = Instant::now();
        let (rate, burst) = (20, 1);
        let mut bucket = TokenBucket::new(burst, t0);
        for i in 1..100 {
            assert_eq!(
                bucket.take(t0 + Duration::from_millis(50 * i), rate, burst),
                Verdict::Allow
            );
        }
    }
}
