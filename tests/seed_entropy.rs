//! H1: a core's random stream starts from all 32 bytes of its seed. The first initiation shows
//! a routing tag and an ephemeral public key in clear; if only 8 bytes of the seed counted, a
//! 2^64 search over them would recover the stream, and with it every later key.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use common::*;
use jvpn::proto::client::{Client, ClientConfig};
use jvpn::proto::{Core, ProtoConfig, Seed, Timestamp};
use zeroize::Zeroizing;

/// The first handshake initiation a laptop core seeded with `seed` puts on the wire.
fn first_initiation(seed: [u8; 32]) -> Vec<u8> {
    let (laptop, gateway) = (identity(1), identity(2));
    let now = Instant::now();
    let cfg = ClientConfig {
        keys: static_keys(&laptop),
        gateway_public: gateway.public().x25519(),
        psk: Zeroizing::new([0; 32]),
        endpoint: "192.0.2.1:51900".parse().unwrap(),
        routes: vec!["10.77.0.0/24".parse().unwrap()],
        proto: ProtoConfig::default(),
        audit: false,
    };
    let wall = Timestamp {
        secs: 1_800_000_000,
        nanos: 0,
    };
    let mut core = Client::new(cfg, Seed::from_bytes(seed), now, wall);
    core.handle_timeout(now);
    core.poll_transmit()
        .expect("an initiation at start")
        .payload
}

#[test]
fn seeds_that_differ_only_after_byte_8_give_different_initiations() {
    let a = [7u8; 32];
    let same = first_initiation(a);
    assert_eq!(
        same,
        first_initiation(a),
        "the same seed must give the same initiation (the seed is the only randomness)"
    );
    for byte in [8, 16, 31] {
        let mut b = a;
        b[byte] ^= 1;
        let other = first_initiation(b);
        assert_eq!(same.len(), other.len());
        // Both things in clear come from the stream: the sender tag (bytes 4..8) and the
        // ephemeral public key (bytes 8..40).
        assert_ne!(
            same[4..8],
            other[4..8],
            "seed byte {byte} did not change the tag"
        );
        assert_ne!(
            same[8..40],
            other[8..40],
            "seed byte {byte} did not change the key"
        );
    }
}
