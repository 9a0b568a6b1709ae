//! Remote changes to rule parameters (the centre's `set` command, the
//! technician's page): an overlay file of key path → value, applied over
//! the operator's config file at every load.
//!
//! The config file stays the operator's: the agent never rewrites it. What
//! a centre set survives restarts and reloads in the overlay, and the
//! merged result goes through the same parser and validation as the file
//! itself, so a bad remote value is rejected exactly like a bad local one.
//!
//! Key paths are dotted; below `cameras` the next level is a camera id and
//! below `lanes` a lane name: `cameras.cam-1.lanes.kerb.dwell_s`,
//! `falls.confirm_s`, `fire.smoke.min_score`, `alerts.escalate_after_s`.
//! Only rule parameters may be set this way; where the agent connects, which
//! models it loads and what it pulls stay local.

use std::path::{Path, PathBuf};

use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table};

use super::{Config, ConfigError};

/// Longest key path a change may name (the longest real one is well under
/// 100 characters; a longer one is an attack on the log or the file).
pub(crate) const MAX_KEY_LEN: usize = 256;
/// Deepest nesting walked in a change's value; deeper is refused outright.
const MAX_DEPTH: usize = 32;

/// What a remotely settable leaf holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    /// A number, a bool or a string (an enum such as a lane's `cue`).
    Scalar,
    /// A list rule parameter: a lane's `polygon` or `classes`, or
    /// `fire.classes.{fire,smoke}`.
    List,
}

/// A lane's rule parameters, below `cameras.{id}.lanes.{name}`. Not
/// `name`: that would rename the lane (a lane is created by setting its
/// keys under a new name).
const LANE: &[&str] = &["dwell_s", "clear_s", "cue", "min_occupancy"];
/// `[falls]` and `cameras.{id}.falls`: every key of [`super::Falls`].
const FALLS: &[&str] = &[
    "enabled",
    "window_s",
    "confirm_s",
    "fall_timeout_s",
    "recover_s",
    "lost_s",
    "long_lie_s",
    "down_update_s",
    "ref_window_s",
    "ref_max_aspect",
    "fall_height_ratio",
    "min_drop",
    "min_width_ratio",
    "down_height_ratio",
    "upright_height_ratio",
    "edge_margin",
    "keypoint_score",
    "vanish",
    "motion_threshold",
    "motion_lag_s",
    "still_max",
    "burst_min",
    "burst_centre",
    "vanish_after_s",
    "vanish_within_s",
    "vanish_min_score",
    "vanish_min_hits",
    "vanish_hist_s",
    "vanish_max_speed",
    "reappear_dist",
    "occlusion_ioa",
];
/// `[fire.fire]` / `[fire.smoke]`: every key of [`super::KindOverrides`].
const FIRE_KIND: &[&str] =
    &["min_score", "min_area", "max_area", "k", "n", "clear_s", "near_fire_min_score", "near_fire_k", "merge_gap"];
/// `[fire.flicker]`: every key of [`super::Flicker`].
const FLICKER: &[&str] = &[
    "enabled",
    "window_s",
    "fire_min_colour",
    "fire_min_flicker",
    "fire_min_shape",
    "fire_min_change",
    "min_frames",
    "smoke_min_change",
    "smoke_max_chroma",
    "smoke_max_edges",
    "smoke_min_persist_s",
];
/// `[obstruction]`: every threshold of the obstruction cue.
const OBSTRUCTION: &[&str] = &[
    "ncc_min",
    "flat_std",
    "chroma_max",
    "luma_max",
    "motion_min",
    "motion_hold_s",
    "learn_s",
    "adapt_s",
    "night_luma",
];
/// `[tracking]`: every key of [`super::Tracking`].
const TRACKING: &[&str] = &["low_score", "match_iou", "low_match_iou", "min_hits", "max_age_s"];
/// `[alerts]`: the timing of event messages and escalation.
const ALERTS: &[&str] =
    &["update_interval_s", "snapshot_quality", "acked_update_interval_s", "escalate_after_s", "escalate_min_severity"];
/// The detector's and the pose model's score thresholds (not the model,
/// its threads, sessions or motion gate: those are the box's, not a rule's).
const DETECTOR: &[&str] = &["score_threshold", "nms_iou"];
const POSE: &[&str] = &["nms_iou", "track_score", "min_score"];

