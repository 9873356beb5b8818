//! The hot path allocates nothing per packet: a laptop sealing TUN packets and a gateway opening
//! them (and the reverse) run 10,000 packets under a counting global allocator.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use jvpn::proto::{Core, Received, UplinkId, TUN_HEADROOM, TUN_TAILROOM};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn sealing_and_opening_data_packets_allocates_nothing() {
    let mut w = World::new(1, 1);
    w.establish();
    w.run_for(Duration::from_millis(100));
    let now = w.now;
    let laptop_addr = w.laptops[0].addr;
    let gw_addr = w.gateway_addr;
    let up = ipv4(laptop_inner(0), gateway_inner(), &[7u8; 1380]);
    let down = ipv4(gateway_inner(), laptop_inner(0), &[9u8; 1380]);
    let mut buf = vec![0u8; TUN_HEADROOM + 1500 + TUN_TAILROOM];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(
        before > 0,
        "the counting allocator is installed (setting up the world allocated)"
    );
    for _ in 0..10_000 {
        buf[TUN_HEADROOM..TUN_HEADROOM + up.len()].copy_from_slice(&up);
        let t = w.laptops[0]
            .core
            .handle_tun_packet(&mut buf, up.len(), now)
            .expect("sealed");
        let r = w.gateway.handle_datagram(
            UplinkId::DEFAULT,
            Some(gw_addr.ip()),
            laptop_addr,
            &mut buf,
            t.len,
            now,
        );
        assert!(matches!(r, Received::Tun(_)));
        buf[TUN_HEADROOM..TUN_HEADROOM + down.len()].copy_from_slice(&down);
        let t = w
            .gateway
            .handle_tun_packet(&mut buf, down.len(), now)
            .expect("sealed");
        let r = w.laptops[0]
            .core
            .handle_datagram(t.via, None, gw_addr, &mut buf, t.len, now);
        assert!(matches!(r, Received::Tun(_)));
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 20,000 packets"
    );
}
