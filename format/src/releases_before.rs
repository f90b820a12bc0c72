//! The releases before a release (`releases/<version>/<name>.before.json`, format 1): the
//! versions of the older releases of the same image name and compatible that the store held
//! when `make` wrote the release, newest first, at most [`MAX_LISTED`]:
//!
//! ```json
//! { "format": 1, "before": ["3.0", "2.0", "1.0"] }
//! ```
//!
//! A static store cannot be listed, so this is how a build host that keeps no store (a fresh
//! CI runner) learns which releases the fleet may still run: `chunk-server pull` brings a
//! channel's release and the releases listed before it, and `make` then finds its default
//! delta bases (the newest older releases) in the local store. The file is not signed: it is
//! a hint, and every release it names is fetched and verified like any other, so a wrong
//! list can only make `pull` fetch other signed releases, or none.

use serde::{Deserialize, Serialize};

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The most releases a list names: as many as `make --delta-depth` may ask for.
pub const MAX_LISTED: usize = 8;

/// The most bytes a reader takes of the file (eight versions of 128 characters fit).
pub const MAX_BYTES: u64 = 4096;

/// The store path of the list of release `version`, image `name` (beside `<name>.didx`).
pub fn store_path(version: &str, name: &str) -> String {
    format!("releases/{version}/{name}.before.json")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasesBefore {
    pub format: u32,
    /// Newest first.
    pub before: Vec<String>,
}

/// Why bytes are not a list of releases.
#[derive(Debug, thiserror::Error)]
pub enum ReleasesBeforeError {
    #[error("not a list of releases: {0}")]
    Json(#[from] serde_json::Error),
    #[error("list format {0} is not supported (this build reads format 1)")]
    Format(u32),
    #[error("lists {0} releases, more than {MAX_LISTED}")]
    TooMany(usize),
    #[error("{0}")]
    Version(#[from] crate::FormatError),
    #[error("names release {0:?} twice")]
    Repeated(String),
}

impl ReleasesBefore {
    /// The list of `versions` (newest first; the first [`MAX_LISTED`] are kept).
    pub fn new(versions: &[String]) -> ReleasesBefore {
        ReleasesBefore {
            format: FORMAT,
            before: versions.iter().take(MAX_LISTED).cloned().collect(),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<ReleasesBefore, ReleasesBeforeError> {
        let list: ReleasesBefore = serde_json::from_slice(bytes)?;
        if list.format != FORMAT {
            return Err(ReleasesBeforeError::Format(list.format));
        }
        if list.before.len() > MAX_LISTED {
            return Err(ReleasesBeforeError::TooMany(list.before.len()));
        }
        for (position, version) in list.before.iter().enumerate() {
            crate::index::validate_version(version)?;
            if list.before[..position].contains(version) {
                return Err(ReleasesBeforeError::Repeated(version.clone()));
            }
        }
        Ok(list)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a list of releases serializes");
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<String> {
        list.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_list_reads_back_as_written() {
        let list = ReleasesBefore::new(&versions(&["3.0", "2.0", "1.0"]));
        assert_eq!(ReleasesBefore::parse(&list.to_json()).unwrap(), list);
        let empty = ReleasesBefore::new(&[]);
        assert_eq!(ReleasesBefore::parse(&empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn a_list_keeps_the_newest_it_may_name() {
        let many: Vec<String> = (0..12).rev().map(|n| format!("1.{n}")).collect();
        let list = ReleasesBefore::new(&many);
        assert_eq!(list.before.len(), MAX_LISTED);
        assert_eq!(list.before[0], "1.11");
        assert!(ReleasesBefore::parse(&list.to_json()).is_ok());
    }

    #[test]
    fn a_bad_list_is_refused_with_what_is_wrong() {
        let refused = |json: &str| {
            ReleasesBefore::parse(json.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(refused("").contains("not a list of releases"));
        assert!(refused(r#"{"format":1}"#).contains("before"));
        assert!(refused(r#"{"format":2,"before":[]}"#).contains("format 2"));
        assert!(refused(r#"{"format":1,"before":["../x"]}"#).contains("invalid version"));
        assert!(refused(r#"{"format":1,"before":[""]}"#).contains("invalid version"));
        assert!(refused(r#"{"format":1,"before":["1.0","2.0","1.0"]}"#).contains("twice"));
        let nine: Vec<String> = (0..9).map(|n| format!("\"{n}.0\"")).collect();
        let nine = format!(r#"{{"format":1,"before":[{}]}}"#, nine.join(","));
        assert!(refused(&nine).contains("more than 8"));
    }
}
