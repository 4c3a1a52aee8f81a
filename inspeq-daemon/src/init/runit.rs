//! runit: a service is a directory `DIR/NAME` with a `run` script (DIR is
//! `/etc/service` unless configured) supervised by `runsv`.
//!
//! Lookups read `supervise/status`, the 20-byte record `runsv` rewrites on every
//! change (the same one `sv status` prints), so a lookup spawns nothing; whether
//! `runsv` is there at all is whether `supervise/ok` has a reader, which is `sv`'s
//! own test. Restarts and reloads go through `sv`, which waits for the service.

use std::{
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    Argv, InitError, InitFuture, InitKind, InitSystem, Intent, ReloadSignal, ServiceName, ServiceState, ServiceStatus,
    Timeouts,
};

/// Where runit's services are and how to drive them.
#[derive(Clone, Debug)]
pub struct RunitOptions {
    /// The directory `runsvdir` scans.
    pub service_dir: PathBuf,
    /// The `sv` program.
    pub sv: PathBuf,
    /// What `reload` sends (through `sv`'s signal verbs).
    pub reload_signal: ReloadSignal,
    pub timeouts: Timeouts,
}

impl Default for RunitOptions {
    fn default() -> Self {
        Self {
            service_dir: "/etc/service".into(),
            sv: "sv".into(),
            reload_signal: ReloadSignal::Hup,
            timeouts: Timeouts::default(),
        }
    }
}

pub struct Runit {
    options: RunitOptions,
}

/// One service's state as `sv status` prints it: `run: NAME: (pid 1177) 0s`,
/// `down: NAME: 1s, normally up`, `finish: NAME: (pid 1883) 1s`, with a
/// `; run: log: ...` part for a log service, and `ok: ` before it after a
/// control verb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvStatus {
    /// `run`, `down` or `finish`.
    pub state: String,
    /// In the `run` state the service's pid; in `finish` the finish script's.
    pub pid: Option<u32>,
}

/// Parses `sv`'s output for the service (the first part, before any log
/// service's). `None` for `fail:`, `warning:`, `timeout:` and anything else.
pub fn parse_sv_status(output: &str) -> Option<SvStatus> {
    let line = output.lines().next()?.trim();
    let line = line.strip_prefix("ok: ").unwrap_or(line);
    let main = line.split("; ").next()?;
    let (state, rest) = main.split_once(": ")?;
    if !matches!(state, "run" | "down" | "finish") {
        return None;
    }
    let pid =
        rest.split_once("(pid ").and_then(|(_, after)| after.split_once(')')).and_then(|(pid, _)| pid.parse().ok());
    Some(SvStatus { state: state.to_owned(), pid })
}

impl Runit {
    pub fn new(options: RunitOptions) -> Self {
        Self { options }
    }

    fn dir(&self, service: &ServiceName) -> PathBuf {
        self.options.service_dir.join(service.as_str())
    }

    async fn sv(&self, service: &ServiceName, verb: &str, action: &'static str) -> Result<String, InitError> {
        let limit = self.options.timeouts.action;
        // sv's own wait, a little shorter than ours so that sv reports the timeout.
        let wait = limit.saturating_sub(Duration::from_secs(1)).as_secs().max(1).to_string();
        let argv = Argv::new([
            self.options.sv.to_string_lossy().into_owned(),
            "-w".to_owned(),
            wait,
            verb.to_owned(),
            self.dir(service).to_string_lossy().into_owned(),
        ])
        .expect("non-empty");
        let out = argv.run(limit).await.map_err(|source| InitError::Command {
            init: InitKind::Runit,
            service: service.to_string(),
            action,
            source,
        })?;
        if !out.success() {
            return Err(InitError::Failed {
                init: InitKind::Runit,
                service: service.to_string(),
                action,
                message: out.message(),
            });
        }
        Ok(out.stdout)
    }
}

/// Is `runsv` reading `DIR/supervise/ok`? Opening a FIFO for writing without
/// blocking fails with ENXIO when nobody reads it.
fn supervised(dir: &Path) -> bool {
    std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(dir.join("supervise/ok")).is_ok()
}

/// Decodes `supervise/status`: bytes 12..16 the pid (little endian), 16 paused,
/// 17 `u`/`d` (wanted up or down), 19 the state (0 down, 1 run, 2 finish).
fn decode_status(raw: &[u8]) -> Option<(u8, u32, bool, u8)> {
    if raw.len() < 20 {
        return None;
    }
    let pid = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
    Some((raw[19], pid, raw[16] != 0, raw[17]))
}

