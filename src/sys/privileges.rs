//! Dropping privileges once the TUN device exists (REQUIREMENTS O2): all capabilities go, and
//! `no_new_privs` keeps them from coming back through exec. The TUN fd and the bound socket
//! stay usable; the device disappears when the fd closes, which needs no privilege.

/// Drops every capability of the calling thread; threads it creates later inherit the empty
/// sets. Call it before the runtime starts other threads. Failure is logged, not fatal.
pub fn drop_all() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a v3 header and two data words, as capset(2) specifies; the
    // pointers are valid for the call's duration.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    // SAFETY: prctl with integer arguments only.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc == 0 && nnp == 0 {
        tracing::info!("dropped all capabilities");
    } else {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not drop capabilities");
    }
}
