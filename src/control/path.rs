//! Where a node's control socket lives, and how a CLI command finds it.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The directory of default control sockets.
pub const RUN_DIR: &str = "/run/jvpn";

/// The identity of this process's network namespace: the inode of `/proc/self/ns/net`. Two
/// processes in the same namespace get the same number; different namespaces differ.
pub fn netns_id() -> io::Result<u64> {
    fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read /proc/self/ns/net: {e}")))
}

/// The default control socket of the tunnel `tunnel` in this network namespace:
/// `/run/jvpn/<netns-id>-<tunnel>.sock`.
pub fn default_socket_path(tunnel: &str) -> io::Result<PathBuf> {
    default_socket_path_in(Path::new(RUN_DIR), tunnel)
}

/// [`default_socket_path`] under another directory.
pub fn default_socket_path_in(dir: &Path, tunnel: &str) -> io::Result<PathBuf> {
    let ok = !tunnel.is_empty()
        && tunnel.len() <= 15
        && tunnel != "."
        && tunnel != ".."
        && tunnel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{tunnel:?} is not a tunnel (interface) name"),
        ));
    }
    Ok(dir.join(format!("{}-{tunnel}.sock", netns_id()?)))
}

/// The socket a node with this config uses: its `control_socket` if set, else the default for
/// its tunnel. The node and `jvpn status --config` both call this, so they agree.
pub fn socket_path_for(control_socket: Option<&Path>, tunnel: &str) -> io::Result<PathBuf> {
    match control_socket {
        Some(p) => Ok(p.to_path_buf()),
        None => default_socket_path(tunnel),
    }
}

/// What is at a socket path.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Nothing there.
    Missing,
    /// A file that is not a socket.
    NotASocket,
    /// A socket somebody accepts connections on.
    Live,
    /// A socket nobody listens on (its process is gone).
    Stale,
    /// Could not tell (e.g. permission denied).
    Unknown(io::Error),
}

pub(crate) fn probe(path: &Path) -> Probe {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Probe::Missing,
        Err(e) => return Probe::Unknown(e),
        Ok(m) if !m.file_type().is_socket() => return Probe::NotASocket,
        Ok(_) => {}
    }
    match UnixStream::connect(path) {
        Ok(_) => Probe::Live,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Probe::Stale,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Probe::Missing,
        Err(e) => Probe::Unknown(e),
    }
}

/// The one control socket in `dir` that belongs to this network namespace. Several live ones
/// are an error that lists them; so is none.
pub fn find_socket_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let prefix = format!("{}-", netns_id()?);
    let mut candidates = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let is_socket = entry.file_type().map(|t| t.is_socket()).unwrap_or(false);
                if is_socket && name.starts_with(&prefix) && name.ends_with(".sock") {
                    candidates.push(entry.path());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot list {}: {e}", dir.display()),
    }
    candidates.sort();
    let none = || {
        anyhow::anyhow!(
            "no running jvpn in this network namespace (looked in {}); \
             if it uses its own control_socket, pass --config FILE or --socket PATH",
            dir.display()
        )
    };
    match candidates.len() {
        0 => Err(none()),
        // One candidate: connect to it and let the client explain any failure.
        1 => Ok(candidates.remove(0)),
        _ => {
            let mut stale = Vec::new();
            let mut usable = Vec::new();
            for c in candidates {
                match probe(&c) {
                    Probe::Stale | Probe::Missing | Probe::NotASocket => stale.push(c),
                    Probe::Live | Probe::Unknown(_) => usable.push(c),
                }
            }
            match usable.len() {
                0 => anyhow::bail!(
                    "no running jvpn in this network namespace (looked in {}; nothing answers \
                     on the stale sockets {})",
                    dir.display(),
                    list(&stale)
                ),
                1 => Ok(usable.remove(0)),
                _ => anyhow::bail!(
                    "several jvpn instances run in this network namespace: {}; \
                     choose one with --socket PATH or --config FILE",
                    list(&usable)
                ),
            }
        }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_path_names_the_namespace_and_the_tunnel() {
        let ns = netns_id().unwrap();
        assert_eq!(
            default_socket_path("jvpn0").unwrap(),
            PathBuf::from(format!("/run/jvpn/{ns}-jvpn0.sock"))
        );
        assert!(default_socket_path("../x").is_err());
        assert!(default_socket_path("").is_err());
        assert_eq!(
            socket_path_for(Some(Path::new("/tmp/a.sock")), "jvpn0").unwrap(),
            PathBuf::from("/tmp/a.sock")
        );
    }
}
