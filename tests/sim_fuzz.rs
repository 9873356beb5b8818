//! Property: no datagram, random or mutated from real traffic, makes either core panic, and
//! none of them disturbs the real session. 1,000 cases × 100 datagrams = 100,000 datagrams.
// Test code: an unwrap is an assertion, and Instant::now() is the run's epoch.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Mutation {
    Random(Vec<u8>),
    FlipByte { which: usize, at: usize, xor: u8 },
    Truncate { which: usize, len: usize },
    Extend { which: usize, extra: Vec<u8> },
    Counter { which: usize, counter: u64 },
    TypeByte { which: usize, ty: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Mutation::Random),
        (any::<usize>(), any::<usize>(), 1u8..).prop_map(|(which, at, xor)| Mutation::FlipByte {
            which,
            at,
            xor
        }),
        (any::<usize>(), any::<usize>()).prop_map(|(which, len)| Mutation::Truncate { which, len }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..40)
        )
            .prop_map(|(which, extra)| Mutation::Extend { which, extra }),
        (any::<usize>(), any::<u64>())
            .prop_map(|(which, counter)| Mutation::Counter { which, counter }),
        (any::<usize>(), 0u8..8).prop_map(|(which, ty)| Mutation::TypeByte { which, ty }),
    ]
}

fn apply(m: &Mutation, corpus: &[Vec<u8>]) -> Vec<u8> {
    let pick = |which: &usize| corpus[which % corpus.len()].clone();
    match m {
        Mutation::Random(b) => b.clone(),
        Mutation::FlipByte { which, at, xor } => {
            let mut b = pick(which);
            let i = at % b.len();
            b[i] ^= xor;
            b
        }
        Mutation::Truncate { which, len } => {
            let mut b = pick(which);
            b.truncate(len % (b.len() + 1));
            b
        }
        Mutation::Extend { which, extra } => {
            let mut b = pick(which);
            b.extend_from_slice(extra);
            b
        }
        Mutation::Counter { which, counter } => {
            let mut b = pick(which);
            if b.len() >= 16 {
                b[8..16].copy_from_slice(&counter.to_le_bytes());
            }
            b
        }
        Mutation::TypeByte { which, ty } => {
            let mut b = pick(which);
            b[0] = *ty;
            b
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn garbage_never_panics_and_never_disturbs_the_real_session(
        seed in any::<u64>(),
        muts in proptest::collection::vec(mutation(), 100),
    ) {
        let mut w = World::new(1, seed);
        w.establish();
        w.laptop_sends(0, &ipv4(laptop_inner(0), gateway_inner(), b"real traffic"));
        w.gateway_sends(&ipv4(gateway_inner(), laptop_inner(0), b"real reply"));
        w.run_for(Duration::from_millis(50));
        let corpus: Vec<Vec<u8>> = w.capture.iter().map(|d| d.bytes.clone()).collect();
        let attacker: std::net::SocketAddr = "203.0.113.9:4444".parse().unwrap();
        let gw = w.gateway_addr;
        let laptop = w.laptops[0].addr;
        for (i, m) in muts.iter().enumerate() {
            let bytes = apply(m, &corpus);
            let to = if i % 2 == 0 { gw } else { laptop };
            w.inject_at(w.now, Datagram { from: attacker, to, bytes });
        }
        w.run_for(Duration::from_millis(50));
        let id = w.laptops[0].core.session().map(|s| s.id());
        prop_assert_eq!(w.gateway.session_views(w.now)[0].endpoint, laptop);
        let up = ipv4(laptop_inner(0), gateway_inner(), b"still works");
        w.laptop_sends(0, &up);
        w.run_for(Duration::from_millis(50));
        prop_assert_eq!(w.gateway_tun_out.last(), Some(&up));
        prop_assert_eq!(w.laptops[0].core.session().map(|s| s.id()), id);
    }
}
