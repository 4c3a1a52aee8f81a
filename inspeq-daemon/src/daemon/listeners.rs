//! A service's listening sockets, for `listening PORT stopped` and `accept_queue`.
//!
//! Each cycle, one `sock_diag` dump of the host's listening TCP sockets runs in a blocking task (a netlink
//! round trip and, per service, its cgroup directories or its processes' descriptors: never on the loop), and
//! comes back as [`Event::Listed`]: per service, its listeners, which become a sample (the addresses it listens
//! on, and `accept_queue`, the longest queue of connections waiting for `accept()`), shown in `status`.
//!
//! The kernel reports a listener's close the moment it happens (eBPF). Before the engine hears of it the init
//! system is asked, and the kernel lists the service's listeners once more ([`Event::CloseConfirmed`]): an
//! operator's `systemctl stop` or `restart` closes the sockets first, a `listen()` that failed on a taken port
//! goes from LISTEN to CLOSE too, and another socket may still hold the port. Only a service still up, not being
//! stopped, and no longer listening on the port has stopped listening. A close while its main process's exit is
//! being settled is that exit's, not news of its own.

use std::{net::SocketAddr, path::Path, sync::Arc};

use super::{Daemon, event::Event, executor::Executor, services::Service};
use crate::{
    config::model::{Check, Condition},
    control::protocol::ListenerStatus,
    engine::{Input, Sample, Target},
    init::{InitSystem, ServiceName, ServiceState, ServiceStatus},
    kernel::{
        Listener, SockDiagError,
        sock_diag::{self, Owner},
    },
};

/// What one cycle's listing found, per service (or why the dump failed).
pub struct Listing {
    pub result: Result<Vec<(String, Vec<Listener>)>, Arc<SockDiagError>>,
}

/// Whether `check` has a rule that reads its listeners.
pub(super) fn reads_listeners(check: &Check) -> bool {
    check.rules.iter().any(|r| match &r.condition {
        Condition::ListenerStopped { .. } => true,
        Condition::Metric(m) => m.metric.family == "accept_queue",
        _ => false,
    })
}

impl Executor {
    /// Lists the listeners of `services` (name, whose sockets) in a blocking task; the result comes back as
    /// [`Event::Listed`].
    pub fn list_listeners(&self, services: Vec<(String, Owner)>) {
        self.spawn_send(async move {
            let listed = tokio::task::spawn_blocking(move || {
                let all = sock_diag::listeners()?;
                Ok(services.into_iter().map(|(name, owner)| (name, sock_diag::owned(&all, &owner))).collect())
            })
            .await;
            let result = match listed {
                Ok(result) => result.map_err(Arc::new),
                Err(join) => Err(Arc::new(SockDiagError::Socket(std::io::Error::other(join.to_string())))),
            };
            Event::Listed(Listing { result })
        });
    }

    /// Asks `backend` (if the service has one) whether `service` is being stopped, and the kernel whether the
    /// service still listens on the closed socket's port (a `listen()` that failed on a taken port also goes from
    /// LISTEN to CLOSE; another socket may hold the port), after a listener of it closed; the answers come back as
    /// [`Event::CloseConfirmed`].
    pub fn confirm_close(&self, close: Close) {
        self.spawn_send(async move {
            let Close { backend, service, address, pid, owner } = close;
            let status = match backend {
                Some(backend) => {
                    let limit = crate::init::DEFAULT_LOOKUP_TIMEOUT;
                    match tokio::time::timeout(limit, backend.lookup(&service)).await {
                        Ok(Ok(status)) => Some(status),
                        Ok(Err(err)) => {
                            tracing::warn!("service `{service}`: after a listener closed, its lookup failed: {err}");
                            None
                        }
                        Err(_) => None,
                    }
                }
                None => None,
            };
            let listed = tokio::task::spawn_blocking(move || {
                let all = sock_diag::listeners()?;
                Ok::<_, SockDiagError>(sock_diag::owned(&all, &owner))
            })
            .await;
            // A listing that failed says nothing: the kernel's word on the close stands.
            let still_listening = match listed {
                Ok(Ok(own)) => own.iter().any(|l| l.addr.port() == address.port()),
                _ => false,
            };
            Event::CloseConfirmed(Confirmed { service: service.to_string(), address, pid, status, still_listening })
        });
    }
}

/// A listener's close, to be confirmed.
pub struct Close {
    pub backend: Option<Arc<dyn InitSystem>>,
    pub service: ServiceName,
    pub address: SocketAddr,
    pub pid: u32,
    pub owner: Owner,
}

