//! The state machine of one cycle rule: Ok → Triggered → Recovered → Ok.
//!
//! One failure event when a rule has tripped for its `for N cycles`, nothing while it stays tripped, and one
//! recovery event after two good cycles in a row (Inspeqtor's rules.go, so a single good sample in the middle of
//! an incident does not end it). A tripped sample while Recovered resumes the same incident silently.

use std::time::Duration;

use crate::engine::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Ok,
    Triggered,
    /// One good cycle seen after Triggered; one more ends the incident.
    Recovered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    Failed,
    Recovered { failed_for: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CycleRuleState {
    pub phase: Phase,
    /// Consecutive tripped cycles while Ok.
    pub tripped: u32,
    /// When the current incident started.
    pub since: Option<Timestamp>,
}

impl Default for CycleRuleState {
    fn default() -> Self {
        CycleRuleState { phase: Phase::Ok, tripped: 0, since: None }
    }
}

impl CycleRuleState {
    /// Feeds one evaluated cycle: `tripped` is whether the comparison held, `cycles` the rule's `for N cycles`.
    pub fn observe(&mut self, tripped: bool, cycles: u32, now: Timestamp) -> Transition {
        match (self.phase, tripped) {
            (Phase::Ok, true) => {
                self.tripped = self.tripped.saturating_add(1);
                if self.tripped >= cycles.max(1) {
                    self.phase = Phase::Triggered;
                    self.since = Some(now);
                    self.tripped = 0;
                    return Transition::Failed;
                }
                Transition::None
            }
            (Phase::Ok, false) => {
                self.tripped = 0;
                Transition::None
            }
            (Phase::Triggered, true) => Transition::None,
            (Phase::Triggered, false) => {
                self.phase = Phase::Recovered;
                Transition::None
            }
            (Phase::Recovered, true) => {
                self.phase = Phase::Triggered;
                Transition::None
            }
            (Phase::Recovered, false) => {
                let failed_for = self.since.map_or(Duration::ZERO, |since| now.since(since));
                *self = CycleRuleState::default();
                Transition::Recovered { failed_for }
            }
        }
    }

    /// Deploy silencing: counting towards `for N cycles` starts again afterwards.
    pub fn reset_count(&mut self) {
        self.tripped = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_and_one_recovery_per_incident() {
        let mut s = CycleRuleState::default();
        let t = Timestamp::from_secs;
        let seen: Vec<Transition> = [true, true, true, false, true, false, false, false]
            .iter()
            .enumerate()
            .map(|(i, tripped)| s.observe(*tripped, 2, t(15 * i as u64)))
            .collect();
        assert_eq!(
            seen,
            vec![
                Transition::None,
                Transition::Failed,
                Transition::None,
                Transition::None,
                Transition::None,
                Transition::None,
                Transition::Recovered { failed_for: Duration::from_secs(75) },
                Transition::None,
            ]
        );
    }
}
