//! The agent's configuration: one TOML file, read with `serde` + `toml`.
//!
//! This module owns the shape of the file, its defaults and its validation.
//! Every later stage receives plain, already-validated values from here, so
//! no stage re-checks a threshold or a polygon at run time.
//!
//! Errors always name the file, the line and the key path
//! (`cameras[1].lanes[0].dwell_s`), because the person reading them is a
//! technician on a box with nothing but the file and this message.
//!
//! One file per table, each with its struct, its defaults and its
//! `validate` (a `check::Check`: the key path and message of the first
//! problem). This file holds the whole [`Config`], reading it, and the
//! order the sections are checked in; `locate` finds the line of a key.
//! Rule parameter tables that cameras may override (`[falls]`) are written
//! once as a parameter list that makes the table, the overrides, the merge
//! and the range checks (`falls`). [`overlay`] is the remote-change file
//! laid over this one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod alerts;
mod broker;
mod camera;
mod check;
mod coco;
mod detector;
mod falls;
mod fire;
mod http;
mod obstruction;
pub mod overlay;
mod params;
mod people;
mod session;
mod site;

pub use alerts::{Alerts, Spool};
pub(crate) use broker::Broker;
pub use camera::{Camera, Decode, Lane, LaneCue, SourceDefaults, MAX_LANES_PER_CAMERA, MAX_POLYGON_POINTS};
pub use coco::COCO80;
pub use detector::{Detector, ModelFormat, MotionGate};
pub use fire::{ClassMap, Fire, FireFormat, FireKind, Flicker, KindOverrides, KindRule};
pub(crate) use http::Http;
pub use obstruction::ObstructionParams;
pub use people::{FallOverrides, Falls, Pose, Tracking};
pub use session::{ModelSession, Precision, Provider};
pub(crate) use site::Site;

use check::{fail, topic_safe, Check};

/// `alerts.snapshot_max_kb` when unset: a snapshot a phone loads quickly.
pub(crate) const DEFAULT_SNAPSHOT_MAX_KIB: u32 = 512;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent's id: the third level of every topic, so it must be
    /// topic-safe and unique per site.
    pub agent_id: String,
    /// Where the box sits in the district → street → community chain.
    pub site: Site,
    /// The command centres' MQTT broker.
    pub broker: Broker,
    /// Path to `libonnxruntime.so`. Optional: `ORT_DYLIB_PATH` and the setup
    /// folder (`.deps/onnxruntime`) are tried next.
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// Refuse to load a model (or its INT8 variant) that has no expected
    /// sha256, neither in its section nor in the `models.toml` beside it.
    /// Off by default so that a model brought along without a hash loads
    /// with a warning; on, a box runs only files someone pinned.
    #[serde(default)]
    pub require_model_hash: bool,
    /// The object detector shared by every camera.
    pub detector: Detector,
    /// The pose model; falls are detected only when it is set.
    #[serde(default)]
    pub pose: Option<Pose>,
    /// How detections become tracks.
    #[serde(default)]
    pub(crate) tracking: Tracking,
    /// The fall rule's defaults; cameras may override any key.
    #[serde(default)]
    pub(crate) falls: Falls,
    /// The fire/smoke model and rule; fire and smoke are detected only when
    /// it is set.
    #[serde(default)]
    pub fire: Option<Fire>,
    /// Timing of event messages.
    #[serde(default)]
    pub alerts: Alerts,
    /// The HTTP listener (metrics and health).
    #[serde(default)]
    pub http: Http,
    /// Where alerts wait for the broker's acknowledgement.
    #[serde(default)]
    pub(crate) spool: Spool,
    /// Thresholds of the class-agnostic obstruction cue (lanes with
    /// `cue = "obstruction"` or `"both"`).
    #[serde(default)]
    pub(crate) obstruction: ObstructionParams,
    /// Defaults for how every camera stream is pulled.
    #[serde(default)]
    pub(crate) source: SourceDefaults,
    /// The cameras this agent watches.
    pub cameras: Vec<Camera>,
}

