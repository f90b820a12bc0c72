//! The files the device and the build host must not lose or be fooled by:
//! - `atomic`: crash-safe replacement of a file (write a temporary file beside it, fsync,
//!   rename over the final name, fsync the directory);
//! - `local_file`: reading a file whose path someone else controls (regular files only,
//!   never blocking on a FIFO, bounded before reading, no links where the file is ours);
//! - `lock`: lock files held with `flock`, planted links and hard links refused.

pub mod atomic;
pub mod local_file;
pub mod lock;
