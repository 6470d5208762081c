//! The strict configuration loader every process uses: the file is read with a size bound,
//! parsed as TOML into a type whose structs refuse unknown keys (`#[serde(deny_unknown_fields)]`
//! on each, which the loader cannot add for them), and every path in it is resolved against the
//! file's directory; the files it names are checked readable before anything binds. Errors name
//! the file, the key and the problem.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The largest configuration file read: a configuration is a few kilobytes; a bigger file is a
/// mistake (a key or a log given as the configuration), refused before it is parsed.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: larger than {limit} bytes; is this the configuration file?")]
    TooLarge { path: PathBuf, limit: u64 },
    /// Not valid TOML, a wrong type, an unknown key, or a check of the values failed.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A file the configuration names cannot be read.
    #[error("{path}: {key}: cannot read {file}: {source}")]
    File { path: PathBuf, key: String, file: PathBuf, source: std::io::Error },
}

/// A configuration file read into memory, for parsing and for resolving the paths it names.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    dir: PathBuf,
    text: String,
}

impl ConfigFile {
    /// Reads `path`, refusing files over [`MAX_CONFIG_BYTES`].
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read { path: path.into(), source };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: path.into(), limit: MAX_CONFIG_BYTES });
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self { path: path.into(), dir, text })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Parses the text with `parse` (TOML plus the type's own checks), naming the file on error.
    pub fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(&self.text).map_err(|message| self.invalid(message))
    }

    /// An error about this file.
    pub fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.clone(), message: message.into() }
    }

    /// Makes a relative path relative to the file's directory (a directory, or a file that
    /// need not exist yet).
    pub fn resolve(&self, p: &mut PathBuf) {
        if p.is_relative() {
            *p = self.dir.join(&*p);
        }
    }

    /// Resolves a file the configuration names under `key` and checks it can be read now.
    pub fn input(&self, key: &str, p: &mut PathBuf) -> Result<(), ConfigError> {
        self.resolve(p);
        check_input(&self.path, key, p)
    }
}

/// Checks that `file`, named under `key` in the configuration file `config`, is a regular file
/// this process can read. For files that are made after the configuration is written (a
/// credential made by an `init` step), a process calls this just before it binds.
pub fn check_input(config: &Path, key: &str, file: &Path) -> Result<(), ConfigError> {
    let err = |source| ConfigError::File { path: config.into(), key: key.into(), file: file.into(), source };
    let meta = std::fs::metadata(file).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    std::fs::File::open(file).map(drop).map_err(err)
}

/// Parses TOML text into `T` (whose structs refuse unknown keys), with the parser's message
/// (line, column and key) on error.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        cert: PathBuf,
    }

    #[test]
    fn paths_resolve_against_the_file_and_inputs_are_checked_with_file_key_and_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.toml");
        std::fs::write(&path, "cert = \"c.pem\"\n").expect("write");
        let file = ConfigFile::read(&path).expect("read");
        let mut c: Example = file.parse(from_toml).expect("parse");
        let err = file.input("cert", &mut c.cert).expect_err("missing");
        let text = err.to_string();
        assert!(text.contains("x.toml") && text.contains("cert") && text.contains("c.pem"), "{text}");
        assert_eq!(c.cert, dir.path().join("c.pem"));
        std::fs::write(dir.path().join("c.pem"), "x").expect("write");
        file.input("cert", &mut c.cert).expect("now readable");
        let mut a_dir = PathBuf::from(".");
        assert!(file.input("cert", &mut a_dir).is_err(), "a directory is not a file");

        std::fs::write(&path, "cert = \"c.pem\"\ncolour = 1\n").expect("write");
        let err = ConfigFile::read(&path).expect("read").parse(from_toml::<Example>).expect_err("unknown");
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");

        std::fs::write(&path, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).expect("write");
        assert!(matches!(ConfigFile::read(&path), Err(ConfigError::TooLarge { .. })));
    }
}
