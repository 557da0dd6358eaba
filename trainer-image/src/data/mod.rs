//! Token data: the shipped corpus, tokenizers, memory-mapped shards, and batch assignment.