/// The allow-list: what a remote change may set at the key path `parts`,
/// or `None` when it may not. Everything not named here (cameras
/// themselves, URLs, paths, hashes, models, broker, HTTP, spool, source,
/// `ort_library`, ids and names) stays the config file's.
fn leaf_kind(parts: &[&str]) -> Option<Leaf> {
    let scalar = |set: &[&str], k: &str| set.contains(&k).then_some(Leaf::Scalar);
    match parts {
        ["cameras", _, "lanes", _, "polygon" | "classes"] => Some(Leaf::List),
        ["cameras", _, "lanes", _, k] => scalar(LANE, k),
        ["cameras", _, "falls", k] | ["falls", k] => scalar(FALLS, k),
        ["cameras", _, "fire"] => Some(Leaf::Scalar),
        ["fire", "fire" | "smoke", k] => scalar(FIRE_KIND, k),
        ["fire", "flicker", k] => scalar(FLICKER, k),
        ["fire", "classes", "fire" | "smoke"] => Some(Leaf::List),
        ["obstruction", k] => scalar(OBSTRUCTION, k),
        ["tracking", k] => scalar(TRACKING, k),
        ["alerts", k] => scalar(ALERTS, k),
        ["detector", k] => scalar(DETECTOR, k),
        ["pose", k] => scalar(POSE, k),
        _ => None,
    }
}

/// Checks one change against the allow-list, by every leaf of its value:
/// a scalar only at a scalar rule parameter, a list only at a list one
/// (holding scalars or lists of scalars: a polygon's points), and never a
/// table. A refusal names the first leaf at fault.
pub(crate) fn check_change(key: &str, value: &Value) -> Result<(), OverlayError> {
    let bad = |at: String, m: String| Err(OverlayError::Key { key: at, message: m });
    if key.len() > MAX_KEY_LEN {
        let shown: String = key.chars().take(64).collect();
        return bad(format!("{shown}…"), format!("key path longer than {MAX_KEY_LEN} bytes"));
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return bad(key.into(), "empty level in key path".into());
    }
    match (leaf_kind(&parts), value) {
        (_, Value::Null) => bad(key.into(), "null is not a value".into()),
        (Some(Leaf::Scalar), Value::Array(_) | Value::Object(_)) => {
            bad(key.into(), "must be a single value (number, bool or string), not a list or table".into())
        }
        (Some(Leaf::Scalar), _) => Ok(()),
        (Some(Leaf::List), Value::Array(items)) => check_list(key, items),
        (Some(Leaf::List), _) => bad(key.into(), "must be a list".into()),
        (None, Value::Object(_) | Value::Array(_)) => {
            // Name the first leaf inside that is not a rule parameter; if
            // every leaf is one, the table is still refused whole: it would
            // replace the table, resetting its other keys.
            match first_refused_leaf(key, &parts, value, 0) {
                Some(at) => bad(at, REFUSED.into()),
                None => {
                    bad(key.into(), "a table cannot be set whole: set each of its keys by its own dotted path".into())
                }
            }
        }
        (None, _) => bad(key.into(), REFUSED.into()),
    }
}

const REFUSED: &str = "cannot be set remotely: only rule parameters can (edit the config file for the rest)";

/// A list parameter's items: scalars, or lists of scalars (polygon points).
fn check_list(key: &str, items: &[Value]) -> Result<(), OverlayError> {
    let scalar = |v: &Value| matches!(v, Value::Bool(_) | Value::Number(_) | Value::String(_));
    for (i, item) in items.iter().enumerate() {
        let ok = scalar(item) || item.as_array().is_some_and(|a| a.iter().all(scalar));
        if !ok {
            return Err(OverlayError::Key {
                key: format!("{key}[{i}]"),
                message: "a list item must be a value or a list of values (no tables, no null)".into(),
            });
        }
    }
    Ok(())
}

