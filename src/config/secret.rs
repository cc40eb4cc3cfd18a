//! Secrets: credential references (`env:NAME`, `file:PATH`) resolved into a redacting `Secret`.
//!
//! A `Secret` never prints its value: `Debug` and `Display` show `*****`, it has no `Serialize`,
//! and the only way to read it is `expose`, used once when the credential header is built.

use std::fmt;
use std::path::PathBuf;

/// What `Debug` and `Display` print in place of a secret value.
pub const REDACTED: &str = "*****";

/// A credential value. Never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a value that is already trimmed and cleaned.
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Secret(value.into())
    }

    /// The value, for building the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Where a secret comes from, as written in the config. Safe to print: it names, never holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

/// Why a reference could not be read (the message never contains the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The variable is unset or empty, or the file is empty: the provider is "not configured".
    Missing(String),
    /// The file exists but cannot be read: a config error.
    Unreadable(String),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`; anything else is refused with what to write instead.
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("env:") {
            let ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if ok {
                return Ok(SecretRef::Env(name.to_owned()));
            }
            return Err("`env:` must be followed by a variable name (letters, digits, `_`)".into());
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` must be followed by a path".into());
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        Err("a literal key is not allowed here; write `env:NAME` or `file:PATH` instead".into())
    }

    /// Reads the secret now, with `lookup` standing for the process environment.
    pub fn resolve(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Secret, Unresolved> {
        let raw = match self {
            SecretRef::Env(name) => match lookup(name) {
                Some(value) => value,
                None => return Err(Unresolved::Missing(format!("{name} is not set"))),
            },
            SecretRef::File(path) => match std::fs::read(path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => {
                        return Err(Unresolved::Unreadable(format!(
                            "{} is not UTF-8 text",
                            path.display()
                        )))
                    }
                },
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Unresolved::Missing(format!(
                        "{} does not exist",
                        path.display()
                    )))
                }
                Err(err) => {
                    return Err(Unresolved::Unreadable(format!(
                        "cannot read {}: {}",
                        path.display(),
                        err.kind()
                    )))
                }
            },
        };
        let cleaned = clean(&raw);
        if cleaned.is_empty() {
            return Err(Unresolved::Missing(format!("{self} is empty")));
        }
        Ok(Secret::new(cleaned))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// Trims the value and removes an accidental `Bearer ` / `token ` scheme in front of it.
fn clean(raw: &str) -> &str {
    let trimmed = raw.trim();
    for scheme in ["bearer ", "token "] {
        if trimmed.len() > scheme.len()
            && trimmed.is_char_boundary(scheme.len())
            && trimmed[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            return trimmed[scheme.len()..].trim_start();
        }
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&s)), "Some(*****)");
    }

    #[test]
    fn literal_is_refused() {
        let err = SecretRef::parse("sk-abc").unwrap_err();
        assert!(err.contains("literal key"));
        assert!(!err.contains("sk-abc"));
        assert!(SecretRef::parse("env:").is_err());
        assert!(SecretRef::parse("env:1X").is_err());
        assert!(SecretRef::parse("file:").is_err());
    }

    #[test]
    fn env_resolution_trims_and_strips_scheme() {
        let lookup = env(&[
            ("A", "  sk-1 \n"),
            ("B", "Bearer sk-2"),
            ("C", "token sk-3"),
            ("E", "  "),
        ]);
        let get = |name: &str| SecretRef::Env(name.into()).resolve(&lookup);
        assert_eq!(get("A").unwrap().expose(), "sk-1");
        assert_eq!(get("B").unwrap().expose(), "sk-2");
        assert_eq!(get("C").unwrap().expose(), "sk-3");
        assert!(matches!(get("E"), Err(Unresolved::Missing(_))));
        assert!(matches!(get("UNSET"), Err(Unresolved::Missing(_))));
    }

    #[test]
    fn file_resolution() {
        let dir = std::env::temp_dir().join(format!("kp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk-file\n").unwrap();
        let lookup = |_: &str| None;
        let got = SecretRef::File(path.clone()).resolve(&lookup).unwrap();
        assert_eq!(got.expose(), "sk-file");
        let missing = SecretRef::File(dir.join("nope")).resolve(&lookup);
        assert!(matches!(missing, Err(Unresolved::Missing(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
