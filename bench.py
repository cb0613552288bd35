"""
Speed against the reference implementations, each pair measured side by side in one run on the same
machine, so the ratio means something even on a busy laptop. Every table in the README comes from here.

    python bench.py attention            # fused vs manual attention, forward + backward, T = 128, 512, 1024
    python bench.py train                # our training step vs Hugging Face GPT2LMHeadModel's
    python bench.py train --size=gpt2 --block_size=1024 --batch_size=16   # GPT-2 small (on a GPU)

Settings are globals, overridden with --key=value as everywhere else.
"""
import sys
import time

import torch
import torch.nn.functional as F

from configurator import autocast, configure, pick_device, pick_dtype
from model import GPT, GPTConfig, preset_config
from train import accumulate_gradients, peak_flops

size = "cpu"  # 'cpu': the CPU config's model (config/tinystories_cpu.py); 'gpt2': GPT-2 small, 124M
block_size = 0  # 0: the size's own default (256 for 'cpu', 1024 for 'gpt2')
batch_size = 0  # 0: the size's own default
seq_lens = (128, 512, 1024)  # for the attention benchmark
steps = 10  # timed steps per measurement, after warm-up
device = "auto"
dtype = "auto"
compile = None  # None: on CUDA only, as in train.py
seed = 1337


def model_config(**overrides):
    if size == "gpt2":
        return preset_config("gpt2", **overrides)
    if size == "cpu":  # keep in step with config/tinystories_cpu.py
        return GPTConfig(**{**dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=8192), **overrides})
    raise SystemExit(f"error: unknown --size={size!r}; use 'cpu' or 'gpt2'")


def sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, dev, warmup=3):
    """Median seconds per call of step(), after warm-up calls (which also absorb compilation)."""
    for _ in range(warmup):
        step()
    sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_memory(dev):
    return torch.cuda.max_memory_allocated() / 2**20 if dev.startswith("cuda") else None


def bench_attention():
    """Forward + backward of the whole model with fused (F.scaled_dot_product_attention) and manual
    attention at several sequence lengths: the assignment's bonus question, answered with numbers."""
    dev = pick_device(device)
    ctx = autocast(dev.split(":")[0], pick_dtype(dtype, dev.split(":")[0]))
    lens = list(seq_lens)
    batch = batch_size or (8 if dev.startswith("cuda") else 2)
    print(f"model: {size}, batch {batch}, {dev}, {pick_dtype(dtype, dev.split(':')[0])}, eager (no compile)\n")
    print("| T | fused ms | manual ms | speedup | fused peak MiB | manual peak MiB |")
    print("|---|---|---|---|---|---|")
    for T in lens:
        row = {}
        for fused in (True, False):
            torch.manual_seed(seed)
            model = GPT(model_config(block_size=max(lens), fused_attention=fused)).to(dev)
            idx = torch.randint(model.config.vocab_size, (batch, T + 1), device=dev)

            def step():
                with ctx:
                    _, loss = model(idx[:, :-1], idx[:, 1:])
                loss.backward()

            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            row[fused] = (time_steps(step, dev), peak_memory(dev))
            del model
        (tf, mf), (tm, mm) = row[True], row[False]
        mem = f"{mf:,.0f} | {mm:,.0f}" if mf is not None else "- | -"
        print(f"| {T} | {1e3 * tf:.1f} | {1e3 * tm:.1f} | {tm / tf:.2f}x | {mem} |", flush=True)


def hf_gpt2(config):
    """Hugging Face's GPT-2 of the same shape, with its SDPA attention."""
    from transformers import GPT2Config, GPT2LMHeadModel
    hc = GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                    n_layer=config.n_layer, n_head=config.n_head, activation_function="gelu_new",
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                    attn_implementation="sdpa")
    return GPT2LMHeadModel(hc)


class HFLoss(torch.nn.Module):
    """Wrap GPT2LMHeadModel to our (logits, loss) interface, so both go through train.py's step."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, x, y):
        logits = self.hf(input_ids=x).logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def bench_train():
    """Training tokens/s of our model and train.py's step against Hugging Face's GPT2LMHeadModel at
    the same size, batch, data, precision and optimizer (AdamW, fused where the device has it)."""
    dev = pick_device(device)
    device_type = dev.split(":")[0]
    ptdtype = pick_dtype(dtype, device_type)
    ctx = autocast(device_type, ptdtype)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = model_config(**({"block_size": block_size} if block_size else {}))
    batch = batch_size or (16 if size == "gpt2" else 8)
    T = config.block_size
    use_compile = device_type == "cuda" if compile is None else compile
    g = torch.Generator().manual_seed(seed)
    data = [torch.randint(config.vocab_size, (batch, T + 1), generator=g).to(dev) for _ in range(4)]
    peak = peak_flops(torch.cuda.get_device_name(dev)) if device_type == "cuda" else None
    print(f"model: {size} ({config.n_layer}L {config.n_head}H {config.n_embd}C, vocab {config.vocab_size}), "
          f"batch {batch} x {T} tokens, {dev}, {ptdtype}\n")
    print("| implementation | ms/step | tokens/s | MFU | vs Hugging Face |")
    print("|---|---|---|---|---|")
    runs = [("Hugging Face GPT2LMHeadModel (sdpa, eager)", "hf", False), ("ours, eager", "ours", False)]
    if use_compile:
        runs.append(("ours, torch.compile", "ours", True))
    reference = None
    for label, which, compiled in runs:
        torch.manual_seed(seed)
        ours = GPT(config)
        model = (HFLoss(hf_gpt2(config)) if which == "hf" else ours).to(dev)
        optimizer = ours.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type) if which == "ours" else \
            torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1,
                              **({"fused": True} if device_type == "cuda" else {}))
        step_model = torch.compile(model) if compiled else model
        i = [0]

        def step():
            x = data[i[0] % len(data)]
            i[0] += 1
            accumulate_gradients(step_model, [(x[:, :-1], x[:, 1:])], ctx)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = time_steps(step, dev, warmup=5 if compiled else 3)
        tok_s = batch * T / seconds
        reference = reference or tok_s
        mfu = f"{100 * ours.estimate_mfu(tok_s, T, peak):.1f}%" if peak else "-"
        print(f"| {label} | {1e3 * seconds:.1f} | {tok_s:,.0f} | {mfu} | {tok_s / reference:.2f}x |", flush=True)
        if which == "hf":
            assert model.hf.config._attn_implementation == "sdpa"
        del model, step_model, optimizer, ours


BENCHMARKS = {"attention": bench_attention, "train": bench_train}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        raise SystemExit(f"usage: python bench.py {{{'|'.join(BENCHMARKS)}}} [--key=value ...]")
    what = sys.argv.pop(1)
    configure(globals())
    torch.manual_seed(seed)
    BENCHMARKS[what]()
