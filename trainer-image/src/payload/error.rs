//! Why a payload was rejected.

/// A malformed, corrupted or foreign payload. Never a panic: every variant names what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is {len} bytes, shorter than the smallest possible payload ({min} bytes)")]
    TooShort { len: usize, min: usize },
    #[error("content hash mismatch: the payload was corrupted or truncated in transit")]
    HashMismatch,
    #[error("bad magic {found:?}: not a Demeter payload (expected \"DMPL\")")]
    Magic { found: [u8; 4] },
    #[error("payload format version {found}; this build reads version {supported}")]
    Version { found: u16, supported: u16 },
    #[error("unknown value encoding {0} (0 = f32, 1 = bf16, 2 = sign)")]
    UnknownEncoding(u8),
    #[error("reserved header byte is {0}, must be 0")]
    Reserved(u8),
    #[error("value encoding is {found}, the run uses {expected}")]
    Encoding { found: String, expected: String },
    #[error("payload has {found} tensors, the model has {expected}")]
    TensorCount { found: u64, expected: usize },
    #[error("payload declares {found} tensors; its {len} bytes can hold at most {max}")]
    DeclaredCount { found: u64, len: usize, max: usize },
    #[error("tensor {index}: {field} is {found}, the model expects {expected}")]
    Field {
        index: usize,
        field: &'static str,
        found: String,
        expected: String,
    },
    #[error("tensor {index} ({name}): payload ends inside {field}")]
    Truncated {
        index: usize,
        name: String,
        field: &'static str,
    },
    #[error(
        "tensor {index} ({name}): block {block} has index {value} out of order or out of range (block holds {block_len})"
    )]
    Index {
        index: usize,
        name: String,
        block: usize,
        value: u64,
        block_len: usize,
    },
    #[error("tensor {index} ({name}): value {position} is not finite")]
    NonFinite {
        index: usize,
        name: String,
        position: usize,
    },
    #[error("tensor {index}: {problem}")]
    Layout { index: usize, problem: String },
    #[error("{0} bytes left over after the last tensor")]
    Trailing(usize),
}
