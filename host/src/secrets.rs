//! Secrets the host hands to the processor (`configure`'s key list): HMAC
//! keys for record MACs and keyed redaction. They live in files, never in a
//! policy, and are never logged.

use std::path::{Path, PathBuf};

/// A secret argument that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not of the form `ID=FILE`.
    #[error("secret '{0}' must be given as ID=FILE")]
    Syntax(String),
    /// The file could not be read.
    #[error("cannot read secret '{id}' from {path}: {source}")]
    Read {
        /// Key id.
        id: String,
        /// Key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("secret '{id}' in {path} is empty")]
    Empty {
        /// Key id.
        id: String,
        /// Key file.
        path: PathBuf,
    },
}

/// Reads `ID=FILE` arguments: the key is the file's exact bytes.
pub fn read_all(specs: &[String]) -> Result<Vec<(String, Vec<u8>)>, SecretError> {
    specs.iter().map(|spec| read_one(spec)).collect()
}

fn read_one(spec: &str) -> Result<(String, Vec<u8>), SecretError> {
    let (id, path) = spec
        .split_once('=')
        .filter(|(id, path)| !id.is_empty() && !path.is_empty())
        .ok_or_else(|| SecretError::Syntax(spec.to_owned()))?;
    let path = Path::new(path);
    let bytes =
        std::fs::read(path).map_err(|source| SecretError::Read { id: id.to_owned(), path: path.to_owned(), source })?;
    if bytes.is_empty() {
        return Err(SecretError::Empty { id: id.to_owned(), path: path.to_owned() });
    }
    Ok((id.to_owned(), bytes))
}
