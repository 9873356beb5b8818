//! Observable events (REQUIREMENTS E1–E4): one JSON object per line, fanned out to sinks and
//! live followers without ever blocking the data path. See `docs/EVENTS.md`.
//!
//! - [`EventRecord`]: one event as plain data; [`EventRecord::to_json_line`] is its wire form.
//! - [`EventHub`]: the fan-out. `emit` is synchronous, cheap and never blocks: each sink has a
//!   bounded queue drained by its own writer thread, each follower (`jvpn events --follow`) a
//!   bounded queue of its own; whatever does not fit is dropped for that sink and counted.
//! - [`SinkSpec`]: a file (`events = "PATH"`, `--events PATH`) or stdout (`--events -`).
//! - [`record_of`] and [`log_event`]: a core `proto::Event` as a record and as a log line, both
//!   rendered from the event's one description (`Event::describe`). The node supplies what the
//!   core does not know: its id, the policy version, the session's current state version and
//!   the peers' names. Records and the hub know nothing about the core.
//!
//! ```
//! use jvpn::events::{EventHub, EventRecord};
//!
//! let hub = EventHub::without_sinks();
//! let mut follower = hub.subscribe();
//! hub.emit(
//!     &EventRecord::new("SessionStateChange", "node-public-key", "default-1")
//!         .session("00112233445566778899aabbccddeeff")
//!         .state_version(1)
//!         .reason("attached_to_transport")
//!         .field("previous_state", "BIRTH")
//!         .field("new_state", "ATTACHED"),
//! );
//! let line = follower.try_recv().unwrap();
//! assert!(line.starts_with("{\"ts_ms\":"));
//! ```
// A sink stamps the wall time a line is written and times out its flush; the core never sees it.
#![allow(clippy::disallowed_methods)]

mod hub;
mod record;
mod render;

pub(crate) use hub::WarnLimiter;
pub use hub::{
    EventFollower, EventHub, HubStats, SinkSpec, SinkStats, FOLLOWER_QUEUE, SINK_QUEUE,
    WARN_INTERVAL,
};
pub use record::{is_event_type_name, is_reason_code, unix_ms, EventRecord, COMMON_KEYS};
pub use render::{log_event, record_of};
