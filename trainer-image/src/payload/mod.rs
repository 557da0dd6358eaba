//! The wire format of one client's DeMo result for one step.
//!
//! ```text
//! offset  size            field
//! 0       4               magic "DMPL"
//! 4       2               format version, u16 (this is version 2)
//! 6       1               value encoding: 0 = f32, 1 = bf16, 2 = sign (1 bit)
//! 7       1               reserved, 0
//! 8       4               tensor count, u32
//! 12      32              momentum commitment: SHA-256 of the sender's DeMo momentum before
//!                           the step (all zero when the run spot-checks nothing)
//!         per tensor, in model order:
//!         2 + len           name: u16 length, UTF-8 bytes
//!         1 + 4·rank        shape: u8 rank, u32 dimensions
//!         4, 4              block rows, block cols (u32)
//!         4, 4              block count, k (u32)
//!         n·w               indices, n = block count · k, ascending within each block, each
//!                           w = 1, 2 or 4 bytes when a block holds <= 2^8, <= 2^16, or more values
//!         n·4 | n·2 | ⌈n/8⌉ values: f32, bf16, or one sign bit each (LSB first, 1 = negative)
//! end-32  32              SHA-256 of every byte before it (the payload's content hash)
//! ```
//! All integers are little-endian. The decoder checks the hash first, then every field against
//! the layouts the receiving model expects, before it allocates anything.

mod codec;
mod error;

pub use codec::{
    ContentHash, HASH_LEN, MAX_DECLARED_ELEMENTS, MomentumCommitment, UNCOMMITTED, VERSION,
    content_hash, decode, decode_all, describe, encode, encoded_len, index_width,
    momentum_commitment, record_len, verified_hash,
};
pub use error::PayloadError;
