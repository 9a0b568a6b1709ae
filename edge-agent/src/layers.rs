//! The rule that keeps the house in order: no module imports from a layer
//! above its own. Checked over the source text (every `crate::…` path
//! outside comments), so a new arrow pointing up fails the unit tests with
//! the file and the line, not a reviewer's memory.

/// Each top-level module's floor; a module may use only lower floors.
/// `main.rs` (the binary) stands above them all.
const FLOORS: &[(&str, u8)] = &[
    // Words every layer uses, and process plumbing that knows no stage.
    ("vocab", 0),
    ("redact", 0),
    ("shutdown", 0),
    ("service", 0),
    ("metrics", 0),
    ("project", 0),
    // What the operator wrote, and what may be asked of the agent.
    ("config", 1),
    ("control", 1),
    // The data path, in its order.
    ("source", 2),
    ("infer", 2),
    ("analytics", 3),
    ("draw", 3),
    ("alert", 4),
    // One camera's stages; the technician's page.
    ("camera", 5),
    ("http", 5),
    ("demo", 5),
    // Whole programs: the live agent and the offline replay.
    ("agent", 6),
    ("replay", 6),
];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|&(_, f)| f)
}

/// `crate::x` paths on a line of code (comments stripped).
fn targets(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b}`: the first segment of each entry.
            let inner = group.split('}').next().unwrap_or("");
            out.extend(inner.split(',').filter_map(|e| e.trim().split("::").next()).map(str::to_string));
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|t| !t.is_empty());
    out
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut wrong = Vec::new();
    let mut seen = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs");
        // The binary (main.rs and its demo_centre.rs) stands above every
        // floor; this file only names paths.
        if matches!(module, "main" | "demo_centre" | "lib" | "layers") {
            continue;
        }
        let Some(own) = floor(module) else {
            wrong.push(format!("{}: module {module} has no floor in layers.rs", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for target in targets(line) {
                seen += 1;
                match floor(&target) {
                    _ if target == module => {}
                    Some(f) if f < own => {}
                    Some(f) => wrong.push(format!(
                        "{}:{}: {module} (floor {own}) uses crate::{target} (floor {f})",
                        rel.display(),
                        n + 1
                    )),
                    None => wrong.push(format!("{}:{}: crate::{target} has no floor", rel.display(), n + 1)),
                }
            }
        }
    }
    assert!(seen > 100, "the scan found only {seen} crate paths: is it reading the sources?");
    assert!(wrong.is_empty(), "imports that run up a layer:\n{}", wrong.join("\n"));
}

#[test]
fn paths_are_read_from_plain_and_grouped_uses() {
    assert_eq!(targets("use crate::alert::Outbox; // crate::agent"), ["alert"]);
    assert_eq!(targets("use crate::{camera::X, vocab};"), ["camera", "vocab"]);
    assert_eq!(targets("let x = crate::infer::run(crate::config::C);"), ["infer", "config"]);
}
