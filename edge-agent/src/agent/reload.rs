//! Hot reload: what asks for one (SIGHUP, a change of the config file) and
//! what a new config changes in the running agent.
//!
//! The comparison is by category, so each change costs the least it can:
//! - rule parameters (thresholds, dwell times, lanes, fall and fire
//!   settings, alert timing) are sent to the analysis threads: no stream
//!   restarts;
//! - a camera added or removed starts or stops alone;
//! - a camera whose stream settings changed (URL, fps, analysis width, the
//!   `[source]` defaults) restarts alone;
//! - models, broker, HTTP listener and spool are opened once at start; a
//!   change there is logged as needing a restart.

use std::path::PathBuf;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::ConfigSource;
use crate::config::{Camera, Config};

/// The events that ask for a reload.
pub(crate) struct Triggers {
    hup: Option<tokio::signal::unix::Signal>,
    files: Option<mpsc::UnboundedReceiver<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
    /// A file change was seen; reload once the burst settles.
    file_due: Option<tokio::time::Instant>,
}

impl Triggers {
    pub(crate) fn new(source: Option<&ConfigSource>) -> Triggers {
        let Some(source) = source else { return Triggers { hup: None, files: None, _watcher: None, file_due: None } };
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
            .ok();
        let (files, watcher) = if source.watch { watch(&source.file) } else { (None, None) };
        Triggers { hup, files, _watcher: watcher, file_due: None }
    }

    /// Waits for the next trigger and names it. Several file events in a
    /// burst (an editor's write, rename and chmod) are one reload, 300 ms
    /// after the last. Cancel-safe: the caller's `select!` may drop this
    /// future at any point (the watchdog tick, a `set` command) and a file
    /// event already received is still pending on the next call.
    pub(crate) async fn next(&mut self) -> &'static str {
        const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);
        loop {
            let due = self.file_due;
            let (hup, files) = (&mut self.hup, &mut self.files);
            tokio::select! {
                _ = async {
                    match hup.as_mut() {
                        Some(h) => { h.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => return "SIGHUP",
                got = async {
                    match files.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match got {
                    Some(()) => self.file_due = Some(tokio::time::Instant::now() + SETTLE),
                    // The watcher is gone: no more file triggers.
                    None => self.files = None,
                },
                _ = async {
                    match due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.file_due = None;
                    return "config file changed";
                }
            }
        }
    }
}

/// Watches the config file's folder (editors replace files by renaming) and
/// reports events that touch the file itself, or Kubernetes' `..data` link:
/// a mounted ConfigMap changes by swapping that link (atomically, by
/// rename), and the file, a link through it, sees no event of its own.
fn watch(file: &std::path::Path) -> (Option<mpsc::UnboundedReceiver<()>>, Option<notify::RecommendedWatcher>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let name = file.file_name().map(|n| n.to_os_string());
    let dir: PathBuf = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).into();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        let ours = |p: &std::path::PathBuf| {
            let n = p.file_name().map(|n| n.to_os_string());
            n == name || n.as_deref() == Some(std::ffi::OsStr::new("..data"))
        };
        if ev.paths.iter().any(ours) {
            let _ = tx.send(());
        }
    };
    match notify::recommended_watcher(handler).and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w)) {
        Ok(w) => (Some(rx), Some(w)),
        Err(e) => {
            tracing::warn!(error = %e, folder = %dir.display(), "cannot watch the config file; reload with SIGHUP");
            (None, None)
        }
    }
}

/// Which cameras to stop, start and restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) stop: Vec<String>,
    pub(crate) start: Vec<String>,
    pub(crate) restart: Vec<String>,
}

/// The settings of a camera's stream: any change restarts it.
fn stream_key(c: &Camera, config: &Config) -> String {
    format!("{}|{}|{}|{:?}|{:?}", c.url, c.fps, c.analysis_width, c.decode, config.source)
}

