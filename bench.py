"""
Speed against the reference implementations, each pair measured side by side in one run on the same
machine, so the ratio means something even on a busy laptop. Every table in the README comes from here.

    python bench.py tokenizer            # bpe.py vs Hugging Face tokenizers: training time, encoding MB/s
    python bench.py prepare              # prepare.py vs datasets.map + tiktoken: MB/s, and peak memory on 200 MB
    python bench.py sample               # KV-cache generation vs Hugging Face generate(), batch 1
    python bench.py attention            # fused vs manual attention, forward + backward, T = 128, 512, 1024
    python bench.py train                # our training step vs Hugging Face GPT2LMHeadModel's
    python bench.py train --size=gpt2 --block_size=1024 --batch_size=16   # GPT-2 small (on a GPU)
    python bench.py train --size=gpt2 --profile=True --attention=cudnn    # where the time goes; cuDNN attention

Settings are globals, overridden with --key=value as everywhere else.
"""
import contextlib
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import bpe
from configurator import autocast, configure, peak_flops, pick_compile, pick_device, pick_dtype
from model import GPT, GPTConfig, compile_generation, hf_config, preset_config

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_DATA = os.path.join(HERE, "..", "shared", "data")
os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(HERE, "..", "shared", "tiktoken_cache"))

path = ""  # input text of the tokenizer and prepare benchmarks; '' = their default file under ../shared/data
vocab_size = 8192  # the tokenizer benchmark's, and the 'cpu' model's (the CPU config's data has 4096)
repeats = 3  # rounds, taking turns with the reference: best of (tokenizer, sample) or median of (train) this many
num_proc = os.cpu_count() or 1  # prepare benchmark: processes for both pipelines
min_bytes = 200_000_000  # prepare benchmark: the corpus is repeated to at least this size
sizes = ("cpu", "gpt2")  # sample benchmark: the model sizes to time
new_tokens = 200  # sample benchmark: tokens generated per run (after a 16-token prompt)
size = "cpu"  # 'cpu': the CPU config's model (config/tinystories_cpu.py); 'gpt2': GPT-2 small, 124M
block_size = 0  # 0: the size's own default (256 for 'cpu', 1024 for 'gpt2')
batch_size = 0  # 0: the size's own default
seq_lens = (128, 512, 1024)  # for the attention benchmark
steps = 5  # timed steps per round, after warm-up
device = "auto"
dtype = "auto"
compile = None  # None: on CUDA only, as in train.py
compile_mode = "default"  # train benchmark: torch.compile's mode ('max-autotune', 'reduce-overhead', ...)
attention = ""  # SDPA backends to prefer, in order ('cudnn,flash'); '' = PyTorch's own choice
profile = False  # train benchmark: also show where the time of the last implementation's step goes
seed = 1337


# ------------------------------------------------------------------------------------------------
# tokenizer

