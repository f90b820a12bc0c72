//! A release of several images (`make --image NAME=PATH ...`): each image is made as a
//! one-image release under its own name into the same store (so its chunks dedup against the
//! images made before it, and its delta frames are against older releases of the same
//! name), then the signed manifest that pins every image's index is written, last: a
//! manifest never names an index that is not there yet.

use std::path::{Path, PathBuf};

use diffota_format::manifest::{valid_image_name, InstallKind, Manifest, ManifestImage};
use diffota_format::{hex32, Index};

use super::base_releases::default_delta_bases;
use super::{make, MakeError, MakeOptions, MakeSummary};
use crate::store::{io_error, Store};

/// One image of the release and how devices install it.
#[derive(Clone, Debug)]
pub struct ReleaseImage {
    pub name: String,
    pub path: PathBuf,
    pub install: InstallKind,
}

/// Which releases each image's delta frames are against.
#[derive(Clone, Debug)]
pub enum DeltaChoice {
    /// `default_delta_bases` of each image's name: the `depth` newest older releases and a
    /// channel target (`--delta-depth`).
    Default { depth: usize },
    /// No delta frames (`--no-delta`).
    Off,
    /// These versions, for every image (`--delta-from`), each once.
    These(Vec<String>),
}

impl DeltaChoice {
    pub fn bases(
        &self,
        store: &Store,
        name: &str,
        compatible: &str,
        version: &str,
    ) -> Result<Vec<String>, MakeError> {
        match self {
            DeltaChoice::Default { depth } => {
                default_delta_bases(store, name, compatible, version, *depth)
            }
            DeltaChoice::Off => Ok(Vec::new()),
            DeltaChoice::These(versions) => {
                let mut named = std::collections::HashSet::new();
                Ok(versions
                    .iter()
                    .filter(|v| named.insert(v.as_str()))
                    .cloned()
                    .collect())
            }
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct ReleaseMade {
    pub version: String,
    pub manifest: PathBuf,
    pub signed: bool,
    pub images: Vec<ImageMade>,
}

#[derive(Debug, serde::Serialize)]
pub struct ImageMade {
    pub name: String,
    pub install: InstallKind,
    #[serde(flatten)]
    pub summary: MakeSummary,
}

/// The names are image names, each once, and at least one image goes into a slot.
pub fn check_images(images: &[ReleaseImage]) -> Result<(), MakeError> {
    for (i, image) in images.iter().enumerate() {
        if !valid_image_name(&image.name) {
            return Err(MakeError::Images(format!(
                "image name {:?}: 1 to 32 characters of a-z, 0-9, _ and - (it names the index file)",
                image.name
            )));
        }
        if images[..i].iter().any(|other| other.name == image.name) {
            return Err(MakeError::Images(format!(
                "image {} is given twice",
                image.name
            )));
        }
    }
    if !images.iter().any(|i| i.install == InstallKind::Slot) {
        return Err(MakeError::Images(
            "no --image: a release needs at least one A/B image (--single-copy images are written besides one)".into(),
        ));
    }
    Ok(())
}

/// Makes every image of `images` with `options` (its `image` and `name` replaced per image),
/// then writes and signs the manifest. `progress` is told which image is being made.
pub fn make_release(
    store: &Store,
    options: &MakeOptions,
    deltas: &DeltaChoice,
    images: &[ReleaseImage],
    on_image: &dyn Fn(&ReleaseImage),
) -> Result<ReleaseMade, MakeError> {
    check_images(images)?;
    let mut made = Vec::new();
    let mut pinned = Vec::new();
    for image in images {
        on_image(image);
        let bases = deltas.bases(store, &image.name, options.compatible, options.version)?;
        let summary = make(
            store,
            &MakeOptions {
                image: &image.path,
                name: &image.name,
                delta_from: &bases,
                // A base image is one image's; the command refuses it with several.
                delta_from_images: &[],
                ..*options
            },
        )?;
        pinned.push(pin(&summary.index, image)?);
        made.push(ImageMade {
            name: image.name.clone(),
            install: image.install,
            summary,
        });
    }
    let manifest = Manifest {
        format: diffota_format::manifest::MANIFEST_FORMAT,
        version: options.version.to_owned(),
        compatible: options.compatible.to_owned(),
        created_at: options.created,
        images: pinned,
    };
    manifest.validate()?;
    let path = publish_manifest(store, &manifest, options.signing_key)?;
    Ok(ReleaseMade {
        version: options.version.to_owned(),
        signed: diffota_format::signature::signature_path(&path).exists(),
        manifest: path,
        images: made,
    })
}

/// The manifest's entry for the index `make` just published at `index_path`.
fn pin(index_path: &Path, image: &ReleaseImage) -> Result<ManifestImage, MakeError> {
    let bytes = fs_err::read(index_path).map_err(io_error(index_path))?;
    let index = Index::decode(&bytes)?;
    Ok(ManifestImage {
        name: image.name.clone(),
        install: image.install,
        index_length: bytes.len() as u64,
        index_blake3: hex32(blake3::hash(&bytes).as_bytes()),
        image_length: index.image_length,
        image_blake3: hex32(&index.image_hash),
    })
}

/// Writes the manifest unless the same one is there (made again: kept, with its signature);
/// another manifest under the version is an error, releases being immutable.
fn publish_manifest(
    store: &Store,
    manifest: &Manifest,
    signing_key: Option<&minisign::SecretKey>,
) -> Result<PathBuf, MakeError> {
    let path = store.manifest_path(&manifest.version);
    let existing = if path.exists() {
        Some(crate::store::read_manifest(&path)?)
    } else {
        None
    };
    let bytes = match existing {
        Some(existing)
            if existing.images == manifest.images && existing.compatible == manifest.compatible =>
        {
            existing.to_json()
        }
        Some(_) => {
            return Err(MakeError::ReleaseExists {
                path,
                version: manifest.version.clone(),
            })
        }
        None => {
            let bytes = manifest.to_json();
            crate::fsutil::write_atomic(&path, &bytes).map_err(io_error(&path))?;
            bytes
        }
    };
    if let Some(key) = signing_key {
        if !diffota_format::signature::signature_path(&path).exists() {
            crate::keys::sign_file(
                &path,
                &bytes,
                key,
                &format!("diffota release {} manifest", manifest.version),
            )?;
        }
    }
    Ok(path)
}

impl std::fmt::Display for ReleaseMade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "release {} of {} images -> {}{}",
            self.version,
            self.images.len(),
            self.manifest.display(),
            if self.signed { "" } else { " (unsigned)" }
        )?;
        for image in &self.images {
            writeln!(
                f,
                "image {} ({}): {}",
                image.name, image.install, image.summary
            )?;
        }
        Ok(())
    }
}
