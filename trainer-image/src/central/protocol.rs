//! The centralized coordinator's wire protocol, version 3.
//!
//! A connection carries frames: a 4-byte big-endian length, then the body (at most
//! [`MAX_FRAME`] bytes). A body is the 2-byte little-endian protocol version followed by one
//! message in postcard encoding. A client says [`ClientMessage::Hello`] with its public key,
//! the server answers [`ServerMessage::Challenge`], and the client signs
//! [`challenge_message`] with its key ([`ClientMessage::Prove`]). From then on the client sends
//! the run's inputs ([`ClientMessage::Input`]: the core's `Input` in its one encoding, as the
//! Solana program receives it), each answered by `Accepted` or `Rejected` with the same id, and the server pushes
//! [`ServerMessage::State`] whenever the run changes: the [`Coordinator`]'s bytes, exactly as the
//! Solana run account holds them. A protocol error gets [`ServerMessage::Error`] and a closed
//! connection.

use bytes::{Bytes, BytesMut};
use demeter_coordinator_core::Coordinator;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// Version 7: the config carries `spot_check_tolerance` (a client of version 6 would judge
/// such a run's recomputes bit for bit). Version 6: rounds keep the seed drawn at their close
/// and the config carries `spot_check_one_in` (version 5 added attested epoch-end models; version 4 verdicts and
/// ejection; version 3 commitments and exact witness bitmaps; version 2 had Bloom-filter
/// reports; version 1 a request enum of its own).
pub const PROTOCOL_VERSION: u16 = 7;
/// The largest frame either side accepts; a state push is about 63 KB.
pub const MAX_FRAME: usize = 1 << 20;
const CHALLENGE_DOMAIN: &[u8] = b"demeter-coordinator-challenge-v1";

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first message: who the client claims to be.
    Hello { client: [u8; 32] },
    /// The signature of [`challenge_message`] (64 bytes).
    Prove { signature: Vec<u8> },
    /// An input to the run, encoded as the core encodes it (`Input::pack`, the bytes the
    /// Solana program's instructions carry too); `id` pairs it with its answer.
    Input { id: u64, input: Vec<u8> },
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    Challenge {
        run_id: [u8; 32],
        nonce: [u8; 32],
    },
    /// The run's state: a [`Coordinator`]'s bytes.
    State {
        coordinator: Vec<u8>,
    },
    Accepted {
        id: u64,
    },
    /// The state machine refused the request; `code` is the same number the Solana program
    /// returns as `Custom(code)`.
    Rejected {
        id: u64,
        code: u32,
        message: String,
    },
    /// A protocol error; the server closes the connection after it.
    Error {
        message: String,
    },
}

/// What a client signs to prove its key: a domain tag, the run, the server's nonce and the key,
/// so a signature is good for one connection to one run only.
pub fn challenge_message(run_id: &[u8; 32], nonce: &[u8; 32], client: &[u8; 32]) -> Vec<u8> {
    [CHALLENGE_DOMAIN, run_id, nonce, client].concat()
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("protocol version {got} is not spoken here (this side speaks {PROTOCOL_VERSION})")]
    Version { got: u16 },
    #[error("a frame shorter than its version field")]
    Short,
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("a state of {got} bytes; a coordinator state has {want}")]
    StateSize { got: usize, want: usize },
}

/// The framing both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// A frame body for `message`.
pub fn encode<M: Serialize>(message: &M) -> Bytes {
    let body = PROTOCOL_VERSION.to_le_bytes().to_vec();
    // Serializing these types into a Vec cannot fail: no maps, no unsized sequences.
    postcard::to_extend(message, body)
        .expect("protocol messages always serialize")
        .into()
}

/// The message in a frame body; trailing bytes are an error.
pub fn decode<M: for<'de> Deserialize<'de>>(body: &BytesMut) -> Result<M, ProtocolError> {
    let (version, rest) = body.split_at_checked(2).ok_or(ProtocolError::Short)?;
    let got = u16::from_le_bytes([version[0], version[1]]);
    if got != PROTOCOL_VERSION {
        return Err(ProtocolError::Version { got });
    }
    let (message, trailing) = postcard::take_from_bytes(rest)?;
    if !trailing.is_empty() {
        return Err(ProtocolError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(message)
}

/// A pushed state as the run's state machine.
pub fn decode_state(bytes: &[u8]) -> Result<Box<Coordinator>, ProtocolError> {
    Coordinator::boxed_from_bytes(bytes).ok_or(ProtocolError::StateSize {
        got: bytes.len(),
        want: size_of::<Coordinator>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_versions_are_refused() {
        let message = ClientMessage::Input {
            id: 7,
            input: demeter_coordinator_core::Input::HealthCheck {
                step: 3,
                target: [9; 32],
            }
            .pack(),
        };
        let body = BytesMut::from(&encode(&message)[..]);
        assert_eq!(decode::<ClientMessage>(&body).unwrap(), message);

        let mut other = body.clone();
        other[0] = 1;
        assert!(matches!(
            decode::<ClientMessage>(&other),
            Err(ProtocolError::Version { got: 1 })
        ));
        let mut trailing = body.clone();
        trailing.extend_from_slice(&[0]);
        assert!(decode::<ClientMessage>(&trailing).is_err());
        assert!(decode::<ClientMessage>(&BytesMut::from(&[2u8][..])).is_err());
        assert!(decode::<ClientMessage>(&BytesMut::from(&[2u8, 0, 200, 200][..])).is_err());
    }
}
