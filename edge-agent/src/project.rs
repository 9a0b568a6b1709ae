//! The checkout's own files, found from where the agent runs: replay's
//! default models folder, and the files the demo, the tests and the benches
//! take from the project (the default detector, the setup's media).

use std::path::PathBuf;

/// The default detector, relative to the project root.
pub const DEFAULT_MODEL: &str = "models/nanodet.onnx";

/// Finds `rel` in the working directory, above it, or above the binary:
/// replay, the demo and the tests run from a checkout.
pub fn find_in_project(rel: &str) -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    starts.iter().flat_map(|s| s.ancestors()).map(|d| d.join(rel)).find(|p| p.exists())
}
