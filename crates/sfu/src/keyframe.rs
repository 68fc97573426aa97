//! `KeyframeRequester`: coalesces keyframe requests for one incoming track.
//! However many viewers join or report loss, the publisher gets at most one
//! PLI per interval; a request inside the interval is remembered and sent
//! when the interval ends, so it is never lost.

use std::time::{Duration, Instant};

/// Throttles keyframe requests for one incoming video track.
#[derive(Debug, Clone)]
pub struct KeyframeRequester {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequester {
    /// A requester that sends at most one request per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyframeRequester {
            interval,
            last_sent: None,
            pending: false,
        }
    }

    /// Someone wants a keyframe. Returns `true` when the caller should send a
    /// request upstream now; otherwise the want is kept for [`Self::poll`].
    pub fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// Returns `true` when a pending request may be sent now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.pending {
            return false;
        }
        let allowed = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if allowed {
            self.pending = false;
            self.last_sent = Some(now);
        }
        allowed
    }

    /// A keyframe arrived: nobody waits any more.
    pub fn keyframe_received(&mut self) {
        self.pending = false;
    }

    /// When [`Self::poll`] should be called next, if a request is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        // A pending request always has a last_sent: the first one goes out at once.
        self.last_sent.map(|t| t + self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_requests_in_one_interval_send_once_then_once_more() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(Duration::from_millis(500));
        assert!(k.request(t0));
        let mut sent = 0;
        for i in 1..100 {
            if k.request(t0 + Duration::from_millis(i)) {
                sent += 1;
            }
        }
        assert_eq!(sent, 0);
        assert!(!k.poll(t0 + Duration::from_millis(499)));
        assert!(k.poll(t0 + Duration::from_millis(500)));
        assert!(!k.poll(t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn a_keyframe_clears_the_pending_request() {
        let t0 = Instant::now();
        let mut k = KeyframeRequester::new(Duration::from_millis(500));
        assert!(k.request(t0));
        assert!(!k.request(t0 + Duration::from_millis(10)));
        k.keyframe_received();
        assert!(!k.poll(t0 + Duration::from_secs(1)));
        assert_eq!(k.next_deadline(), None);
    }
}
