//! The release keys the device trusts: files named in the config and inline keys.

use std::path::PathBuf;

use diffota_format::{FormatError, TrustedKeys};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("public key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bad(#[from] FormatError),
}

/// Loads the trusted keys named in the config.
pub fn trusted_keys(config: &Config) -> Result<TrustedKeys, KeysError> {
    let mut keys = TrustedKeys::new();
    for path in &config.public_keys {
        let text = diffota_files::local_file::read_bounded_text(
            path,
            crate::limits::SMALL_TEXT,
            diffota_files::local_file::Links::Follow,
        )
        .map_err(|source| KeysError::Read {
            path: path.clone(),
            source,
        })?;
        keys.add(&path.display().to_string(), &text)?;
    }
    for (number, text) in config.public_keys_inline.iter().enumerate() {
        keys.add(&format!("public_keys_inline[{number}]"), text)?;
    }
    Ok(keys)
}
