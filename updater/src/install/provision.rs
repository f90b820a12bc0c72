//! `diffota provision`: the device learns which release its running slot holds when that
//! slot was not written by diffota (the factory image, flashed at the factory or by an
//! integrator). The release comes from the store as for an install (signed, compatible,
//! not expired); the running slot's first `image_length` bytes must hash to the release's
//! image hash. Only then is the slot recorded as that release, good, with the signed index
//! as its seed: `status` names it, `rollback` to it is allowed, and the next install
//! fetches the index delta from it.
//!
//! A release of several images may also name single-copy images: a target with a `device`
//! whose first bytes are the image is recorded as holding it, so the first install skips it;
//! a handler's target cannot be read back and is left to the first install that carries it.

use std::sync::atomic::Ordering;

use diffota_format::hex32;

use super::{prepare, verify::hash_stored_image, Device, InstallError, Prepared};
use crate::release::ReleaseTarget;
use crate::slot::Slot;
use crate::source::Traffic;
use crate::state::SlotRecord;
use crate::system;

/// What `provision` found and recorded.
#[derive(Debug, serde::Serialize)]
pub struct ProvisionReport {
    pub slot: Slot,
    pub version: String,
    /// Already recorded as this release: nothing was written.
    pub already_recorded: bool,
    pub metadata_bytes: u64,
    /// Single-copy targets found holding their image of the release, now recorded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub single_copy_recorded: Vec<String>,
    /// Single-copy targets not recorded (a handler's, or a device that does not hold the
    /// image): the first install that carries their image writes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub single_copy_left: Vec<String>,
}

impl std::fmt::Display for ProvisionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.already_recorded {
            write!(
                f,
                "slot {} is already recorded as {}",
                self.slot, self.version
            )?;
        } else {
            write!(
                f,
                "slot {} holds release {} (its image matches the signed release): recorded as good",
                self.slot, self.version
            )?;
        }
        for name in &self.single_copy_recorded {
            write!(
                f,
                "\nsingle-copy target {name} holds its image of {}: recorded",
                self.version
            )?;
        }
        for name in &self.single_copy_left {
            write!(f, "\nsingle-copy target {name}: not recorded (a handler's target, or it does not hold the image); the first install that carries it writes it")?;
        }
        Ok(())
    }
}

pub async fn provision(
    device: &Device<'_>,
    target: &ReleaseTarget,
) -> Result<ProvisionReport, InstallError> {
    let traffic = Traffic::default();
    let Prepared {
        release,
        mut machine,
        running,
    } = prepare(device, super::Running::load(device)?, target, &traffic).await?;
    let index = &release.index;
    let already_recorded = machine
        .state()
        .slot(running)
        .is_some_and(|r| r.version == index.version && r.image_hash == hex32(&index.image_hash));
    if !already_recorded {
        // Every image of the slot group must be the release's, byte for byte.
        let group = std::iter::once((crate::config::ROOTFS, index))
            .chain(release.images.iter().map(|i| (i.name.as_str(), &i.index)));
        for (name, image_index) in group {
            let path = super::seeds::image_slot_path(device, name, running);
            let actual = hash_stored_image(path, image_index.image_length)?;
            if actual != image_index.image_hash {
                return Err(InstallError::NotThisRelease {
                    slot: running,
                    version: format!("{} (image {name}, {})", index.version, path.display()),
                    length: image_index.image_length,
                    expected: hex32(&image_index.image_hash),
                    actual: hex32(&actual),
                });
            }
        }
        machine.record_provisioned(
            running,
            SlotRecord {
                images: super::group::records(&release),
                version: index.version.clone(),
                image_hash: hex32(&index.image_hash),
                image_length: index.image_length,
                installed_at: system::now(),
                good: true,
            },
            &index.to_bytes(),
            &release.index_signature,
            &super::group::seed_indexes(&release),
        )?;
        tracing::info!(event = "provisioned", slot = %running, version = %index.version);
    }
    let (mut single_copy_recorded, mut single_copy_left) = (Vec::new(), Vec::new());
    for image in &release.single_copy {
        if super::single::holds(machine.state(), image) {
            continue;
        }
        let index = &image.index;
        let held = device.config.single_copy[&image.name]
            .device
            .as_deref()
            .and_then(|path| hash_stored_image(path, index.image_length).ok())
            .is_some_and(|actual| actual == index.image_hash);
        if !held {
            single_copy_left.push(image.name.clone());
            continue;
        }
        super::single::record_held(&mut machine, image)?;
        single_copy_recorded.push(image.name.clone());
    }
    Ok(ProvisionReport {
        slot: running,
        version: index.version.clone(),
        already_recorded,
        metadata_bytes: traffic.bytes.load(Ordering::Relaxed),
        single_copy_recorded,
        single_copy_left,
    })
}
