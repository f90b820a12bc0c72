//! One finding of `diffota doctor`: what was looked at, whether it is fine, and the detail.

use std::fmt::Display;

#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn passed(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    pub fn failed(name: impl Into<String>, problem: impl Display) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: problem.to_string(),
        }
    }

    /// Passed with the value's detail, or failed with the error.
    pub fn of<E: Display>(name: impl Into<String>, result: Result<String, E>) -> Check {
        match result {
            Ok(detail) => Check::passed(name, detail),
            Err(problem) => Check::failed(name, problem),
        }
    }
}
