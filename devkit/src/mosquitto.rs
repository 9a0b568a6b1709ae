//! A private mosquitto broker on a free loopback port (or a given one, with
//! any configuration: TLS, passwords, persistence), stopped on drop; and
//! [`free_port`], how the demo and the tests pick loopback ports.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A private mosquitto on loopback, stopped on drop.
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free port and waits until it accepts
    /// connections.
    pub fn start() -> std::io::Result<Mosquitto> {
        Mosquitto::start_on(free_port()?)
    }

    /// Starts mosquitto on `port` (to restart a broker where clients expect it).
    pub fn start_on(port: u16) -> std::io::Result<Mosquitto> {
        Mosquitto::start_with(port, &format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
    }

    /// Starts mosquitto on `port` with the given configuration lines (they
    /// must open a listener on `port`): TLS, passwords, persistence.
    pub fn start_with(port: u16, conf_lines: &str) -> std::io::Result<Mosquitto> {
        let bin = ["mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|b| Command::new(b).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "mosquitto not installed (run deploy/setup.sh)")
            })?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("{conf_lines}\nlog_dest stderr\n"))?;
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))?;
        let child = Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log).spawn()?;
        let mut m = Mosquitto { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Wait for the listener: the event we need is "port accepts".
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = m.child.try_wait()? {
                let log = std::fs::read_to_string(m._dir.path().join("mosquitto.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!("mosquitto exited at start ({status}): {}", log.trim())));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("mosquitto did not start listening within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the broker now (the tests' broker outage). SIGTERM, so a
    /// broker with persistence saves its sessions.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
