//! `listening PORT stopped`: a service no longer listens where it did.
//!
//! Two sources say so. The kernel reports each close of a listening socket of the service the moment it
//! happens ([`on_closed`]); each cycle's list of the service's listeners ([`on_listed`]) catches what the kernel
//! side cannot report (a tier without eBPF) and tells when the port is listened on again. The rule fires once
//! per incident: when the last socket on its port is gone from a service that is up and had been seen listening
//! there (a service still starting has not stopped listening), and recovers when the port is listed again.

use core::net::SocketAddr;
use std::collections::BTreeSet;

use super::{Action, NoticeKind, RuleValue, Status, TargetState, Timestamp};
use crate::config::model::Condition;
use crate::engine::rule::Phase;

/// The kernel saw a listening socket of the service close.
pub(super) fn on_closed(
    t: &mut TargetState,
    address: SocketAddr,
    pid: u32,
    now: Timestamp,
    silenced: bool,
    out: &mut Vec<Action>,
) {
    t.listeners.remove(&address);
    let port = address.port();
    if t.listeners.iter().any(|a| a.port() == port) {
        // Another socket still listens on the port (IPv4 and IPv6 sockets, `SO_REUSEPORT` workers).
        return;
    }
    for i in 0..t.rules.len() {
        if t.rules[i].rule.condition != (Condition::ListenerStopped { port }) {
            continue;
        }
        // The kernel saw it listening until now, whatever the last list said.
        t.rules[i].last = Some(RuleValue::Listening(true));
        if stopped(t, i, port, Some(address), Some(pid), now, silenced, out) {
            return;
        }
    }
}

/// A cycle listed the service's listening sockets.
pub(super) fn on_listed(
    t: &mut TargetState,
    listeners: &BTreeSet<SocketAddr>,
    now: Timestamp,
    silenced: bool,
    out: &mut Vec<Action>,
) {
    t.listeners.clone_from(listeners);
    for i in 0..t.rules.len() {
        let Condition::ListenerStopped { port } = t.rules[i].rule.condition else { continue };
        let listening = listeners.iter().any(|a| a.port() == port);
        let was_listening = t.rules[i].last == Some(RuleValue::Listening(true));
        if listening {
            t.rules[i].last = Some(RuleValue::Listening(true));
            if t.rules[i].cycle.phase != Phase::Ok {
                let failed_for = t.rules[i].cycle.since.map_or_else(Default::default, |since| now.since(since));
                t.rules[i].cycle = super::CycleRuleState::default();
                if !silenced && !t.unmonitored {
                    let event = t.event(NoticeKind::Listening { port, failed_for }, Some(&t.rules[i].rule));
                    t.fire(i, &event, false, out);
                }
            }
        } else if was_listening && stopped(t, i, port, None, None, now, silenced, out) {
            return;
        }
    }
}

/// Rule `i` on `port`: the port is no longer listened on. Fires when the rule is not in an incident already and
/// the service is up (a stop, a crash and a restart have their own alerts). Returns whether the service is now
/// unmonitored.
#[expect(clippy::too_many_arguments, reason = "the two callers hand over what they know of the close")]
fn stopped(
    t: &mut TargetState,
    i: usize,
    port: u16,
    address: Option<SocketAddr>,
    pid: Option<u32>,
    now: Timestamp,
    silenced: bool,
    out: &mut Vec<Action>,
) -> bool {
    if t.status != Status::Up {
        return false;
    }
    t.rules[i].last = Some(RuleValue::Listening(false));
    if silenced || t.unmonitored || t.rules[i].cycle.phase != Phase::Ok {
        return false;
    }
    t.rules[i].cycle.phase = Phase::Triggered;
    t.rules[i].cycle.since = Some(now);
    let event = t.event(NoticeKind::ListenerStopped { port, address, pid }, Some(&t.rules[i].rule));
    t.fire(i, &event, true, out)
}

/// A new process of the service started: it has not been seen listening yet, so a cycle that finds its ports
/// not listened on while it starts is no stop. An open incident stays open until the port is listened on again.
pub(super) fn forget(t: &mut TargetState) {
    t.listeners.clear();
    for slot in &mut t.rules {
        if matches!(slot.rule.condition, Condition::ListenerStopped { .. }) {
            slot.last = None;
        }
    }
}
