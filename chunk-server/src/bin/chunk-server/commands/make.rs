//! Keys and releases: keygen, make, sign.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chunk_server::keys::{self, Password};
use chunk_server::make::release::{make_release, DeltaChoice, ReleaseImage};
use chunk_server::make::{creation_time, MakeOptions};
use chunk_server::store::Store;
use diffota_cli::outln;
use diffota_format::ChunkerParams;
use diffota_format::InstallKind;

use diffota_cli::unix_now as now;

use super::{show, signing_key};
use crate::cli::{MakeArgs, PasswordArgs};

pub fn keygen(
    secret_key: &Path,
    public_key: &Path,
    unencrypted: bool,
    password: &PasswordArgs,
    force: bool,
) -> Result<ExitCode> {
    let password = if unencrypted {
        Password::None
    } else {
        Password::from_sources(password.password_file.as_deref())?
    };
    keys::generate(secret_key, public_key, password, force)?;
    outln!(
        "secret key: {}\npublic key: {}",
        secret_key.display(),
        public_key.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The delta frames' zstd level unless `--delta-level` says otherwise (bench/README.md,
/// "Delta frames": the bytes and make time of each level on the roll-up pair).
const DEFAULT_DELTA_LEVEL: i32 = 16;

/// The image frames' zstd level when --delta-level does not set it: they serve a device
/// that lacks everything, whose download they are (on the bench's arm64-ext4 v2, level 19
/// took a wiped slot's download from 1.0212x `zstd -19` of the image to 1.0127x, for about
/// 15-20% more make time with image frames).
const DEFAULT_IMAGE_LEVEL: i32 = 19;

pub fn make(args: MakeArgs, json: bool) -> Result<ExitCode> {
    let MakeArgs {
        store,
        version,
        compatible,
        name,
        key,
        no_sign: _,
        password,
        avg_chunk_size,
        zstd_level,
        expires,
        delta_from,
        delta_from_image,
        delta_depth,
        no_delta,
        delta_level,
        no_delta_siblings,
        delta_siblings: _,
        image_frames,
        images,
        single_copy,
        image,
    } = args;
    let signing_key = key
        .as_deref()
        .map(|k| signing_key(k, &password))
        .transpose()?;
    let created = creation_time(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(), now())?;
    let release_images = release_images(&images, &single_copy)?;
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        progress_bar(match &image {
            Some(image) => image_size(image),
            None => release_images.iter().map(|i| image_size(&i.path)).sum(),
        })
    });
    let done_before = std::cell::Cell::new(0u64);
    let progress = |done: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done_before.get() + done);
        }
    };
    let store = Store::new(&store);
    let _lock = super::lock_store(&store, &format!("make {version}"))?;
    let deltas = if no_delta {
        DeltaChoice::Off
    } else if delta_from.is_empty() {
        DeltaChoice::Default { depth: delta_depth }
    } else {
        DeltaChoice::These(delta_from)
    };
    let delta_from = match &image {
        Some(_) => deltas
            .bases(&store, &name, &compatible, &version)
            .context("choosing the releases to write delta frames against")?,
        None => Vec::new(),
    };
    let options = MakeOptions {
        image: image.as_deref().unwrap_or(Path::new("")),
        version: &version,
        compatible: &compatible,
        name: &name,
        chunker: ChunkerParams::with_average(avg_chunk_size)?,
        zstd_level,
        created,
        expires: expires.map(|d| created + d.as_secs()),
        signing_key: signing_key.as_ref(),
        progress: &progress,
        delta_from: &delta_from,
        delta_level: delta_level.unwrap_or(zstd_level.max(DEFAULT_DELTA_LEVEL)),
        image_level: delta_level.unwrap_or(zstd_level.max(DEFAULT_IMAGE_LEVEL)),
        delta_siblings: !no_delta_siblings,
        image_frames,
        delta_from_images: &delta_from_image,
    };
    let Some(image) = &image else {
        let on_image = |next: &ReleaseImage| {
            if let Some(bar) = &bar {
                done_before.set(bar.position());
                bar.set_message(next.name.clone());
            }
        };
        let made = make_release(&store, &options, &deltas, &release_images, &on_image)
            .with_context(|| format!("making release {version}"))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        show(&made, json)?;
        return Ok(ExitCode::SUCCESS);
    };
    let summary = chunk_server::make::make(&store, &options)
        .with_context(|| format!("making release {version} from {}", image.display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    show(&summary, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `--image NAME=PATH` and `--single-copy NAME=PATH`, in the order given (slot images first).
fn release_images(images: &[String], single_copy: &[String]) -> Result<Vec<ReleaseImage>> {
    let parse = |text: &String, install: InstallKind| {
        let (name, path) = text.split_once('=').with_context(|| {
            format!("--image/--single-copy {text:?}: expected NAME=PATH, e.g. appfs=app.erofs")
        })?;
        Ok(ReleaseImage {
            name: name.to_owned(),
            path: PathBuf::from(path),
            install,
        })
    };
    images
        .iter()
        .map(|i| parse(i, InstallKind::Slot))
        .chain(
            single_copy
                .iter()
                .map(|i| parse(i, InstallKind::SingleCopy)),
        )
        .collect()
}

pub fn sign(key: &Path, password: &PasswordArgs, files: &[PathBuf]) -> Result<ExitCode> {
    let secret_key = signing_key(key, password)?;
    for file in files {
        let bytes = diffota_files::local_file::read_bounded(
            file,
            diffota_format::limits::INDEX,
            diffota_files::local_file::Links::Follow,
        )
        .with_context(|| format!("reading {}", file.display()))?;
        let comment = format!(
            "diffota {}",
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let signature = chunk_server::keys::sign_file(file, &bytes, &secret_key, &comment)?;
        outln!("{}", signature.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn image_size(path: &Path) -> u64 {
    use std::io::Seek;
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .unwrap_or(0)
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
