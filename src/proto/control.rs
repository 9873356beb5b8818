//! Control messages: the plaintext of Control packets, sealed under the control keys.
//!
//! ```text
//! Close  0:type=1 1:reason code
//! ```

use super::CloseReason;

const TYPE_CLOSE: u8 = 1;

/// A control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// The sender ends the session.
    Close(CloseReason),
}

impl ControlMessage {
    /// Encodes the message.
    pub fn encode(self) -> Vec<u8> {
        match self {
            ControlMessage::Close(r) => vec![TYPE_CLOSE, r.code()],
        }
    }

    /// Decodes a message; `None` for anything unknown or malformed.
    pub fn decode(b: &[u8]) -> Option<Self> {
        match b {
            [TYPE_CLOSE, code] => CloseReason::from_code(*code).map(ControlMessage::Close),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let m = ControlMessage::Close(CloseReason::LocalShutdown);
        assert_eq!(ControlMessage::decode(&m.encode()), Some(m));
        assert_eq!(ControlMessage::decode(&[]), None);
        assert_eq!(ControlMessage::decode(&[1, 99]), None);
        assert_eq!(ControlMessage::decode(&[1, 1, 0]), None);
        assert_eq!(ControlMessage::decode(&[7, 1]), None);
    }
}
