//! D-Bus server addresses, as the `bus` parameter of a systemd service gives them:
//! `TRANSPORT:KEY=VALUE[,KEY=VALUE...]`, several separated by `;` (tried in
//! order), values %-escaped outside `[-0-9A-Za-z_/.\*]` (the D-Bus specification,
//! "Server Addresses"). Checked here so that `inspeqctl check` points at a bad
//! address instead of the daemon failing to connect at run time.
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
    address.split(';').filter(|entry| !entry.is_empty()).find_map(entry_problem)
}

fn entry_problem(entry: &str) -> Option<String> {
    let Some((transport, pairs)) = entry.split_once(':') else {
        return Some(format!(
            "`{entry}` is not a D-Bus address, expected TRANSPORT:KEY=VALUE like unix:path=/run/dbus/system_bus_socket"
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
        match unescape(value) {
            Ok(value) => values.push((key, value)),
            Err(problem) => return Some(problem),
        }
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

/// A value with its `%XX` escapes undone, or why it is malformed.
fn unescape(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Err(format!("bad escape in D-Bus address value `{value}`, expected %XX with two hex digits"));
            };
            out.push(byte);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return Err(format!(
                "`{}` must be escaped in D-Bus address value `{value}`, expected %{b:02x}",
                char::from(b)
            ));
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
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
            "unix:path=/srv/my%20ct/run/dbus/system_bus_socket",
            "tcp:host=127.0.0.1,port=55556",
            "unix:path=/nope;unix:path=/run/dbus/system_bus_socket",
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
        assert!(message("unix:path=/run/a b").contains("` ` must be escaped"));
        assert!(message("unix:path=/run/%zz").contains("bad escape"));
        assert!(message("unix:path=/run/user/0/systemd/private").contains("private socket"));
        assert!(message("unix:path=/run/dbus/system_bus_socket;tcp").contains("`tcp` is not a D-Bus address"));
    }
}
