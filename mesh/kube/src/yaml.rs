//! Multi-document YAML as Kubernetes tools write it: split into documents
//! that keep their line numbers (for `line: what is wrong` messages), and
//! serialized one way, so `weft inject` and the webhook's patched objects
//! can be compared byte for byte.

use serde::Serialize;

/// The documents of a YAML stream: (1-based line where each starts, text).
/// Empty documents and ones holding only comments are left out.
pub fn documents(text: &str) -> Vec<(u64, String)> {
    let mut docs = Vec::new();
    let mut start = 1u64;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push((start, std::mem::take(&mut current)));
            match trimmed.strip_prefix("--- ") {
                // `--- key: value`: the document starts on the marker's line.
                Some(rest) => {
                    start = i as u64 + 1;
                    current.push_str(rest);
                    current.push('\n');
                }
                None => start = i as u64 + 2,
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter().filter(|(_, d)| !is_blank(d)).collect()
}

/// Whether a document holds nothing but blank lines and comments.
pub fn is_blank(doc: &str) -> bool {
    !doc.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

/// A serde-saphyr error in a document starting at line `start`: the
/// stream's line and the message, without the library's own position
/// suffix and snippet.
pub fn error_at(e: &serde_saphyr::Error, start: u64) -> (u64, String) {
    let line = e.location().map_or(start, |l| start + l.line().saturating_sub(1));
    let text = e.without_snippet().to_string();
    let text = match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    (line, text.lines().next().unwrap_or("").trim().to_owned())
}

/// `value` as one YAML document (ending in a newline), the one way Weft
/// writes Kubernetes objects.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, serde_saphyr::ser_error::Error> {
    let mut text = serde_saphyr::to_string(value)?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_first_line_and_blank_ones_go() {
        let text = "# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n--- d: 4\n...\n";
        let docs = documents(text);
        assert_eq!(docs, vec![(3, "a: 1\n".to_owned()), (7, "b: 2\nc: 3\n".to_owned()), (9, "d: 4\n".to_owned())]);
    }
}
