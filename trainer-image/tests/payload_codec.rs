//! The wire format: exact round trips, and a clear error (never a panic) for anything malformed.

use demeter_trainer::demo::{Compressor, SparseBlocks, SparseUpdate, ValueEncoding};
use demeter_trainer::payload::{self, PayloadError, decode, describe, encode};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

const SHAPES: &[&[usize]] = &[&[256, 128], &[128], &[97], &[2, 64, 96]];

fn compressor(values: ValueEncoding) -> Compressor {
    let names: Vec<String> = (0..SHAPES.len())
        .map(|i| format!("layer.{i}.weight"))
        .collect();
    Compressor::new(
        names.iter().map(String::as_str).zip(SHAPES.iter().copied()),
        64,
        32,
        values,
        Device::Cpu,
    )
}

fn sample(values: ValueEncoding, seed: i64) -> (Compressor, SparseUpdate, Vec<u8>) {
    tch::manual_seed(seed);
    let compressor = compressor(values);
    let tensors: Vec<Tensor> = SHAPES
        .iter()
        .map(|s| {
            Tensor::randn(
                s.iter().map(|&d| d as i64).collect::<Vec<_>>(),
                (Kind::Float, Device::Cpu),
            )
        })
        .collect();
    let update = compressor.compress_all(&tensors);
    let bytes = encode(&update, &[7; 32], compressor.layouts());
    (compressor, update, bytes)
}

fn same(a: &SparseUpdate, b: &SparseUpdate) -> bool {
    a.values == b.values
        && a.tensors
            .iter()
            .zip(&b.tensors)
            .all(|(x, y)| x.indices.equal(&y.indices) && x.values.equal(&y.values))
}

/// Rewrites the trailing hash so a deliberately malformed body reaches the field checks.
fn rehash(mut bytes: Vec<u8>) -> Vec<u8> {
    use sha2::Digest;
    let body = bytes.len() - payload::HASH_LEN;
    let hash = sha2::Sha256::digest(&bytes[..body]);
    bytes[body..].copy_from_slice(&hash);
    bytes
}

#[test]
fn round_trip_is_exact_for_every_encoding() {
    for values in [ValueEncoding::F32, ValueEncoding::Bf16, ValueEncoding::Sign] {
        let (compressor, update, bytes) = sample(values, 1);
        let decoded = decode(&bytes, compressor.layouts(), values, Device::Cpu).unwrap();
        assert!(same(&update, &decoded), "{values:?}");
        assert_eq!(
            encode(&decoded, &[7; 32], compressor.layouts()),
            bytes,
            "{values:?}: re-encoding is canonical"
        );
        let (described_values, layouts) = describe(&bytes).unwrap();
        assert_eq!(
            (described_values, layouts.as_slice()),
            (values, compressor.layouts())
        );
    }
}

#[test]
fn rejects_truncated_extended_and_corrupted_payloads() {
    let (compressor, _, bytes) = sample(ValueEncoding::F32, 2);
    let layouts = compressor.layouts();
    let run = |b: &[u8]| decode(b, layouts, ValueEncoding::F32, Device::Cpu).unwrap_err();
    assert!(matches!(run(&bytes[..10]), PayloadError::TooShort { .. }));
    assert_eq!(run(&bytes[..bytes.len() - 1]), PayloadError::HashMismatch);
    let mut flipped = bytes.clone();
    flipped[100] ^= 1;
    assert_eq!(run(&flipped), PayloadError::HashMismatch);
    // Truncated or oversized bodies with a valid hash still fail, on structure.
    let mut truncated = bytes[..bytes.len() - payload::HASH_LEN - 7].to_vec();
    truncated.extend_from_slice(&[0; payload::HASH_LEN]);
    assert!(matches!(
        run(&rehash(truncated)),
        PayloadError::Truncated { .. }
    ));
    let mut oversized = bytes[..bytes.len() - payload::HASH_LEN].to_vec();
    oversized.extend_from_slice(&[0; 5 + payload::HASH_LEN]);
    assert_eq!(run(&rehash(oversized.clone())), PayloadError::Trailing(5));
    assert_eq!(
        describe(&rehash(oversized)).unwrap_err(),
        PayloadError::Trailing(5)
    );
}

