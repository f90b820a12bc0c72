//! The release manifest (`releases/<version>/release.json`, signed like an index): a release
//! of several images. It names each image, how the device installs it, and pins its index by
//! length and BLAKE3, so that the one signature over the manifest covers everything a device
//! acts on. Each image keeps its own index (`releases/<version>/<name>.didx`), chunked into
//! the same store: chunks dedup across the images of a release and across releases, and
//! delta frames, seeds and bundles work per image as for a one-image release.
//!
//! ```json
//! {
//!   "format": 1,
//!   "version": "3.0",
//!   "compatible": "acme-board",
//!   "created_at": 1790000000,
//!   "images": [
//!     { "name": "rootfs", "install": "slot", "index_length": 41234, "index_blake3": "…",
//!       "image_length": 268435456, "image_blake3": "…" },
//!     { "name": "appfs", "install": "slot", … },
//!     { "name": "mcu", "install": "single-copy", … }
//!   ]
//! }
//! ```
//!
//! `install`: `slot` images go into the inactive slot of their A/B pair and switch together
//! with the other `slot` images of the release (a slot group); `single-copy` images are
//! written once per release to a target with one copy (a bootloader, a second processor's
//! firmware), after every `slot` image was verified. A channel points at a manifest the way it
//! points at an index: its `release.index` names `releases/<version>/release.json`.
//! Diffota releases before manifests refuse such a channel (the file is not an index).

use serde::{Deserialize, Serialize};

use crate::FormatError;

pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest's file name inside `releases/<version>/`.
pub const MANIFEST_FILE: &str = "release.json";
/// A manifest is small; a larger file is refused before it is parsed.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Images per release.
pub const MAX_IMAGES: usize = 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    pub compatible: String,
    /// Unix seconds.
    pub created_at: u64,
    pub images: Vec<ManifestImage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestImage {
    /// `[a-z0-9_-]`, 1 to 32 characters; its index is `releases/<version>/<name>.didx`.
    pub name: String,
    pub install: InstallKind,
    pub index_length: u64,
    /// BLAKE3-256 of the index file, hex.
    pub index_blake3: String,
    pub image_length: u64,
    /// BLAKE3-256 of the image, hex (as the index says).
    pub image_blake3: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallKind {
    /// Into the inactive slot of the image's A/B pair, switched with the release's other
    /// slot images.
    Slot,
    /// Once per release, to a target with a single copy, after the slot images verified.
    SingleCopy,
}

impl std::fmt::Display for InstallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstallKind::Slot => "slot",
            InstallKind::SingleCopy => "single-copy",
        })
    }
}

/// Why bytes are not a manifest this build accepts.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} bytes, more than a manifest may have ({MAX_MANIFEST_BYTES})")]
    TooLarge(usize),
    #[error("format {0} is not supported (this build reads format {MANIFEST_FORMAT})")]
    Format(u32),
    #[error("it names no images")]
    NoImages,
    #[error("it names {0} images, more than {MAX_IMAGES}")]
    TooManyImages(usize),
    #[error("image name {0:?}: 1 to 32 characters of a-z, 0-9, _ and -")]
    ImageName(String),
    #[error("image {0} is named twice")]
    DuplicateImage(String),
    #[error("no image is installed into a slot: a release needs at least one A/B image to boot on trial")]
    NoSlotImage,
    #[error("image {name}: {field} is not 64 hex digits")]
    Hash { name: String, field: &'static str },
}

/// Whether `name` may name an image (and its index file).
pub fn valid_image_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Manifest {
    /// Parses and validates manifest bytes (after their signature was checked).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, FormatError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestProblem::TooLarge(bytes.len()).into());
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| FormatError::BadManifest(e.into()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serializes");
        out.push(b'\n');
        out
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestProblem::Format(self.format).into());
        }
        crate::index::validate_version(&self.version)?;
        crate::index::validate_compatible(&self.compatible)?;
        if self.images.is_empty() {
            return Err(ManifestProblem::NoImages.into());
        }
        if self.images.len() > MAX_IMAGES {
            return Err(ManifestProblem::TooManyImages(self.images.len()).into());
        }
        for (i, image) in self.images.iter().enumerate() {
            if !valid_image_name(&image.name) {
                return Err(ManifestProblem::ImageName(image.name.clone()).into());
            }
            if self.images[..i]
                .iter()
                .any(|other| other.name == image.name)
            {
                return Err(ManifestProblem::DuplicateImage(image.name.clone()).into());
            }
            for (field, hex) in [
                ("index_blake3", &image.index_blake3),
                ("image_blake3", &image.image_blake3),
            ] {
                if crate::parse_hex32(hex).is_err() {
                    return Err(ManifestProblem::Hash {
                        name: image.name.clone(),
                        field,
                    }
                    .into());
                }
            }
        }
        if !self.images.iter().any(|i| i.install == InstallKind::Slot) {
            return Err(ManifestProblem::NoSlotImage.into());
        }
        Ok(())
    }

    pub fn image(&self, name: &str) -> Option<&ManifestImage> {
        self.images.iter().find(|i| i.name == name)
    }

    /// The store path of `image`'s index.
    pub fn index_path(&self, image: &ManifestImage) -> String {
        format!("releases/{}/{}.didx", self.version, image.name)
    }

    /// The store path of this release's manifest.
    pub fn path(version: &str) -> String {
        format!("releases/{version}/{MANIFEST_FILE}")
    }
}

