//! Status assembly: turns a core's answers (sessions, drop and audit counters, next deadline)
//! and what the node knows about itself into the [`StatusReport`] that `jvpn status` shows.
//! The rule: a report says only what the core answered at `now`; nothing is cached.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::protocol::{NodeRole, SessionStatus, StatusReport, Wakeup};
use crate::audit::log::AuditStats;
use crate::proto::{Core, SessionSummary};

/// What `jvpn status` says about the node itself.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub role: NodeRole,
    pub node_id: String,
    pub policy_version: String,
    pub tunnel: String,
    pub started: Instant,
    /// Peer names by configuration index (the gateway's `[[peer]]` names or keys).
    pub peers: Vec<String>,
}

/// The node's status at `now`: `audit` is the audit writer's counters when the node keeps an
/// audit file.
pub fn report<C: Core>(
    core: &C,
    info: &NodeInfo,
    audit: Option<&AuditStats>,
    now: Instant,
) -> StatusReport {
    let uptime = now.saturating_duration_since(info.started).as_millis() as u64;
    let mut r = StatusReport::new(
        info.role,
        info.node_id.clone(),
        info.policy_version.clone(),
        uptime,
    );
    r.tunnel = Some(info.tunnel.clone());
    r.drops = core
        .drop_counts()
        .nonzero()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    r.audit = audit.map(|a| audit_counters(core, a, info.role));
    r.sessions = core
        .sessions(now)
        .iter()
        .map(|s| session_status(s, &info.peers))
        .collect();
    r.next_wakeup = core.poll_timeout().map(|(at, timer)| Wakeup {
        in_ms: at.saturating_duration_since(now).as_millis() as u64,
        timer: timer.name().to_string(),
    });
    r
}

/// The audit writer's counters with the core's own; a laptop rejects nothing.
fn audit_counters<C: Core>(core: &C, a: &AuditStats, role: NodeRole) -> BTreeMap<String, u64> {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut m: BTreeMap<String, u64> = [
        ("appended", load(&a.appended)),
        ("failed", load(&a.failed)),
        ("rejected", load(&a.rejected)),
    ]
    .into_iter()
    .chain(core.audit_counters())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if role == NodeRole::Laptop {
        m.remove("rejected");
    }
    m
}

/// One session's row; `peers` names the gateway's peers by index (an unnamed index is shown
/// as the number).
fn session_status(s: &SessionSummary, peers: &[String]) -> SessionStatus {
    let mut st = SessionStatus::new(s.session_id.to_hex());
    st.peer = Some(match s.peer {
        None => "gateway".to_string(),
        Some(i) => peers.get(i).cloned().unwrap_or_else(|| i.to_string()),
    });
    if let Some((state, version)) = s.state {
        st.state = Some(state.name().into());
        st.state_version = Some(version);
    }
    st.bearer = s.bearer.as_ref().map(|u| u.name.clone());
    st.bearer_class = s.bearer.as_ref().map(|u| u.class.as_str().into());
    st.remote = s.remote.map(|a| a.to_string());
    st.tx_packets = Some(s.stats.tx_packets);
    st.tx_bytes = Some(s.stats.tx_bytes);
    st.rx_packets = Some(s.stats.rx_packets);
    st.rx_bytes = Some(s.stats.rx_bytes);
    st.replays = Some(s.stats.replays);
    st.auth_failures = Some(s.stats.auth_failures);
    st.key_epoch = Some(u64::from(s.key_epoch));
    st.key_age_ms = Some(s.key_age.as_millis() as u64);
    st.last_authenticated_ms = Some(s.since_last_recv.as_millis() as u64);
    st.age_ms = Some(s.age.as_millis() as u64);
    st
}
