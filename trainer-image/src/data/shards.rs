//! Token shards: flat little-endian u16 or u32 token ids, memory-mapped, with a `dataset.json`
//! that says how they were made.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tokenizer::{Tokenizer, TokenizerError};

/// Bytes per token id in a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id of a vocabulary.
    pub fn for_vocab(vocab: usize) -> Self {
        if vocab <= 1 << 16 {
            Self::U16
        } else {
            Self::U32
        }
    }

    fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }
}

/// Why a dataset could not be prepared or opened.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("--val-fraction {0}: must be in (0, 0.5]")]
    ValFraction(f64),
    #[error(
        "--shard-tokens {0}: a shard must hold at least {MIN_SHARD_TOKENS} tokens (default \
         {DEFAULT_SHARD_TOKENS})"
    )]
    ShardTokens(usize),
    #[error(
        "the input has {0} token(s); a dataset needs at least {MIN_DATASET_TOKENS} (check --input)"
    )]
    TooFewTokens(usize),
}

/// Tokens per shard unless told otherwise: 128 MiB of u16 ids.
pub const DEFAULT_SHARD_TOKENS: usize = 1 << 26;
/// The smallest shard `prepare` writes: a smaller one would turn a typo into a million files
/// (`--shard-tokens 1` on the shipped corpus), and holds too few training windows to matter.
pub const MIN_SHARD_TOKENS: usize = 4096;
/// The fewest tokens a dataset may have: a training window of the smallest sequence length and
/// a validation tail.
pub const MIN_DATASET_TOKENS: usize = 64;

/// What `dataset.json` records about a prepared dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMeta {
    /// `bytes` or the tokenizer.json it was made with.
    pub tokenizer: String,
    /// The tokenizer's vocabulary, before padding for the model.
    pub vocab_size: usize,
    pub token_width: TokenWidth,
    /// Train shard files, relative to the dataset directory.
    pub train_shards: Vec<String>,
    /// The held-out validation file, relative to the dataset directory.
    pub val_shard: String,
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// One file (or buffer) of token ids.
pub struct TokenFile {
    storage: Storage,
    width: TokenWidth,
}

