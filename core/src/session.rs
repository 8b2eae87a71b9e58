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

/// One log file of a session: its name in the `logs` directory and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct LogFile {
    /// Its name, directly in the `logs` directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A part of a log file, as read by [`read_log`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPart {
    /// The bytes read.
    pub data: Vec<u8>,
    /// Where they start in the file.
    pub offset: u64,
    /// The file's size when read.
    pub size: u64,
}

impl LogPart {
    /// The offset to read from next.
    pub fn next(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// Bytes of a log read at most at once.
pub const MAX_LOG_READ: u64 = 1 << 20;

/// Why a log could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// No regular file of that name is directly in the `logs` directory (names with a
    /// `/`, `..` or a leading dot, and symbolic links, are never read).
    Missing(String),
    /// It is there, but reading it failed.
    Unreadable(String, String),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Missing(name) => write!(f, "no log file {name:?}"),
            LogError::Unreadable(name, e) => write!(f, "cannot read log file {name}: {e}"),
        }
    }
}

impl std::error::Error for LogError {}

/// The regular files directly in the logs directory `dir`, by name. Symbolic links are
/// not listed.
pub fn list_logs(dir: &Path) -> Vec<LogFile> {
    let mut files: Vec<LogFile> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            // `file_type` does not follow a symbolic link: a link is not listed.
            let meta = e.metadata().ok()?;
            let name = e.file_name().into_string().ok()?;
            (e.file_type().ok()?.is_file() && safe_log_name(&name)).then_some(LogFile {
                name,
                size: meta.len(),
            })
        })
        .collect();
    files.sort();
    files
}

/// Whether `name` can only name a file directly in a directory.
pub fn safe_log_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

/// Reads at most [`MAX_LOG_READ`] bytes of log `name` in the logs directory `dir`: from
/// `offset`, or else its last `tail` bytes (64 KiB if neither is given). Any name that
/// is not a regular file directly in `dir` is [`LogError::Missing`].
pub fn read_log(
    dir: &Path,
    name: &str,
    offset: Option<u64>,
    tail: Option<u64>,
) -> std::result::Result<LogPart, LogError> {
    use std::io::{Read, Seek, SeekFrom};
    let missing = || LogError::Missing(name.to_string());
    if !safe_log_name(name) {
        return Err(missing());
    }
    let path = dir.join(name);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
    if !meta.file_type().is_file() {
        return Err(missing());
    }
    let mut f = std::fs::File::open(&path).map_err(|_| missing())?;
    let size = meta.len();
    let offset = match (offset, tail) {
        (Some(o), _) => o.min(size),
        (None, t) => size.saturating_sub(t.unwrap_or(64 << 10)),
    };
    let read = |f: &mut std::fs::File| -> std::io::Result<Vec<u8>> {
        f.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::new();
        f.take(MAX_LOG_READ).read_to_end(&mut data)?;
        Ok(data)
    };
    let data = read(&mut f).map_err(|e| LogError::Unreadable(name.to_string(), e.to_string()))?;
    Ok(LogPart { data, offset, size })
}

/// Where the logs of session `dir` are, as `MACHINE:PATH`: daemons that answer with the
/// same place share one directory, and the same files.
pub fn log_place(dir: &Path) -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let logs = dir.join("logs");
    let path = std::fs::canonicalize(&logs).unwrap_or(logs);
    format!("{machine}:{}", path.display())
}
