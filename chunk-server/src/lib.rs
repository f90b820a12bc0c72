//! The publishing side of diffota: turning images into a store of packs and signed indexes,
//! checking and pruning stores, publishing channel files, and serving a store for
//! development. `main.rs` is a thin shell over these modules.

pub mod bundle;
pub mod channel;
pub mod diff;
pub mod frames;
pub mod fsutil;
pub mod in_order;
pub mod index_deltas;
pub mod keys;
pub mod make;
pub mod prune;
pub mod pull;
pub mod serve;
pub mod store;
pub mod verify;
