//! DeMo's codec over a whole model: every parameter's blockwise DCT, top-k and aggregation.
//!
//! The optimizer, `demeter payload` and the networked trainer all go through this one type, so a
//! coefficient means the same thing wherever it is produced or consumed.

use tch::{Device, Tensor};

use super::dct::DctTransform;
use super::layout::BlockLayout;
use super::sparse::{SparseBlocks, ValueEncoding, mean_of_selections};

/// A named parameter and its blocking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorLayout {
    /// The parameter's name (HF LLaMA naming for the model).
    pub name: String,
    /// How it is cut into DCT blocks.
    pub blocks: BlockLayout,
    /// Coefficients kept per block.
    pub k: usize,
}

/// One client's result of one step: the selected coefficients of every parameter, in model order.
#[derive(Debug)]
pub struct SparseUpdate {
    /// How the values were quantized (and will travel).
    pub values: ValueEncoding,
    /// One selection per parameter, in the order of [`Compressor::layouts`].
    pub tensors: Vec<SparseBlocks>,
}

/// The blockwise DCT + top-k codec for one model.
#[derive(Debug)]
pub struct Compressor {
    layouts: Vec<TensorLayout>,
    transform: DctTransform,
    values: ValueEncoding,
}

impl Compressor {
    /// A codec for parameters named and shaped as given, on `device`.
    pub fn new<'a>(
        parameters: impl IntoIterator<Item = (&'a str, &'a [usize])>,
        chunk: usize,
        topk: usize,
        values: ValueEncoding,
        device: Device,
    ) -> Self {
        let layouts: Vec<TensorLayout> = parameters
            .into_iter()
            .map(|(name, shape)| {
                let blocks = BlockLayout::new(shape, chunk);
                TensorLayout {
                    name: name.to_owned(),
                    k: blocks.kept_per_block(topk),
                    blocks,
                }
            })
            .collect();
        let transform = DctTransform::new(layouts.iter().map(|layout| &layout.blocks), device);
        Self {
            layouts,
            transform,
            values,
        }
    }

    /// A codec for these named tensors' shapes, on the first tensor's device.
    pub fn for_tensors(
        tensors: &[(String, Tensor)],
        chunk: usize,
        topk: usize,
        values: ValueEncoding,
    ) -> Self {
        let device = tensors
            .first()
            .map_or(Device::Cpu, |(_, tensor)| tensor.device());
        let shapes: Vec<Vec<usize>> = tensors
            .iter()
            .map(|(_, tensor)| tensor.size().iter().map(|&d| d as usize).collect())
            .collect();
        let named = tensors
            .iter()
            .zip(&shapes)
            .map(|((name, _), shape)| (name.as_str(), shape.as_slice()));
        Self::new(named, chunk, topk, values, device)
    }

    /// A codec for layouts stated elsewhere (a payload file's own header).
    pub fn from_layouts(layouts: Vec<TensorLayout>, values: ValueEncoding, device: Device) -> Self {
        let transform = DctTransform::new(layouts.iter().map(|layout| &layout.blocks), device);
        Self {
            layouts,
            transform,
            values,
        }
    }

    /// The parameters' layouts, in model order.
    pub fn layouts(&self) -> &[TensorLayout] {
        &self.layouts
    }

    /// The value encoding of this codec's selections.
    pub fn values(&self) -> ValueEncoding {
        self.values
    }

    /// The DCT coefficients of parameter `index`'s tensor `x`, `[block_count, block_len]`.
    pub fn encode(&self, index: usize, x: &Tensor) -> Tensor {
        self.transform.encode(x, &self.layouts[index].blocks)
    }

    /// Keeps the k largest coefficients of each block of `x` (parameter `index`).
    ///
    /// Returns the selection as it travels (values quantized) and the raw f32 selection.
    pub fn select(&self, index: usize, x: &Tensor) -> (SparseBlocks, SparseBlocks) {
        let raw = SparseBlocks::top_k(&self.encode(index, x), self.layouts[index].k);
        let sent = SparseBlocks {
            indices: raw.indices.shallow_clone(),
            values: self.values.quantize(&raw.values),
        };
        (sent, raw)
    }

    /// The tensor that a selection of parameter `index` stands for.
    pub fn decode(&self, index: usize, selection: &SparseBlocks) -> Tensor {
        let blocks = &self.layouts[index].blocks;
        self.transform.decode(&selection.to_dense(blocks), blocks)
    }

    /// The decoded mean of many clients' selections of parameter `index`: each coefficient
    /// averaged over the clients that selected it, then the inverse DCT.
    pub fn aggregate(&self, index: usize, selections: &[&SparseBlocks]) -> Tensor {
        let blocks = &self.layouts[index].blocks;
        self.transform
            .decode(&mean_of_selections(selections, blocks), blocks)
    }

    /// Compresses every tensor of `tensors` (in layout order) as a momentum buffer.
    pub fn compress_all(&self, tensors: &[Tensor]) -> SparseUpdate {
        SparseUpdate {
            values: self.values,
            tensors: tensors
                .iter()
                .enumerate()
                .map(|(index, tensor)| self.select(index, tensor).0)
                .collect(),
        }
    }

    /// The dense decoded mean of `updates` for every parameter, before DeMo takes its sign.
    pub fn aggregate_all(&self, updates: &[&SparseUpdate]) -> Vec<Tensor> {
        (0..self.layouts.len())
            .map(|index| {
                let selections: Vec<&SparseBlocks> = updates
                    .iter()
                    .map(|update| &update.tensors[index])
                    .collect();
                self.aggregate(index, &selections)
            })
            .collect()
    }
}
