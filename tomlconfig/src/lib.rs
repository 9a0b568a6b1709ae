//! Config files as both alleywatch programs (the edge agent and the
//! centre) read them: TOML through serde, then the checks serde cannot
//! express, and one error that names the file, the line and the dotted key
//! of the first problem (`agent.toml:14: cameras[0].lanes[1].dwell_s: -5
//! must be ≥ 0`). One crate, so a technician meets the same messages from
//! either program.

mod locate;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}{}: {key}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        /// Dotted key path, e.g. `cameras[0].lanes[1].dwell_s`.
        key: String,
        message: String,
    },
}

/// What a section's `validate` returns: `Err((key path, message))` of the
/// first problem found, which [`parse`] then locates in the file.
pub type Check = Result<(), (String, String)>;

/// The first problem: `key` (a dotted path) and what is wrong with it.
pub fn fail(key: &str, message: impl Into<String>) -> Check {
    Err((key.to_string(), message.into()))
}

/// Reads `file` and [`parse`]s it.
pub fn load<T: DeserializeOwned>(file: &Path, validate: impl FnOnce(&T) -> Check) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_path_buf(), source })?;
    parse(&text, file, validate)
}

/// Parses config text and runs `validate` on it; `file` is only used in
/// messages. Syntax errors, type errors and unknown keys (with
/// `deny_unknown_fields`) come from serde with their span; `validate`'s
/// key path is found in the text.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    file: &Path,
    validate: impl FnOnce(&T) -> Check,
) -> Result<T, ConfigError> {
    let invalid = |key: String, message: String, line: Option<usize>| ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        key,
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let line = e.span().map(|s| locate::line_of(text, s.start));
        invalid("(syntax)".into(), locate::first_line(e.message()), line)
    })?;
    let config: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| locate::line_of(text, s.start));
        // `?` is serde_path_to_error's "unknown position"; the root.
        let key = if key == "." || key == "?" { "(top level)".into() } else { key };
        invalid(key, locate::first_line(inner.message()), line)
    })?;
    if let Err((key, message)) = validate(&config) {
        let line = locate::locate(text, &key);
        return Err(invalid(key, message, line));
    }
    Ok(config)
}
