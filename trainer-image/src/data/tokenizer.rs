//! Text to token ids: bytes by default, or any Hugging Face `tokenizer.json`.

use std::path::{Path, PathBuf};

/// A tokenizer that could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "--tokenizer {path}: {message} (pass `bytes` or the path of a Hugging Face tokenizer.json)"
    )]
    Load { path: PathBuf, message: String },
    #[error("tokenizing: {0}")]
    Encode(String),
}

/// How text becomes tokens.
pub enum Tokenizer {
    /// Each UTF-8 byte is a token: vocabulary of 256, nothing to ship.
    Bytes,
    /// A Hugging Face tokenizer loaded from its `tokenizer.json`.
    HuggingFace {
        path: PathBuf,
        inner: Box<tokenizers::Tokenizer>,
    },
}

impl Tokenizer {
    /// `bytes`, or a path to a `tokenizer.json`.
    pub fn from_spec(spec: &str) -> Result<Self, TokenizerError> {
        if spec == "bytes" {
            return Ok(Self::Bytes);
        }
        let path = Path::new(spec).to_owned();
        let inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|error| TokenizerError::Load {
                path: path.clone(),
                message: error.to_string(),
            })?;
        Ok(Self::HuggingFace {
            path,
            inner: Box::new(inner),
        })
    }

    /// What to write in dataset metadata.
    pub fn spec(&self) -> String {
        match self {
            Self::Bytes => "bytes".into(),
            Self::HuggingFace { path, .. } => path.display().to_string(),
        }
    }

    /// Number of token ids, before padding for the model.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bytes => 256,
            Self::HuggingFace { inner, .. } => inner.get_vocab_size(true),
        }
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Self::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Self::HuggingFace { inner, .. } => inner
                .encode(text, false)
                .map(|encoding| encoding.get_ids().to_vec())
                .map_err(|error| TokenizerError::Encode(error.to_string())),
        }
    }
}
