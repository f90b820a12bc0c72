//! U-Boot environment, read and written directly in the layout of libubootenv's
//! `fw_setenv` / U-Boot's `saveenv`:
//!
//! | copy layout | offset | size | meaning |
//! |---|---|---|---|
//! | single    | 0 | 4 | CRC32 (zlib) of the data area, little-endian |
//! | single    | 4 | size - 4 | `name=value\0` … `\0`, rest zero |
//! | redundant | 0 | 4 | CRC32 of the data area |
//! | redundant | 4 | 1 | flags: a counter that grows by one with every write |
//! | redundant | 5 | size - 5 | data, as above |
//!
//! With two copies, the current one is the valid copy with the higher counter (255 → 0
//! wraps: a 0 beside a 255 is newer). A write goes to the other copy with the counter plus
//! one, and is flushed before it can become current, so a power cut leaves one valid copy.
//! Devices, offsets and sizes come from a file in the format of `/etc/fw_env.config`.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{BootError, EnvError, EnvStore};
use crate::check::Check;

/// One copy of the environment: where it lives and how big it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvLocation {
    pub path: PathBuf,
    pub offset: u64,
    pub size: usize,
}

/// What is wrong with an `fw_env.config`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FwEnvConfigError {
    #[error("line {line}: expected `device offset size`")]
    Fields { line: usize },
    #[error("line {line}: {text:?} is not a number")]
    NotANumber { line: usize, text: String },
    #[error("line {line}: size {text:?} is not hex")]
    SizeNotHex { line: usize, text: String },
    #[error("line {line}: environment size {size} is out of range")]
    SizeOutOfRange { line: usize, size: u64 },
    #[error("the two copies have different sizes")]
    DifferentSizes,
    #[error("no environment location")]
    NoLocation,
    #[error("more than two environment locations")]
    TooManyLocations,
}

