//! The closed set of events that drive the daemon loop. Everything that can
//! change the daemon's state arrives as one of these; the loop handles them one at
//! a time, so state needs no locks.

use std::sync::Arc;

use crate::{
    control::server::Control,
    init::{ChangeSubscription, InitError, InitSystem, MainExit, ServiceChange, ServiceStatus},
    kernel::Observation,
};

pub enum Event {
    /// What the kernel side saw (exits, forks, RSS crossings, losses).
    Kernel(Vec<Observation>),
    /// The cycle timer fired: sample metrics, look up missing services.
    Cycle,
    /// The next slice of the cycle's service sampling.
    SampleSlice,
    /// A lookup finished: which init system knows the service (if any) and what it said.
    Resolved { service: String, found: Option<(Arc<dyn InitSystem>, ServiceStatus)>, errors: Vec<InitError> },
    /// An init system announced a change on its own (systemd).
    Changed(ServiceChange),
    /// A restart or reload the executor ran has finished.
    ActionDone { service: String, what: &'static str, result: Result<(), InitError> },
    /// What the init system recorded about a main-process exit the kernel side
    /// reported without a status (`None`: it recorded nothing usable).
    MainExit { service: String, pid: u32, record: Option<MainExit> },
    /// An `inspeqctl` request.
    Control(Control),
    /// SIGHUP or `inspeqctl reload`.
    Reload,
    /// A reload task finished reading and building the new configuration.
    Reloaded(Box<anyhow::Result<super::reload::Reloaded>>),
    /// A change subscription was set up (or could not be).
    Subscribed { service: String, result: Result<Option<ChangeSubscription>, InitError> },
    /// A daemon family's collection task answered (values, or why it failed).
    Collected(super::collect::Report),
    /// A cycle's listing of the services' listening sockets came back.
    Listed(super::listeners::Listing),
    /// The init system's and the kernel's word on a service whose listening socket closed.
    CloseConfirmed(super::listeners::Confirmed),
    /// A probe task answered (what the probe found, or why it failed).
    Probed(super::probes::Report),
    /// SIGTERM or SIGINT.
    Shutdown,
    /// Time to tell systemd's watchdog we are alive.
    Watchdog,
}
