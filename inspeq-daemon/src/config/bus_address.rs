//! D-Bus server addresses, as the `bus` parameter of a systemd service gives them: `TRANSPORT:KEY=VALUE[,...]`.
//! Checked here so that `inspeqctl check` points at a bad address instead of the daemon failing to connect at run
//! time, where a refused address reads like a manager that is not running.
//!
//! The address is handed to zbus, inspeq's D-Bus library, as written, so what counts is what zbus makes of it, and
//! the last word here is zbus's own parser (pure: no connection is made). zbus departs from the D-Bus specification
//! in two ways that matter: it takes one address, not a `;`-separated list to try in turn (a list becomes one
//! socket path with `;` in it), and it does not undo `%XX` escapes in a socket path (`/run/my%20ct` names a file
//! with `%20` in its name, and `/run/my ct` is fine as it is). Both are refused, with the reason, rather than left
//! to fail at connect.
//!
//! A systemd manager's private socket (`.../systemd/private`) is refused: on it
//! systemd stamps its messages with the well-known sender `org.freedesktop.systemd1`,
//! which zbus rejects, so inspeq needs the manager's bus (its `dbus.socket`).

/// The transports inspeq's D-Bus library connects over.
const TRANSPORTS: &[&str] = &["unix", "tcp", "nonce-tcp", "unixexec"];

/// Where a `unix:` address may say its socket is.
const UNIX_KEYS: &[&str] = &["path", "abstract", "dir", "tmpdir", "runtime"];

/// Why `address` is not an address inspeq can connect to, if it is not: one
/// message in the checker's "X, expected Y" style.
pub fn problem(address: &str) -> Option<String> {
    if address.trim().is_empty() {
        return Some("empty D-Bus address, expected one like unix:path=/run/dbus/system_bus_socket".into());
    }
    if address.contains(';') {
        return Some(format!(
            "`{address}` lists several D-Bus addresses, which inspeq's D-Bus library (zbus) reads as one, expected a single address like unix:path=/run/dbus/system_bus_socket"
        ));
    }
    shape_problem(address).or_else(|| zbus_problem(address))
}

/// What the transport and keys say, in words zbus's errors do not have.
fn shape_problem(address: &str) -> Option<String> {
    let Some((transport, pairs)) = address.split_once(':') else {
        return Some(format!(
            "`{address}` is not a D-Bus address, expected TRANSPORT:KEY=VALUE like unix:path=/run/dbus/system_bus_socket"
        ));
    };
    if !TRANSPORTS.contains(&transport) {
        return Some(format!("unknown D-Bus transport `{transport}`, expected {}", TRANSPORTS.join(", ")));
    }
    let mut values = Vec::new();
    for pair in pairs.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Some(format!("`{pair}` in a D-Bus address is not KEY=VALUE"));
        };
        // zbus decodes `noncefile` only; everywhere else `%XX` stays in the value.
        if key != "noncefile" && value.contains('%') {
            return Some(format!(
                "`{value}` would be used with its `%` escapes as they are: inspeq's D-Bus library (zbus) does not undo them, expected the value itself, like unix:path=/srv/my ct/run/dbus/system_bus_socket"
            ));
        }
        values.push((key, value));
    }
    if transport != "unix" {
        return None;
    }
    let Some((key, value)) = values.iter().find(|(k, _)| UNIX_KEYS.contains(k)) else {
        return Some(format!(
            "a unix D-Bus address needs one of {}, expected like unix:path=/run/dbus/system_bus_socket",
            UNIX_KEYS.join("=, ") + "="
        ));
    };
    if *key == "path" && !value.starts_with('/') {
        return Some(format!(
            "D-Bus socket path `{value}` is not absolute, expected like unix:path=/run/dbus/system_bus_socket"
        ));
    }
    if *key == "path" && value.trim_end_matches('/').ends_with("systemd/private") {
        return Some(format!(
            "`{value}` is a systemd manager's private socket, which inspeq cannot use (its messages there carry a sender zbus rejects), expected the manager's bus, like unix:path=/run/dbus/system_bus_socket"
        ));
    }
    None
}

/// zbus's own verdict: the parser the daemon's connection uses (a GUID that is not 32 hex digits, a tcp address
/// without a port, two socket keys at once, ...).
fn zbus_problem(address: &str) -> Option<String> {
    let Err(e) = address.parse::<zbus::Address>() else { return None };
    let reason = e.to_string();
    let reason = reason.strip_prefix("address error: ").unwrap_or(&reason);
    Some(format!(
        "inspeq's D-Bus library (zbus) cannot use `{address}`: {reason}, expected one like unix:path=/run/dbus/system_bus_socket"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_systemd_and_dbus_use_are_accepted() {
        for ok in [
            "unix:path=/run/dbus/system_bus_socket",
            "unix:path=/x/run/dbus/system_bus_socket",
            "unix:path=/run/user/1000/bus",
            "unix:abstract=/tmp/dbus-XYZ,guid=0123456789abcdef0123456789abcdef",
            "unix:path=/srv/my ct/run/dbus/system_bus_socket",
            "tcp:host=127.0.0.1,port=55556",
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        let message = |a| problem(a).unwrap_or_else(|| panic!("{a} was accepted"));
        assert!(message("").contains("empty D-Bus address"));
        assert!(message("/run/dbus/system_bus_socket").contains("is not a D-Bus address"));
        assert!(message("http:host=x").contains("unknown D-Bus transport `http`"));
        assert!(message("unix:path").contains("`path` in a D-Bus address is not KEY=VALUE"));
        assert!(message("unix:guid=1").contains("needs one of path=, abstract="));
        assert!(message("unix:path=run/bus").contains("is not absolute"));
        assert!(message("unix:path=/run/user/0/systemd/private").contains("private socket"));
    }

    /// What zbus would read differently from the specification, or refuse when connecting.
    #[test]
    fn what_zbus_would_not_connect_to_is_refused() {
        let message = |a| problem(a).unwrap_or_else(|| panic!("{a} was accepted"));
        // zbus would look for `/srv/my%20ct/...` and for a socket named `/nope;unix:path=/run/...`.
        assert!(message("unix:path=/srv/my%20ct/run/dbus/system_bus_socket").contains("does not undo them"));
        assert!(message("unix:path=/nope;unix:path=/run/dbus/system_bus_socket").contains("several D-Bus addresses"));
        assert!(message("unix:abstract=/tmp/dbus-XYZ,guid=1").contains("zbus"));
        assert!(message("unix:path=/run/a,dir=/run/b").contains("unix: address is invalid"));
        assert!(message("tcp:host=127.0.0.1").contains("missing `port`"));
        assert!(message("nonce-tcp:host=127.0.0.1,port=1").contains("missing `noncefile`"));
        // Accepted here is accepted by zbus.
        for ok in ["unix:path=/srv/my ct/run/dbus/system_bus_socket", "unixexec:path=/usr/bin/dbus-stdio"] {
            assert_eq!(problem(ok), None, "{ok}");
            assert!(ok.parse::<zbus::Address>().is_ok(), "{ok}");
        }
    }
}
