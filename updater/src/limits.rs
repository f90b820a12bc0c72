//! The most bytes the device reads of each kind of file, from the network or from a path
//! someone else controls (a local store, a bundle, its own state directory, the report
//! spool). Every read checks its cap before it allocates (`diffota_files::local_file` for
//! local files, `StoreSource::get` for the network), so a hostile or broken file costs at
//! most its cap in memory, and a FIFO or device where a file belongs is refused at once.

pub use diffota_format::limits::{CHANNEL, INDEX, SIGNATURE};
/// The state file and the install-in-progress marker.
pub const STATE: u64 = 4 * 1024 * 1024;
/// One queued outcome report, the pending install's figures or the last outcome.
pub const REPORT: u64 = 1024 * 1024;
/// Text the device reads from its own system: the device id file, the config, key files,
/// a U-Boot environment text, PEM files for TLS.
pub const SMALL_TEXT: u64 = 1024 * 1024;
