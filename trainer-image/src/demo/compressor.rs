//! DeMo's codec over a whole model: every parameter's blockwise DCT, top-k and aggregation.
//!
//! The optimizer, `demeter payload` and the networked trainer all go through this one type, so a
//! coefficient means the same thing wherever it is produced or consumed.

use tch::{Device, Tensor};

use super::dct::DctTransform;
use super::layout::BlockLayout;
use super::sparse::{SparseBlocks, ValueEncoding, dense_from_picks, weighted_picks};

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
        self.decode_picks(index, &selection.indices, &selection.values)
    }

    /// The decoded mean of many clients' selections of parameter `index`: each coefficient
    /// averaged over the clients that selected it, then the inverse DCT.
    pub fn aggregate(&self, index: usize, selections: &[&SparseBlocks]) -> Tensor {
        let (indices, values) = weighted_picks(selections, &self.layouts[index].blocks);
        self.decode_picks(index, &indices, &values)
    }

    /// The inverse DCT of coefficients given as picks (`[block_count, terms]` positions and
    /// values; repeats add up), by whichever of the sparse and the dense inverse costs fewer
    /// multiply-adds. The choice depends only on the shapes, so every replica makes the same one.
    fn decode_picks(&self, index: usize, indices: &Tensor, values: &Tensor) -> Tensor {
        let blocks = &self.layouts[index].blocks;
        let terms = indices.size().last().copied().unwrap_or(0) as usize;
        if terms < blocks.block_rows + blocks.block_cols {
            self.transform.decode_sparse(indices, values, blocks)
        } else {
            self.transform
                .decode(&dense_from_picks(indices, values, blocks), blocks)
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Each coefficient's sum over the clients that picked it, divided by how many did.
    fn dense_mean(selections: &[&SparseBlocks], layout: &BlockLayout) -> Tensor {
        let shape = [layout.block_count() as i64, layout.block_len() as i64];
        let mut sum = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let mut count = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        for selection in selections {
            let _ = sum.scatter_add_(-1, &selection.indices, &selection.values);
            let _ = count.scatter_add_(-1, &selection.indices, &selection.values.ones_like());
        }
        sum / count.clamp_min(1.0)
    }

    #[test]
    fn aggregate_is_the_decoded_mean_on_the_sparse_and_the_dense_path() {
        tch::manual_seed(3);
        // 128 x 128 in 64 x 64 blocks: three clients with k = 8 (24 picks per block) take the
        // sparse inverse, with k = 48 (144 picks) the dense one.
        for topk in [8, 48] {
            let tensors = [(
                "w".to_owned(),
                Tensor::zeros([128, 128], (Kind::Float, Device::Cpu)),
            )];
            let compressor = Compressor::for_tensors(&tensors, 64, topk, ValueEncoding::F32);
            let momenta: Vec<Tensor> = (0..3)
                .map(|_| Tensor::randn([128, 128], (Kind::Float, Device::Cpu)))
                .collect();
            let selections: Vec<SparseBlocks> = momenta
                .iter()
                .map(|momentum| compressor.select(0, momentum).0)
                .collect();
            let selections: Vec<&SparseBlocks> = selections.iter().collect();
            let layout = &compressor.layouts()[0].blocks;
            let expected = compressor
                .transform
                .decode(&dense_mean(&selections, layout), layout);
            let aggregate = compressor.aggregate(0, &selections);
            let difference = (aggregate - expected).abs().max().double_value(&[]);
            assert!(difference < 1e-5, "topk {topk}: {difference}");
        }
    }
}
