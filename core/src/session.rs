//! The session directory: where a machine's daemons record their address, the cluster
//! token (readable by the owner only), their PIDs and their logs, so that `prism stop`,
//! `prism status` and `PRISM_ADDRESS=auto` find them.
//!
//! One well-known place per user: `$PRISM_SESSION_DIR` if set, otherwise
//! `$TMPDIR/prism-<uid>`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The session directory of this user (not created).
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PRISM_SESSION_DIR") {
        return PathBuf::from(d);
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("prism-{uid}"))
}

fn io(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(context, e)
}

/// Creates the session directory (owner-only) and its `logs` and `pids` folders.
pub fn create(dir: &Path) -> Result<()> {
    for sub in ["", "logs", "pids", "executables"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io("creating the session directory"))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("securing the session directory"))
}

/// A fresh random token, 32 hex digits.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").map_err(io("reading /dev/urandom"))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random 32-bit id (for object owners).
pub fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    u32::from_le_bytes(bytes) | 1
}

/// Writes the token with owner-only permissions.
pub fn write_token(dir: &Path, token: &str) -> Result<()> {
    let path = dir.join("token");
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io("writing the token"))?;
    f.write_all(token.as_bytes())
        .map_err(io("writing the token"))
}

/// Reads the token: `$PRISM_TOKEN` if set, else the session's token file.
pub fn read_token(dir: &Path) -> Result<String> {
    if let Ok(t) = std::env::var("PRISM_TOKEN") {
        return Ok(t);
    }
    std::fs::read_to_string(dir.join("token"))
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            Error::Config(format!(
                "no cluster token in {} ({e}): start a head with `prism start --head`, or set PRISM_TOKEN",
                dir.display()
            ))
        })
}

/// Records the head's address for `PRISM_ADDRESS=auto` and the CLI.
pub fn write_address(dir: &Path, address: &str) -> Result<()> {
    // Written aside and renamed into place: a reader never sees it half written.
    let tmp = dir.join(format!("address.{}", std::process::id()));
    std::fs::write(&tmp, address).map_err(io("writing the address"))?;
    std::fs::rename(&tmp, dir.join("address")).map_err(io("writing the address"))
}

/// The head's address recorded in the session.
pub fn read_address(dir: &Path) -> Result<String> {
    std::fs::read_to_string(dir.join("address"))
        .map(|s| s.trim().to_string())
        .map_err(|_| {
            Error::Config(format!(
                "no running cluster recorded in {}: start one with `prism start --head`",
                dir.display()
            ))
        })
}

/// Records a daemon's PID (`pids/<role>-<pid>`, holding the address it serves).
pub fn write_pid(dir: &Path, role: &str, what: &str) -> Result<PathBuf> {
    let path = dir
        .join("pids")
        .join(format!("{role}-{}", std::process::id()));
    std::fs::write(&path, what).map_err(io("recording the PID"))?;
    Ok(path)
}

/// The daemons recorded in the session: `(pid, file)`.
pub fn pids(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("pids")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let pid = name.rsplit('-').next()?.parse().ok()?;
            Some((pid, e.path()))
        })
        .collect()
}

/// Sends signal `sig` to process `pid` (`prism stop`, test harnesses).
pub fn signal(pid: u32, sig: i32) -> bool {
    libc::pid_t::try_from(pid).is_ok_and(|pid| kill(pid, sig))
}

/// Sends signal `sig` to every process of the group led by `pgid` (a stopped job).
pub fn signal_group(pgid: u32, sig: i32) -> bool {
    libc::pid_t::try_from(pgid).is_ok_and(|pgid| kill(-pgid, sig))
}

#[allow(unsafe_code)]
fn kill(pid: libc::pid_t, sig: i32) -> bool {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative
    // pid names a process group.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Whether process `pid` exists and has not exited (a zombie counts as gone).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// The record a serving application (prism-serve) leaves in the session directory:
/// where its ingress listens, its process and the token its shutdown needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeRecord {
    /// The ingress's URL, `http://ADDRESS:PORT`.
    pub url: String,
    /// The application's process.
    pub pid: Option<u32>,
    /// The token `prism serve shutdown` presents.
    pub token: Option<String>,
}

/// The serving application recorded in `dir` (its `serve.json`), if any.
pub fn serve_record(dir: &Path) -> Option<ServeRecord> {
    let text = std::fs::read_to_string(dir.join("serve.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(ServeRecord {
        url: v["url"].as_str()?.to_string(),
        pid: v["pid"].as_u64().map(|p| p as u32),
        token: v["token"].as_str().map(str::to_string),
    })
}

/// One HTTP/1.1 request with `Connection: close` to `url` (`http://HOST:PORT`), its
/// token (if any) as `x-prism-token`, waiting at most `timeout` to connect and for each
/// read: the status and the body.
pub fn http_once(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("{url} is not an http:// URL")))?
        .trim_end_matches('/');
    let address = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} names no address")))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let auth = token
        .map(|t| format!("x-prism-token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer from {url}: {head:?}")))?;
    Ok((status, body.to_string()))
}
