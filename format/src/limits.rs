//! The most bytes a reader takes of each kind of store file, whether it comes over the
//! network or from a path (a store on a build host or a USB stick, a bundle, the device's
//! state directory). Both sides check these before they allocate.

/// A channel file.
pub const CHANNEL: u64 = 1024 * 1024;
/// A detached minisign signature (a few hundred bytes in practice).
pub const SIGNATURE: u64 = 16 * 1024;
/// A release index (a 16 GiB image cut into 64 KiB chunks has an index of about 14 MB).
pub const INDEX: u64 = 256 * 1024 * 1024;
