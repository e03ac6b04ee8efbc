//! How SQLite's failures become [`StoreError`]s a user can act on.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::StoreError;

/// Turns an SQLite error into one a user can act on.
pub(super) fn sql_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    let path_s = path.display().to_string();
    match code {
        Some(ErrorCode::NotADatabase) => StoreError::NotABatonStore {
            path: path_s,
            detail: "the file is not an SQLite database".into(),
        },
        Some(ErrorCode::DiskFull) => StoreError::Full {
            detail: format!("the disk holding {path_s} (or its size quota) is full"),
        },
        Some(ErrorCode::ReadOnly) => {
            StoreError::Backend(format!("{path_s} is read-only; Baton needs to write there"))
        }
        Some(ErrorCode::CannotOpen) => StoreError::Backend(format!(
            "cannot open {path_s}: check that its directory exists and is writable ({e})"
        )),
        Some(ErrorCode::DatabaseCorrupt) => {
            StoreError::Backend(format!("{path_s} is corrupt: {e}"))
        }
        _ => StoreError::Backend(format!("{path_s}: {e}")),
    }
}

pub(super) fn db(e: rusqlite::Error) -> StoreError {
    sql_error(Path::new("the store"), e)
}
