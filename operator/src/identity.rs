//! Client identities: one ed25519 keypair per client, in a Secret as a Solana CLI wallet file
//! (a JSON array of the 32 secret bytes followed by the 32 public bytes, what `demeter train
//! --wallet` reads). The points a client earns belong to its key, so a keypair is generated
//! once, never replaced, never logged, and by default outlives its TrainingRun.

use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use crate::children::{self, KEYPAIR_KEY, Names};
use crate::crd::TrainingRun;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "Secret {secret} does not hold a keypair under {KEYPAIR_KEY:?} ({why}); it may hold a \
         client's points, so the operator leaves it alone: restore it, or delete it to have a \
         new identity generated"
    )]
    Malformed { secret: String, why: String },
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A new keypair as wallet-file JSON.
pub fn generate_keypair_json() -> Result<String, IdentityError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let bytes: Vec<u8> = key.to_keypair_bytes().to_vec();
    Ok(serde_json::to_string(&bytes).expect("bytes serialize"))
}

/// The keypair of a wallet file, its public half checked against its secret half.
pub fn parse_keypair(keypair_json: &[u8]) -> Result<SigningKey, String> {
    let bytes: Vec<u8> =
        serde_json::from_slice(keypair_json).map_err(|_| "not a JSON array of bytes".to_owned())?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, not 64", b.len()))?;
    SigningKey::from_keypair_bytes(&bytes)
        .map_err(|_| "its public half does not match its secret half".to_owned())
}

/// The base58 public key of a wallet file, checked against its secret half.
pub fn public_key(keypair_json: &[u8]) -> Result<String, String> {
    let key = parse_keypair(keypair_json)?;
    Ok(bs58::encode(key.verifying_key().as_bytes()).into_string())
}

/// The bytes under `key` of a Secret, from `data` or, before the API server has folded it in,
/// `stringData`.
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.clone())
        .or_else(|| {
            let text = secret.string_data.as_ref()?.get(key)?;
            Some(text.as_bytes().to_vec())
        })
}

/// Makes sure every client of `run` has its keypair Secret and returns their public keys, in
/// client order. Existing Secrets are read, never rewritten.
pub async fn ensure(
    secrets: &Api<Secret>,
    run: &TrainingRun,
) -> Result<Vec<String>, IdentityError> {
    let clients = (0..run.spec.clients.replicas).map(|index| ensure_one(secrets, run, index));
    futures_util::future::try_join_all(clients).await
}

async fn ensure_one(
    secrets: &Api<Secret>,
    run: &TrainingRun,
    index: u16,
) -> Result<String, IdentityError> {
    let secret_name = Names(&kube::ResourceExt::name_any(run)).identity(index);
    let secret = match secrets.get_opt(&secret_name).await? {
        Some(secret) => secret,
        None => {
            let new = children::identity_secret(run, index, generate_keypair_json()?);
            match secrets.create(&PostParams::default(), &new).await {
                Ok(created) => created,
                // Another writer made it first (a previous operator that stopped before it
                // saw the answer): theirs stands.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    secrets.get(&secret_name).await?
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    read_public_key(&secret, &secret_name)
}

fn read_public_key(secret: &Secret, secret_name: &str) -> Result<String, IdentityError> {
    let malformed = |why: String| IdentityError::Malformed {
        secret: secret_name.to_owned(),
        why,
    };
    let bytes =
        secret_value(secret, KEYPAIR_KEY).ok_or_else(|| malformed("the key is missing".into()))?;
    public_key(&bytes).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keypairs_are_wallet_files_with_distinct_keys() {
        let first = generate_keypair_json().unwrap();
        let second = generate_keypair_json().unwrap();
        let first_key = public_key(first.as_bytes()).unwrap();
        assert_ne!(first_key, public_key(second.as_bytes()).unwrap());
        let bytes: Vec<u8> = serde_json::from_str(&first).unwrap();
        assert_eq!(bytes.len(), 64);
        assert_eq!(bs58::decode(&first_key).into_vec().unwrap(), bytes[32..]);
    }

    #[test]
    fn a_tampered_keypair_is_refused_with_the_reason() {
        let mut bytes: Vec<u8> = serde_json::from_str(&generate_keypair_json().unwrap()).unwrap();
        bytes[40] ^= 1;
        let text = serde_json::to_vec(&bytes).unwrap();
        assert!(public_key(&text).unwrap_err().contains("does not match"));
        assert!(public_key(b"[1,2]").unwrap_err().contains("2 bytes"));
    }
}