pub(crate) fn plan(old: &Config, new: &Config) -> Plan {
    let mut p = Plan::default();
    for c in &old.cameras {
        match new.cameras.iter().find(|n| n.id == c.id) {
            None => p.stop.push(c.id.clone()),
            Some(n) if stream_key(n, new) != stream_key(c, old) => p.restart.push(c.id.clone()),
            Some(_) => {}
        }
    }
    for n in &new.cameras {
        if !old.cameras.iter().any(|c| c.id == n.id) {
            p.start.push(n.id.clone());
        }
    }
    p
}

/// Settings that changed but are only read at start.
pub(crate) fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let model = |c: &Config| {
        let d = &c.detector;
        format!(
            "{:?}|{:?}|{}|{:?}|{:?}|{}|{:?}|{:?}|{:?}",
            d.path,
            d.format,
            d.input_size,
            d.labels,
            d.sha256,
            d.threads,
            (d.precision, d.execution_provider, d.fallback, d.sessions, d.batch),
            c.pose.as_ref().map(|p| (
                &p.path,
                &p.sha256,
                p.threads,
                p.sessions,
                p.precision,
                p.execution_provider,
                p.fallback
            )),
            c.fire.as_ref().map(|f| (
                &f.path,
                &f.sha256,
                f.input_size,
                f.threads,
                f.precision,
                f.execution_provider,
                f.fallback
            ))
        )
    };
    if model(old) != model(new) {
        v.push("models ([detector], [pose] or [fire] files)");
    }
    if format!("{:?}", old.broker) != format!("{:?}", new.broker) {
        v.push("[broker]");
    }
    let http = |c: &Config| (c.http.bind, c.http.token.clone(), c.http.token_file.clone());
    if http(old) != http(new) {
        v.push("[http] (bind, token)");
    }
    if format!("{:?}", old.spool) != format!("{:?}", new.spool) {
        v.push("[spool]");
    }
    if old.agent_id != new.agent_id || old.site != new.site {
        v.push("agent_id / site");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cameras: &str) -> Config {
        let text = format!(
            r#"agent_id = "a"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "/m.onnx", format = "nanodet", input_size = 416 }}
{cameras}"#
        );
        Config::parse(&text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn only_what_changed_restarts() {
        let old = config(
            r#"[[cameras]]
id = "a"
name = "A"
url = "rtsp://h/a"
[[cameras]]
id = "b"
name = "B"
url = "rtsp://h/b"
lanes = [{ name = "l", polygon = [[0, 0], [1, 0], [1, 1]], classes = ["car"], dwell_s = 30 }]
[[cameras]]
id = "c"
name = "C"
url = "rtsp://h/c"
"#,
        );
        let new = config(
            r#"[[cameras]]
id = "a"
name = "A"
url = "rtsp://h/a2"
[[cameras]]
id = "b"
name = "B"
url = "rtsp://h/b"
lanes = [{ name = "l", polygon = [[0, 0], [1, 0], [1, 1]], classes = ["car"], dwell_s = 5 }]
[[cameras]]
id = "d"
name = "D"
url = "rtsp://h/d"
"#,
        );
        let p = plan(&old, &new);
        assert_eq!(p, Plan { stop: vec!["c".into()], start: vec!["d".into()], restart: vec!["a".into()] });
        assert!(needs_restart(&old, &new).is_empty(), "a dwell time is a rule parameter");
    }

    /// A mounted ConfigMap as the kubelet updates it: `alleywatch.toml` is
    /// a link to `..data/alleywatch.toml`, and an update renames a new
    /// `..data` link over the old one.
    #[test]
    fn a_configmap_swap_is_seen_as_a_change() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for v in ["..v1", "..v2"] {
            std::fs::create_dir(d.join(v)).unwrap();
            std::fs::write(d.join(v).join("alleywatch.toml"), v).unwrap();
        }
        symlink("..v1", d.join("..data")).unwrap();
        symlink("..data/alleywatch.toml", d.join("alleywatch.toml")).unwrap();
        let (rx, _watcher) = watch(&d.join("alleywatch.toml"));
        let mut rx = rx.expect("watching");
        symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let seen = rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await });
        assert!(matches!(seen, Ok(Some(()))), "the swap triggers a reload");
        assert_eq!(std::fs::read_to_string(d.join("alleywatch.toml")).unwrap(), "..v2");
    }
}