#[test]
fn rejects_a_payload_for_another_model_or_encoding() {
    let (_, _, bytes) = sample(ValueEncoding::F32, 3);
    let other_names: Vec<String> = (0..SHAPES.len())
        .map(|i| format!("layer.{i}.weight"))
        .collect();
    let mut other_shapes: Vec<&[usize]> = SHAPES.to_vec();
    other_shapes[0] = &[256, 192];
    let other = Compressor::new(
        other_names.iter().map(String::as_str).zip(other_shapes),
        64,
        32,
        ValueEncoding::F32,
        Device::Cpu,
    );
    let error = decode(&bytes, other.layouts(), ValueEncoding::F32, Device::Cpu).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("tensor 0: shape is [256, 128], the model expects [256, 192]"),
        "{error}"
    );

    let fewer_k = Compressor::new(
        other_names
            .iter()
            .map(String::as_str)
            .zip(SHAPES.iter().copied()),
        64,
        16,
        ValueEncoding::F32,
        Device::Cpu,
    );
    let error = decode(&bytes, fewer_k.layouts(), ValueEncoding::F32, Device::Cpu).unwrap_err();
    assert!(
        matches!(error, PayloadError::Field { field: "k", .. }),
        "{error}"
    );

    let error = decode(&bytes, fewer_k.layouts(), ValueEncoding::Bf16, Device::Cpu).unwrap_err();
    assert!(matches!(error, PayloadError::Encoding { .. }));
}

#[test]
fn rejects_duplicate_out_of_range_and_non_finite_entries() {
    let (compressor, update, _) = sample(ValueEncoding::F32, 4);
    let layouts = compressor.layouts();
    // Tensor 1 is [128]: two blocks of 64 with k = 32, one-byte indices.
    let tamper = |edit: &dyn Fn(&mut SparseUpdate)| {
        let mut copy = SparseUpdate {
            values: update.values,
            tensors: update
                .tensors
                .iter()
                .map(|t| SparseBlocks {
                    indices: t.indices.copy(),
                    values: t.values.copy(),
                })
                .collect(),
        };
        edit(&mut copy);
        decode(
            &encode(&copy, &payload::UNCOMMITTED, layouts),
            layouts,
            ValueEncoding::F32,
            Device::Cpu,
        )
        .unwrap_err()
    };
    let duplicate = tamper(&|u| {
        let second = u.tensors[1].indices.get(0).get(1).int64_value(&[]);
        let _ = u.tensors[1].indices.get(0).get(0).fill_(second);
    });
    assert!(
        matches!(
            duplicate,
            PayloadError::Index {
                index: 1,
                block: 0,
                ..
            }
        ),
        "{duplicate}"
    );
    let out_of_range = tamper(&|u| {
        let _ = u.tensors[1].indices.get(1).get(31).fill_(64);
    });
    assert!(
        matches!(
            out_of_range,
            PayloadError::Index {
                index: 1,
                block: 1,
                value: 64,
                ..
            }
        ),
        "{out_of_range}"
    );
    let nan = tamper(&|u| {
        let _ = u.tensors[0].values.get(3).get(4).fill_(f64::NAN);
    });
    assert!(
        matches!(nan, PayloadError::NonFinite { index: 0, .. }),
        "{nan}"
    );
}

#[test]
fn rejects_bad_headers() {
    let (compressor, _, bytes) = sample(ValueEncoding::Sign, 5);
    let run = |b: Vec<u8>| {
        decode(
            &rehash(b),
            compressor.layouts(),
            ValueEncoding::Sign,
            Device::Cpu,
        )
        .unwrap_err()
    };
    let with = |at: usize, value: u8| {
        let mut b = bytes.clone();
        b[at] = value;
        b
    };
    assert!(matches!(run(with(0, b'X')), PayloadError::Magic { .. }));
    assert_eq!(
        run(with(4, 9)),
        PayloadError::Version {
            found: 9,
            supported: payload::VERSION
        }
    );
    assert_eq!(run(with(6, 7)), PayloadError::UnknownEncoding(7));
    assert_eq!(run(with(7, 1)), PayloadError::Reserved(1));
    assert!(matches!(
        run(with(8, 200)),
        PayloadError::TensorCount { found: 200, .. }
    ));
}

