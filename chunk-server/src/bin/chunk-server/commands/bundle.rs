use std::process::ExitCode;

use anyhow::{bail, Result};
use chunk_server::bundle::ImageBundle;
use chunk_server::store::Store;

use diffota_cli::unix_now as now;

use super::{show, signing_key};
use crate::cli::BundleArgs;

pub fn run(args: BundleArgs, json: bool) -> Result<ExitCode> {
    let BundleArgs {
        store,
        to,
        from,
        name,
        to_image,
        from_image,
        version,
        compatible,
        key,
        password,
        zstd_level,
        out,
    } = args;
    let summary = match (store, to, to_image, key) {
        (Some(store), Some(to), None, _) => {
            let store = Store::new(&store);
            let _lock = super::lock_store(&store, &format!("bundle {to}"))?;
            chunk_server::bundle::bundle(&store, &to, &from, name.as_deref(), &out)?
        }
        (None, None, Some(to_image), Some(key)) => {
            let signing_key = signing_key(&key, &password)?;
            let images = ImageBundle {
                from_images: &from_image,
                to_image: &to_image,
                version: version.as_deref().unwrap_or_default(),
                compatible: compatible.as_deref().unwrap_or_default(),
                signing_key: &signing_key,
                zstd_level,
                created: now(),
            };
            chunk_server::bundle::bundle_from_images(&images, &out)?
        }
        _ => bail!("give --store and --to, or --to-image with --key"),
    };
    show(&summary, json)?;
    Ok(ExitCode::SUCCESS)
}
