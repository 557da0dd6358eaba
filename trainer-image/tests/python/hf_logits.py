"""Loads a Demeter checkpoint with transformers and writes its logits for the given tokens.

usage: hf_logits.py CHECKPOINT_DIR TOKENS.safetensors OUT.safetensors
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

checkpoint, tokens_path, out_path = sys.argv[1:]
model = LlamaForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
tokens = load_file(tokens_path)["tokens"]
with torch.no_grad():
    logits = model(tokens).logits
save_file({"logits": logits.contiguous()}, out_path)
