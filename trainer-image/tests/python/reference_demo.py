"""The DeMo step as the paper's reference implementation writes it (bloc97/DeMo, demo.py),
in PyTorch, for cross-checking Demeter's Rust implementation.

Reads `inputs.safetensors` holding `param.{i}` (initial weights) and `grad.{client}.{step}.{i}`,
runs `steps` DeMo steps for `clients` clients that share all their selections (the all-gather),
and writes the weights after the last step as `param.{i}` and client 0's momentum as `delta.{i}`.

usage: reference_demo.py INPUTS OUT CLIENTS STEPS LR TOPK CHUNK BETA WEIGHT_DECAY
"""
import math
import sys

import torch
from safetensors.torch import load_file, save_file


def get_smaller_split(n, close_to):
    divisors = sorted({d for i in range(1, int(math.isqrt(n)) + 1) if n % i == 0 for d in (i, n // i)})
    for ix, val in enumerate(divisors):
        if val == close_to:
            return val
        if val > close_to:
            return val if ix == 0 else divisors[ix - 1]
    return n


def dct_matrix(n, device="cpu"):
    """F such that x @ F is the orthonormal DCT-II of x (the reference's _dct(eye(n)))."""
    k = torch.arange(n, dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * i[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    basis[0] /= math.sqrt(2)
    return basis.T.float().to(device)  # [i, k]


class TransformDCT:
    def __init__(self, chunk):
        self.chunk = chunk

    def encode(self, x):
        if x.dim() > 1:
            n1, n2 = get_smaller_split(x.shape[0], self.chunk), get_smaller_split(x.shape[1], self.chunk)
            y, w = x.shape[0] // n1, x.shape[1] // n2
            x = x.reshape(y, n1, w, n2)  # "(y h) (x w) -> y h x w"
            return torch.einsum("...ijkl, jb, ld -> ...ikbd", x, dct_matrix(n1, x.device), dct_matrix(n2, x.device))
        n1 = get_smaller_split(x.shape[0], self.chunk)
        x = x.reshape(-1, n1)
        return torch.einsum("...ij, jb -> ...ib", x, dct_matrix(n1, x.device))

    def decode(self, x):
        if x.dim() > 2:
            n1, n2 = x.shape[2], x.shape[3]
            x = torch.einsum("...ijkl, kb, ld -> ...ibjd", x, dct_matrix(n1, x.device).T, dct_matrix(n2, x.device).T)
            return x.reshape(x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])
        n1 = x.shape[1]
        x = torch.einsum("...ij, jb -> ...ib", x, dct_matrix(n1, x.device).T)
        return x.reshape(-1)


def compress(x, topk):
    xshape = x.shape
    if x.dim() > 2:
        x = x.reshape(*x.shape[:2], -1)
    topk = max(1, min(topk, x.shape[-1]))
    idx = torch.topk(x.abs(), k=topk, dim=-1, largest=True, sorted=False).indices
    return idx, torch.gather(x, -1, idx), xshape


def decompress(idx, val, xshape):
    x = torch.zeros(xshape, device=val.device, dtype=val.dtype)
    if len(xshape) > 2:
        x = x.reshape(*xshape[:2], -1)
    x.scatter_reduce_(dim=-1, index=idx, src=val, reduce="mean", include_self=False)
    return x.reshape(xshape)


def main():
    inputs, out, clients, steps, lr, topk, chunk, beta, wd = sys.argv[1:]
    clients, steps, topk, chunk = int(clients), int(steps), int(topk), int(chunk)
    lr, beta, wd = float(lr), float(beta), float(wd)
    tensors = load_file(inputs)
    count = sum(1 for name in tensors if name.startswith("param."))
    params = [tensors[f"param.{i}"].clone() for i in range(count)]
    deltas = [[torch.zeros_like(p) for p in params] for _ in range(clients)]
    transform = TransformDCT(chunk)
    for step in range(steps):
        for i, p in enumerate(params):
            p.mul_(1.0 - lr * wd)
            gathered_idx, gathered_val = [], []
            for c in range(clients):
                delta = deltas[c][i]
                delta.mul_(beta).add_(tensors[f"grad.{c}.{step}.{i}"], alpha=lr)
                idx, val, xshape = compress(transform.encode(delta), topk)
                delta.sub_(transform.decode(decompress(idx, val, xshape)))
                gathered_idx.append(idx)
                gathered_val.append(val)
            idx = torch.cat(gathered_idx, dim=-1)
            val = torch.cat(gathered_val, dim=-1)
            new_grad = transform.decode(decompress(idx, val, xshape))
            p.sub_(new_grad.sign(), alpha=lr)
    result = {f"param.{i}": p.contiguous() for i, p in enumerate(params)}
    result.update({f"delta.{i}": d.contiguous() for i, d in enumerate(deltas[0])})
    save_file(result, out)


if __name__ == "__main__":
    main()