impl InitSystem for Runit {
    fn kind(&self) -> InitKind {
        InitKind::Runit
    }

    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        Box::pin(async move {
            let dir = self.dir(service);
            if !dir.join("run").exists() {
                return Ok(ServiceStatus::not_found(format!("no {}/run", dir.display())));
            }
            if !supervised(&dir) {
                return Ok(ServiceStatus::down("not supervised: runsv is not running for it"));
            }
            let raw = std::fs::read(dir.join("supervise/status")).unwrap_or_default();
            let Some((state, pid, paused, want)) = decode_status(&raw) else {
                // runsv writes it right after it starts; until then, it is coming up.
                return Ok(ServiceStatus {
                    state: ServiceState::Starting,
                    ..ServiceStatus::down("supervise/status not written yet")
                });
            };
            // `sv down`/`sv stop` set "want down" before signalling; otherwise runsv
            // restarts whatever ends, by itself.
            let intent = if want == b'd' { Intent::Stop } else { Intent::AutoRestart };
            let want = if want == b'd' { ", want down" } else { "" };
            let paused = if paused { ", paused" } else { "" };
            Ok(match state {
                1 if pid > 0 => ServiceStatus::up(pid, format!("run: (pid {pid}){paused}{want}")),
                2 => ServiceStatus::down(format!("finish: (pid {pid}){want}")),
                _ => ServiceStatus::down(format!("down{want}")),
            }
            .with_intent(intent))
        })
    }

    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async move {
            if !self.dir(service).join("run").exists() {
                return Err(InitError::NotFound {
                    init: InitKind::Runit,
                    service: service.to_string(),
                    action: "restart",
                });
            }
            let old = self.lookup(service).await?.main_pid;
            let out = self.sv(service, "restart", "restart").await?;
            if parse_sv_status(&out).is_none_or(|status| status.state != "run") {
                return Err(InitError::Unparsable {
                    init: InitKind::Runit,
                    service: service.to_string(),
                    action: "restart",
                    output: out,
                });
            }
            // sv compares whole seconds: a service started in the same second as
            // the restart already looks restarted to it. Wait for the new pid.
            let limit = self.options.timeouts.action;
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let status = self.lookup(service).await?;
                if status.state == ServiceState::Up && status.main_pid != old {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(InitError::Timeout {
                        init: InitKind::Runit,
                        service: service.to_string(),
                        action: "restart",
                        after: limit,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async move {
            if !self.dir(service).join("run").exists() {
                return Err(InitError::NotFound {
                    init: InitKind::Runit,
                    service: service.to_string(),
                    action: "reload",
                });
            }
            let verb = match self.options.reload_signal {
                ReloadSignal::Hup => "hup",
                ReloadSignal::Usr1 => "1",
                ReloadSignal::Usr2 => "2",
                ReloadSignal::Int => "interrupt",
                ReloadSignal::Quit => "quit",
                ReloadSignal::Alrm => "alarm",
                ReloadSignal::Term => "term",
            };
            self.sv(service, verb, "reload").await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sv_status_forms() {
        let run = |pid| Some(SvStatus { state: "run".into(), pid: Some(pid) });
        assert_eq!(parse_sv_status("run: demo-http: (pid 1177) 0s\n"), run(1177));
        assert_eq!(parse_sv_status("run: demo-loop: (pid 1178) 1s; run: log: (pid 1176) 1s\n"), run(1178));
        assert_eq!(parse_sv_status("run: demo-http: (pid 1522) 0s, want down\n"), run(1522));
        assert_eq!(parse_sv_status("run: demo-loop: (pid 1178) 11s, paused; run: log: (pid 1176) 11s\n"), run(1178));
        assert_eq!(parse_sv_status("ok: run: demo-http: (pid 1445) 1s\n"), run(1445));
        assert_eq!(
            parse_sv_status("down: demo-http: 1s, normally up\n"),
            Some(SvStatus { state: "down".into(), pid: None })
        );
        assert_eq!(
            parse_sv_status("finish: demo-http: (pid 1883) 1s\n"),
            Some(SvStatus { state: "finish".into(), pid: Some(1883) })
        );
        assert_eq!(parse_sv_status("fail: nosuch: unable to change to service directory: file does not exist\n"), None);
        assert_eq!(parse_sv_status("warning: /x/sv/notrun: unable to open supervise/ok: file does not exist\n"), None);
        assert_eq!(parse_sv_status("timeout: down: x: 7s, normally up\n"), None);
    }

    #[test]
    fn supervise_status_records() {
        let mut raw = [0u8; 20];
        raw[12..16].copy_from_slice(&1177u32.to_le_bytes());
        raw[17] = b'u';
        raw[19] = 1;
        assert_eq!(decode_status(&raw), Some((1, 1177, false, b'u')));
        assert_eq!(decode_status(&raw[..19]), None);
    }
}
