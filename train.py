"""
Train a GPT on the token files written by prepare.py. One process on a laptop CPU or one GPU:

    python train.py config/tinystories_cpu.py
    python train.py --data_dir=data/tinystories --n_layer=4 --batch_size=32

Many GPUs with DistributedDataParallel (one process per GPU; add --nnodes/--rdzv_endpoint for
several machines):

    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_small.py

Every setting below can be overridden by a config file or --key=value (see configurator.py).
"""
import json
import math
import os
import random
import shutil
import signal
import time

import numpy as np
import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import (SEEDS, ConfigError, atomic_write, autocast, check_ranges, configure, find_checkpoint,
                          hold_out_dir, one_line_if_full, pick_device, pick_dtype, read_meta, resume_advice, settings)
from model import GPT, GPTConfig, PRESETS, read_checkpoint

# ------------------------------------------------------------------------------------------------
# Settings: GPT-2 small (124M) with the assignment's short context. Override freely.
# I/O
out_dir = "out"
data_dir = "data/tinystories"
init_from = "scratch"  # 'scratch', 'resume' (from out_dir/ckpt.pt), a GPT-2 preset ('gpt2', ...) or a folder with model.pt
eval_interval = 250  # steps between evaluations (and best.pt updates)
eval_iters = 50  # batches per evaluation; the same batches every time, so the curve is not sampling noise
log_interval = 10  # steps between progress lines and log.jsonl entries
ckpt_interval = 250  # steps between saves of out_dir/ckpt.pt (also saved at the end and on Ctrl-C)
# model
n_layer = 12
n_head = 12
n_embd = 768
block_size = 128
dropout = 0.0
bias = True
fused_attention = True  # False: the explicit attention of model.py, slower, for teaching and comparison
# optimisation
batch_size = 16  # sequences per micro-step (per process)
gradient_accumulation_steps = 1  # micro-steps per optimizer step, summed over all processes
max_iters = 5000  # optimizer steps
max_epochs = 0.0  # also stop after this many passes over train.bin, if sooner; 0 = no such limit
learning_rate = 6e-4
min_lr = 6e-5  # cosine decays to this; ~learning_rate / 10 per the Chinchilla paper
warmup_iters = 100
lr_decay_iters = 0  # steps of cosine decay; 0 = the whole run
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the gradient's global norm; 0 disables
# system
device = "auto"  # 'auto' picks cuda, then mps, then cpu; or name one: 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = "auto"  # 'auto': bfloat16 on GPUs that have it, else float16 on GPUs, float32 elsewhere
compile = None  # torch.compile the model; None = on CUDA only, where it pays for its compile time
seed = 1337
# ------------------------------------------------------------------------------------------------


def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warm-up (Adam's early moment estimates are noisy, so big steps then hurt), then a cosine
    decay from learning_rate to min_lr at lr_decay_iters, then min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / warmup_iters
    if it >= lr_decay_iters:
        return min_lr
    progress = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


MAKE_DATA = "make the data with `python prepare.py --dataset=../shared/data/tinystories` (or another) and pass its --data_dir"


def check_settings():
    """Values no run can use, named in one line (the model's shape and dropout are checked by GPTConfig)."""
    counts = ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval", "ckpt_interval")
    amounts = ("max_iters", "max_epochs", "warmup_iters", "lr_decay_iters", "learning_rate", "min_lr", "weight_decay",
               "grad_clip")
    check_ranges(globals(), {**dict.fromkeys(counts, (1, None)), **dict.fromkeys(amounts, (0, None)), "seed": SEEDS})
    for name in ("beta1", "beta2"):
        if not 0 <= globals()[name] < 1:
            raise ConfigError(f"--{name} is a decay rate in [0, 1), got {globals()[name]}")


class Batches:
    """Random windows of block_size + 1 tokens from a uint16 token file: x is a window's first
    block_size tokens and y the same shifted by one, so every position predicts its next token.
    Offsets come from a seeded generator, and every process draws the whole global batch and keeps
    its own share, so a run is reproducible, resumable and independent of the process count."""

    def __init__(self, path, block_size, device):
        if not os.path.exists(path):
            raise ConfigError(f"{path} not found; {MAKE_DATA}")
        self.data = np.memmap(path, dtype=np.uint16, mode="r")
        if len(self.data) <= block_size:
            raise ConfigError(f"{path} holds {len(self.data)} tokens, fewer than block_size={block_size} + 1")
        self.block_size, self.device = block_size, device

    def offsets(self, n, generator):
        return torch.randint(len(self.data) - self.block_size, (n,), generator=generator)

    def get(self, offsets):
        rows = np.stack([self.data[i:i + self.block_size + 1] for i in offsets.tolist()]).astype(np.int64)
        xy = torch.from_numpy(rows)
        if self.device.startswith("cuda"):  # pinned memory lets the copy overlap with compute
            xy = xy.pin_memory().to(self.device, non_blocking=True)
        else:
            xy = xy.to(self.device)
        return xy[:, :-1], xy[:, 1:]


def accumulate_gradients(model, micro_batches, ctx, scaler=None):
    """Forward and backward over several micro-batches, adding up gradients. Each loss is divided by
    the number of micro-batches, so the sum is the gradient of the mean loss over the whole batch:
    4 micro-batches of 4 give the gradient of one batch of 16. With a float16 GradScaler the loss is
    multiplied by its scale before backward (scaler.unscale_ or scaler.step divides it out again).
    Returns the mean loss (a tensor)."""
    total = 0.0
    for i, (x, y) in enumerate(micro_batches):
        if isinstance(model, DDP):  # average gradients across processes only after the last micro-batch
            model.require_backward_grad_sync = i == len(micro_batches) - 1
        with ctx:
            _, loss = model(x, y)
        loss = loss / len(micro_batches)
        (scaler.scale(loss) if scaler else loss).backward()
        total += loss.detach()
    return total


def peak_flops(device_name):
    """Dense bf16 peak of common accelerators, for MFU; None where we do not know it (CPUs)."""
    # the first name found in device_name wins, so a name comes before its prefixes (A100 before A10)
    for name, flops in (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
                        ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12),
                        ("3090", 71e12), ("V100", 125e12), ("T4", 65e12)):
        if name in device_name:
            return flops
    return None


