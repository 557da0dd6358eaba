//! `demeter payload compress | expand | inspect`.

use std::path::PathBuf;

use anyhow::{Context, ensure};
use tch::{Device, Tensor};

use super::table::Table;
use crate::demo::{Aggregation, Compressor, MAX_BLOCK_SIDE, SparseUpdate, ValueEncoding};
use crate::model::{load_safetensors, save_safetensors};
use crate::payload;

#[derive(clap::Subcommand, Debug)]
pub enum PayloadCommand {
    /// Compress every tensor of a safetensors file as a DeMo momentum buffer.
    Compress {
        /// Target DCT block side.
        #[arg(long, default_value_t = 64)]
        chunk: usize,
        /// Coefficients kept per block.
        #[arg(long, default_value_t = 32)]
        topk: usize,
        /// Send only the sign of each value (1 bit).
        #[arg(long, conflicts_with = "bf16")]
        one_bit: bool,
        /// Send values in bfloat16.
        #[arg(long)]
        bf16: bool,
        input: PathBuf,
        output: PathBuf,
    },
    /// Aggregate payloads exactly as the optimizer does and write the dense decoded tensors
    /// (before DeMo takes their sign).
    Expand {
        /// Payload files, then the safetensors file to write.
        #[arg(required = true, num_args = 2..)]
        paths: Vec<PathBuf>,
    },
    /// Print shapes, k, bytes and the compression ratio of a payload.
    Inspect { payload: PathBuf },
}

pub fn payload(command: &PayloadCommand) -> anyhow::Result<()> {
    match command {
        PayloadCommand::Compress {
            chunk,
            topk,
            one_bit,
            bf16,
            input,
            output,
        } => {
            let values = match (one_bit, bf16) {
                (true, _) => ValueEncoding::Sign,
                (_, true) => ValueEncoding::Bf16,
                _ => ValueEncoding::F32,
            };
            ensure!(
                (1..=MAX_BLOCK_SIDE).contains(chunk),
                "--chunk {chunk}: the DCT block side must be in 1..={MAX_BLOCK_SIDE}"
            );
            ensure!(*topk > 0, "--topk must be at least 1");
            let tensors = load_safetensors(input)?;
            ensure!(!tensors.is_empty(), "{}: holds no tensor", input.display());
            let compressor = Compressor::for_tensors(&tensors, *chunk, *topk, values);
            let dense: Vec<Tensor> = tensors
                .iter()
                .map(|(_, t)| t.to_kind(tch::Kind::Float))
                .collect();
            let update = compressor.compress_all(&dense);
            let bytes = payload::encode(&update, &payload::UNCOMMITTED, compressor.layouts());
            std::fs::write(output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "{}: {} tensors, {} bytes",
                output.display(),
                tensors.len(),
                bytes.len()
            );
            Ok(())
        }
        PayloadCommand::Expand { paths } => {
            let (output, inputs) = paths.split_last().expect("clap requires two paths");
            let first = read(&inputs[0])?;
            let (values, layouts) =
                payload::describe(&first).with_context(|| format!("{}", inputs[0].display()))?;
            let compressor = Compressor::from_layouts(layouts, values, Device::Cpu);
            let updates = inputs
                .iter()
                .map(|path| {
                    let bytes = read(path)?;
                    payload::decode(&bytes, compressor.layouts(), values, Device::Cpu).with_context(
                        || format!("{} does not match {}", path.display(), inputs[0].display()),
                    )
                })
                .collect::<anyhow::Result<Vec<SparseUpdate>>>()?;
            let refs: Vec<&SparseUpdate> = updates.iter().collect();
            let dense = compressor.aggregate_by(Aggregation::Mean, &refs);
            let named: Vec<(String, Tensor)> = compressor
                .layouts()
                .iter()
                .map(|l| l.name.clone())
                .zip(dense)
                .collect();
            save_safetensors(output, &named)?;
            println!(
                "{}: mean of {} payload(s), {} tensors",
                output.display(),
                inputs.len(),
                named.len()
            );
            Ok(())
        }
        PayloadCommand::Inspect { payload: path } => {
            let bytes = read(path)?;
            let (values, layouts) =
                payload::describe(&bytes).with_context(|| format!("{}", path.display()))?;
            payload::decode(&bytes, &layouts, values, Device::Cpu)
                .with_context(|| format!("{}", path.display()))?;
            let mut table = Table::new(&[
                "tensor",
                "shape",
                "block",
                "blocks",
                "k",
                "index bytes",
                "bytes",
            ]);
            let mut elements = 0usize;
            for layout in &layouts {
                let blocks = &layout.blocks;
                elements += blocks.numel();
                let single = payload::record_len(layout, values);
                table.row(vec![
                    layout.name.clone(),
                    format!("{:?}", blocks.shape),
                    format!("{}x{}", blocks.block_rows, blocks.block_cols),
                    blocks.block_count().to_string(),
                    layout.k.to_string(),
                    payload::index_width(blocks.block_len()).to_string(),
                    single.to_string(),
                ]);
            }
            print!("{table}");
            let hash: String = payload::content_hash(&bytes)
                .expect("decoded")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let momentum = match payload::momentum_commitment(&bytes).expect("decoded") {
                payload::UNCOMMITTED => "none (the run spot-checks nothing)".to_owned(),
                commitment => format!("sha256 {}", hex::encode(commitment)),
            };
            println!(
                "\nformat v{}, values {values:?}, {} bytes, sha256 {hash}\nmomentum commitment: {momentum}\n{} elements: {:.1}x smaller than f32 ({} bytes), {:.1}x smaller than bf16 ({} bytes)",
                payload::VERSION,
                bytes.len(),
                elements,
                (4 * elements) as f64 / bytes.len() as f64,
                4 * elements,
                (2 * elements) as f64 / bytes.len() as f64,
                2 * elements,
            );
            Ok(())
        }
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
