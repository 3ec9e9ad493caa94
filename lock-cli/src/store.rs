//! Which lock store lockctl talks to: --url, else $LOCK_URL, else an embedded SQLite
//! database in the user's state directory.

use std::path::PathBuf;
use std::sync::Arc;

use leaselock::LockBackend;

use crate::error::CliError;

/// Connects to `url`, or to the default store when none was given.
pub(crate) async fn open(url: Option<&str>) -> Result<(String, Arc<dyn LockBackend>), CliError> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => default_url()?,
    };
    tracing::debug!(url = %lock_core::backend_kit::redact_url(&url), "connecting to the lock store");
    let backend = leaselock::connect(&url).await?;
    Ok((url, backend))
}

/// `sqlite:///<state dir>/lockctl/locks.db`, creating the directory.
fn default_url() -> Result<String, CliError> {
    let dir = state_dir()?.join("lockctl");
    std::fs::create_dir_all(&dir).map_err(|e| CliError::NoDefaultStore {
        reason: format!(
            "cannot create the default lock store directory {}: {e}",
            dir.display()
        ),
    })?;
    let path = dir.join("locks.db");
    let path = path.to_str().ok_or_else(|| CliError::NoDefaultStore {
        reason: format!("the state directory {} is not UTF-8", dir.display()),
    })?;
    Ok(format!("sqlite://{path}"))
}

/// `$XDG_STATE_HOME`, else `$HOME/.local/state` (XDG Base Directory).
fn state_dir() -> Result<PathBuf, CliError> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").and_then(absolute) {
        return Ok(dir);
    }
    if let Some(home) = std::env::var_os("HOME").and_then(absolute) {
        return Ok(home.join(".local").join("state"));
    }
    Err(CliError::NoDefaultStore {
        reason: "neither XDG_STATE_HOME nor HOME is set, so there is no default lock store".into(),
    })
}