/// A one-tensor f32 payload that declares `shape` cut into `block` blocks with k = 1. With
/// `records`, it holds the indices (all 0) and values it implies; without, only the header: the
/// 80-odd bytes a hostile file needs to declare any size.
fn declaring(shape: &[u32], block: (u32, u32), records: bool) -> Vec<u8> {
    use sha2::Digest;
    let numel: u64 = shape.iter().map(|&d| u64::from(d)).product();
    let block_len = u64::from(block.0) * u64::from(block.1);
    let blocks = numel / block_len;
    let mut bytes = b"DMPL".to_vec();
    bytes.extend(payload::VERSION.to_le_bytes());
    bytes.extend([0, 0]);
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(payload::UNCOMMITTED);
    bytes.extend(1u16.to_le_bytes());
    bytes.push(b'w');
    bytes.push(shape.len() as u8);
    for dim in shape {
        bytes.extend(dim.to_le_bytes());
    }
    for field in [block.0, block.1, blocks as u32, 1] {
        bytes.extend(field.to_le_bytes());
    }
    if records {
        let width = payload::index_width(block_len as usize);
        bytes.extend(std::iter::repeat_n(0u8, blocks as usize * (width + 4)));
    }
    let hash: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    bytes.extend(hash);
    bytes
}

#[test]
fn describe_bounds_what_a_payload_declares_before_allocating() {
    // The probe's files: one 65536x65536 block (a 17 GB DCT basis), one block of a vector of
    // 2^32-1 elements, an 8192x8192 block; and 2^32 elements in ordinary 64x64 blocks.
    for (shape, block) in [
        (vec![65536, 65536], (65536, 65536)),
        (vec![u32::MAX], (1, u32::MAX)),
        (vec![8192, 8192], (8192, 8192)),
        (vec![4, 1 << 15, 1 << 15], (64, 64)),
    ] {
        for records in [false, true] {
            if records && shape.len() == 3 {
                continue; // 6 MB of records; the header alone is refused
            }
            let bytes = declaring(&shape, block, records);
            let error = describe(&bytes).unwrap_err();
            assert!(
                matches!(error, PayloadError::Layout { index: 0, .. }),
                "{shape:?} in {} bytes: {error}",
                bytes.len()
            );
        }
    }
    // What a real model declares still passes: a 64x64-blocked 1024x1024 matrix.
    let ordinary = declaring(&[1024, 1024], (64, 64), true);
    let (_, layouts) = describe(&ordinary).unwrap();
    assert_eq!(layouts[0].blocks.shape, vec![1024, 1024]);
}

/// Random edits of valid payloads, and random bytes: decode and describe never panic. `make
/// fuzz` runs the same property over millions of cases.
fn fuzz_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(fuzz_config(2000))]

    #[test]
    fn mutated_payloads_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        fix_hash in any::<bool>(),
        truncate in any::<bool>(),
    ) {
        let (compressor, _, bytes) = SAMPLE.with(|s| (compressor(ValueEncoding::Bf16), (), s.clone()));
        let mut bytes = bytes;
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if fix_hash && bytes.len() >= payload::HASH_LEN {
            bytes = rehash(bytes);
        }
        let _ = decode(&bytes, compressor.layouts(), ValueEncoding::Bf16, Device::Cpu);
        let _ = describe(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), fix_hash in any::<bool>()) {
        let bytes = if fix_hash && bytes.len() >= payload::HASH_LEN { rehash(bytes) } else { bytes };
        let _ = describe(&bytes);
        let _ = decode(&bytes, compressor(ValueEncoding::F32).layouts(), ValueEncoding::F32, Device::Cpu);
    }
}

thread_local! {
    static SAMPLE: Vec<u8> = sample(ValueEncoding::Bf16, 6).2;
}