def _train_hf_tokenizer(path, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[bpe.EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train([path], trainer)
    return tokenizer


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def input_text(default):
    """--path, else `default` under ../shared/data (beside our checkouts, not in a clone): one line if it is missing."""
    file = path or os.path.join(SHARED_DATA, default)
    if not os.path.isfile(file):
        raise SystemExit(f"error: no text file at {file}; pass --path=FILE (UTF-8 text, documents separated by "
                         f"{bpe.EOT} lines)")
    return file


def bench_tokenizer():
    """bpe.py against Hugging Face `tokenizers` (Rust) on the same file and vocabulary size: training time, and
    encoding throughput. Best of `repeats`, ours and theirs alternating, so a busy CPU slows both alike.
    HF's byte-level pre-tokenizer is close to, not identical to, GPT-2's regex."""
    file = input_text(os.path.join("tinystories", "train.txt"))
    with open(file, encoding="utf-8", newline="") as f:
        text = f.read()
    documents = [d + bpe.EOT for d in text.split(bpe.EOT)]
    megabytes = len(text.encode("utf-8")) / 1e6
    threads = os.cpu_count()
    timings, tokenizers, tokens = {}, {}, {}
    runs = [("train", "ours", lambda: bpe.train_bpe(file, vocab_size)),
            ("train", "hf", lambda: _train_hf_tokenizer(file, vocab_size))]
    for task, who, fn in tqdm(runs * repeats, desc="training", unit="run"):
        seconds, tokenizers[who] = _timed(fn)
        timings[task, who] = min(seconds, timings.get((task, who), float("inf")))
    ours, hf = tokenizers["ours"], tokenizers["hf"]
    assert ours.vocab_size == hf.get_vocab_size() == vocab_size
    runs = [("encode", "ours", lambda: ours.encode_batch(documents, num_threads=threads)),
            ("encode", "hf", lambda: hf.encode_batch(documents)),
            ("encode 1 thread", "ours", lambda: ours.encode(text)),
            ("encode 1 thread", "hf", lambda: hf.encode(text))]
    for task, who, fn in tqdm(runs * repeats, desc="encoding", unit="run"):
        seconds, encoded = _timed(fn)
        timings[task, who] = min(seconds, timings.get((task, who), float("inf")))
        tokens[task, who] = len(encoded) if task.endswith("thread") else sum(map(len, encoded))
    print(f"\n{os.path.basename(file)}: {megabytes:.1f} MB, vocab_size={vocab_size}, {threads} CPU threads, "
          f"best of {repeats}\n")
    print("| | bpe.py | HF tokenizers | bpe.py / HF |")
    print("|---|---:|---:|---:|")
    train_ours, train_hf = timings["train", "ours"], timings["train", "hf"]
    print(f"| training, seconds | {train_ours:.2f} | {train_hf:.2f} | {train_ours / train_hf:.2f}x time |")
    for task, label in (("encode", f"encoding a batch of {len(documents)} documents, MB/s"),
                        ("encode 1 thread", "encoding the file as one string, MB/s")):
        ours_speed, hf_speed = megabytes / timings[task, "ours"], megabytes / timings[task, "hf"]
        print(f"| {label} | {ours_speed:.1f} | {hf_speed:.1f} | {ours_speed / hf_speed:.2f}x speed |")
    print(f"| tokens of the batch | {tokens['encode', 'ours']:,} | {tokens['encode', 'hf']:,} | |")


# ------------------------------------------------------------------------------------------------
# prepare
def repeat_to(path, out_path, min_bytes):
    """Write `path` over and over into out_path until it holds at least min_bytes."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.rstrip().endswith(bpe.EOT):
        text = text.rstrip("\n") + f"\n{bpe.EOT}\n"  # copies must not run into each other
    copies = -(-min_bytes // len(text.encode("utf-8")))
    with open(out_path, "w", encoding="utf-8") as f:
        for _ in range(copies):
            f.write(text)
    return os.path.getsize(out_path)


def tree_rss(pid):
    """Resident memory of a process and all its descendants, in bytes (Linux /proc; shared pages count twice)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            continue  # the process ended meanwhile
    return total


def peak_rss_of(command, env):
    """Run command; return (wall seconds, peak RSS of its whole process tree, peak RSS of its largest process)."""
    import resource
    start = time.time()
    proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0]

    def poll():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    out = proc.stdout.read()
    proc.wait()
    poller.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{out}")
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux; over all children so far
    return time.time() - start, peak[0], largest, out


def recipe(path, out_path, num_proc):
    """The usual way: documents into a `datasets.Dataset`, `.map` tiktoken's GPT-2 over them, concatenate."""
    import datasets
    import tiktoken
    enc = tiktoken.get_encoding("gpt2")

    def process(example):
        ids = enc.encode_ordinary(example["text"]) + [enc.eot_token]
        return {"ids": ids, "len": len(ids)}

    with open(path, encoding="utf-8") as f:
        docs = [d for d in f.read().split(f"\n{bpe.EOT}\n") if d.strip()]
    ds = datasets.Dataset.from_dict({"text": docs})
    del docs
    tokenized = ds.map(process, remove_columns=["text"], num_proc=num_proc, desc="datasets.map")
    arr = np.memmap(out_path, dtype=np.uint16, mode="w+", shape=(int(np.sum(tokenized["len"], dtype=np.uint64)),))
    idx, shards = 0, 64
    for i in range(shards):  # nanoGPT's openwebtext/prepare.py writes in shards
        batch = np.concatenate(tokenized.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")["ids"])
        arr[idx: idx + len(batch)] = batch
        idx += len(batch)
    arr.flush()
    return idx


def bench_prepare():
    """prepare.py in one run: (1) peak resident memory of `python prepare.py` with default settings (BPE training,
    then encoding) on a corpus of at least min_bytes, the sample file repeated; (2) encoding throughput on it,
    prepare.py --tokenizer=gpt2 against the usual recipe, a `datasets.map` of tiktoken's GPT-2 with the same
    number of processes, written to a uint16 .bin the way nanoGPT does. Throughput is bytes over wall time from the
    text file to the finished .bin files: prepare.py's as the command a user runs (its start-up and imports, about a
    second, included), the recipe's in this process (not included), so the comparison leans toward the recipe."""
    sample = input_text(os.path.join("openwebtext", "openwebtext_1000.txt"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        mb = repeat_to(sample, corpus, min_bytes) / 1e6
        print(f"corpus: {os.path.basename(sample)} repeated to {mb:.0f} MB, {num_proc} processes, {os.cpu_count()} cores")
        command = [sys.executable, "prepare.py", f"--dataset={corpus}", f"--out_dir={tmp}/bpe", f"--num_proc={num_proc}"]
        bpe_s, tree_peak, largest, summary = peak_rss_of(command, env)
        print(summary)
        ours_s, *_ = peak_rss_of([sys.executable, "prepare.py", f"--dataset={corpus}", f"--out_dir={tmp}/ours",
                                  "--tokenizer=gpt2", f"--num_proc={num_proc}"], env)
        ours_tokens = sum(os.path.getsize(f"{tmp}/ours/{s}.bin") // 2 for s in ("train", "val", "test"))
        t = time.time()
        recipe_tokens = recipe(corpus, f"{tmp}/recipe.bin", num_proc)
        recipe_s = time.time() - t
    rows = [("prepare.py --tokenizer=gpt2 (stream, count, encode, write 3 splits)", ours_s, ours_tokens),
            ("datasets.map + tiktoken gpt2 encode_ordinary (the usual recipe)", recipe_s, recipe_tokens)]
    print(f"\n| {mb:.0f} MB text, num_proc={num_proc} | seconds | MB/s | tokens |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds, n_tokens in rows:
        print(f"| {name} | {seconds:.1f} | {mb / seconds:.1f} | {n_tokens:,} |")
    print(f"\nprepare.py is {recipe_s / ours_s:.2f}x the recipe's throughput.\n")
    print("| peak resident memory, `python prepare.py` with default settings (BPE 8192) | |")
    print("| --- | ---: |")
    print(f"| whole process tree (main + workers, polled every 50 ms) | {tree_peak / 2**30:.2f} GiB |")
    print(f"| largest single process (getrusage RUSAGE_CHILDREN) | {largest / 2**30:.2f} GiB |")
    print(f"| wall time, tokenizer training included | {bpe_s:.0f} s |")


# ------------------------------------------------------------------------------------------------
# model: attention and training step

def model_config(which=None, **overrides):
    which = which or size
    if which == "gpt2":
        return preset_config("gpt2", **overrides)
    if which == "cpu":  # the layers of config/tinystories_cpu.py; 256 positions leave room for bench sample's 216
        cpu = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "tinystories_cpu.py"))
        shape = {k: cpu[k] for k in ("n_layer", "n_head", "n_embd")}
        return GPTConfig(**{**shape, "block_size": 256, "vocab_size": vocab_size, **overrides})
    raise SystemExit(f"error: unknown model size {which!r}; use 'cpu' or 'gpt2'")


def sync(dev):
    """Wait for the device's queued work: GPU calls return before the work is done."""
    if dev.startswith("cuda"):
        torch.cuda.synchronize(dev)
    elif dev.startswith("mps"):
        torch.mps.synchronize()


def time_steps(step, dev):
    """Seconds of each of `steps` calls of step()."""
    sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return times


def median(values):
    return sorted(values)[len(values) // 2]


def peak_memory(dev):
    return torch.cuda.max_memory_allocated(dev) / 2**20 if dev.startswith("cuda") else None


def bench_attention():
    """Forward + backward of the whole model with fused (F.scaled_dot_product_attention) and manual
    attention at several sequence lengths: the assignment's bonus question, answered with numbers."""
    dev = pick_device(device)
    ptdtype = pick_dtype(dtype, dev.split(":")[0])
    ctx = autocast(dev.split(":")[0], ptdtype)
    lens = list(seq_lens)
    batch = batch_size or (8 if dev.startswith("cuda") else 2)
    print(f"model: {size}, batch {batch}, {dev}, {ptdtype}, eager (no compile), attention {attention or 'default'}\n")
    print("| T | fused ms | manual ms | speedup | fused peak MiB | manual peak MiB |")
    print("|---|---|---|---|---|---|")
    for T in lens:
        row = {}
        for fused in (True, False):
            torch.manual_seed(seed)
            model = GPT(model_config(block_size=max(lens), fused_attention=fused)).to(dev)
            idx = torch.randint(model.config.vocab_size, (batch, T + 1), device=dev)

            def step(model=model):
                with ctx:
                    _, loss = model(idx[:, :-1], idx[:, 1:])
                loss.backward()

            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(dev)
            for _ in range(2):  # warm-up
                step()
            row[fused] = (median(time_steps(step, dev)), peak_memory(dev))
            del model, step  # its memory is free before the next model is built
        (tf, mf), (tm, mm) = row[True], row[False]
        mem = f"{mf:,.0f} | {mm:,.0f}" if mf is not None else "- | -"
        print(f"| {T} | {1e3 * tf:.1f} | {1e3 * tm:.1f} | {tm / tf:.2f}x | {mem} |", flush=True)


def hf_gpt2(config):
    """Hugging Face's GPT-2 of the same shape, with its SDPA attention."""
    from transformers import GPT2LMHeadModel
    return GPT2LMHeadModel(hf_config(config, attn_implementation="sdpa"))


class HFLoss(torch.nn.Module):
    """Wrap GPT2LMHeadModel to our model's (_, loss) interface, so both take the same step (train.py's); the
    loss is F.cross_entropy on its logits, as its own loss function computes it."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, x, y):
        logits = self.hf(input_ids=x).logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def preferred_attention(names):
    """A context preferring the SDPA backends `names` ('cudnn,flash'), in order, to PyTorch's own choice: a
    preference, not a restriction, so shapes a backend cannot serve fall through to the next."""
    backends = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                "math": "MATH"}
    if not names:
        return contextlib.nullcontext()
    names = names.split(",")
    if not set(names) <= set(backends):
        raise SystemExit(f"error: --attention takes a comma-separated list of {', '.join(backends)}")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    order = [getattr(SDPBackend, backends[name]) for name in names]
    order += [getattr(SDPBackend, b) for name, b in backends.items() if name not in names]
    return sdpa_kernel(order, set_priority=True)


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
    batch = batch_size or 16
    T = config.block_size
    use_compile = pick_compile(compile, device_type)
    if compile_mode != "default" and not use_compile:
        raise SystemExit(f"error: --compile_mode={compile_mode} needs torch.compile: add --compile=True")
    g = torch.Generator().manual_seed(seed)
    data = [torch.randint(config.vocab_size, (batch, T + 1), generator=g).to(dev) for _ in range(4)]
    peak = peak_flops(torch.cuda.get_device_name(dev)) if device_type == "cuda" else None
    print(f"model: {size} ({config.n_layer}L {config.n_head}H {config.n_embd}C, vocab {config.vocab_size}), "
          f"batch {batch} x {T} tokens, {dev}, {ptdtype}, attention {attention or 'default'}\n")
    runs = [("Hugging Face GPT2LMHeadModel (sdpa, eager)", "hf", False), ("ours, eager", "ours", False)]
    if use_compile:
        runs.append((f"ours, torch.compile{'' if compile_mode == 'default' else f' ({compile_mode})'}", "ours", True))
    steppers = []
    for label, which, compiled in runs:
        torch.manual_seed(seed)
        ours = GPT(config)
        model = (HFLoss(hf_gpt2(config)) if which == "hf" else ours).to(dev)
        # the same AdamW for both (fused where the device has it, decay on matrices only): the method only
        # reads the module's parameters, so it serves Hugging Face's model as well
        optimizer = GPT.configure_optimizers(model, 0.1, 6e-4, (0.9, 0.95), device_type)
        step_model = torch.compile(model, mode=compile_mode) if compiled else model

        def forward_backward(step_model=step_model, i=[0]):
            x = data[i[0] % len(data)]
            i[0] += 1
            with ctx:  # train.py's step with one micro-batch
                _, loss = step_model(x[:, :-1], x[:, 1:])
            loss.backward()

        def update(model=model, optimizer=optimizer):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(5 if compiled else 2):  # warm-up, and compilation
            forward_backward()
            update()
        steppers.append((label, ours, forward_backward, update))
    # take turns, `repeats` rounds of `steps` steps each: a busy or throttling machine slows all alike
    times = {label: [] for label, *_ in steppers}
    for _ in range(repeats):
        for label, _, forward_backward, update in steppers:
            times[label] += time_steps(lambda: (forward_backward(), update()), dev)
    print(f"median of {repeats} x {steps} steps each, taking turns\n")
    print("| implementation | ms/step | tokens/s | MFU | vs Hugging Face |")
    print("|---|---|---|---|---|")
    reference = None
    for label, ours, _, _ in steppers:
        seconds = median(times[label])
        tok_s = batch * T / seconds
        reference = reference or tok_s
        mfu = f"{100 * ours.estimate_mfu(tok_s, T, peak):.1f}%" if peak else "-"
        print(f"| {label} | {1e3 * seconds:.1f} | {tok_s:,.0f} | {mfu} | {tok_s / reference:.2f}x |", flush=True)
    if profile:
        label, _, forward_backward, update = steppers[-1]
        print(f"\nwhere the time of '{label}' goes, {steps} steps:\n")
        print_profile(forward_backward, update, dev)


# what a kernel's or operator's name says it does, first match wins
WORK_KINDS = [("optimizer", "multi_tensor_apply|lpnorm|adam"),
              ("attention", "flash|fmha|attention|sdpa|cudnn"),
              ("matmul", "gemm|xmma|cutlass|nvjet|aten::mm|aten::addmm|aten::bmm|triton_tem"),
              ("fused by torch.compile", "triton_|cpp_fused|compiledfxgraph"),
              ("other", "")]


def print_profile(forward_backward, update, dev, rows=25):
    """Where a training step's time goes: the costliest kernels (on a GPU; operators on a CPU) of `steps`
    whole steps (forward, backward, clipping, AdamW), the share of each kind of work, and the time the
    kernels kept the device busy against the wall time: what to optimise next, measured, not guessed."""
    import re
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile as torch_profile
    on_gpu = dev.startswith("cuda")
    update_times = []  # the optimizer step alone: on a CPU its work is generic operators, not its own kind
    for _ in range(steps):
        forward_backward()
        sync(dev)
        start = time.perf_counter()
        update()
        sync(dev)
        update_times.append(time.perf_counter() - start)
    with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
        sync(dev)
        start = time.perf_counter()
        for _ in range(steps):
            forward_backward()
            update()
        sync(dev)
        wall = (time.perf_counter() - start) * 1e3 / steps
    # on a GPU, an annotation (record_function: 'Optimizer.step#AdamW.step') spans kernels counted already
    annotations = {e.name for e in prof.events() if e.is_user_annotation} if on_gpu else set()
    times = sorted(((e.key, (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e3 / steps,
                     e.count // steps) for e in prof.key_averages()
                    if (e.device_type == DeviceType.CUDA) == on_gpu and e.key not in annotations),
                   key=lambda t: t[1], reverse=True)  # (name, ms per step, calls per step), costliest first
    total = sum(ms for _, ms, _ in times)
    print(f"the costliest {'kernels' if on_gpu else 'operators'}:\n")
    print(f"| {'kernel' if on_gpu else 'operator'} | ms/step | calls/step | share |")
    print("|---|---|---|---|")
    for name, ms, calls in times[:rows]:
        print(f"| {name[:90]} | {ms:.2f} | {calls} | {100 * ms / total:.1f}% |")
    kinds = dict.fromkeys((kind for kind, _ in WORK_KINDS), 0.0)
    for name, ms, _ in times:
        kinds[next(kind for kind, pattern in WORK_KINDS if re.search(pattern, name.lower()))] += ms
    print("\nby kind: " + ", ".join(f"{k} {100 * ms / total:.1f}%" for k, ms in kinds.items()))
    # a GPU that is busy for less than the step's wall time waits on the CPU (kernel launches, Python)
    print(f"{'kernels' if on_gpu else 'operators'} {total:.1f} ms of {wall:.1f} ms per step (wall time, profiled); "
          f"the optimizer step (clipping + AdamW) alone: {1e3 * median(update_times):.1f} ms")


# ------------------------------------------------------------------------------------------------
# sampling

def best_times(fns):
    """The fastest of `repeats` runs of each function, taking turns so that both meet the same
    conditions; on a shared machine the slower runs measure the neighbours, not the code."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


PROMPT_TOKENS = 16  # the sample benchmark's prompt


def bench_sample():
    """Our KV-cache generation (model.stream, what sample.py runs; with --compile=True also compiled as
    sample.py --compile=True does) against Hugging Face's generate() on the same weights (exported with
    save_pretrained): batch 1, CPU, greedy, the same prompt, and min_new_tokens so both generate the same
    number of tokens. Random weights do: the work per token does not depend on them. All outputs must be
    equal, or the comparison is not of the same computation."""
    import copy
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    print(f"batch 1, greedy, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, best of {repeats}\n")
    print("| model | prompt + new tokens | ours tokens/s | ours compiled tokens/s | HF generate() tokens/s "
          "| ours / HF | compiled / HF | same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for which in sizes:
        torch.manual_seed(seed)
        config = model_config(which)
        ours = GPT(config).eval()
        eot = config.vocab_size - 1
        with tempfile.TemporaryDirectory() as d:
            ours.save_pretrained(d, eot_id=eot)
            hf = GPT2LMHeadModel.from_pretrained(d).eval()
        prompt = torch.randint(eot, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(seed))
        runs = {"ours": ours}
        if compile:
            torch._dynamo.reset()  # the previous size's compiled graphs would count against the recompile limit
            runs["compiled"] = compile_generation(copy.deepcopy(ours), prompt[0].tolist())
        fns = [lambda model=model: model.generate(prompt, new_tokens, temperature=0.0) for model in runs.values()]
        fns.append(lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=eot))
        outputs = [fn() for fn in fns]  # also the warm-up
        assert all(torch.equal(out, outputs[-1]) for out in outputs), \
            "our generation and Hugging Face's differ: not the same computation"
        t = dict(zip([*runs, "hf"], best_times(fns)))
        compiled = (f"{new_tokens / t['compiled']:.1f}", f"{t['hf'] / t['compiled']:.2f}x") if compile else ("-", "-")
        print(f"| {which} ({ours.num_params() / 1e6:.1f}M: {config.n_layer}L {config.n_embd}C, vocab "
              f"{config.vocab_size}) | {PROMPT_TOKENS} + {new_tokens} | {new_tokens / t['ours']:.1f} | {compiled[0]} | "
              f"{new_tokens / t['hf']:.1f} | {t['hf'] / t['ours']:.2f}x | {compiled[1]} | yes |", flush=True)


BENCHMARKS = {"tokenizer": bench_tokenizer, "prepare": bench_prepare, "sample": bench_sample,
              "attention": bench_attention, "train": bench_train}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        raise SystemExit(f"usage: python bench.py {{{'|'.join(BENCHMARKS)}}} [--key=value ...]")
    what = sys.argv.pop(1)
    configure(globals())
    torch.manual_seed(seed)
    with preferred_attention(attention):
        BENCHMARKS[what]()
