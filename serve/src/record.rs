//! The record a running application leaves in prism's session directory, so that
//! `prism serve status` and `prism serve shutdown` on this machine find it: the
//! ingress's URL, the process, and the token a shutdown must present. The file is the
//! owner's only (the session directory is too).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The record's file name in the session directory.
pub const FILE: &str = "serve.json";

/// Writes the record; where, or `None` (with a warning) if it cannot be written.
pub(crate) fn write(address: SocketAddr, token: &str) -> Option<PathBuf> {
    let dir = prism::session::dir();
    let written = (|| -> std::io::Result<PathBuf> {
        prism::session::create(&dir).map_err(std::io::Error::other)?;
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.{}", std::process::id()));
        let body = serde_json::json!({
            "url": format!("http://{address}"),
            "pid": std::process::id(),
            "token": token,
        });
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body.to_string().as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    })();
    match written {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("prism serve will not find this application: {e}");
            None
        }
    }
}

/// Removes the record if it is still this process's.
pub(crate) fn remove(path: &Option<PathBuf>) {
    let Some(path) = path else { return };
    if owner(path) == Some(std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

fn owner(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}
