//! Encoding and strict decoding of payloads (format described in the module above).

use half::bf16;
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use super::error::PayloadError;
use crate::demo::{
    BlockLayout, Compressor, MAX_BLOCK_SIDE, SparseBlocks, SparseUpdate, TensorLayout,
    ValueEncoding,
};

const MAGIC: [u8; 4] = *b"DMPL";
/// The payload format version this build writes and reads.
pub const VERSION: u16 = 2;
/// Length of the trailing SHA-256.
pub const HASH_LEN: usize = 32;
/// Magic, version, encoding, reserved, tensor count, then the momentum commitment.
const HEADER_LEN: usize = 12 + HASH_LEN;
/// Where the momentum commitment sits in the header.
const MOMENTUM_AT: usize = 12;
/// Name length, rank, block rows, block cols, block count, k: the least a tensor record takes.
const MIN_TENSOR_RECORD: usize = 2 + 1 + 4 * 4;
/// Ranks above this are rejected before the shape is read.
const MAX_RANK: usize = 8;
/// The most elements the tensors of one payload may declare when no model is at hand to check
/// them against ([`describe`]): 2^31, above the 1b preset's parameters, so a tool that expands a
/// payload never allocates more than 8 GiB of f32 on an 80-byte file's say-so.
pub const MAX_DECLARED_ELEMENTS: u64 = 1 << 31;

/// A payload's SHA-256: what its participant commits to the coordinator and peers fetch it by.
pub type ContentHash = [u8; HASH_LEN];

/// The SHA-256 of the DeMo momentum its sender computed the result from
/// (of [`crate::demo::Demo::momentum_bytes`]), all zero when the run spot-checks nothing: what a
/// spot check fetches that momentum by and recomputes the result from.
pub type MomentumCommitment = [u8; HASH_LEN];

/// The commitment of a payload whose sender commits to no momentum.
pub const UNCOMMITTED: MomentumCommitment = [0; HASH_LEN];

/// The momentum commitment a payload carries, or `None` if it is too short to have one (read
/// without checks: decode or verify the payload first).
pub fn momentum_commitment(payload: &[u8]) -> Option<MomentumCommitment> {
    payload
        .get(MOMENTUM_AT..MOMENTUM_AT + HASH_LEN)?
        .try_into()
        .ok()
}

/// Bytes per index for blocks of `block_len` values.
pub fn index_width(block_len: usize) -> usize {
    match block_len {
        0..=256 => 1,
        257..=65536 => 2,
        _ => 4,
    }
}

fn value_bytes(encoding: ValueEncoding, count: usize) -> usize {
    match encoding {
        ValueEncoding::F32 => 4 * count,
        ValueEncoding::Bf16 => 2 * count,
        ValueEncoding::Sign => count.div_ceil(8),
    }
}

fn encoding_code(encoding: ValueEncoding) -> u8 {
    match encoding {
        ValueEncoding::F32 => 0,
        ValueEncoding::Bf16 => 1,
        ValueEncoding::Sign => 2,
    }
}

fn encoding_from_code(code: u8) -> Result<ValueEncoding, PayloadError> {
    match code {
        0 => Ok(ValueEncoding::F32),
        1 => Ok(ValueEncoding::Bf16),
        2 => Ok(ValueEncoding::Sign),
        other => Err(PayloadError::UnknownEncoding(other)),
    }
}

/// The exact size of one tensor's record for this layout and encoding.
pub fn record_len(layout: &TensorLayout, encoding: ValueEncoding) -> usize {
    let selected = layout.blocks.block_count() * layout.k;
    MIN_TENSOR_RECORD
        + layout.name.len()
        + 4 * layout.blocks.shape.len()
        + selected * index_width(layout.blocks.block_len())
        + value_bytes(encoding, selected)
}

/// The exact size of a payload for these layouts and encoding.
pub fn encoded_len(layouts: &[TensorLayout], encoding: ValueEncoding) -> usize {
    HEADER_LEN
        + layouts
            .iter()
            .map(|layout| record_len(layout, encoding))
            .sum::<usize>()
        + HASH_LEN
}

/// The content hash stored in a payload's trailer, or `None` if it is too short to have one.
pub fn content_hash(payload: &[u8]) -> Option<ContentHash> {
    let start = payload.len().checked_sub(HASH_LEN)?;
    payload[start..].try_into().ok()
}