/// The path of the first leaf of `value` (below `key`) that is not on the
/// allow-list, walking tables and lists; `None` when every leaf is.
fn first_refused_leaf(key: &str, parts: &[&str], value: &Value, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(key.into());
    }
    match value {
        Value::Object(o) => o.iter().find_map(|(k, v)| {
            let mut p = parts.to_vec();
            p.push(k);
            first_refused_leaf(&format!("{key}.{k}"), &p, v, depth + 1)
        }),
        // A list below a path that is not a list parameter: its items have
        // no key path of their own, so the list is refused at its first item.
        Value::Array(a) if leaf_kind(parts) != Some(Leaf::List) => {
            Some(if a.is_empty() { key.into() } else { format!("{key}[0]") })
        }
        _ => leaf_kind(parts).is_none().then(|| key.into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("{key}: {message}")]
    Key { key: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("overlay {}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

/// The overlay file that goes with `config_file`, in the agent's state
/// folder (beside the spool), since `/etc` may be read-only to the agent.
pub(crate) fn path_for(config: &Config) -> PathBuf {
    config.spool.path.with_file_name("overlay.toml")
}

/// Loads `file` with its overlay (if any) applied and validated. Used on
/// a reload, where a refusal keeps the running config in force.
pub fn load(file: &Path) -> Result<Config, OverlayError> {
    let text = read_config(file)?;
    let base = Config::from_text(&text, file)?;
    let changes = read(&path_for(&base))?;
    if changes.is_empty() {
        return Ok(base);
    }
    merged(&text, file, &changes, true)
}

/// An overlay that [`load_at_start`] could not use and put out of the way.
#[derive(Debug)]
pub struct SetAside {
    /// The overlay file.
    pub overlay: PathBuf,
    /// Where it went (`overlay.toml.refused-<UTC time>`); `None` when it
    /// could not be renamed (it is then tried again at the next start).
    pub moved_to: Option<PathBuf>,
    /// Why it was refused: the overlay's own error.
    pub reason: String,
}

/// Loads `file` at start. The config file must be valid (its error stops
/// the start, as it names the operator's own mistake), but the overlay
/// must never keep the agent down: a corrupt or refused one (a syntax
/// error, a key no longer allowed, a value the merged config refuses) is
/// renamed aside with a timestamp, logged on one error line, and the agent
/// starts from the file alone. The caller counts the [`SetAside`] in
/// `alleywatch_overlay_set_aside_total` once the metrics exist.
pub fn load_at_start(file: &Path) -> Result<(Config, Option<SetAside>), OverlayError> {
    let text = read_config(file)?;
    let base = Config::from_text(&text, file)?;
    let overlay = path_for(&base);
    let changes = match read(&overlay) {
        Ok(c) if c.is_empty() => return Ok((base, None)),
        Ok(c) => c,
        Err(e) => return Ok((base, Some(set_aside(&overlay, &e)))),
    };
    match merged(&text, file, &changes, true) {
        Ok(config) => Ok((config, None)),
        Err(e) => Ok((base, Some(set_aside(&overlay, &e)))),
    }
}

/// Renames `overlay` to `overlay.toml.refused-<UTC time>` and logs why.
fn set_aside(overlay: &Path, why: &OverlayError) -> SetAside {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace([':', '-'], "");
    let mut name = overlay.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".refused-{stamp}"));
    let to = overlay.with_file_name(name);
    let moved_to = match std::fs::rename(overlay, &to) {
        Ok(()) => {
            tracing::error!(
                overlay = %overlay.display(), moved_to = %to.display(), error = %why,
                "overlay refused: set aside, starting from the config file alone (its remote changes are not in force)"
            );
            Some(to)
        }
        Err(e) => {
            tracing::error!(
                overlay = %overlay.display(), error = %why, rename_error = %e,
                "overlay refused and cannot be set aside: starting from the config file alone"
            );
            None
        }
    };
    SetAside { overlay: overlay.to_path_buf(), moved_to, reason: why.to_string() }
}

fn read_config(file: &Path) -> Result<String, OverlayError> {
    std::fs::read_to_string(file)
        .map_err(|source| OverlayError::Config(ConfigError::Read { file: file.to_path_buf(), source }))
}

/// Adds `changes` to the overlay of `file`, validates the result and, only
/// when it is valid, saves the overlay. Returns the new config.
pub(crate) fn set(file: &Path, changes: &serde_json::Map<String, Value>, by: &str) -> Result<Config, OverlayError> {
    let text = read_config(file)?;
    let base = Config::from_text(&text, file)?;
    let overlay = path_for(&base);
    let mut all = read(&overlay)?;
    for (k, v) in changes {
        check_change(k, v)?;
        all.retain(|(key, _)| key != k);
        all.push((k.clone(), v.clone()));
    }
    let config = merged(&text, file, &all, false)?;
    write(&overlay, &all, by)?;
    Ok(config)
}

/// The config file with `changes` applied. At load (`lenient`), a change
/// for a camera the file no longer has is skipped with a warning: a camera
/// removed from the file must not keep the agent from starting.
fn merged(text: &str, file: &Path, changes: &[(String, Value)], lenient: bool) -> Result<Config, OverlayError> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| OverlayError::Key {
        key: "(syntax)".into(),
        message: e.message().to_string(),
    })?;
    for (k, v) in changes {
        match apply(&mut doc, k, v) {
            Err(OverlayError::Key { key, message }) if lenient && message.starts_with("no camera") => {
                tracing::warn!(key = %key, "overlay change for a camera the config no longer has; skipped");
            }
            r => r?,
        }
    }
    Ok(Config::from_text(&doc.to_string(), file)?)
}

