//! Pointing at the line: where in the TOML text a parse error or a key path
//! that failed validation sits.

pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Finds the line of a key path such as `cameras[1].lanes[0].dwell_s` in the
/// original text, so semantic errors point at the line too.
pub(crate) fn locate(text: &str, key: &str) -> Option<usize> {
    // toml_edit is stricter than the parser that accepted the file (an
    // integer past i64, say); then find the line by reading the text.
    let Ok(doc) = toml_edit::Document::parse(text) else { return locate_in_lines(text, key) };
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for seg in key.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        // A missing key (e.g. a required one) points at its parent.
        let Some(next) = item.get(name) else { break };
        item = next;
        span = item.span().or(span);
        if let Some(i) = index {
            let Some(next) = item.get(i) else { break };
            item = next;
            span = item.span().or(span);
        }
    }
    span.map(|s| line_of(text, s.start))
}

/// The line of `key` found by reading lines: `leaf = …` under the table
/// header of its parent (`[falls]`, `[[cameras]]`), else that header.
pub(crate) fn locate_in_lines(text: &str, key: &str) -> Option<usize> {
    let names: Vec<&str> = key.split('.').map(|seg| seg.split('[').next().unwrap_or(seg)).collect();
    let (leaf, parent) = names.split_last()?;
    let mut table: Vec<&str> = Vec::new();
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            let name = h.split(']').next().unwrap_or("");
            table = name.split('.').map(str::trim).collect();
            if table == parent {
                header = Some(i + 1);
            }
            continue;
        }
        let sets_leaf = t.strip_prefix(leaf).is_some_and(|rest| rest.trim_start().starts_with('='));
        if sets_leaf && table == parent {
            return Some(i + 1);
        }
    }
    header.or(Some(1))
}