/// The content hash of a payload whose trailer matches its content, or `None` if it is too short
/// or damaged. Peers check fetched bytes with this before keeping or serving them.
pub fn verified_hash(payload: &[u8]) -> Option<ContentHash> {
    let (body, hash) = payload.split_at_checked(payload.len().checked_sub(HASH_LEN)?)?;
    (Sha256::digest(body).as_slice() == hash).then(|| hash.try_into().ok())?
}

/// Serializes `update`, whose tensors follow `layouts`, computed from the momentum that
/// `momentum` commits to.
///
/// # Panics
/// If the update does not follow the layouts: updates come from a [`crate::demo::Compressor`]
/// built with the same layouts, so this is a programming error.
pub fn encode(
    update: &SparseUpdate,
    momentum: &MomentumCommitment,
    layouts: &[TensorLayout],
) -> Vec<u8> {
    assert_eq!(
        update.tensors.len(),
        layouts.len(),
        "one selection per layout"
    );
    let mut out = Vec::with_capacity(encoded_len(layouts, update.values));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(encoding_code(update.values));
    out.push(0);
    out.extend_from_slice(&(layouts.len() as u32).to_le_bytes());
    out.extend_from_slice(momentum);
    for (layout, selection) in layouts.iter().zip(&update.tensors) {
        let blocks = &layout.blocks;
        assert_eq!(selection.k(), layout.k, "{}: k", layout.name);
        out.extend_from_slice(&(layout.name.len() as u16).to_le_bytes());
        out.extend_from_slice(layout.name.as_bytes());
        out.push(blocks.shape.len() as u8);
        for &dim in &blocks.shape {
            out.extend_from_slice(&(dim as u32).to_le_bytes());
        }
        for field in [
            blocks.block_rows,
            blocks.block_cols,
            blocks.block_count(),
            layout.k,
        ] {
            out.extend_from_slice(&(field as u32).to_le_bytes());
        }
        let indices = Vec::<i64>::try_from(selection.indices.flatten(0, -1).to_device(Device::Cpu))
            .expect("indices are i64");
        let values = Vec::<f32>::try_from(selection.values.flatten(0, -1).to_device(Device::Cpu))
            .expect("values are f32");
        let width = index_width(blocks.block_len());
        for index in indices {
            out.extend_from_slice(&(index as u32).to_le_bytes()[..width]);
        }
        match update.values {
            ValueEncoding::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ValueEncoding::Bf16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
            ValueEncoding::Sign => {
                for chunk in values.chunks(8) {
                    let byte = chunk
                        .iter()
                        .enumerate()
                        .fold(0u8, |byte, (bit, v)| byte | (u8::from(*v < 0.0) << bit));
                    out.push(byte);
                }
            }
        }
    }
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

/// A bounds-checked reader over untrusted bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// What a tensor record says about itself, before anything is checked.
struct RecordHeader<'a> {
    name: &'a [u8],
    shape: [u32; MAX_RANK],
    rank: usize,
    block_rows: u32,
    block_cols: u32,
    block_count: u32,
    k: u32,
}

impl RecordHeader<'_> {
    fn shape(&self) -> Vec<usize> {
        self.shape[..self.rank]
            .iter()
            .map(|&d| d as usize)
            .collect()
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }
}

fn read_record_header<'a>(
    cursor: &mut Cursor<'a>,
    index: usize,
) -> Result<RecordHeader<'a>, PayloadError> {
    let truncated = |field| PayloadError::Truncated {
        index,
        name: String::from("?"),
        field,
    };
    let name_len = cursor.u16().ok_or_else(|| truncated("name length"))? as usize;
    let name = cursor.take(name_len).ok_or_else(|| truncated("name"))?;
    let rank = cursor.u8().ok_or_else(|| truncated("rank"))? as usize;
    if rank > MAX_RANK {
        return Err(PayloadError::Layout {
            index,
            problem: format!("rank {rank} exceeds {MAX_RANK}"),
        });
    }
    let mut shape = [0u32; MAX_RANK];
    for dim in shape.iter_mut().take(rank) {
        *dim = cursor.u32().ok_or_else(|| truncated("shape"))?;
    }
    let mut fields = [0u32; 4];
    for field in &mut fields {
        *field = cursor.u32().ok_or_else(|| truncated("block header"))?;
    }
    let [block_rows, block_cols, block_count, k] = fields;
    Ok(RecordHeader {
        name,
        shape,
        rank,
        block_rows,
        block_cols,
        block_count,
        k,
    })
}

