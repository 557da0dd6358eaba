//! Safetensors files as Hugging Face writes them: named tensors and `{"format": "pt"}`, written
//! atomically (a crash mid-write leaves the previous file intact) and byte-reproducible (the same
//! tensors always give the same file, so checkpoints can be compared and addressed by hash).
//! Anything else a checkpoint needs goes in a JSON file beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View, tensor::TensorView};
use tch::{Device, Kind, Tensor};

/// Why a safetensors file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {source}")]
    Format {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    #[error("{path}: tensor {name} has dtype {dtype:?}; Demeter reads F32, BF16, F16 and I64")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: Dtype,
    },
    #[error("tensor {name}: kind {kind:?} cannot be written")]
    Kind { name: String, kind: Kind },
    #[error("{path}: tensor {name} {problem}")]
    Mismatch {
        path: PathBuf,
        name: String,
        problem: String,
    },
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Int64 => Dtype::I64,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::I64 => Kind::Int64,
        _ => return None,
    })
}

fn raw(name: &str, tensor: &Tensor) -> Result<Raw, CheckpointError> {
    let kind = tensor.kind();
    let dtype = dtype_of(kind).ok_or_else(|| CheckpointError::Kind {
        name: name.to_owned(),
        kind,
    })?;
    let tensor = tensor.to_device(Device::Cpu).contiguous();
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
    tensor.copy_data_u8(&mut bytes, numel);
    Ok(Raw {
        dtype,
        shape: tensor.size().iter().map(|&d| d as usize).collect(),
        bytes,
    })
}

/// Writes `tensors` to `path` atomically (temporary file, then rename).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    let raws = tensors
        .iter()
        .map(|(name, tensor)| Ok((name.clone(), raw(name, tensor)?)))
        .collect::<Result<Vec<_>, CheckpointError>>()?;
    // One key only: the crate keeps metadata in a HashMap, whose order would vary between runs.
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors::serialize(
        raws.iter().map(|(name, raw)| (name.as_str(), raw)),
        Some(metadata),
    )
    .map_err(|source| CheckpointError::Format {
        path: path.to_owned(),
        source,
    })?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes).map_err(io)?;
    std::fs::File::open(&temporary)
        .and_then(|file| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// Reads every tensor of a safetensors file, in the file's order.
pub fn load_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    })?;
    let format = |source| CheckpointError::Format {
        path: path.to_owned(),
        source,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
    let file = SafeTensors::deserialize(&bytes).map_err(format)?;
    let mut named: Vec<(String, TensorView<'_>)> = file.tensors();
    // The header keeps tensors in offset order; that is the order they were written in.
    let offsets: HashMap<String, usize> = header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.data_offsets.0))
        .collect();
    named.sort_by_key(|(name, _)| offsets.get(name).copied().unwrap_or(usize::MAX));
    let tensors = named
        .into_iter()
        .map(|(name, view)| {
            let kind = kind_of(view.dtype()).ok_or_else(|| CheckpointError::Dtype {
                path: path.to_owned(),
                name: name.clone(),
                dtype: view.dtype(),
            })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            Ok((name, Tensor::from_data_size(view.data(), &shape, kind)))
        })
        .collect::<Result<Vec<_>, CheckpointError>>()?;
    Ok(tensors)
}
