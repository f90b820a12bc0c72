//! Signature checks with minisign (Ed25519, pre-hashed or legacy as `minisign` writes them).
//!
//! Nothing unsigned is acted on: `SignedIndex::verify` checks the detached signature over the
//! raw bytes before the decoder sees them, and only then produces a `VerifiedIndex`. Several
//! keys may be trusted at once, which is how keys are rotated.

use std::path::{Path, PathBuf};

use minisign_verify::{PublicKey, Signature};

/// What a signature file's name adds to the name of the file it signs.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The signature file beside `path`: `<path>.minisig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// The signature of a store file, by its path inside the store: `<relative>.minisig`.
pub fn signature_of(relative: &str) -> String {
    format!("{relative}{SIGNATURE_SUFFIX}")
}

use crate::index::Index;
use crate::FormatError;

/// The public keys a device (or `chunk-server verify`) accepts signatures from.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    /// Label, key, and the key id as minisign prints it (for messages).
    keys: Vec<(String, PublicKey, String)>,
}

/// The key id of a minisign public key or signature file's text, as `minisign` prints it
/// (16 upper-case hex digits): the 8 bytes after the 2-byte algorithm of its base64 line,
/// little-endian. None when the text has no such line.
pub fn key_id(text: &str) -> Option<String> {
    use base64::Engine;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

impl TrustedKeys {
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Adds a key given as a minisign public key file's text or its base64 line alone.
    /// `label` names the key in errors and logs (a path, a config entry).
    pub fn add(&mut self, label: &str, text: &str) -> Result<(), FormatError> {
        let trimmed = text.trim();
        let key = if trimmed.starts_with("untrusted comment:") {
            PublicKey::decode(trimmed)
        } else {
            PublicKey::from_base64(trimmed)
        }
        .map_err(|reason| FormatError::BadPublicKey {
            label: label.to_owned(),
            reason,
        })?;
        let id = key_id(trimmed).unwrap_or_else(|| "?".to_owned());
        self.keys.push((label.to_owned(), key, id));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Verifies `signature_text` (a `.minisig` file) over `data`; returns the label of the
    /// key that made it.
    pub fn verify(
        &self,
        what: &str,
        data: &[u8],
        signature_text: &str,
    ) -> Result<String, FormatError> {
        let signature =
            Signature::decode(signature_text).map_err(|reason| FormatError::BadSignatureFile {
                what: what.to_owned(),
                reason,
            })?;
        if self.keys.is_empty() {
            return Err(FormatError::NoTrustedKeys);
        }
        let mut last_error = None;
        for (label, key, _) in &self.keys {
            match key.verify(data, &signature, true) {
                Ok(()) => return Ok(label.clone()),
                Err(minisign_verify::Error::UnexpectedKeyId) => {}
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            Some(reason) => Err(FormatError::SignatureInvalid {
                what: what.to_owned(),
                reason,
            }),
            None => Err(FormatError::UntrustedKey {
                what: what.to_owned(),
                signed_by: key_id(signature_text).unwrap_or_else(|| "?".to_owned()),
                trusted: self
                    .keys
                    .iter()
                    .map(|(label, _, id)| format!("{id} ({label})"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Index bytes and their detached signature as fetched, not yet trusted.
pub struct SignedIndex<'a> {
    pub bytes: &'a [u8],
    pub signature: &'a str,
}

/// An index whose signature was checked against a trusted key and which then decoded.
#[derive(Clone, Debug)]
pub struct VerifiedIndex {
    index: Index,
    signed_by: String,
}

impl SignedIndex<'_> {
    pub fn verify(&self, keys: &TrustedKeys) -> Result<VerifiedIndex, FormatError> {
        let signed_by = keys.verify("release index", self.bytes, self.signature)?;
        let index = Index::decode(self.bytes)?;
        Ok(VerifiedIndex { index, signed_by })
    }
}

impl VerifiedIndex {
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The exact signed bytes, for storing as a slot's seed index: the decoder accepts only
    /// the canonical encoding (the `index` fuzz target checks that every index it accepts
    /// encodes back to its bytes), so they are rebuilt rather than kept beside the decoded
    /// index, which would double what the device holds.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.index.to_bytes()
    }

    pub fn signed_by(&self) -> &str {
        &self.signed_by
    }
}

impl std::ops::Deref for VerifiedIndex {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key of minisign's own documentation, whose comment names its id.
    const PUBLIC: &str = "untrusted comment: minisign public key E7620F1842B4E81F\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n";

    #[test]
    fn key_ids_read_as_minisign_prints_them() {
        assert_eq!(key_id(PUBLIC).as_deref(), Some("E7620F1842B4E81F"));
        assert_eq!(
            key_id("RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3").as_deref(),
            Some("E7620F1842B4E81F")
        );
        assert_eq!(key_id("untrusted comment: nothing else"), None);
        assert_eq!(key_id("not base64 !!!"), None);
    }

    #[test]
    fn an_untrusted_signature_names_its_key_and_the_trusted_ones() {
        let mut keys = TrustedKeys::new();
        keys.add("/etc/diffota/release.pub", PUBLIC).unwrap();
        // A signature by another key (id 0102030405060708): its base64 line starts with
        // the algorithm and that id.
        use base64::Engine;
        let mut raw = b"Ed".to_vec();
        raw.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        raw.extend_from_slice(&[0u8; 64]);
        let line = base64::engine::general_purpose::STANDARD.encode(&raw);
        let global = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
        let signature = format!("untrusted comment: s\n{line}\ntrusted comment: x\n{global}\n");
        let error = keys
            .verify("channels/stable.json", b"data", &signature)
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("signed by key 0102030405060708, which is not trusted (trusted: E7620F1842B4E81F (/etc/diffota/release.pub))"),
            "{text}"
        );
    }
}
