//! The one error type of policy and node-config loading.
//!
//! Every message names the file; a rejected value also names its key path
//! (`volatility.heartbeat_interval_ms`, `peer[1].allowed_ips[0]`), the value as written and what
//! is allowed. The `Display` text is complete on its own: no variant exposes a `source()`, so a
//! chain printer (`{:#}` in anyhow) shows each fact once.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a policy file or node config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("failed to read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// The file is larger than any config or policy file may be ([`MAX_FILE_BYTES`]).
    #[error("{} is larger than {limit} bytes (1 MiB), the most a config or policy file may be", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The text is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", file.display())]
    Syntax {
        /// The file, as the caller named it.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// Valid TOML that does not fit the schema: an unknown key or a value of the wrong type.
    #[error("{}:{line}:{column}: {key}: {message}", file.display())]
    Schema {
        /// The file, as the caller named it.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// Dotted key path, e.g. `peer[1].allowed_ips[0]`.
        key: String,
        /// The parser's message.
        message: String,
    },
    /// A required key is absent.
    #[error("{}: {key}: missing; {allowed}", file.display())]
    Missing {
        /// The file, as the caller named it.
        file: PathBuf,
        /// Dotted key path, e.g. `peer[1].allowed_ips[0]`.
        key: String,
        /// What is allowed instead.
        allowed: String,
    },
    /// A value is out of range, malformed, or breaks a rule that ties it to another key.
    #[error("{}: {key} = {value}: {allowed}", file.display())]
    Invalid {
        /// The file, as the caller named it.
        file: PathBuf,
        /// Dotted key path, e.g. `peer[1].allowed_ips[0]`.
        key: String,
        /// The value as written (a preshared key is never repeated).
        value: String,
        /// What is allowed instead.
        allowed: String,
    },
    /// The policy file a node config refers to was refused.
    #[error("{}: policy = {value}: {inner}", file.display())]
    Policy {
        /// The node config that names the policy.
        file: PathBuf,
        /// The `policy` value as written.
        value: String,
        /// Why the policy file was refused.
        inner: Box<ConfigError>,
    },
    /// The file is valid TOML but not the kind of file that was asked for.
    #[error("{}: {message}", file.display())]
    WrongKind {
        /// The file, as the caller named it.
        file: PathBuf,
        /// What kind it is, or why it is none.
        message: String,
    },
}

impl ConfigError {
    /// The file the error is about (for `Policy`, the node config that refers to the policy).
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { path: file, .. }
            | ConfigError::TooLarge { path: file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Schema { file, .. }
            | ConfigError::Missing { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Policy { file, .. }
            | ConfigError::WrongKind { file, .. } => file,
        }
    }

    /// The key path the error is about, where there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Schema { key, .. }
            | ConfigError::Missing { key, .. }
            | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Policy { .. } => Some("policy"),
            _ => None,
        }
    }
}

/// Builds errors for one file.
#[derive(Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub file: &'a Path,
}

impl<'a> Origin<'a> {
    pub fn new(file: &'a Path) -> Self {
        Origin { file }
    }

    /// `FILE: KEY = VALUE: ALLOWED`; `value` is shown as written in TOML (strings quoted).
    pub fn invalid(
        &self,
        key: &str,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// Like [`Origin::invalid`] for a string value, quoted as TOML would.
    pub fn invalid_str(&self, key: &str, value: &str, allowed: impl Into<String>) -> ConfigError {
        self.invalid(key, toml_string(value), allowed)
    }

    pub fn missing(&self, key: &str, allowed: impl Into<String>) -> ConfigError {
        ConfigError::Missing {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            allowed: allowed.into(),
        }
    }

    pub fn wrong_kind(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::WrongKind {
            file: self.file.to_path_buf(),
            message: message.into(),
        }
    }

    /// Parses `text` as a TOML table, reporting syntax errors with line and column.
    pub fn parse_table(&self, text: &str) -> Result<toml::Table, ConfigError> {
        text.parse::<toml::Table>().map_err(|e| {
            let (line, column) = position(text, e.span().map_or(0, |s| s.start));
            ConfigError::Syntax {
                file: self.file.to_path_buf(),
                line,
                column,
                message: one_line(e.message()),
            }
        })
    }

    /// Deserializes the serde mirror `T`, reporting unknown keys and wrong types with the key
    /// path, line and column. Call [`Origin::parse_table`] first so syntax errors are told apart.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        &self,
        text: &str,
    ) -> Result<T, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, column) = position(text, offset);
            ConfigError::Schema {
                file: self.file.to_path_buf(),
                line,
                column,
                key: key_path_at(text, offset).unwrap_or_else(|| "(top level)".to_string()),
                message: one_line(e.message()),
            }
        })
    }
}

/// The largest config or policy file read: a real one is a few KiB, and a reload must never
/// make the node read (or hold) an unbounded file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a file as UTF-8 text, refusing one larger than [`MAX_FILE_BYTES`] (without reading
/// more than one byte past the limit, whatever the file is: a FIFO or `/dev/zero` too).
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(text)
}

/// A string as a TOML basic string literal (quoted and escaped).
pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key path of the key or value at byte `offset`, found from the table headers above
/// it and the `key =` on its line (or the nearest line above, for multi-line arrays).
/// `[[peer]]` headers are numbered from 0: `peer[1].allowed_ips`.
fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut last_key: Option<String> = None;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        if let Some(header) = header_name(trimmed, &mut counts) {
            if offset < end {
                return Some(header);
            }
            table = header;
            last_key = None;
        } else if let Some((key, _)) = trimmed.split_once('=') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            if !trimmed.starts_with('#') && !key.is_empty() {
                last_key = Some(key.to_string());
            }
        }
        if offset < end {
            break;
        }
        start = end;
    }
    let key = last_key?;
    Some(if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    })
}

/// The key path of a `[table]` or `[[array.of.tables]]` header line, numbering array entries.
fn header_name(trimmed: &str, counts: &mut Vec<(String, usize)>) -> Option<String> {
    if let Some(rest) = trimmed.strip_prefix("[[") {
        let name = rest.split("]]").next()?.trim().to_string();
        let index = match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => {
                *count += 1;
                *count
            }
            None => {
                counts.push((name.clone(), 0));
                0
            }
        };
        return Some(format!("{name}[{index}]"));
    }
    let rest = trimmed.strip_prefix('[')?;
    let name = rest.split(']').next()?.trim();
    // A line such as `["a", "b"],` inside a multi-line array is not a header.
    if name.is_empty() || name.contains(['"', '\'', ',']) {
        return None;
    }
    Some(name.to_string())
}

/// A parser message on one line, so an error stays one line in logs.
fn one_line(message: &str) -> String {
    message.trim_end().replace('\n', "; ")
}