impl Manifest {
    /// Whether `index_bytes` (decoded: `index`) are the index this manifest pins for `image`:
    /// its length and BLAKE3, the image it describes, and this release's version and
    /// compatible. What a device, `pull` and `verify` all check before using an index.
    pub fn pins(&self, image: &ManifestImage, index_bytes: &[u8], index: &crate::Index) -> bool {
        image.index_length == index_bytes.len() as u64
            && crate::hex32(blake3::hash(index_bytes).as_bytes()) == image.index_blake3
            && index.image_length == image.image_length
            && crate::hex32(&index.image_hash) == image.image_blake3
            && index.version == self.version
            && index.compatible == self.compatible
    }
}

/// Whether a store path names a manifest rather than an index.
pub fn is_manifest_path(path: &str) -> bool {
    path.rsplit('/').next() == Some(MANIFEST_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, install: InstallKind) -> ManifestImage {
        ManifestImage {
            name: name.into(),
            install,
            index_length: 100,
            index_blake3: "ab".repeat(32),
            image_length: 4096,
            image_blake3: "cd".repeat(32),
        }
    }

    fn manifest(images: Vec<ManifestImage>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            version: "3.0".into(),
            compatible: "acme-board".into(),
            created_at: 1_790_000_000,
            images,
        }
    }

    #[test]
    fn a_manifest_reads_back_the_same() {
        let written = manifest(vec![
            image("rootfs", InstallKind::Slot),
            image("appfs", InstallKind::Slot),
            image("mcu", InstallKind::SingleCopy),
        ]);
        let bytes = written.to_json();
        assert_eq!(Manifest::parse(&bytes).unwrap(), written);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"install\": \"single-copy\""), "{text}");
        assert!(is_manifest_path(&Manifest::path("3.0")));
        assert!(!is_manifest_path("releases/3.0/rootfs.didx"));
        assert_eq!(
            written.index_path(&written.images[1]),
            "releases/3.0/appfs.didx"
        );
    }

    #[test]
    fn what_a_manifest_may_not_be_is_named() {
        let problem = |m: Manifest| Manifest::parse(&m.to_json()).unwrap_err().to_string();
        assert!(problem(manifest(vec![])).contains("names no images"));
        assert!(
            problem(manifest(vec![image("mcu", InstallKind::SingleCopy)]))
                .contains("at least one A/B image")
        );
        assert!(problem(manifest(vec![
            image("rootfs", InstallKind::Slot),
            image("rootfs", InstallKind::Slot)
        ]))
        .contains("image rootfs is named twice"));
        assert!(problem(manifest(vec![image("../etc", InstallKind::Slot)])).contains("image name"));
        let mut bad_hash = image("rootfs", InstallKind::Slot);
        bad_hash.index_blake3 = "xyz".into();
        assert!(problem(manifest(vec![bad_hash])).contains("index_blake3"));
        let mut future = manifest(vec![image("rootfs", InstallKind::Slot)]);
        future.format = 2;
        assert!(problem(future).contains("format 2 is not supported"));
        let unknown =
            br#"{"format":1,"version":"1","compatible":"c","created_at":0,"images":[],"hooks":[]}"#;
        assert!(Manifest::parse(unknown)
            .unwrap_err()
            .to_string()
            .contains("unknown field `hooks`"));
        assert!(Manifest::parse(&vec![b' '; MAX_MANIFEST_BYTES + 1])
            .unwrap_err()
            .to_string()
            .contains("more than a manifest may have"));
        assert!(Manifest::parse(b"DFOTAIDX").is_err());
    }

    #[test]
    fn image_names_are_file_names() {
        for good in ["rootfs", "appfs", "mcu-fw_2"] {
            assert!(valid_image_name(good), "{good}");
        }
        for bad in ["", "RootFS", "a/b", "..", "x".repeat(33).as_str(), "app fs"] {
            assert!(!valid_image_name(bad), "{bad}");
        }
    }
}