/// What the init system and the kernel said of a service whose listening socket closed.
pub struct Confirmed {
    pub service: String,
    pub address: SocketAddr,
    pub pid: u32,
    /// The init system's answer (`None`: it has none, or gave none).
    pub status: Option<ServiceStatus>,
    /// A socket of the service still listens on the port.
    pub still_listening: bool,
}

/// Whether the init system's answer leaves the close as news: the service up, its main process the same, nobody
/// stopping or restarting it.
fn still_serving(status: &ServiceStatus, main: Option<u32>) -> bool {
    status.state == ServiceState::Up && !status.intent.stops() && status.main_pid == main
}

/// Whose sockets are `service`'s: its own cgroup's, else its processes'.
fn owner(service: &Service) -> Owner {
    Owner {
        cgroup: service.own_cgroup().map(Path::to_path_buf),
        processes: service.members.iter().copied().chain(service.main_pid()).collect(),
    }
}

impl Daemon {
    /// Lists the listeners of every service whose rules read them (at each cycle).
    pub(super) fn list_listeners(&mut self) {
        if self.listing {
            return;
        }
        let services: Vec<(String, Owner)> = self
            .services
            .iter()
            .filter(|(_, s)| reads_listeners(&s.check) && s.started.is_some())
            .map(|(name, s)| (name.clone(), owner(s)))
            .collect();
        if services.is_empty() {
            return;
        }
        self.listing = true;
        self.executor.list_listeners(services);
    }

    /// A listing came back: each service's listeners become a sample.
    pub(super) fn listed(&mut self, listing: Listing) {
        self.listing = false;
        let now = self.now();
        let listed = match listing.result {
            Ok(listed) => listed,
            Err(err) => {
                if !self.listing_failed {
                    tracing::warn!("listeners: cannot list the listening sockets: {err}");
                }
                self.listing_failed = true;
                return;
            }
        };
        self.listing_failed = false;
        let mut lines = Vec::new();
        for (name, listeners) in listed {
            let Some(service) = self.services.get_mut(&name) else { continue };
            service.listeners = listeners.clone();
            let longest = listeners.iter().map(|l| l.accept_queue).max().unwrap_or(0);
            let sample = Sample::new(Target::Service(name))
                .listening(listeners.iter().map(|l| l.addr))
                .with("accept_queue", f64::from(longest));
            self.record(&sample, now, &mut lines);
            self.step(Input::Sample(sample), now);
        }
        if let Some(statsd) = &mut self.statsd {
            statsd.send(&lines);
        }
    }

    /// The kernel saw a listening socket of `name` close while it ran: asks the init system and the kernel's
    /// listing before the engine hears of it.
    pub(super) fn listener_closed(&mut self, name: &str, address: SocketAddr, pid: u32) {
        let Some(service) = self.services.get_mut(name) else { return };
        service.listeners.retain(|l| l.addr != address);
        tracing::info!("service `{name}`: pid {pid} closed its listening socket {address}");
        let close = Close {
            backend: service.backend.clone(),
            service: service.name.clone(),
            address,
            pid,
            owner: owner(service),
        };
        self.executor.confirm_close(close);
    }

    /// The init system and the kernel answered about a service whose listener closed.
    pub(super) fn close_confirmed(&mut self, confirmed: Confirmed) {
        let Confirmed { service: name, address, pid, status, still_listening } = confirmed;
        let now = self.now();
        let Some(service) = self.services.get(&name) else { return };
        if still_listening {
            let port = address.port();
            tracing::info!("service `{name}`: still listens on port {port}; the close of {address} is no stop");
            return;
        }
        let settling_exit = service.pending_exit.is_some() || service.restarting || service.started.is_none();
        let serving = status.as_ref().is_none_or(|s| still_serving(s, service.main_pid()));
        if settling_exit || !serving {
            let why = status.as_ref().map_or_else(|| "its exit".to_owned(), |s| s.detail.clone());
            tracing::info!("service `{name}`: its listener {address} closed as it stops ({why}); not judged");
            return;
        }
        self.step(Input::ListenerClosed { service: name, address, pid }, now);
    }

    /// What `status` shows of `service`'s listeners.
    pub(super) fn listener_status(&self, name: &str) -> Vec<ListenerStatus> {
        self.services.get(name).map_or_else(Vec::new, |s| {
            s.listeners
                .iter()
                .map(|l| ListenerStatus {
                    address: l.addr.to_string(),
                    accept_queue: l.accept_queue,
                    backlog: l.backlog,
                })
                .collect()
        })
    }
}
