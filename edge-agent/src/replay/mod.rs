//! Offline tools for operators: `replay` a clip through the agent's own
//! analysis, and `eval` a labelled set of clips.
//!
//! - [`frames`]: a video file or still image → timestamped RGB frames;
//! - [`annotate`]: the analysed frames, with what the rules saw, → MP4;
//! - [`eval`]: labels file → replays → TP/FP/FN, precision, recall, delay;
//! - [`images`]: a folder of labelled stills → the fire model's precision,
//!   recall, curve and false positives.
//!
//! Replay drives the same [`CameraAnalyzer`] as a live camera, with the
//! clip's time as the rules' clock, so a clip gives the same events on
//! every run and on every machine, however fast it decodes. Event times are
//! reported relative to the start of the clip.

pub mod annotate;
pub mod eval;
pub mod frames;
pub mod images;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::alert::Outbound;
use crate::camera::{CameraAnalyzer, FrameInput, Models};
use crate::config::{Camera, Config, ConfigError};
use crate::draw::{self, Canvas};
use crate::infer::InferError;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("{file}: cannot write: {message}")]
    Output { file: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error("{file}: {message}")]
    Labels { file: String, message: String },
}

/// How to replay one clip.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Play at the clip's own speed (frames may then drop, as live).
    pub realtime: bool,
    /// Write an annotated MP4 here.
    pub annotate: Option<PathBuf>,
    /// Seconds a still image is shown.
    pub still_s: f64,
    /// Seconds the last frame of a video stays on screen after it ends (a
    /// fallen person stays down after the recording stops).
    pub hold_last_s: f64,
}

/// One event message, as replay prints it (one JSON line each).
#[derive(Debug, Clone, Serialize)]
pub struct ReplayEvent {
    /// Clip time of the frame that produced the message, seconds.
    pub(crate) t: f64,
    pub(crate) kind: &'static str,
    #[serde(rename = "type")]
    pub(crate) phase: &'static str,
    pub(crate) id: String,
    pub(crate) camera: String,
    pub(crate) zone: Option<String>,
    /// Clip time the event started (for a fall: when the person went down).
    pub(crate) started_t: f64,
    pub(crate) ended_t: Option<f64>,
    pub(crate) score: f32,
    pub(crate) peak: f32,
    pub(crate) track_ids: Vec<u64>,
    pub(crate) occupancy: Option<f32>,
    /// The rule's parameters and the features that fired it.
    pub(crate) rule: serde_json::Value,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub events: Vec<ReplayEvent>,
    /// Frames analysed.
    pub frames: u64,
    /// Clip seconds covered (holds included).
    pub clip_s: f64,
    /// Wall-clock seconds taken.
    pub wall_s: f64,
    /// The flicker check's verdicts on ready fire and smoke regions.
    pub(crate) flicker: [crate::analytics::fire::FlickerTally; 2],
}

impl ReplayReport {
    /// Analysed frames per wall-clock second.
    pub fn fps(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.frames as f64 / self.wall_s
        } else {
            0.0
        }
    }
}

fn clip_time(t: SystemTime) -> f64 {
    ms(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0))
}