/// A configuration error, located in the file (the same kind of message
/// as the centre's).
pub use alleywatch_tomlconfig::ConfigError;

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it
    /// are resolved against the file's directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_path_buf(), source })?;
        Config::from_text(&text, file)
    }

    /// Parses and validates config text as if it were the file `file`:
    /// relative paths resolve against its folder (used by `eval`, which
    /// builds each clip's config from a base file plus overlays).
    pub fn from_text(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, file)?;
        config.resolve_paths(file.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and validates config text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        alleywatch_tomlconfig::parse(text, file, Config::validate)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.detector.path);
        if let Some(p) = self.pose.as_mut() {
            resolve(&mut p.path);
        }
        if let Some(f) = self.fire.as_mut() {
            resolve(&mut f.path);
        }
        if let Some(p) = self.ort_library.as_mut() {
            resolve(p);
        }
        for p in [&mut self.broker.ca_file, &mut self.broker.client_cert, &mut self.broker.client_key]
            .into_iter()
            .chain([&mut self.broker.password_file, &mut self.http.token_file, &mut self.http.change_token_file])
            .flatten()
        {
            resolve(p);
        }
        resolve(&mut self.spool.path);
    }

    /// The fall parameters in force on `camera`: `[falls]` with the camera's
    /// overrides applied, and disabled when there is no pose model.
    pub fn falls_for(&self, camera: &Camera) -> Falls {
        let mut f = camera.falls.apply(&self.falls);
        f.enabled &= self.pose.is_some();
        f
    }

    /// The detector's class names: the configured list or COCO-80.
    pub(crate) fn labels(&self) -> Vec<String> {
        match &self.detector.labels {
            Some(l) => l.clone(),
            None => COCO80.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// What the agent warns about at start (one line each): settings that
    /// work but expose something an operator should decide on knowingly.
    pub fn start_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let b = &self.broker;
        if (b.password.is_some() || b.password_file.is_some()) && !b.tls {
            out.push(format!(
                "broker.password{} is set but broker.tls is false: the password crosses the network in clear text; set broker.tls = true (and broker.ca_file)",
                if b.password_file.is_some() { "_file" } else { "" }
            ));
        }
        let h = &self.http;
        let read = h.token.is_some() || h.token_file.is_some();
        let change = h.change_token.is_some() || h.change_token_file.is_some();
        if read && !change {
            out.push(
                "http.token also grants changes (lanes, references): set http.change_token_file so the token Prometheus and viewers hold can only read"
                    .into(),
            );
        }
        out
    }

    /// Semantic checks serde cannot express, section by section. Returns
    /// the key path and message of the first problem.
    fn validate(&self) -> Check {
        topic_safe(&self.agent_id).or_else(|m| fail("agent_id", m))?;
        self.site.validate()?;
        self.obstruction.validate()?;
        self.broker.validate()?;
        self.http.validate()?;
        self.detector.validate()?;
        self.alerts.validate()?;
        self.spool.validate()?;
        self.source.validate()?;
        people::validate(self.pose.as_ref(), &self.tracking, &self.falls, self.detector.score_threshold)?;
        if let Some(f) = &self.fire {
            f.validate()?;
        }
        camera::validate_cameras(self)
    }
}

/// The smallest valid config (one camera, no lanes, models never loaded),
/// for tests of the stages after the config.
#[cfg(test)]
pub(crate) fn minimal() -> Config {
    let text = r#"agent_id = "a"
site = { district = "d", street = "s", community = "c" }
broker = { host = "127.0.0.1" }
detector = { path = "/m.onnx", format = "nanodet", input_size = 416 }
[[cameras]]
id = "cam"
name = "Cam"
url = "rtsp://h/s"
"#;
    Config::parse(text, Path::new("t.toml")).expect("the minimal config is valid")
}

#[cfg(test)]
mod tests;
