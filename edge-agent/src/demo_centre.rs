//! The demo's command centre (binary side, feature `demo`): the real
//! `alleywatch-centre` binary started beside the demo agent, so that the
//! demo shows an alert arriving on a centre's board. Lives with `main.rs`
//! because it is process plumbing for one command, not library code.

use std::path::Path;

/// The command centre beside the demo agent: the real `alleywatch-centre`
/// binary on the demo's broker, SQLite and snapshots under its own folder,
/// and one user, `demo`, whose password is made up for this run (there is
/// no default password, in the demo either).
pub struct DemoCentre {
    bin: std::path::PathBuf,
    config: std::path::PathBuf,
    child: std::process::Child,
    pub http: u16,
    pub password: String,
}

impl DemoCentre {
    /// Writes the config into `dir` (emptied first), adds the demo user,
    /// starts the centre and waits until it is subscribed.
    pub fn start(bin: &Path, dir: &Path, broker_port: u16) -> anyhow::Result<DemoCentre> {
        use std::io::Write;
        use std::process::{Command, Stdio};

        use anyhow::Context;

        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let http = alleywatch_devkit::free_port().context("no free port for the centre")?;
        let config = dir.join("centre.toml");
        let text = format!(
            "[centre]\nname = \"demo-district\"\nlevel = \"district\"\nsite = \"demo-district\"\n\n\
             [broker]\nhost = \"127.0.0.1\"\nport = {broker_port}\nkeep_alive_s = 5\n\n\
             [database]\nurl = \"sqlite:centre.sqlite\"\n\n[http]\nbind = \"127.0.0.1:{http}\"\n"
        );
        std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
        let password = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut add = Command::new(bin)
            .args(["user", "add", "--config"])
            .arg(&config)
            .args(["demo", "--role", "admin", "--scope", "demo-district"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        add.stdin.take().context("user add's stdin")?.write_all(format!("{password}\n").as_bytes())?;
        let out = add.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr).trim());
        let log = std::fs::File::create(dir.join("centre.log"))?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut centre = DemoCentre { bin: bin.to_path_buf(), config, child, http, password };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !centre.ready() {
            if let Ok(Some(status)) = centre.child.try_wait() {
                anyhow::bail!("the centre exited ({status}); see {}", dir.join("centre.log").display());
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the centre was not ready within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(centre)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.http)
    }

    /// `GET /readyz` answers 200: subscribed, database writable.
    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.http)) else { return false };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }

    /// Waits until the centre's store has alert `id` (asked through its
    /// own `alerts` command).
    pub async fn wait_for_alert(&self, id: &str, limit: std::time::Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let out =
                tokio::process::Command::new(&self.bin).args(["alerts", "--config"]).arg(&self.config).output().await?;
            if String::from_utf8_lossy(&out.stdout).contains(&format!("\"id\":\"{id}\"")) {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the centre did not store alert {id} within {limit:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

impl Drop for DemoCentre {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
