//! The centralized coordinator's state on disk: written after every change, atomically (a
//! temporary file, fsync, rename, fsync of the directory), so a crash leaves the old state or
//! the new one, never a torn file.
//!
//! Format: the magic `DMCS`, a u32 format version, the [`Coordinator`]'s bytes, and the SHA-256
//! of everything before it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use demeter_coordinator_core::Coordinator;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"DMCS";
/// Version 4: rounds keep the seed drawn at their close, the config the share of results
/// spot-checked and the tolerance of their recomputes (in bytes that were padding, zero in
/// files written before it: bit for bit, as those runs judged); version 3: the attested checkpoint; version 2: rounds record commit order,
/// accusations and ejections (issue 15).
const FORMAT_VERSION: u32 = 4;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a coordinator state file of format {FORMAT_VERSION} ({why}); it is left untouched"
    )]
    Corrupt { path: PathBuf, why: &'static str },
}

/// Where one run's state lives.
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The saved state, or `None` when there is none yet. A damaged file is an error, never
    /// silently replaced: it holds members' points.
    pub fn load(&self) -> Result<Option<Box<Coordinator>>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.io(error)),
        };
        let corrupt = |why| StoreError::Corrupt {
            path: self.path.clone(),
            why,
        };
        let state_len = size_of::<Coordinator>();
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(corrupt("wrong magic"));
        }
        if bytes[4..8] != FORMAT_VERSION.to_le_bytes() {
            return Err(corrupt(
                "another format version: a server of the release that wrote it reads it",
            ));
        }
        if bytes.len() != HEADER + state_len + 32 {
            return Err(corrupt("wrong size"));
        }
        let (body, digest) = bytes.split_at(HEADER + state_len);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(Coordinator::boxed_from_bytes(&body[HEADER..]))
    }

    /// Replaces the saved state with `state`, atomically and durably.
    pub fn save(&self, state: &Coordinator) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(HEADER + size_of::<Coordinator>() + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(bytemuck::bytes_of(state));
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);

        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            let directory = match self.path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            File::open(directory)?.sync_all()
        };
        write().map_err(|error| self.io(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_and_refuses_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("run.state"));
        assert!(store.load().unwrap().is_none());
        let mut state: Box<Coordinator> = bytemuck::zeroed_box();
        state.step = 41;
        state.members[3].points = 1000;
        store.save(&state).unwrap();
        state.step = 42;
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), state);
        assert!(!dir.path().join("run.state.tmp").exists());

        let mut bytes = std::fs::read(store.path()).unwrap();
        bytes[100] ^= 1;
        std::fs::write(store.path(), &bytes).unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("checksum mismatch"), "{error}");
        std::fs::write(store.path(), &bytes[..50]).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("wrong size"));
        // A file of the format before (rounds without verdicts) is named as such, and kept.
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(store.path(), &bytes).unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(error.contains("another format version"), "{error}");
        assert_eq!(std::fs::read(store.path()).unwrap(), bytes);
    }
}
