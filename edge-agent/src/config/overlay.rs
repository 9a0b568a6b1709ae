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

/// Top-level sections a remote change may not touch.
const LOCAL_SECTIONS: &[&str] = &["agent_id", "site", "broker", "ort_library", "spool", "http", "source", "overlay"];
/// Keys a remote change may not touch, in any section.
const LOCAL_KEYS: &[&str] = &[
    "url",
    "snapshot_url",
    "path",
    "sha256",
    "format",
    "input_size",
    "labels",
    "threads",
    "sessions",
    "batch",
    "precision",
    "execution_provider",
    "fallback",
    "decode",
    "password",
    "password_file",
    "id",
    "fps",
    "analysis_width",
];

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
pub fn path_for(config: &Config) -> PathBuf {
    config.spool.path.with_file_name("overlay.toml")
}

/// Loads `file` with its overlay (if any) applied and validated.
pub fn load(file: &Path) -> Result<Config, OverlayError> {
    let base = Config::load(file)?;
    let overlay = path_for(&base);
    let changes = read(&overlay)?;
    if changes.is_empty() {
        return Ok(base);
    }
    merged(file, &changes, true)
}

/// Adds `changes` to the overlay of `file`, validates the result and, only
/// when it is valid, saves the overlay. Returns the new config.
pub fn set(file: &Path, changes: &serde_json::Map<String, Value>, by: &str) -> Result<Config, OverlayError> {
    let base = Config::load(file)?;
    let overlay = path_for(&base);
    let mut all = read(&overlay)?;
    for (k, v) in changes {
        check_key(k)?;
        all.retain(|(key, _)| key != k);
        all.push((k.clone(), v.clone()));
    }
    let config = merged(file, &all, false)?;
    write(&overlay, &all, by)?;
    Ok(config)
}

/// The config file with `changes` applied. At load (`lenient`), a change
/// for a camera the file no longer has is skipped with a warning: a camera
/// removed from the file must not keep the agent from starting.
fn merged(file: &Path, changes: &[(String, Value)], lenient: bool) -> Result<Config, OverlayError> {
    let text = std::fs::read_to_string(file)
        .map_err(|source| OverlayError::Config(ConfigError::Read { file: file.to_path_buf(), source }))?;
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

fn check_key(key: &str) -> Result<(), OverlayError> {
    let parts: Vec<&str> = key.split('.').collect();
    let bad = |m: &str| Err(OverlayError::Key { key: key.into(), message: m.into() });
    if parts.iter().any(|p| p.is_empty()) {
        return bad("empty level in key path");
    }
    if LOCAL_SECTIONS.contains(&parts[0]) || parts.last().is_some_and(|l| LOCAL_KEYS.contains(l)) {
        return bad("cannot be set remotely: only rule parameters can (edit the config file for the rest)");
    }
    Ok(())
}

/// Sets one key path in the document.
fn apply(doc: &mut DocumentMut, key: &str, value: &Value) -> Result<(), OverlayError> {
    check_key(key)?;
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
mod tests {
    use super::*;

    fn base(dir: &Path) -> PathBuf {
        let model = dir.join("m.onnx");
        std::fs::write(&model, b"x").unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(
            &file,
            format!(
                r#"agent_id = "a"
site = {{ district = "d", street = "s", community = "c" }}
broker = {{ host = "127.0.0.1" }}
detector = {{ path = "m.onnx", format = "nanodet", input_size = 416 }}
spool = {{ path = "{}/state/spool.sqlite" }}

[[cameras]]
id = "cam-1"
name = "One"
url = "rtsp://u:p@h/s"
lanes = [{{ name = "kerb", polygon = [[0, 0], [1, 0], [1, 1]], classes = ["car"], dwell_s = 30 }}]
"#,
                dir.display()
            ),
        )
        .unwrap();
        file
    }

    fn changes(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn set_changes_a_lane_persists_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = base(dir.path());
        let c = set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": 5})), "op").unwrap();
        assert_eq!(c.cameras[0].lanes[0].dwell_s, 5.0);
        assert_eq!(load(&file).unwrap().cameras[0].lanes[0].dwell_s, 5.0, "the overlay applies at every load");
        let c = set(&file, &changes(serde_json::json!({"falls.confirm_s": 0.6})), "op").unwrap();
        assert_eq!((c.falls.confirm_s, c.cameras[0].lanes[0].dwell_s), (0.6, 5.0), "changes accumulate");
    }

    #[test]
    fn a_new_lane_can_be_drawn_and_bad_values_are_rejected_without_saving() {
        let dir = tempfile::tempdir().unwrap();
        let file = base(dir.path());
        let lane = serde_json::json!({
            "cameras.cam-1.lanes.door.polygon": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]],
            "cameras.cam-1.lanes.door.classes": ["car"],
            "cameras.cam-1.lanes.door.dwell_s": 10,
        });
        let c = set(&file, &changes(lane), "tech").unwrap();
        assert_eq!(c.cameras[0].lanes.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["kerb", "door"]);

        let e = set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": -1})), "op").unwrap_err();
        assert!(e.to_string().contains("cameras[0].lanes[0].dwell_s"), "{e}");
        assert_eq!(load(&file).unwrap().cameras[0].lanes[0].dwell_s, 30.0, "a rejected set is not saved");

        let e = set(&file, &changes(serde_json::json!({"cameras.cam-1.url": "rtsp://x"})), "op").unwrap_err();
        assert!(e.to_string().contains("cannot be set remotely"), "{e}");
        // What the box loads and how it decodes stays local too.
        for (key, value) in [
            ("detector.execution_provider", serde_json::json!("cuda")),
            ("detector.precision", serde_json::json!("int8")),
            ("detector.sessions", serde_json::json!(4)),
            ("cameras.cam-1.decode", serde_json::json!("keyframes")),
        ] {
            let e = set(&file, &changes(serde_json::json!({ key: value })), "op").unwrap_err();
            assert!(e.to_string().contains("cannot be set remotely"), "{key}: {e}");
        }
        let e = set(&file, &changes(serde_json::json!({"cameras.nope.lanes.kerb.dwell_s": 1})), "op").unwrap_err();
        assert!(e.to_string().contains("no camera \"nope\""), "{e}");
    }

    #[test]
    fn a_camera_removed_from_the_file_does_not_stop_the_agent_loading() {
        let dir = tempfile::tempdir().unwrap();
        let file = base(dir.path());
        set(&file, &changes(serde_json::json!({"cameras.cam-1.lanes.kerb.dwell_s": 5})), "op").unwrap();
        let text = std::fs::read_to_string(&file).unwrap().replace("id = \"cam-1\"", "id = \"cam-2\"");
        std::fs::write(&file, text).unwrap();
        let c = load(&file).expect("the stale overlay key is skipped, not fatal");
        assert_eq!((c.cameras[0].id.as_str(), c.cameras[0].lanes[0].dwell_s), ("cam-2", 30.0));
    }
}
