//! Hot-path micro-benchmarks: a laptop core seals a 1420-byte TUN packet, the gateway core opens
//! it (routing-tag lookup, replay check, AEAD, inner-source check), and the replay window alone.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jvpn::identity::Identity;
use jvpn::proto::client::{Client, ClientConfig};
use jvpn::proto::gateway::{Gateway, GatewayConfig, PeerSpec};
use jvpn::proto::replay::ReplayWindow;
use jvpn::proto::{
    Core, ProtoConfig, Received, Seed, StaticKeys, Timestamp, UplinkId, TUN_HEADROOM, TUN_TAILROOM,
};
use zeroize::Zeroizing;

const PACKET: usize = 1420;

fn keys(id: &Identity) -> StaticKeys {
    StaticKeys {
        private: id.x25519_private(),
        public: id.public().x25519(),
    }
}

/// A laptop and a gateway with an established session.
fn pair() -> (Client, Gateway, SocketAddr, SocketAddr, Instant) {
    let now = Instant::now();
    let (lid, gid) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
    let gw_addr: SocketAddr = "10.0.0.1:51900".parse().unwrap();
    let lp_addr: SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let mut gw = Gateway::new(
        GatewayConfig {
            keys: keys(&gid),
            peers: vec![PeerSpec {
                public: lid.public().x25519(),
                psk: Zeroizing::new([0; 32]),
                allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
            }],
            proto: ProtoConfig::default(),
        },
        Seed::for_tests(1),
        now,
    );
    let mut lp = Client::new(
        ClientConfig {
            keys: keys(&lid),
            gateway_public: gid.public().x25519(),
            psk: Zeroizing::new([0; 32]),
            endpoint: gw_addr,
            routes: vec!["10.77.0.0/24".parse().unwrap()],
            proto: ProtoConfig::default(),
            audit: false,
        },
        Seed::for_tests(2),
        now,
        Timestamp {
            secs: 1_800_000_000,
            nanos: 0,
        },
    );
    // Handshake: init → response → keepalive (confirms the session at the gateway).
    lp.handle_timeout(now);
    for _ in 0..3 {
        while let Some(t) = lp.poll_transmit() {
            let mut b = t.payload.clone();
            let n = b.len();
            gw.handle_datagram(UplinkId::DEFAULT, None, lp_addr, &mut b, n, now);
        }
        while let Some(t) = gw.poll_transmit() {
            let mut b = t.payload.clone();
            let n = b.len();
            lp.handle_datagram(UplinkId::DEFAULT, None, gw_addr, &mut b, n, now);
        }
    }
    assert_eq!(gw.sessions(now).len(), 1, "session established");
    (lp, gw, lp_addr, gw_addr, now)
}

fn inner_packet(buf: &mut [u8]) {
    let p = &mut buf[TUN_HEADROOM..TUN_HEADROOM + PACKET];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&[10, 77, 0, 2]);
    p[16..20].copy_from_slice(&[10, 77, 0, 1]);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("datapath");
    g.throughput(Throughput::Bytes(PACKET as u64));
    g.measurement_time(Duration::from_secs(3));

    let (mut lp, mut gw, lp_addr, _, now) = pair();
    let mut buf = vec![0u8; TUN_HEADROOM + PACKET + TUN_TAILROOM];
    g.bench_function("laptop_seal_1420", |b| {
        b.iter(|| {
            inner_packet(&mut buf);
            lp.handle_tun_packet(&mut buf, PACKET, now).expect("sealed")
        })
    });

    let (mut lp, mut gw2, _, _, _) = pair();
    std::mem::swap(&mut gw, &mut gw2);
    g.bench_function("seal_then_gateway_open_1420", |b| {
        b.iter_batched_ref(
            || {
                let mut buf = vec![0u8; TUN_HEADROOM + PACKET + TUN_TAILROOM];
                inner_packet(&mut buf);
                let t = lp.handle_tun_packet(&mut buf, PACKET, now).expect("sealed");
                (buf, t.len)
            },
            |(buf, len)| {
                let r = gw.handle_datagram(UplinkId::DEFAULT, None, lp_addr, buf, *len, now);
                assert!(matches!(r, Received::Tun(_)));
            },
            BatchSize::SmallInput,
        )
    });

    g.throughput(Throughput::Elements(1));
    let mut w = ReplayWindow::new(4096);
    let mut ctr = 0u64;
    g.bench_function("replay_window_accept", |b| {
        b.iter(|| {
            ctr += 1;
            w.accept(ctr ^ 7)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