/// Sets one key path in the document.
fn apply(doc: &mut DocumentMut, key: &str, value: &Value) -> Result<(), OverlayError> {
    check_change(key, value)?;
    let err = |m: String| OverlayError::Key { key: key.into(), message: m };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table: &mut Table = doc.as_table_mut();
    let mut i = 0;
    while i + 1 < parts.len() {
        let p = parts[i];
        if p == "cameras" || p == "lanes" {
            let (id_key, what) = if p == "cameras" { ("id", "camera") } else { ("name", "lane") };
            let name = parts[i + 1];
            let item = table.get_mut(p).ok_or_else(|| err(format!("no {p} here to select from")))?;
            // `lanes = [{ … }]` (inline) reads like `[[lanes]]` from here on.
            if !item.is_array_of_tables() {
                let taken = std::mem::take(item);
                *item = match taken.into_array_of_tables() {
                    Ok(a) => Item::ArrayOfTables(a),
                    Err(_) => return Err(err(format!("{p} is not a list of tables"))),
                };
            }
            let arr = item.as_array_of_tables_mut().ok_or_else(|| err(format!("{p} is not a list of tables")))?;
            let pos = arr.iter().position(|t| t.get(id_key).and_then(|v| v.as_str()) == Some(name));
            let idx = match (pos, p) {
                (Some(idx), _) => idx,
                // A lane that does not exist yet is added (drawn on the
                // technician's page); validation asks for its other keys.
                (None, "lanes") => {
                    let mut t = Table::new();
                    t.insert("name", toml_edit::value(name));
                    arr.push(t);
                    arr.len() - 1
                }
                (None, _) => return Err(err(format!("no {what} {name:?}"))),
            };
            table = arr.get_mut(idx).ok_or_else(|| err(format!("no {what} {name:?}")))?;
            i += 2;
            continue;
        }
        let entry = table.entry(p).or_insert_with(|| Item::Table(Table::new()));
        table = match entry {
            Item::Table(t) => t,
            Item::Value(toml_edit::Value::InlineTable(_)) => {
                let it = std::mem::take(entry).into_table().map_err(|_| err(format!("{p} is not a table")))?;
                *entry = Item::Table(it);
                entry.as_table_mut().ok_or_else(|| err(format!("{p} is not a table")))?
            }
            _ => return Err(err(format!("{p} is not a table"))),
        };
        i += 1;
    }
    if i >= parts.len() {
        return Err(err("the path must end in a key, not a camera or lane".into()));
    }
    table.insert(parts[i], Item::Value(to_toml(value).ok_or_else(|| err("null is not a value".into()))?));
    Ok(())
}

fn to_toml(v: &Value) -> Option<toml_edit::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => {
            let mut arr = toml_edit::Array::new();
            for x in a {
                arr.push(to_toml(x)?);
            }
            toml_edit::Value::Array(arr)
        }
        Value::Object(o) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, x) in o {
                t.insert(k, to_toml(x)?);
            }
            toml_edit::Value::InlineTable(t)
        }
    })
}

/// The overlay's changes, in the order they were made.
fn read(path: &Path) -> Result<Vec<(String, Value)>, OverlayError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OverlayError::File { path: path.into(), message: e.to_string() }),
    };
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        set: Vec<Change>,
    }
    #[derive(serde::Deserialize)]
    struct Change {
        key: String,
        value: Value,
    }
    let f: File =
        toml::from_str(&text).map_err(|e| OverlayError::File { path: path.into(), message: e.to_string() })?;
    Ok(f.set.into_iter().map(|c| (c.key, c.value)).collect())
}

fn write(path: &Path, changes: &[(String, Value)], by: &str) -> Result<(), OverlayError> {
    let ferr = |m: String| OverlayError::File { path: path.into(), message: m };
    let mut out = format!(
        "# Rule parameters set remotely (the `set` command or the technician's page),\n\
         # applied over the config file at every load. Last change by {by:?}.\n"
    );
    for (k, v) in changes {
        out.push_str(&format!(
            "\n[[set]]\nkey = {}\nvalue = {}\n",
            toml_edit::value(k.as_str()),
            to_toml(v).ok_or_else(|| ferr("null value".into()))?
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ferr(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| ferr(e.to_string()))?;
    std::io::Write::write_all(&mut tmp, out.as_bytes()).map_err(|e| ferr(e.to_string()))?;
    tmp.persist(path).map_err(|e| ferr(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
