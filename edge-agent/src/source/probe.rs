//! Why an RTSP camera will not connect, in a technician's words.
//!
//! `rtspsrc` reports every connection failure the same way ("Could not open
//! resource for reading and writing. (Failed to connect.)"), whether the
//! name does not resolve, nothing listens on the port, or the camera is
//! unplugged. When that happens the supervisor asks this module, which
//! retraces the first steps itself — resolve the host, open a TCP
//! connection — and says which one failed. It runs on the camera's own
//! supervisor thread, only after a failure, so its blocking calls cost no
//! other camera anything.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the probe waits for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long it waits for the resolver, which has no timeout we can set (a
/// dead DNS server can hold it for half a minute).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(4);

/// The host and port an `rtsp://` or `rtsps://` URL points at, without the
/// credentials (they never leave this function).
pub(crate) fn endpoint(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "rtsp" | "rtspt" => 554,
        "rtsps" => 322,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // An '@' past the authority means a password with an unescaped '/',
    // '?' or '#': the split above would take part of it for the host or
    // port, and the diagnosis would print it. Say nothing instead.
    if rest[authority.len()..].contains('@') {
        return None;
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (h, tail) = v6.split_once(']')?;
        (h, tail.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// What is wrong on the way to the camera, or `None` when a TCP connection
/// opens (then the RTSP exchange itself failed, and `rtspsrc` says why).
pub(crate) fn diagnose(url: &str) -> Option<String> {
    let (host, port) = endpoint(url)?;
    let unresolved = format!("the host {host} does not resolve: check the camera's address and the box's DNS");
    // Resolve on a helper thread, so a dead DNS server costs this camera's
    // supervisor (and a stop waiting for it) a bounded wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.clone();
    std::thread::Builder::new()
        .name("probe-dns".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .ok()?;
    let addr = match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(addrs)) => match addrs.first() {
            Some(a) => *a,
            None => return Some(unresolved),
        },
        Ok(Err(_)) => return Some(unresolved),
        Err(_) => {
            return Some(format!(
                "the host {host} did not resolve within {} s: the box's DNS server does not answer",
                RESOLVE_TIMEOUT.as_secs()
            ))
        }
    };
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(_) => None,
        Err(e) => Some(match e.kind() {
            ErrorKind::ConnectionRefused => format!(
                "{host}:{port} refused the connection: nothing listens there (wrong port, or the camera's RTSP service is off)"
            ),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => format!(
                "{host}:{port} did not answer within {} s: the camera is off or unplugged, the address is wrong, or a firewall drops the traffic",
                CONNECT_TIMEOUT.as_secs()
            ),
            ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => {
                format!("{host}:{port} is unreachable from this box: check its network, route and VLAN")
            }
            _ => format!("{host}:{port}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_skips_credentials_and_knows_default_ports() {
        assert_eq!(endpoint("rtsp://admin:p@ss@10.0.0.5:8554/s1"), Some(("10.0.0.5".into(), 8554)));
        assert_eq!(endpoint("rtsp://cam.local/stream"), Some(("cam.local".into(), 554)));
        assert_eq!(endpoint("rtsps://u:p@[fe80::1]/x"), Some(("fe80::1".into(), 322)));
        assert_eq!(endpoint("file:///tmp/x.mp4"), None);
        assert_eq!(endpoint("rtsp://host:notaport/x"), None);
        assert_eq!(endpoint("rtsp://admin:43/21@cam/s"), None, "a password with '/' is never half-parsed");
    }

    #[test]
    fn names_the_step_that_failed() {
        // A port nothing listens on: 1 (tcpmux) is never served on loopback
        // (binding a free port and closing it again would race).
        let port = 1;
        let refused = diagnose(&format!("rtsp://user:secret@127.0.0.1:{port}/s")).unwrap();
        assert!(refused.contains("refused") && !refused.contains("secret"), "{refused}");
        let unresolved = diagnose("rtsp://cam-17.invalid/s").unwrap();
        assert!(unresolved.contains("does not resolve"), "{unresolved}");
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(diagnose(&format!("rtsp://127.0.0.1:{}/s", open.local_addr().unwrap().port())), None);
    }
}
