//! A signed commitment: "client C published the payload with hash H as its result of step S in
//! run R". Peers accept a payload only under a valid commitment from a participant of the round,
//! and witnesses report the hashes of the commitments they saw.

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, verify};

const DOMAIN: &[u8] = b"demeter-commitment-v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    pub step: u64,
    pub client: [u8; 32],
    /// The payload's content hash (its SHA-256 trailer).
    pub hash: [u8; 32],
    /// The client's ed25519 signature of [`Commitment::message`] (64 bytes).
    pub signature: Vec<u8>,
}

impl Commitment {
    fn message(run_id: &[u8; 32], step: u64, client: &[u8; 32], hash: &[u8; 32]) -> Vec<u8> {
        [DOMAIN, run_id, &step.to_le_bytes(), client, hash].concat()
    }

    pub fn sign(identity: &Identity, run_id: &[u8; 32], step: u64, hash: [u8; 32]) -> Self {
        let client = identity.public();
        let signature = identity
            .sign(&Self::message(run_id, step, &client, &hash))
            .to_vec();
        Self {
            step,
            client,
            hash,
            signature,
        }
    }

    /// Whether the client named in it signed it, for this run.
    pub fn is_valid(&self, run_id: &[u8; 32]) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(self.signature.as_slice()) else {
            return false;
        };
        verify(
            &self.client,
            &Self::message(run_id, self.step, &self.client, &self.hash),
            &signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_bind_run_step_client_and_hash() {
        let identity = Identity::generate().unwrap();
        let run = [1u8; 32];
        let commitment = Commitment::sign(&identity, &run, 7, [9; 32]);
        assert!(commitment.is_valid(&run));
        assert!(!commitment.is_valid(&[2u8; 32]), "another run");
        for forge in [
            |c: &mut Commitment| c.step += 1,
            |c: &mut Commitment| c.hash[0] ^= 1,
            |c: &mut Commitment| c.client[0] ^= 1,
            |c: &mut Commitment| c.signature.truncate(10),
        ] {
            let mut forged = commitment.clone();
            forge(&mut forged);
            assert!(!forged.is_valid(&run));
        }
    }
}