impl TokenFile {
    /// Maps a shard file.
    pub fn open(path: &Path, width: TokenWidth) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: shards are written once by `prepare` and never modified while a trainer reads
        // them; a concurrent writer would only corrupt token ids, not memory safety of readers
        // that copy values out.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        if map.len() % width.bytes() != 0 {
            return Err(DataError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "{} bytes is not a whole number of {:?} tokens",
                    map.len(),
                    width
                ),
            });
        }
        Ok(Self {
            storage: Storage::Mapped(map),
            width,
        })
    }

    /// Token ids held in memory.
    pub fn from_tokens(tokens: &[u32], width: TokenWidth) -> Self {
        Self {
            storage: Storage::Owned(to_bytes(tokens, width)),
            width,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.bytes().len() / self.width.bytes()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids in `range`, as i64 for the model.
    ///
    /// # Panics
    /// If `range` reaches past the end; callers index within [`TokenFile::len`].
    pub fn tokens(&self, range: Range<usize>) -> Vec<i64> {
        let width = self.width.bytes();
        let bytes = &self.bytes()[range.start * width..range.end * width];
        match self.width {
            TokenWidth::U16 => bytes
                .chunks_exact(2)
                .map(|b| i64::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            TokenWidth::U32 => bytes
                .chunks_exact(4)
                .map(|b| i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        }
    }
}

fn to_bytes(tokens: &[u32], width: TokenWidth) -> Vec<u8> {
    match width {
        TokenWidth::U16 => tokens
            .iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect(),
        TokenWidth::U32 => tokens.iter().flat_map(|&t| t.to_le_bytes()).collect(),
    }
}

/// Splits `tokens` into a training part and a held-out tail of `val_fraction`.
pub fn split_validation(tokens: &[u32], val_fraction: f64) -> Result<(&[u32], &[u32]), DataError> {
    if !(val_fraction > 0.0 && val_fraction <= 0.5) {
        return Err(DataError::ValFraction(val_fraction));
    }
    let val_len = ((tokens.len() as f64 * val_fraction) as usize)
        .max(1)
        .min(tokens.len());
    Ok(tokens.split_at(tokens.len() - val_len))
}

/// Tokenizes `text` and writes shards of at most `shard_tokens` tokens plus a validation file
/// and `dataset.json` into `out`.
pub fn prepare(
    text: &str,
    tokenizer: &Tokenizer,
    out: &Path,
    val_fraction: f64,
    shard_tokens: usize,
) -> Result<DatasetMeta, DataError> {
    if shard_tokens < MIN_SHARD_TOKENS {
        return Err(DataError::ShardTokens(shard_tokens));
    }
    let tokens = tokenizer.encode(text)?;
    if tokens.len() < MIN_DATASET_TOKENS {
        return Err(DataError::TooFewTokens(tokens.len()));
    }
    let (train, val) = split_validation(&tokens, val_fraction)?;
    let width = TokenWidth::for_vocab(tokenizer.vocab_size());
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut train_shards = Vec::new();
    for (index, shard) in train.chunks(shard_tokens).enumerate() {
        let name = format!("train-{index:05}.bin");
        let path = out.join(&name);
        std::fs::write(&path, to_bytes(shard, width)).map_err(io(&path))?;
        train_shards.push(name);
    }
    let val_shard = "val.bin".to_owned();
    let val_path = out.join(&val_shard);
    std::fs::write(&val_path, to_bytes(val, width)).map_err(io(&val_path))?;
    let meta = DatasetMeta {
        tokenizer: tokenizer.spec(),
        vocab_size: tokenizer.vocab_size(),
        token_width: width,
        train_shards,
        val_shard,
    };
    let meta_path = out.join("dataset.json");
    let json = serde_json::to_string_pretty(&meta).expect("metadata serializes");
    std::fs::write(&meta_path, json).map_err(io(&meta_path))?;
    Ok(meta)
}

/// A prepared dataset: training shards and the validation file.
pub struct Dataset {
    pub meta: DatasetMeta,
    pub train: Vec<TokenFile>,
    pub val: TokenFile,
}

impl Dataset {
    /// Opens a directory written by [`prepare`].
    pub fn open(dir: &Path) -> Result<Self, DataError> {
        let meta_path = dir.join("dataset.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|source| DataError::Io {
            path: meta_path.clone(),
            source,
        })?;
        let meta: DatasetMeta =
            serde_json::from_str(&text).map_err(|error| DataError::Invalid {
                path: meta_path.clone(),
                message: format!("{error} (run `demeter data prepare` to write it)"),
            })?;
        let train = meta
            .train_shards
            .iter()
            .map(|name| TokenFile::open(&dir.join(name), meta.token_width))
            .collect::<Result<_, _>>()?;
        let val = TokenFile::open(&dir.join(&meta.val_shard), meta.token_width)?;
        Ok(Self { meta, train, val })
    }

    /// The prepared dataset in `dir`, or the shipped corpus (1% held out) without one: what
    /// every command's `--data` means.
    pub fn open_or_embedded(dir: Option<&Path>) -> Result<Self, DataError> {
        match dir {
            Some(dir) => Self::open(dir),
            None => Ok(Self::embedded(0.01)),
        }
    }

    /// The shipped corpus, byte-tokenized in memory: the embedded default.
    pub fn embedded(val_fraction: f64) -> Self {
        let tokens = Tokenizer::Bytes
            .encode(&super::corpus::moby_dick())
            .expect("bytes always encode");
        let (train, val) =
            split_validation(&tokens, val_fraction).expect("embedded fraction is valid");
        Self {
            meta: DatasetMeta {
                tokenizer: "bytes".into(),
                vocab_size: 256,
                token_width: TokenWidth::U16,
                train_shards: vec!["<embedded moby-dick>".into()],
                val_shard: "<embedded moby-dick>".into(),
            },
            train: vec![TokenFile::from_tokens(train, TokenWidth::U16)],
            val: TokenFile::from_tokens(val, TokenWidth::U16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_refuses_tiny_shards_and_empty_input_before_writing() {
        let out = tempfile::tempdir().unwrap();
        let tokenizer = Tokenizer::from_spec("bytes").unwrap();
        let text = "call me Ishmael. ".repeat(100);
        for shard_tokens in [0, 1, MIN_SHARD_TOKENS - 1] {
            let error = prepare(&text, &tokenizer, out.path(), 0.01, shard_tokens).unwrap_err();
            assert!(matches!(error, DataError::ShardTokens(n) if n == shard_tokens));
            assert!(error.to_string().contains("--shard-tokens"), "{error}");
        }
        let error = prepare("", &tokenizer, out.path(), 0.01, MIN_SHARD_TOKENS).unwrap_err();
        assert!(matches!(error, DataError::TooFewTokens(0)), "{error}");
        assert_eq!(
            std::fs::read_dir(out.path()).unwrap().count(),
            0,
            "nothing written"
        );

        let meta = prepare(&text, &tokenizer, out.path(), 0.01, MIN_SHARD_TOKENS).unwrap();
        assert_eq!(meta.train_shards.len(), 1);
    }
}
