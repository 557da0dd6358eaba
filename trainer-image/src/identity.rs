//! Client identities: ed25519 keypairs in the Solana CLI wallet format (a JSON array of the 64
//! bytes secret ‖ public), so one key file serves the chain and the centralized server.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// A client's keypair.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A fresh keypair from the operating system's randomness.
    pub fn generate() -> anyhow::Result<Self> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).context("reading the system's randomness")?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads a Solana CLI keypair file, checking that its public half matches its secret.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading keypair {}", path.display()))?;
        let bytes: Vec<u8> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: a keypair file is a JSON array of 64 numbers (as `solana-keygen new` writes)",
                path.display()
            )
        })?;
        let bytes: [u8; 64] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{}: has {} bytes; a keypair file holds 64",
                path.display(),
                bytes.len()
            )
        })?;
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| {
            anyhow::anyhow!(
                "{}: the public key does not match the secret key",
                path.display()
            )
        })?;
        Ok(Self { key })
    }

    /// Writes the keypair (owner-only permissions); never overwrites an existing file, which
    /// may hold a key with earned points.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).with_context(|| {
            format!(
                "creating {} (an existing keypair is never overwritten)",
                path.display()
            )
        })?;
        let json = serde_json::to_string(&self.key.to_keypair_bytes().to_vec())?;
        file.write_all(json.as_bytes())?;
        file.sync_all()?;
        Ok(())
    }

    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A wallet signs Solana transactions without its secret leaving this type.
impl solana_sdk::signer::Signer for Identity {
    fn try_pubkey(&self) -> Result<solana_sdk::pubkey::Pubkey, solana_sdk::signer::SignerError> {
        Ok(solana_sdk::pubkey::Pubkey::new_from_array(self.public()))
    }

    fn try_sign_message(
        &self,
        message: &[u8],
    ) -> Result<solana_sdk::signature::Signature, solana_sdk::signer::SignerError> {
        Ok(solana_sdk::signature::Signature::from(self.sign(message)))
    }

    fn is_interactive(&self) -> bool {
        false
    }
}

/// Whether `signature` is `public`'s signature of `message` (strict: no malleable encodings).
pub fn verify(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(public).is_ok_and(|key| {
        key.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    })
}

/// A key as text: base58, as Solana prints addresses.
pub fn to_base58(key: &[u8; 32]) -> String {
    bs58::encode(key).into_string()
}

/// Parses a base58 public key; the error says what was wrong.
pub fn from_base58(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = bs58::decode(text)
        .into_vec()
        .with_context(|| format!("{text:?} is not base58"))?;
    bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{text:?} decodes to {} bytes; a public key has 32",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        let identity = Identity::generate().unwrap();
        identity.write(&path).unwrap();
        let read = Identity::read(&path).unwrap();
        assert_eq!(read.public(), identity.public());
        let signature = read.sign(b"hello");
        assert!(verify(&identity.public(), b"hello", &signature));
        assert!(!verify(&identity.public(), b"hellO", &signature));
        assert!(Identity::generate().unwrap().write(&path).is_err());
        assert_eq!(
            from_base58(&to_base58(&identity.public())).unwrap(),
            identity.public()
        );

        let mut mismatched: Vec<u8> = read.key.to_keypair_bytes().to_vec();
        mismatched[40] ^= 1;
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, serde_json::to_string(&mismatched).unwrap()).unwrap();
        let error = Identity::read(&bad).err().unwrap().to_string();
        assert!(error.contains("does not match"), "{error}");
    }
}
