//! The audit trail (E5): signed, hash-chained `transport.rebind` records, the file they are
//! appended to, and the verifier behind `jvpn audit verify`.

pub mod log;
pub mod record;
pub mod verify;

pub use log::{AuditLog, AuditStats};
pub use record::{PathEnd, RebindRecord, SignedRebind, SignedWitness, WitnessRecord};
pub use verify::{verify_chain, ChainError, Problem, Summary};