/// Checks length and hash, then the fixed header; returns the encoding, the tensor count and a
/// cursor over the tensor records.
fn open(bytes: &[u8]) -> Result<(ValueEncoding, u32, Cursor<'_>), PayloadError> {
    if bytes.len() < HEADER_LEN + HASH_LEN {
        return Err(PayloadError::TooShort {
            len: bytes.len(),
            min: HEADER_LEN + HASH_LEN,
        });
    }
    if verified_hash(bytes).is_none() {
        return Err(PayloadError::HashMismatch);
    }
    let mut cursor = Cursor {
        bytes: &bytes[..bytes.len() - HASH_LEN],
    };
    let header = cursor.take(HEADER_LEN).expect("length checked above");
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(PayloadError::Magic { found: magic });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(PayloadError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let encoding = encoding_from_code(header[6])?;
    if header[7] != 0 {
        return Err(PayloadError::Reserved(header[7]));
    }
    let count = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    Ok((encoding, count, cursor))
}

/// Decodes peers' payloads for a replica whose codec is `compressor`, onto `device`, in order.
pub fn decode_all<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    compressor: &Compressor,
    device: Device,
) -> Result<Vec<SparseUpdate>, PayloadError> {
    payloads
        .into_iter()
        .map(|bytes| decode(bytes, compressor.layouts(), compressor.values(), device))
        .collect()
}

/// Decodes a payload that must follow `layouts` and `encoding`, onto `device`.
pub fn decode(
    bytes: &[u8],
    layouts: &[TensorLayout],
    encoding: ValueEncoding,
    device: Device,
) -> Result<SparseUpdate, PayloadError> {
    let (found, count, mut cursor) = open(bytes)?;
    if found != encoding {
        return Err(PayloadError::Encoding {
            found: format!("{found:?}"),
            expected: format!("{encoding:?}"),
        });
    }
    if count as usize != layouts.len() {
        return Err(PayloadError::TensorCount {
            found: count.into(),
            expected: layouts.len(),
        });
    }
    let tensors = layouts
        .iter()
        .enumerate()
        .map(|(index, layout)| decode_tensor(&mut cursor, index, layout, encoding, device))
        .collect::<Result<Vec<_>, _>>()?;
    if !cursor.bytes.is_empty() {
        return Err(PayloadError::Trailing(cursor.bytes.len()));
    }
    Ok(SparseUpdate {
        values: encoding,
        tensors,
    })
}

fn expect_field(
    index: usize,
    field: &'static str,
    found: impl ToString,
    expected: impl ToString,
) -> Result<(), PayloadError> {
    let (found, expected) = (found.to_string(), expected.to_string());
    if found == expected {
        Ok(())
    } else {
        Err(PayloadError::Field {
            index,
            field,
            found,
            expected,
        })
    }
}

fn decode_tensor(
    cursor: &mut Cursor<'_>,
    index: usize,
    layout: &TensorLayout,
    encoding: ValueEncoding,
    device: Device,
) -> Result<SparseBlocks, PayloadError> {
    let header = read_record_header(cursor, index)?;
    let blocks = &layout.blocks;
    if header.name != layout.name.as_bytes() {
        return Err(PayloadError::Field {
            index,
            field: "name",
            found: header.name(),
            expected: layout.name.clone(),
        });
    }
    expect_field(
        index,
        "shape",
        format!("{:?}", header.shape()),
        format!("{:?}", blocks.shape),
    )?;
    expect_field(index, "block rows", header.block_rows, blocks.block_rows)?;
    expect_field(index, "block cols", header.block_cols, blocks.block_cols)?;
    expect_field(
        index,
        "block count",
        header.block_count,
        blocks.block_count(),
    )?;
    expect_field(index, "k", header.k, layout.k)?;

    // Every length below comes from the receiver's own layout, never from the payload.
    let (block_len, k) = (blocks.block_len(), layout.k);
    let selected = blocks.block_count() * k;
    let width = index_width(block_len);
    let truncated = |field| PayloadError::Truncated {
        index,
        name: layout.name.clone(),
        field,
    };
    let raw_indices = cursor
        .take(selected * width)
        .ok_or_else(|| truncated("indices"))?;
    let mut indices = Vec::with_capacity(selected);
    for (position, raw) in raw_indices.chunks_exact(width).enumerate() {
        let mut le = [0u8; 4];
        le[..width].copy_from_slice(raw);
        let value = u32::from_le_bytes(le) as usize;
        let block = position / k;
        let ascending = position % k == 0 || value > indices[position - 1] as usize;
        if value >= block_len || !ascending {
            return Err(PayloadError::Index {
                index,
                name: layout.name.clone(),
                block,
                value: value as u64,
                block_len,
            });
        }
        indices.push(value as i64);
    }
    let raw_values = cursor
        .take(value_bytes(encoding, selected))
        .ok_or_else(|| truncated("values"))?;
    let values: Vec<f32> = match encoding {
        ValueEncoding::F32 => raw_values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        ValueEncoding::Bf16 => raw_values
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        ValueEncoding::Sign => {
            let padding = raw_values.len() * 8 - selected;
            if padding > 0 && raw_values[raw_values.len() - 1] >> (8 - padding) != 0 {
                return Err(PayloadError::Layout {
                    index,
                    problem: "sign padding bits are not zero".into(),
                });
            }
            (0..selected)
                .map(|i| {
                    if raw_values[i / 8] >> (i % 8) & 1 == 1 {
                        -1.0
                    } else {
                        1.0
                    }
                })
                .collect()
        }
    };
    if let Some(position) = values.iter().position(|v| !v.is_finite()) {
        return Err(PayloadError::NonFinite {
            index,
            name: layout.name.clone(),
            position,
        });
    }
    let shape = [blocks.block_count() as i64, k as i64];
    Ok(SparseBlocks {
        indices: Tensor::from_slice(&indices).view(shape).to_device(device),
        values: Tensor::from_slice(&values).view(shape).to_device(device),
    })
}