/// Rounded to the millisecond for printing (frame times are sums of 1/fps).
fn ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// Replays `file` through `camera`'s analysis; calls `on_event` for every
/// event message as it happens.
pub fn run(
    config: &Config,
    camera: &Camera,
    models: &Models,
    file: &Path,
    opts: &ReplayOptions,
    on_event: &mut dyn FnMut(&ReplayEvent),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let mut analyzer = CameraAnalyzer::new(config, camera, models.clone(), Arc::new(Metrics::new()));
    let mut session = Session { report: ReplayReport::default(), active: Vec::new(), annotator: None };
    let step = 1.0 / camera.fps;
    let mut out = Vec::new();

    let mut feed = |frame: &frames::ClipFrame, t: f64, session: &mut Session| -> Result<(), ReplayError> {
        let input = FrameInput {
            rgb: &frame.rgb,
            width: frame.width,
            height: frame.height,
            t,
            wall: UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0)),
        };
        analyzer.analyse(&input, &mut out)?;
        for msg in out.drain(..) {
            if let Outbound::Event { event, .. } = msg {
                let ev = ReplayEvent {
                    t: ms(t),
                    kind: event.kind.as_str(),
                    phase: event.phase.as_str(),
                    id: event.id.clone(),
                    camera: event.camera.id.clone(),
                    zone: event.zone.clone(),
                    started_t: clip_time(event.started_at),
                    ended_t: event.ended_at.map(clip_time),
                    score: event.score.current,
                    peak: event.score.peak,
                    track_ids: event.evidence.track_ids.clone(),
                    occupancy: event.evidence.occupancy,
                    rule: event.rule.clone(),
                };
                on_event(&ev);
                session.note(&ev);
                session.report.events.push(ev);
            }
        }
        session.report.frames += 1;
        session.report.clip_s = t + step;
        if let Some(path) = &opts.annotate {
            if session.annotator.is_none() {
                session.annotator = Some(annotate::Annotator::create(path, frame.width, frame.height, camera.fps)?);
            }
            let mut px = frame.rgb.clone();
            if let Some(mut canvas) = Canvas::new(&mut px, frame.width, frame.height) {
                analyzer.draw(&mut canvas);
                session.banner(&mut canvas, t);
            }
            if let Some(a) = session.annotator.as_mut() {
                a.push(px, frame.width, frame.height, t, step)?;
            }
        }
        Ok(())
    };

    if frames::is_still(file) {
        let frame = frames::load_still(file, camera.analysis_width)?;
        let n = (opts.still_s / step).round().max(1.0) as u64;
        for i in 0..n {
            feed(&frame, i as f64 * step, &mut session)?;
        }
    } else {
        // Analysis slot k is at t = k / fps and sees the latest frame shown
        // at that moment: what a camera sampled at `fps` would deliver.
        let mut video = frames::VideoFrames::open(file, camera.analysis_width, opts.realtime)?;
        let (mut k, mut frame_dt) = (0u64, step);
        let slot = |k: u64| k as f64 * step;
        let mut pending: Option<frames::ClipFrame> = None;
        while let Some(frame) = video.next_frame()? {
            if let Some(p) = &pending {
                if frame.t > p.t {
                    frame_dt = frame.t - p.t;
                }
                while frame.t > slot(k) + 1e-6 {
                    feed(p, slot(k), &mut session)?;
                    k += 1;
                }
            }
            pending = Some(frame);
        }
        let Some(last) = pending else {
            return Err(ReplayError::Input { file: file.display().to_string(), message: "no video frames".into() });
        };
        // The last frame is on screen for its own duration, then held.
        let end = last.t + frame_dt + opts.hold_last_s;
        while slot(k) < end - 1e-6 {
            feed(&last, slot(k), &mut session)?;
            k += 1;
        }
    }
    if let Some(a) = session.annotator.take() {
        a.finish()?;
    }
    session.report.wall_s = started.elapsed().as_secs_f64();
    session.report.flicker = analyzer.flicker_tally();
    Ok(session.report)
}

/// Replay's running state besides the analyzer.
struct Session {
    report: ReplayReport,
    /// Open events for the banner: (id, text).
    active: Vec<(String, String)>,
    annotator: Option<annotate::Annotator>,
}

impl Session {
    fn note(&mut self, ev: &ReplayEvent) {
        match ev.phase {
            "start" => {
                let what = match (&ev.zone, ev.track_ids.first()) {
                    (Some(z), _) => format!("{} {z}", ev.kind.to_uppercase()),
                    (None, Some(t)) => format!("{} #{t}", ev.kind.to_uppercase()),
                    _ => ev.kind.to_uppercase(),
                };
                self.active.push((ev.id.clone(), format!("{what} since {:.1}s", ev.started_t)));
            }
            "end" => self.active.retain(|(id, _)| id != &ev.id),
            _ => {}
        }
    }

    fn banner(&self, canvas: &mut Canvas, t: f64) {
        canvas.text(4, 4, &format!("t={t:.1}s"), draw::WHITE, 2);
        for (i, (_, text)) in self.active.iter().enumerate() {
            canvas.text(4, 24 + 20 * i as i64, text, draw::RED, 2);
        }
    }
}

/// The config replay uses without `--config`: the project's detector, pose
/// and fire models, one camera, falls and fire on. Nothing is sent anywhere.
pub fn default_config_text(models_dir: &Path) -> String {
    format!(
        r#"agent_id = "replay"
site = {{ district = "replay", street = "replay", community = "replay" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "{det}", format = "nanodet", input_size = 416 }}
pose = {{ path = "{pose}" }}
fire = {{ path = "{fire}" }}

[[cameras]]
id = "replay"
name = "replay"
url = "file:///replay"
"#,
        det = models_dir.join("nanodet.onnx").display(),
        pose = models_dir.join("movenet-multipose.onnx").display(),
        fire = models_dir.join("fire.onnx").display(),
    )
}

