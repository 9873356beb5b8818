//! Dropping privileges (REQUIREMENTS O2, H5). The rule: once setup is done, every thread of the
//! process runs as an unprivileged user with no capabilities and `no_new_privs` set, and the
//! process checks that in `/proc/self/task` before it touches a packet.
//!
//! Two steps, because Linux keeps credentials per thread:
//! - [`restrict_process`] runs before any other thread exists: `no_new_privs`, an empty bounding
//!   set and empty inheritable and ambient sets take nothing setup needs, and every thread
//!   created later inherits them.
//! - [`drop_to`] runs after setup (threads exist by then): glibc's `setgroups`, `setresgid` and
//!   `setresuid` apply the change to every thread of the process (nptl signals each thread to
//!   make the system call itself), and the kernel clears the permitted, effective and ambient
//!   sets of a thread whose user IDs all leave 0.
//!
//! The TUN fd, the bound sockets, the control socket and the open event and audit files stay
//! usable; the TUN device disappears when its fd closes, which needs no privilege.

use std::ffi::CString;
use std::io;

/// The unprivileged user a node runs as after setup (the `user` config key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The user's primary group, the only group the node keeps.
    pub gid: u32,
}

impl Account {
    /// Looks `name` up in the user database; `Ok(None)` when there is no such user.
    pub fn lookup(name: &str) -> io::Result<Option<Account>> {
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name has a NUL"))?;
        // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: getpwnam_r with a NUL-terminated name, a passwd to fill, a buffer of the
        // length given for its strings, and a result pointer; all live for the call.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match (rc, result.is_null()) {
            (0, true) => Ok(None),
            (0, false) => Ok(Some(Account {
                name: name.to_owned(),
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
            })),
            (e, _) => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Takes from the calling thread what no part of the node ever needs: sets `no_new_privs`,
/// empties the bounding set (where the process may: it needs CAP_SETPCAP) and the inheritable
/// and ambient sets. Call it before any other thread starts, so that every thread inherits it.
pub fn restrict_process() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            tracing::debug!(cap, error = %io::Error::last_os_error(), "cannot drop from the bounding set");
            break;
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut sets = capget()?;
    sets[0].inheritable = 0;
    sets[1].inheritable = 0;
    capset(&sets)
}

/// After setup: every thread of the process becomes `account` (its primary group only) and
/// keeps no capability; then checks every thread. A process that is not root (e.g. one given
/// file capabilities) keeps its user and only loses its capabilities.
pub fn drop_to(account: &Account) -> io::Result<()> {
    let (uid, gid) = (account.uid, account.gid);
    // SAFETY: getuid/geteuid take no arguments and cannot fail.
    let root = unsafe { libc::getuid() == 0 || libc::geteuid() == 0 };
    if root {
        if uid == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "user {:?} is root; a node must drop to another user",
                    account.name
                ),
            ));
        }
        // SAFETY: glibc's wrappers, which apply each change to every thread of the process;
        // setgroups reads one gid from a live array.
        let rc = unsafe {
            if libc::setgroups(1, &gid) != 0 {
                -1
            } else if libc::setresgid(gid, gid, gid) != 0 {
                -2
            } else {
                libc::setresuid(uid, uid, uid)
            }
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot become {}: {e}", account.name),
            ));
        }
    }
    capset(&[CapData::default(); 2])?;
    let (uid, gid) = if root {
        (uid, gid)
    } else {
        // SAFETY: as above.
        unsafe { (libc::getuid(), libc::getgid()) }
    };
    verify_threads(uid, gid)
}

/// Checks `/proc/self/task/*/status` of every thread: user and group IDs all `uid` and `gid`
/// (none 0), no effective, permitted, inheritable or ambient capability, `no_new_privs` set.
pub fn verify_threads(uid: u32, gid: u32) -> io::Result<()> {
    let mut threads = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let path = entry?.path().join("status");
        let status = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            // The thread ended since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(problem) = status_problem(&status, uid, gid) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: {problem}", path.display()),
            ));
        }
        threads += 1;
    }
    tracing::info!(uid, gid, threads, "privileges dropped on every thread");
    Ok(())
}

/// What in one thread's `status` breaks the rule of [`verify_threads`], if anything.
pub fn status_problem(status: &str, uid: u32, gid: u32) -> Option<String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let ids_are = |name: &str, want: u32| {
        let line = field(name).unwrap_or("");
        let ok = want != 0 && line.split_whitespace().count() == 4;
        let ok = ok && line.split_whitespace().all(|id| id == want.to_string());
        (!ok).then(|| format!("{name} is {line:?}, not {want} four times"))
    };
    if let Some(p) = ids_are("Uid", uid).or_else(|| ids_are("Gid", gid)) {
        return Some(p);
    }
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        match field(set) {
            Some(v) if v.bytes().all(|b| b == b'0') && !v.is_empty() => {}
            other => return Some(format!("{set} is {other:?}, not empty")),
        }
    }
    match field("NoNewPrivs") {
        Some("1") => None,
        other => Some(format!("NoNewPrivs is {other:?}, not 1")),
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> libc::c_ulong {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn header() -> CapHeader {
    CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    }
}

/// The calling thread's capability sets (two words each, as capget(2) v3 gives them).
fn capget() -> io::Result<[CapData; 2]> {
    let mut data = [CapData::default(); 2];
    let mut h = header();
    // SAFETY: capget with a v3 header and room for two data words, as capget(2) specifies.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut h as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// Sets the calling thread's capability sets.
fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut h = header();
    // SAFETY: capset with a v3 header and two data words, as capset(2) specifies; the
    // pointers are valid for the call's duration.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROPPED: &str = "Name:\tjvpn\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    #[test]
    fn a_dropped_thread_passes() {
        assert_eq!(status_problem(DROPPED, 65534, 65534), None);
    }

    #[test]
    fn root_ids_capabilities_or_missing_no_new_privs_are_named() {
        let cases = [
            ("Uid:\t65534\t0\t65534\t65534", "Uid"),
            ("Gid:\t0\t0\t0\t0", "Gid"),
            ("CapEff:\t000001ffffffffff", "CapEff"),
            ("CapPrm:\t0000000000001000", "CapPrm"),
            ("CapInh:\t0000000000000001", "CapInh"),
            ("CapAmb:\t0000000000000400", "CapAmb"),
            ("NoNewPrivs:\t0", "NoNewPrivs"),
        ];
        for (line, name) in cases {
            let key = line.split(':').next().unwrap_or_default();
            let status: String = DROPPED
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key}:")) {
                        line
                    } else {
                        l
                    }
                })
                .map(|l| format!("{l}\n"))
                .collect();
            let problem = status_problem(&status, 65534, 65534);
            assert!(
                problem.as_deref().is_some_and(|p| p.starts_with(name)),
                "{line}: {problem:?}"
            );
        }
    }

    #[test]
    fn root_is_never_the_target() {
        let root = DROPPED.replace("65534", "0");
        assert!(status_problem(&root, 0, 0).is_some());
    }

    #[test]
    fn nobody_exists_and_a_made_up_user_does_not() {
        let nobody = Account::lookup("nobody").unwrap().unwrap();
        assert_ne!(nobody.uid, 0);
        assert_eq!(Account::lookup("no-such-user-jvpn").unwrap(), None);
    }
}