/// Reads the layouts a payload declares (for tools that have no model at hand), checking that
/// they are self-consistent and that the payload holds exactly the bytes they imply. Follow with
/// [`decode`] against the result to check the contents.
pub fn describe(bytes: &[u8]) -> Result<(ValueEncoding, Vec<TensorLayout>), PayloadError> {
    let (encoding, count, mut cursor) = open(bytes)?;
    let count = count as usize;
    if count > cursor.bytes.len() / MIN_TENSOR_RECORD {
        return Err(PayloadError::DeclaredCount {
            found: count as u64,
            len: bytes.len(),
            max: cursor.bytes.len() / MIN_TENSOR_RECORD,
        });
    }
    let mut layouts = Vec::with_capacity(count);
    let mut declared = 0u64;
    for index in 0..count {
        let header = read_record_header(&mut cursor, index)?;
        let layout_error = |problem: String| PayloadError::Layout { index, problem };
        let name = std::str::from_utf8(header.name)
            .map_err(|_| layout_error("name is not UTF-8".into()))?
            .to_owned();
        let shape = header.shape();
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| layout_error(format!("shape {shape:?} overflows")))?;
        if numel == 0 {
            return Err(layout_error(format!("shape {shape:?} is empty")));
        }
        declared = declared.saturating_add(numel);
        if declared > MAX_DECLARED_ELEMENTS {
            return Err(layout_error(format!(
                "shape {shape:?} brings the payload to {declared} elements, more than the \
                 {MAX_DECLARED_ELEMENTS} a payload may declare without a model to check it against"
            )));
        }
        let side = header.block_rows.max(header.block_cols) as usize;
        if side > MAX_BLOCK_SIDE {
            return Err(layout_error(format!(
                "blocks {}x{} exceed {MAX_BLOCK_SIDE} per side, the largest DCT block",
                header.block_rows, header.block_cols
            )));
        }
        let blocks = BlockLayout::with_blocks(
            &shape,
            header.block_rows as usize,
            header.block_cols as usize,
        )
        .ok_or_else(|| {
            layout_error(format!(
                "blocks {}x{} do not tile shape {shape:?}",
                header.block_rows, header.block_cols
            ))
        })?;
        expect_field(
            index,
            "block count",
            header.block_count,
            blocks.block_count(),
        )?;
        let k = header.k as usize;
        if k == 0 || k > blocks.block_len() {
            return Err(layout_error(format!(
                "k = {k} outside 1..={}",
                blocks.block_len()
            )));
        }
        let selected = (header.block_count as u64) * (k as u64);
        let record = selected
            .checked_mul(index_width(blocks.block_len()) as u64)
            .and_then(|indices| {
                indices.checked_add(value_bytes(encoding, selected as usize) as u64)
            })
            .filter(|&len| len <= cursor.bytes.len() as u64)
            .ok_or(PayloadError::Truncated {
                index,
                name: name.clone(),
                field: "indices and values",
            })?;
        cursor.take(record as usize);
        layouts.push(TensorLayout { name, blocks, k });
    }
    if !cursor.bytes.is_empty() {
        return Err(PayloadError::Trailing(cursor.bytes.len()));
    }
    Ok((encoding, layouts))
}
