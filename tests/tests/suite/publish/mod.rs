//! The publishing side end to end: `chunk-server` make, verify, diff, sign, prune and serve,
//! with the real binaries, and minisign interop with Debian's `minisign`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use diffota_tests::fleet::Fleet;
use diffota_tests::sample::write_image;
use diffota_tests::*;

mod keys;
mod make;
mod prune;
mod pull;
mod serve;
mod verify;

fn sample(dir: &Path, name: &str, mib: u64, release: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    write_image(&path, mib << 20, 11, release).unwrap();
    path
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn pack_files(store: &Path) -> Vec<std::path::PathBuf> {
    let mut packs: Vec<_> = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort();
    packs
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            }
            found.push(path);
        }
    }
    found
}

fn verify_store(store: &Path, keys: &Keys) -> std::process::Output {
    run(chunk_server()
        .arg("verify")
        .arg("--public-key")
        .arg(&keys.public)
        .arg(store))
}

const MIB_USIZE: usize = 1 << 20;

/// `image` with a byte changed every 4 KiB from `first` to `last` MiB: a rebuilt binary, the
/// kind of change delta frames exist for.
fn edited_copy(image: &Path, out: &Path, first: usize, last: usize, xor: u8) {
    let mut bytes = std::fs::read(image).unwrap();
    for at in (first * MIB_USIZE..last * MIB_USIZE).step_by(4096) {
        bytes[at] ^= xor;
    }
    std::fs::write(out, bytes).unwrap();
}
