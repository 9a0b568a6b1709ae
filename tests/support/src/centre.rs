//! The `alleywatch-centre` binary as the tests run it: the process with its
//! log in a file, its HTTP port, and the config the tests write for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http;
use crate::wait::wait_until;

/// The centre binary: `CENTRE_BIN`, else the one cargo built beside the
/// test binary (`target/<profile>/alleywatch-centre`).
pub fn centre_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CENTRE_BIN").or_else(|| std::env::var_os("CARGO_BIN_EXE_alleywatch-centre")) {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("alleywatch-centre")).expect("target/<profile>/");
    assert!(bin.is_file(), "alleywatch-centre binary not at {} (run the tests with cargo test)", bin.display());
    bin
}

/// A district centre's config in `dir` for district `district`, the
/// broker on loopback `broker_port`, HTTP on `http`; SQLite in `dir`.
pub fn write_centre_config(dir: &Path, broker_port: u16, http: u16, district: &str) -> PathBuf {
    let text = format!(
        r#"[centre]
name = "test-centre"
level = "district"
site = "{district}"

[broker]
host = "127.0.0.1"
port = {broker_port}
keep_alive_s = 5

[database]
url = "sqlite:centre.sqlite"

[http]
bind = "127.0.0.1:{http}"
"#
    );
    let path = dir.join("centre.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running centre, killed on drop.
pub struct Centre {
    pub child: Child,
    pub http: u16,
    log: PathBuf,
}

impl Centre {
    /// `alleywatch-centre run --config CONFIG`, logging to `CONFIG.log`,
    /// and waits until `/readyz` says it is subscribed.
    pub fn start(config: &Path, http: u16) -> Centre {
        let log = config.with_extension("log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(centre_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,alleywatch_centre=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start alleywatch-centre");
        let mut centre = Centre { child, http, log };
        wait_until("the centre to be ready", Duration::from_secs(20), || {
            assert!(!centre.exited(), "the centre exited:\n{}", centre.log());
            http::get(http, "/readyz").is_some_and(|(code, _)| code == 200)
        });
        centre
    }

    pub fn metrics(&self) -> String {
        http::get(self.http, "/metrics").map(|(_, b)| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        http::metric(&self.metrics(), name, labels)
    }

    /// Everything the centre logged (this run and earlier ones on the same config).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        wait_until("the centre to exit", Duration::from_secs(15), || self.exited());
    }
}

impl Drop for Centre {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
