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
    keys: Vec<(String, PublicKey)>,
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
        self.keys.push((label.to_owned(), key));
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
        for (label, key) in &self.keys {
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
