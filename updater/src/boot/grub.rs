//! GRUB's environment block (`grubenv`), as `grub-editenv` and GRUB's `save_env` write it:
//! exactly 1024 bytes, the header line `# GRUB Environment Block`, then `name=value` lines,
//! padded with `#`. In values a backslash escapes `\`, and a newline is written as `\n`
//! (backslash, newline). The file is replaced atomically (temporary file, fsync, rename),
//! so a power cut leaves the old block or the new one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{BootError, EnvError, EnvStore};

pub const BLOCK_SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

pub fn decode(bytes: &[u8]) -> Result<BTreeMap<String, String>, EnvError> {
    if bytes.len() != BLOCK_SIZE {
        return Err(EnvError::GrubBlockSize {
            length: bytes.len(),
        });
    }
    if !bytes.starts_with(HEADER.as_bytes()) {
        return Err(EnvError::GrubHeader);
    }
    let text = String::from_utf8_lossy(&bytes[HEADER.len()..]);
    let mut vars = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        // One logical line; `#` lines (comments, and the padding at the end) are skipped.
        let mut line = String::new();
        let mut complete = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => line.push(escaped),
                    None => break,
                },
                '\n' => {
                    complete = true;
                    break;
                }
                other => line.push(other),
            }
        }
        if !complete || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            vars.insert(name.to_owned(), value.to_owned());
        }
    }
    Ok(vars)
}

pub fn encode(vars: &BTreeMap<String, String>) -> Result<Vec<u8>, EnvError> {
    let mut out = String::from(HEADER);
    for (name, value) in vars {
        if name.is_empty() || name.contains(['=', '\n', '\\']) {
            return Err(EnvError::Unstorable { name: name.clone() });
        }
        out.push_str(name);
        out.push('=');
        for c in value.chars() {
            if c == '\\' || c == '\n' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    if out.len() > BLOCK_SIZE {
        return Err(EnvError::TooLarge {
            needed: out.len(),
            capacity: BLOCK_SIZE,
        });
    }
    let mut bytes = out.into_bytes();
    bytes.resize(BLOCK_SIZE, b'#');
    Ok(bytes)
}

pub struct GrubEnv {
    pub path: PathBuf,
}

impl EnvStore for GrubEnv {
    fn describe(&self) -> String {
        format!("GRUB environment {}", self.path.display())
    }

    fn load(&self) -> Result<BTreeMap<String, String>, BootError> {
        let bytes = diffota_files::local_file::read_bounded(
            &self.path,
            crate::limits::SMALL_TEXT,
            diffota_files::local_file::Links::Follow,
        )
        .map_err(BootError::io(&self.path))?;
        decode(&bytes).map_err(BootError::content(&self.path))
    }

    fn store(&self, vars: &BTreeMap<String, String>) -> Result<(), BootError> {
        let bytes = encode(vars).map_err(BootError::content(&self.path))?;
        diffota_files::atomic::replace(&self.path, &bytes).map_err(BootError::io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_escapes() {
        let vars: BTreeMap<String, String> =
            [("diffota_slot", "b"), ("odd", "back\\slash\nnewline")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let bytes = encode(&vars).unwrap();
        assert_eq!(bytes.len(), BLOCK_SIZE);
        assert!(bytes.ends_with(b"###"));
        assert_eq!(decode(&bytes).unwrap(), vars);
        assert!(decode(&bytes[..1000]).is_err());
        let mut with_comment = b"# GRUB Environment Block\n# WARNING: a comment\nx=1\n".to_vec();
        with_comment.resize(BLOCK_SIZE, b'#');
        assert_eq!(
            decode(&with_comment).unwrap().get("x").map(String::as_str),
            Some("1")
        );
        let mut bad = bytes.clone();
        bad[0] = b'x';
        assert!(decode(&bad).is_err());
    }
}
