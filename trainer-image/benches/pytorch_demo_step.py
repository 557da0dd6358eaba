"""The same training step as `demeter simulate --workers 1`, in PyTorch: a transformers LLaMA
built from a Demeter checkpoint, forward and backward on byte-level batches of the same shape,
then the paper's reference DeMo step (tests/python/reference_demo.py). Prints tokens/s and the
share of the step spent outside forward+backward, for comparison with Demeter's own figures.

usage: pytorch_demo_step.py MODEL_DIR [--batch 8] [--seq-len 128] [--steps 20] [--device cpu|cuda]
"""
import argparse
import os
import sys
import time

import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from reference_demo import TransformDCT, compress, decompress  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    device = torch.device(args.device)
    model = LlamaForCausalLM.from_pretrained(args.model_dir, torch_dtype=torch.float32, attn_implementation="sdpa").to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    deltas = [torch.zeros_like(p) for p in params]
    transform = TransformDCT(64)
    vocab = model.config.vocab_size
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    train_time = demo_time = 0.0
    for step in range(args.steps + 1):
        tokens = torch.randint(0, 256, (args.batch, args.seq_len + 1), device=device)
        sync()
        start = time.perf_counter()
        with autocast:
            logits = model(tokens[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        model.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        middle = time.perf_counter()
        with torch.no_grad():
            for p, delta in zip(params, deltas):
                delta.mul_(0.999).add_(p.grad, alpha=args.lr)
                idx, val, xshape = compress(transform.encode(delta), 32)
                delta.sub_(transform.decode(decompress(idx, val, xshape)))
                # One worker: the aggregate is its own selection.
                new_grad = transform.decode(decompress(idx, val, xshape))
                p.sub_(new_grad.sign(), alpha=args.lr)
        sync()
        end = time.perf_counter()
        if step > 0:  # the first step warms up kernels and allocators
            train_time += middle - start
            demo_time += end - middle
    total = train_time + demo_time
    tokens = args.steps * args.batch * args.seq_len
    print(f"| PyTorch {torch.__version__} | {args.device} | {sum(p.numel() for p in params)} | {args.batch} x {args.seq_len} | "
          f"{tokens / total:.0f} tokens/s | {100 * demo_time / total:.1f}% outside fwd+bwd |")


if __name__ == "__main__":
    main()
