//! Errors in configuration files that name the file, the line, the dotted key and the
//! reason (`edge.toml:12: key `meters[0].tcp`: ...`), and the small TOML text helpers that
//! find those lines. Shared by the edge agent's and the hub's configs.

use std::fmt;
use std::path::PathBuf;

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// All errors found in one file (validation reports every problem, not just the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The 1-based line of a byte offset.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// The dotted key at a byte offset: the nearest table header above it plus the key on
/// that line, e.g. `ocpp.security_profile` (or the table itself on a header line).
pub fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table_line = line.trim();
    if table_line.starts_with('[') {
        return Some(table_line.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    }
    let key = line.split('=').next().map(str::trim).filter(|k| !k.is_empty())?;
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// The 1-based line of `key` inside `[table]`, or inside the `index`-th `[[table]]`.
pub fn find_key_line(text: &str, table: &str, key: &str, index: Option<usize>) -> Option<usize> {
    let mut current: Option<String> = None;
    let mut array_index: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with("[[") {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            if name == table {
                array_index = Some(array_index.map_or(0, |i| i + 1));
            }
            current = Some(name);
            continue;
        }
        if line.starts_with('[') {
            current = Some(line.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
            continue;
        }
        let in_table = current.as_deref().unwrap_or("") == table;
        let index_ok = index.is_none_or(|i| array_index == Some(i));
        if in_table && index_ok && line.split('=').next().map(str::trim) == Some(key) {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[site]\nid = \"s\"\n\n[[meters]]\nid = \"a\"\n\n[[meters]]\nid = \"b\"\ntcp = \"x\"\n";

    #[test]
    fn finds_keys_in_tables_and_arrays_of_tables() {
        assert_eq!(find_key_line(TEXT, "site", "id", None), Some(2));
        assert_eq!(find_key_line(TEXT, "meters", "id", Some(1)), Some(8));
        assert_eq!(find_key_line(TEXT, "meters", "tcp", Some(0)), None);
        assert_eq!(line_of_offset(TEXT, TEXT.find("tcp").unwrap_or(0)), 9);
        assert_eq!(key_at_offset(TEXT, TEXT.find("tcp").unwrap_or(0)).as_deref(), Some("meters.tcp"));
        assert_eq!(key_at_offset(TEXT, 1).as_deref(), Some("site"));
    }

    #[test]
    fn errors_name_file_line_key_and_reason() {
        let e = ConfigError { file: "edge.toml".into(), line: Some(3), key: Some("a.b".into()), reason: "bad".into() };
        assert_eq!(e.to_string(), "edge.toml:3: key `a.b`: bad");
        let all = ConfigErrors(vec![e.clone(), ConfigError { line: None, key: None, ..e }]);
        assert_eq!(all.to_string(), "edge.toml:3: key `a.b`: bad\nedge.toml: bad");
    }
}
