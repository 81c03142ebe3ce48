//! The last broadcasts, kept for joiners: at most `history_size` of them and
//! `history_max_bytes` of replays (at most half of a joiner's output limit,
//! so a replay fits beside the welcome). In memory only; its rules live here.

use std::collections::VecDeque;

use crate::protocol::Reply;

pub struct History {
    /// Serialized as replays (`"history": true`), oldest first.
    replays: VecDeque<Box<str>>,
    bytes: usize,
    /// Most broadcasts kept (`history_size`; 0 = none).
    size: usize,
    /// Most bytes kept: what a login costs in replays, whatever was said.
    budget: usize,
}

impl History {
    /// `size`: most broadcasts kept (`history_size`); `max_bytes`: most bytes
    /// of their replays (`history_max_bytes`; a broadcast larger than that
    /// is not kept).
    pub fn new(size: usize, max_bytes: usize) -> Self {
        History { replays: VecDeque::new(), bytes: 0, size, budget: max_bytes }
    }

    /// The most broadcasts and bytes a joiner is sent (what the cluster
    /// asks Redis for).
    pub fn limits(&self) -> (usize, usize) {
        (self.size, self.budget)
    }

    /// A reload changed `history_size` or `history_max_bytes`: what is kept
    /// is trimmed to the new bounds (the oldest go first); nothing is lost
    /// when they grow.
    pub fn set_limits(&mut self, size: usize, max_bytes: usize) {
        (self.size, self.budget) = (size, max_bytes);
        self.trim();
    }

    /// A broadcast took effect.
    pub fn remember(&mut self, name: &str, text: &str) {
        if self.size == 0 {
            return;
        }
        let replay = Reply::Broadcast { source: name, text, history: true }.to_json();
        self.bytes += replay.len();
        self.replays.push_back(replay.into_boxed_str());
        self.trim();
    }

    fn trim(&mut self) {
        while self.replays.len() > self.size || self.bytes > self.budget {
            let Some(old) = self.replays.pop_front() else { break };
            self.bytes -= old.len();
        }
    }

    /// The history as the cluster has it, oldest first: (name, text).
    pub fn replace(&mut self, broadcasts: &[(String, String)]) {
        self.replays.clear();
        self.bytes = 0;
        for (name, text) in broadcasts {
            self.remember(name, text);
        }
    }

    /// The replays, oldest first, each as it is sent.
    pub fn replays(&self) -> impl Iterator<Item = &str> {
        self.replays.iter().map(|r| &**r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_limits_trim_the_oldest_and_keep_the_rest() {
        let mut h = History::new(10, 10_000);
        for i in 0..6 {
            h.remember("a", &format!("m{i}"));
        }
        let texts = |h: &History| h.replays().count();
        h.set_limits(20, 20_000);
        assert_eq!(texts(&h), 6, "raised: nothing lost");
        h.set_limits(4, 20_000);
        assert_eq!(texts(&h), 4);
        assert!(h.replays().next().unwrap().contains("\"m2\""), "the oldest went first");
        let one = h.replays().next().unwrap().len();
        h.set_limits(4, 2 * one);
        assert_eq!(texts(&h), 2);
        assert!(h.replays().next().unwrap().contains("\"m4\""));
        h.set_limits(0, 2 * one);
        assert_eq!(texts(&h), 0);
        h.remember("a", "later");
        assert_eq!(texts(&h), 0, "off");
    }
}