/// Parses the lines of an `fw_env.config`: `device offset size [sector-size [sectors]]`,
/// `#` comments; one line for a single copy, two for redundant copies.
pub fn parse_fw_env_config(text: &str) -> Result<Vec<EnvLocation>, FwEnvConfigError> {
    let mut locations = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            return Err(FwEnvConfigError::Fields { line: line_number });
        }
        let offset = match fields[1]
            .strip_prefix("0x")
            .or_else(|| fields[1].strip_prefix("0X"))
        {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => fields[1].parse::<u64>(),
        }
        .map_err(|_| FwEnvConfigError::NotANumber {
            line: line_number,
            text: fields[1].to_owned(),
        })?;
        // libubootenv reads the size as hex even without 0x.
        let size = u64::from_str_radix(
            fields[2].trim_start_matches("0x").trim_start_matches("0X"),
            16,
        )
        .map_err(|_| FwEnvConfigError::SizeNotHex {
            line: line_number,
            text: fields[2].to_owned(),
        })?;
        if !(16..=16 * 1024 * 1024).contains(&size) {
            return Err(FwEnvConfigError::SizeOutOfRange {
                line: line_number,
                size,
            });
        }
        locations.push(EnvLocation {
            path: PathBuf::from(fields[0]),
            offset,
            size: size as usize,
        });
    }
    match locations.len() {
        1 => Ok(locations),
        2 if locations[0].size != locations[1].size => Err(FwEnvConfigError::DifferentSizes),
        2 => Ok(locations),
        0 => Err(FwEnvConfigError::NoLocation),
        _ => Err(FwEnvConfigError::TooManyLocations),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvCopy {
    pub valid: bool,
    pub flags: u8,
    pub vars: BTreeMap<String, String>,
}

pub fn decode_copy(bytes: &[u8], redundant: bool) -> EnvCopy {
    let header = if redundant { 5 } else { 4 };
    if bytes.len() <= header {
        return EnvCopy {
            valid: false,
            flags: 0,
            vars: BTreeMap::new(),
        };
    }
    let stored = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let data = &bytes[header..];
    let valid = crc32fast::hash(data) == stored;
    let flags = if redundant { bytes[4] } else { 0 };
    let mut vars = BTreeMap::new();
    if valid {
        for entry in data.split(|&b| b == 0) {
            if entry.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(entry);
            if let Some((name, value)) = text.split_once('=') {
                vars.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    EnvCopy { valid, flags, vars }
}

pub fn encode_copy(
    vars: &BTreeMap<String, String>,
    size: usize,
    redundant: bool,
    flags: u8,
) -> Result<Vec<u8>, EnvError> {
    let header = if redundant { 5 } else { 4 };
    let mut data = Vec::with_capacity(size);
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(EnvError::Unstorable { name: name.clone() });
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() > size - header {
        return Err(EnvError::TooLarge {
            needed: data.len(),
            capacity: size - header,
        });
    }
    data.resize(size - header, 0);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    if redundant {
        out.push(flags);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Which of two copies is current, as U-Boot and libubootenv decide; None when neither is valid.
pub fn current_copy(copies: &[EnvCopy; 2]) -> Option<usize> {
    match (copies[0].valid, copies[1].valid) {
        (false, false) => None,
        (true, false) => Some(0),
        (false, true) => Some(1),
        (true, true) => {
            let (a, b) = (copies[0].flags, copies[1].flags);
            Some(if a == 255 && b == 0 {
                1
            } else if b == 255 && a == 0 {
                0
            } else if b > a {
                1
            } else {
                0
            })
        }
    }
}

/// The environment on files or block devices.
pub struct UbootEnv {
    pub locations: Vec<EnvLocation>,
}

impl UbootEnv {
    pub fn from_config_file(path: &Path) -> Result<UbootEnv, BootError> {
        let text = diffota_files::local_file::read_bounded_text(
            path,
            crate::limits::SMALL_TEXT,
            diffota_files::local_file::Links::Follow,
        )
        .map_err(BootError::io(path))?;
        let locations = parse_fw_env_config(&text)
            .map_err(|e| BootError::content(path)(EnvError::Config(e)))?;
        Ok(UbootEnv { locations })
    }

    fn redundant(&self) -> bool {
        self.locations.len() == 2
    }

    fn read_copy(&self, number: usize) -> Result<EnvCopy, BootError> {
        let location = &self.locations[number];
        let file = std::fs::File::open(&location.path).map_err(BootError::io(&location.path))?;
        let mut bytes = vec![0u8; location.size];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(|source| BootError::ReadAt {
                path: location.path.clone(),
                offset: location.offset,
                length: location.size,
                source,
            })?;
        Ok(decode_copy(&bytes, self.redundant()))
    }

    /// Both copies (the second is a copy of the first for a single environment).
    pub fn read_copies(&self) -> Result<[EnvCopy; 2], BootError> {
        let first = self.read_copy(0)?;
        let second = if self.redundant() {
            self.read_copy(1)?
        } else {
            EnvCopy {
                valid: false,
                ..first.clone()
            }
        };
        Ok([first, second])
    }

    fn write_copy(&self, number: usize, bytes: &[u8]) -> Result<(), BootError> {
        let location = &self.locations[number];
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&location.path)
            .map_err(BootError::io(&location.path))?;
        file.write_all_at(bytes, location.offset)
            .map_err(BootError::io(&location.path))?;
        file.sync_all().map_err(BootError::io(&location.path))
    }
}

impl EnvStore for UbootEnv {
    fn describe(&self) -> String {
        let paths: Vec<String> = self
            .locations
            .iter()
            .map(|l| format!("{}@{:#x}", l.path.display(), l.offset))
            .collect();
        format!("U-Boot environment {}", paths.join(" + "))
    }

    fn load(&self) -> Result<BTreeMap<String, String>, BootError> {
        let copies = self.read_copies()?;
        let current = if self.redundant() {
            current_copy(&copies)
        } else {
            copies[0].valid.then_some(0)
        };
        match current {
            Some(number) => Ok(copies[number].vars.clone()),
            None => Err(BootError::content(&self.locations[0].path)(
                EnvError::NoValidCopy,
            )),
        }
    }

    fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for number in 0..self.locations.len() {
            let location = &self.locations[number];
            let name = format!(
                "U-Boot environment copy {} ({} at {:#x}, {:#x} bytes)",
                number + 1,
                location.path.display(),
                location.offset,
                location.size
            );
            checks.push(match self.read_copy(number) {
                Ok(copy) if copy.valid && self.redundant() => {
                    Check::passed(name, format!("CRC valid, counter {}", copy.flags))
                }
                Ok(copy) if copy.valid => Check::passed(name, "CRC valid"),
                Ok(_) => Check::failed(name, "CRC invalid: never initialised or corrupt"),
                Err(e) => Check::failed(name, e),
            });
        }
        checks
    }

    fn store(&self, vars: &BTreeMap<String, String>) -> Result<(), BootError> {
        let size = self.locations[0].size;
        let encode = |flags| {
            encode_copy(vars, size, self.redundant(), flags)
                .map_err(BootError::content(&self.locations[0].path))
        };
        if !self.redundant() {
            return self.write_copy(0, &encode(0)?);
        }
        let copies = self.read_copies()?;
        let (target, flags) = match current_copy(&copies) {
            Some(current) => (1 - current, copies[current].flags.wrapping_add(1)),
            None => (0, 1),
        };
        self.write_copy(target, &encode(flags)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn encode_decode_round_trip() {
        let v = vars(&[("bootcmd", "run diffota_boot"), ("upgrade_available", "1")]);
        for redundant in [false, true] {
            let bytes = encode_copy(&v, 0x4000, redundant, 7).unwrap();
            assert_eq!(bytes.len(), 0x4000);
            let copy = decode_copy(&bytes, redundant);
            assert!(copy.valid);
            assert_eq!(copy.vars, v);
        }
        let mut bytes = encode_copy(&v, 64, false, 0).unwrap();
        bytes[10] ^= 1;
        assert!(!decode_copy(&bytes, false).valid);
        assert!(encode_copy(&vars(&[("x", &"y".repeat(100))]), 64, false, 0).is_err());
    }

    #[test]
    fn current_copy_follows_the_counter_and_its_wrap() {
        let copy = |valid, flags| EnvCopy {
            valid,
            flags,
            vars: BTreeMap::new(),
        };
        assert_eq!(current_copy(&[copy(true, 1), copy(true, 2)]), Some(1));
        assert_eq!(current_copy(&[copy(true, 255), copy(true, 0)]), Some(1));
        assert_eq!(current_copy(&[copy(true, 0), copy(true, 255)]), Some(0));
        assert_eq!(current_copy(&[copy(true, 9), copy(false, 10)]), Some(0));
        assert_eq!(current_copy(&[copy(false, 9), copy(false, 10)]), None);
    }

    #[test]
    fn config_lines() {
        let locations = parse_fw_env_config(
            "# comment\n/dev/mmcblk0 0x3f8000 0x4000 0x200\n/dev/mmcblk0 0x3fc000 4000\n",
        )
        .unwrap();
        assert_eq!(
            locations[0],
            EnvLocation {
                path: "/dev/mmcblk0".into(),
                offset: 0x3f8000,
                size: 0x4000
            }
        );
        assert_eq!(locations[1].size, 0x4000);
        assert_eq!(
            parse_fw_env_config("").unwrap_err(),
            FwEnvConfigError::NoLocation
        );
        assert_eq!(
            parse_fw_env_config("/dev/x 0 0x4000\n/dev/y 0 0x2000\n").unwrap_err(),
            FwEnvConfigError::DifferentSizes
        );
        assert_eq!(
            parse_fw_env_config("/dev/x zero 0x4000\n").unwrap_err(),
            FwEnvConfigError::NotANumber {
                line: 1,
                text: "zero".into()
            }
        );
        assert_eq!(
            parse_fw_env_config("\n/dev/x 0 0x8\n").unwrap_err(),
            FwEnvConfigError::SizeOutOfRange { line: 2, size: 8 }
        );
    }
}