/// `--lane KEY=VALUE`: a lane key set on every lane replayed, to try a cue,
/// a dwell or an occupancy threshold against clips without editing the
/// config. The value is TOML (`0.2`, `"obstruction"`, `["car"]`); a bare
/// word is a string.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSet {
    pub(crate) key: String,
    pub(crate) value: toml::Value,
}

impl std::str::FromStr for LaneSet {
    type Err = String;

    fn from_str(s: &str) -> Result<LaneSet, String> {
        let (key, value) =
            s.split_once('=').ok_or_else(|| format!("{s:?}: expected KEY=VALUE, e.g. cue=obstruction"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{key:?}: not a lane key (e.g. cue, min_occupancy, dwell_s, clear_s, classes)"));
        }
        let value = value.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        Ok(LaneSet { key: key.to_string(), value })
    }
}

/// Applies `sets` to every lane of every camera in a config table; the
/// config's own validation then checks the values (naming the lane key).
/// Returns how many lanes were changed.
pub(crate) fn set_lanes(table: &mut toml::Table, sets: &[LaneSet]) -> usize {
    let mut lanes = 0;
    let cameras = table.get_mut("cameras").and_then(toml::Value::as_array_mut);
    for lane in cameras
        .into_iter()
        .flatten()
        .filter_map(|c| c.get_mut("lanes")?.as_array_mut())
        .flatten()
        .filter_map(toml::Value::as_table_mut)
    {
        for s in sets {
            lane.insert(s.key.clone(), s.value.clone());
        }
        lanes += 1;
    }
    lanes
}

/// [`load_config`] with `--lane` sets applied; an error when there are sets
/// but no lane to apply them to.
pub fn load_config_with(path: Option<&Path>, sets: &[LaneSet]) -> Result<Config, ReplayError> {
    let Some(p) = path.filter(|_| !sets.is_empty()) else {
        return match path {
            None if !sets.is_empty() => Err(no_lanes()),
            _ => load_config(path),
        };
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| ReplayError::Input { file: p.display().to_string(), message: e.to_string() })?;
    // The file as it is first, so its own errors come with their lines.
    Config::from_text(&text, p)?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| ReplayError::Input { file: p.display().to_string(), message: e.to_string() })?;
    if set_lanes(&mut table, sets) == 0 {
        return Err(no_lanes());
    }
    let text = toml::to_string(&table)
        .map_err(|e| ReplayError::Input { file: p.display().to_string(), message: e.to_string() })?;
    // The file itself was fine: an error now is a --lane value's (the
    // rebuilt text's line numbers would mean nothing to the user).
    Config::from_text(&text, p).map_err(|e| match e {
        ConfigError::Invalid { key, message, .. } => {
            ReplayError::Input { file: "--lane".into(), message: format!("{key}: {message}") }
        }
        other => other.into(),
    })
}

fn no_lanes() -> ReplayError {
    ReplayError::Input {
        file: "--lane".into(),
        message: "the config has no lanes to set (add lanes to a camera, or use eval's labels)".into(),
    }
}

/// Loads `--config` or the default, with the project's models folder found
/// from the working directory or the binary.
pub fn load_config(path: Option<&Path>) -> Result<Config, ReplayError> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let models = crate::project::find_in_project("models/models.toml")
                .and_then(|m| m.parent().map(Path::to_path_buf))
                .ok_or_else(|| ReplayError::Input {
                    file: "models/".into(),
                    message: "the project's models folder was not found; pass --config".into(),
                })?;
            Ok(Config::parse(&default_config_text(&models), Path::new("<replay default>"))?)
        }
    }
}

/// The camera to replay as: `id` or the config's first camera.
pub fn pick_camera<'a>(config: &'a Config, id: Option<&str>) -> Result<&'a Camera, ReplayError> {
    match id {
        Some(id) => config.cameras.iter().find(|c| c.id == id).ok_or_else(|| ReplayError::Input {
            file: "--camera".into(),
            message: format!(
                "no camera {id:?} in the config (it has: {})",
                config.cameras.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }),
        None => config
            .cameras
            .first()
            .ok_or_else(|| ReplayError::Input { file: "config".into(), message: "has no cameras".into() }),
    }
}