def numpy_state():
    """NumPy's RNG state as plain lists, so checkpoints load with torch.load(weights_only=True)."""
    name, keys, *rest = np.random.get_state()
    return [name, keys.tolist(), *rest]


def save(path, obj, if_full):
    """`if_full`: what to do if the disk is full (configurator.resume_advice)."""
    with atomic_write(path, if_full) as tmp:
        torch.save(obj, tmp)


def append_log(path, record, if_full):
    with one_line_if_full(path, if_full), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def logged_iter(line):
    """The step a log.jsonl line records; infinity for a line cut off by a kill while it was written."""
    try:
        return json.loads(line)["iter"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def train(overrides=()):
    """Run training with the module's settings; `overrides` names the ones the user set explicitly."""
    checkpoint = None
    if init_from == "resume":
        ckpt_path = os.path.join(out_dir, "ckpt.pt")
        if not os.path.exists(ckpt_path):
            raise ConfigError(f"cannot resume: no checkpoint at {ckpt_path}; train with --init_from=scratch first")
        try:
            checkpoint = read_checkpoint(ckpt_path)
        except ValueError as e:
            raise ConfigError(f"cannot resume: {e}")
        # continue the run as it was configured, except for what is given now (say, a larger max_iters)
        keep = set(overrides) | {"init_from", "out_dir"}
        globals().update({k: v for k, v in checkpoint["config"].items() if k not in keep})
    else:  # a new run in an old run's folder would overwrite its best.pt and mix into its log
        found = [name for name in ("ckpt.pt", "best.pt", "log.jsonl") if os.path.exists(os.path.join(out_dir, name))]
        if found:
            resume = "continue it with --init_from=resume, or " if "ckpt.pt" in found else ""
            raise ConfigError(f"{out_dir} already holds a run ({', '.join(found)}); {resume}start afresh in another "
                              f"--out_dir (or delete this one)")
    check_settings()
    config = {k: v for k, v in globals().items() if k in SETTINGS}
    # ---- processes and devices ------------------------------------------------------------------
    ddp = int(os.environ.get("RANK", -1)) != -1  # launched by torchrun?
    dev = pick_device(device)
    if ddp:
        rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
        if dev.startswith("cuda"):
            dev = f"cuda:{local_rank}"
            torch.cuda.set_device(dev)
    else:
        rank, world_size = 0, 1
    master = rank == 0  # only this process logs and saves
    if gradient_accumulation_steps % world_size:
        raise ConfigError(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of "
                          f"the {world_size} processes")
    micro_steps = gradient_accumulation_steps // world_size  # this process's share
    device_type = dev.split(":")[0]
    ptdtype = pick_dtype(dtype, device_type)
    ctx = autocast(device_type, ptdtype)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~same accuracy, several times faster
        torch.backends.cudnn.allow_tf32 = True
    random.seed(seed)
    np.random.seed(seed)
    # each process its own dropout masks; the weights still start equal, as DDP copies rank 0's to all
    torch.manual_seed(seed + rank)

    # ---- data ---------------------------------------------------------------------------------------
    meta = read_meta(data_dir, MAKE_DATA)
    train_data = Batches(os.path.join(data_dir, "train.bin"), block_size, dev)
    val_data = Batches(os.path.join(data_dir, "val.bin"), block_size, dev)
    tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
    sampler = torch.Generator().manual_seed(seed)

    # ---- model ----------------------------------------------------------------------------------------
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                      vocab_size=meta["vocab_size"], dropout=dropout, fused_attention=fused_attention)
    if checkpoint is not None:
        # the architecture comes from the checkpoint; an explicit, different one is a mistake worth naming
        for key in ("n_layer", "n_head", "n_embd", "block_size", "bias"):
            if key in overrides and config[key] != checkpoint["model_args"][key]:
                raise ConfigError(f"the checkpoint in {out_dir} has {key}={checkpoint['model_args'][key]} but "
                                  f"{key}={config[key]} was given; drop it to resume, or use a new --out_dir")
        if checkpoint["model_args"]["vocab_size"] != meta["vocab_size"]:
            raise ConfigError(f"the checkpoint in {out_dir} has a {checkpoint['model_args']['vocab_size']}-token "
                              f"vocabulary but {data_dir} has {meta['vocab_size']}: resume on the data it was trained on")
        model_args = {**checkpoint["model_args"], "dropout": dropout, "fused_attention": fused_attention}
    try:  # a shape no model can have, or a dropout that is no probability, whichever way the model comes
        model_config = GPTConfig(**model_args)
    except ValueError as e:
        raise ConfigError(str(e))
    iter_num, tokens_seen, best_val_loss, elapsed_before = 0, 0, float("inf"), 0.0
    saved_at = None  # the step of the last ckpt.pt, which a diverged run points to
    if checkpoint is not None:
        model = GPT(model_config)
        try:
            model.load_weights(checkpoint["model"])
        except ValueError as e:
            raise ConfigError(str(e))
        iter_num, tokens_seen = checkpoint["iter_num"], checkpoint["tokens"]
        saved_at = iter_num
        best_val_loss, elapsed_before = checkpoint["best_val_loss"], checkpoint["elapsed"]
    elif init_from in PRESETS:
        if meta["vocab_size"] != 50257:
            raise ConfigError(f"{init_from} has GPT-2's 50257-token vocabulary but {data_dir} was made with "
                              f"{meta['vocab_size']}; prepare the data with --tokenizer=gpt2")
        model = GPT.from_pretrained(init_from, dropout=dropout, fused_attention=fused_attention)
    elif init_from != "scratch":  # fine-tune one of our trained models: a folder with model.pt, best.pt or ckpt.pt
        if not os.path.isdir(init_from):
            raise ConfigError(f"init_from={init_from!r} is neither 'scratch', 'resume', a GPT-2 preset "
                              f"({', '.join(PRESETS)}) nor a folder holding model.pt, best.pt or ckpt.pt")
        path = find_checkpoint(init_from)
        try:
            model = GPT.from_checkpoint(path, dropout=dropout, fused_attention=fused_attention)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e}")
        if model.config.vocab_size != meta["vocab_size"]:
            raise ConfigError(f"{path} has a {model.config.vocab_size}-token vocabulary but {data_dir} has "
                              f"{meta['vocab_size']}; prepare the data with that model's tokenizer")
    else:
        model = GPT(model_config)
    model_args = dict(model.config.__dict__)  # what checkpoints record, whichever way the model came
    if model.config.block_size < block_size:
        raise ConfigError(f"block_size={block_size} exceeds the model's {model.config.block_size} positions")
    model.to(dev)
    # float16 needs its gradients scaled up so that small ones do not flush to zero; bf16 does not
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == "float16")
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):  # float16's loss scale, as it had adapted
            scaler.load_state_dict(checkpoint["scaler"])
        sampler.set_state(checkpoint["sampler"])
        rng = checkpoint["rng"]
        random.setstate(rng["python"])
        np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
        if master:  # the saved dropout state is rank 0's
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and device_type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], dev)
        else:  # the others start a stream of their own, rather than replay the masks of their first steps
            torch.manual_seed(seed + rank + world_size * iter_num)
        checkpoint = None  # free the memory
    raw_model = model
    use_compile = device_type == "cuda" if compile is None else compile
    if use_compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[int(dev.split(":")[1])] if device_type == "cuda" else None)

    # ---- output folder: self-contained, so sample.py and eval.py need nothing else -------------------
    # a second launch into this out_dir stops here, before writing anything; held while open: the whole run
    run_lock = hold_out_dir(out_dir, master, ddp)
    if master:
        try:
            for name in ["meta.json"] + ([meta["tokenizer"]] if meta["tokenizer"] != "gpt2" else []):
                with atomic_write(os.path.join(out_dir, name)) as tmp:
                    shutil.copyfile(os.path.join(data_dir, name), tmp)
        except OSError as e:
            raise ConfigError(f"cannot write to out_dir={out_dir!r} ({e.strerror}); pass a writable --out_dir")
    log_path = os.path.join(out_dir, "log.jsonl")
    if master and init_from == "resume" and os.path.exists(log_path):
        # a run killed after its last checkpoint logged steps that will now run again: drop those lines
        kept = [line for line in open(log_path) if logged_iter(line) <= iter_num]
        with atomic_write(log_path) as tmp, open(tmp, "w") as f:
            f.writelines(kept)
    flops_peak = peak_flops(torch.cuda.get_device_name(dev)) if device_type == "cuda" else None
    epoch_tokens = meta["splits"]["train"]["tokens"]
    last_iter = max_iters
    if max_epochs:
        last_iter = min(last_iter, math.ceil(max_epochs * epoch_tokens / tokens_per_iter))
    decay_iters = lr_decay_iters or last_iter
    # recorded as resolved, so that a resumed run with a larger max_iters keeps this run's schedule (then
    # min_lr) instead of stretching the cosine and raising the learning rate again
    config["lr_decay_iters"] = decay_iters

    def checkpoint_state():
        return {
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "model_args": model_args,
            "iter_num": iter_num, "tokens": tokens_seen, "best_val_loss": best_val_loss, "config": config,
            "elapsed": elapsed_before + time.time() - t_start, "sampler": sampler.get_state(),
            "tokenizer": meta["tokenizer"],
            "rng": {"python": random.getstate(), "numpy": numpy_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(dev) if device_type == "cuda" else None},  # this process's GPU
        }

    @torch.no_grad()
    def estimate_loss():
        """Mean loss over eval_iters fixed batches per split (shared among processes)."""
        model.eval()
        out = {}
        for split, data in (("train", train_data), ("val", val_data)):
            offsets = data.offsets(eval_iters * batch_size, torch.Generator().manual_seed(seed + 1))
            total = torch.zeros(2, device=dev)  # (sum of losses, batches)
            for k in range(rank, eval_iters, world_size):
                with ctx:
                    _, loss = model(*data.get(offsets[k * batch_size:(k + 1) * batch_size]))
                total += torch.stack([loss.float(), torch.ones((), device=dev)])
            if ddp:
                torch.distributed.all_reduce(total)
            out[split] = (total[0] / total[1]).item()
        model.train()
        return out

    # Ctrl-C or a scheduler's SIGTERM: finish the step, save, exit. A second Ctrl-C stops at once, except
    # under torchrun, whose launcher passes on the signal that the terminal already sent every process.
    stop = []

    def request_stop(signum, frame):
        stop.append(signum)
        signal.signal(signum, signal.SIG_IGN if ddp else signal.SIG_DFL)
        if master:
            print(f"\n{signal.Signals(signum).name}: finishing this step, saving, then exiting")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    @torch.no_grad()
    def weights_look_finite(x, y):
        """Finite weights that give a finite loss on batch (x, y), on every process."""
        model.eval()  # the graph estimate_loss compiled
        with ctx:
            _, loss = model(x, y)
        model.train()
        ok = torch.stack([p.isfinite().all() for p in raw_model.parameters()] + [loss.isfinite()]).all().float()
        if ddp:
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        return bool(ok)

    def diverged(what):
        remedy = "a lower learning_rate or grad_clip" + (", or dtype='float32'" if ptdtype != "float32" else "")
        if saved_at is None:
            then = f"no ckpt.pt was saved yet: start afresh in another --out_dir with {remedy}"
        else:
            then = (f"{os.path.join(out_dir, 'ckpt.pt')} holds step {saved_at}, the last good one: continue it with "
                    f"--init_from=resume and {remedy}")
        raise SystemExit(f"error: {what} at step {iter_num}; stopping. {then}")

    def log(**losses):
        """One log.jsonl line: where the run is, the given losses, and its speed."""
        append_log(log_path, dict(iter=iter_num, epoch=tokens_seen / epoch_tokens, tokens=tokens_seen, lr=lr, **losses,
                                  tok_per_sec=tok_per_sec, mfu=mfu, elapsed=elapsed_before + time.time() - t_start),
                   resume_advice(out_dir, saved_at))

    def evaluate_and_save():
        nonlocal best_val_loss
        losses = estimate_loss()
        if master:
            log(train_loss=losses["train"], val_loss=losses["val"])
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val_loss:
                best_val_loss = losses["val"]
                save(os.path.join(out_dir, "best.pt"), checkpoint_state(), resume_advice(out_dir, saved_at))

    # ---- the loop -------------------------------------------------------------------------------------
    if master:
        print(f"{raw_model.num_params() / 1e6:.2f}M parameters | {device_type} {ptdtype} | compile={use_compile} | "
              f"{world_size} process(es) | {tokens_per_iter:,} tokens per step | steps {iter_num} -> {last_iter}")
    t_start = time.time()
    lr, tok_per_sec, mfu = get_lr(iter_num, learning_rate, min_lr, warmup_iters, decay_iters), None, None
    eval_seconds = 0.0  # what the last evaluation took, for the ETA (not the first: it may include compiling)
    if iter_num == 0:
        evaluate_and_save()
    t_window, iters_window, done_at_start = time.time(), 0, iter_num
    stopping = False  # set in the same step on every process, so that all of them leave the loop together
    while iter_num < last_iter and not stopping:
        lr = get_lr(iter_num, learning_rate, min_lr, warmup_iters, decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        offsets = train_data.offsets(gradient_accumulation_steps * batch_size, sampler)
        mine = offsets.view(world_size, micro_steps, batch_size)[rank]  # this process's micro-batches
        batches = [train_data.get(o) for o in mine]
        loss = accumulate_gradients(model, batches, ctx, scaler)
        stopping = bool(stop)
        if ddp:  # average the loss over processes; a stop signal that reached any of them stops all after this step
            shared = torch.stack([loss, torch.tensor(float(stopping), device=loss.device)])
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.AVG)
            loss, stopping = shared[0], bool(shared[1] > 0)
        # reading the loss makes the CPU wait for the GPU, which then idles while the next step is prepared and
        # launched: only the steps that log read it. A NaN is caught there, and checkpoints check their weights.
        logging_now = (iter_num + 1) % log_interval == 0 or iter_num + 1 == last_iter
        if logging_now:
            train_loss = loss.item()
            if not math.isfinite(train_loss):
                diverged(f"loss is {train_loss}")
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        iters_window += 1
        tokens_seen += tokens_per_iter
        if logging_now:
            dt = time.time() - t_window
            tok_per_sec = iters_window * tokens_per_iter / dt
            mfu = raw_model.estimate_mfu(tok_per_sec / world_size, block_size, flops_peak) if flops_peak else None
            t_window, iters_window = time.time(), 0
            if master:
                evals_left = (last_iter - iter_num) // eval_interval + 1  # about: the last step's is one of them
                eta = (last_iter - iter_num) * tokens_per_iter / tok_per_sec + evals_left * eval_seconds
                log(train_loss=train_loss)
                print(f"iter {iter_num}/{last_iter} | loss {train_loss:.4f} | lr {lr:.2e} | {tok_per_sec:,.0f} tok/s"
                      + (f" | mfu {100 * mfu:.1f}%" if mfu else "") + f" | eta {eta / 60:.1f} min", flush=True)
        if iter_num % eval_interval == 0 or iter_num == last_iter:
            t_eval = time.time()
            evaluate_and_save()
            eval_seconds = time.time() - t_eval
            t_window += eval_seconds  # tokens/s measures training, not evaluation
        if iter_num % ckpt_interval == 0 or iter_num == last_iter or stopping:
            # a step can ruin the weights although its own loss, computed before it, was finite: never save
            # such weights over the last good ones
            if not weights_look_finite(*batches[-1]):
                diverged("the weights after this step are not finite or give a non-finite loss")
            if master:
                save(os.path.join(out_dir, "ckpt.pt"), checkpoint_state(), resume_advice(out_dir, saved_at))
            saved_at = iter_num
    if master:
        print(f"done: {iter_num - done_at_start} steps in {time.time() - t_start:.1f}s; best val loss "
              f"{best_val_loss:.4f}; checkpoints in {out_dir}")
    if ddp:
        # leave together: a process that tears down its connections while rank 0 is still saving has been
        # seen to abort at exit under gloo (the work was saved, but the job reported a failure)
        torch.distributed.barrier()
        destroy_process_group()


SETTINGS = list(settings(globals()))  # what a checkpoint records of the run, and a resume restores

if __name__ == "__main__":
    train(overrides=configure(globals()))
