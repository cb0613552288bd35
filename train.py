"""
Train a GPT on the token files written by prepare.py. One process on a laptop CPU or one GPU:

    python train.py config/tinystories_cpu.py
    python train.py --data_dir=data/tinystories --n_layer=4 --batch_size=32

Many GPUs with DistributedDataParallel (one process per GPU; add --nnodes/--rdzv_endpoint for
several machines):

    torchrun --standalone --nproc_per_node=8 train.py config/gpt2_small.py

Every setting below can be overridden by a config file or --key=value (see configurator.py). The file
reads top to bottom: the settings, the pieces of a step (schedule, batches, accumulation, evaluation),
the pieces of setting up a run (resume, processes, model, output folder), then train(), the run itself.
"""
import json
import math
import os
import random
import shutil
import signal
import time
from types import SimpleNamespace

import numpy as np
import torch
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import (SEEDS, ConfigError, atomic_write, autocast, check_ranges, configure, find_checkpoint,
                          hold_out_dir, one_line_if_full, peak_flops, pick_compile, pick_device, pick_dtype, read_meta,
                          MAKE_DATA, release_out_dir, resume_advice, settings)
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
chunked_loss = True  # False: F.cross_entropy on the full logits, slower, for teaching and comparison
# optimisation
batch_size = 16  # sequences per micro-step (per process)
gradient_accumulation_steps = 1  # micro-steps per optimizer step, summed over all processes
max_iters = 5000  # optimizer steps
max_epochs = 0.0  # also stop after this many passes over train.bin, if sooner; 0 = no such limit
max_minutes = 0.0  # also stop in time: at the end of the warm-up, max_iters becomes the steps that fit; 0 = no limit
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
compile = None  # torch.compile the model; None = on CUDA only (on a CPU it pays only for runs of minutes)
seed = 1337
# ------------------------------------------------------------------------------------------------
DEFAULTS = settings(globals())  # what a checkpoint records of the run, and a resume restores



# ---- the pieces of a step ------------------------------------------------------------------------

def get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warm-up (Adam's early moment estimates are noisy, so big steps then hurt), then a cosine
    decay from learning_rate to min_lr at lr_decay_iters, then min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / warmup_iters
    if it >= lr_decay_iters:
        return min_lr
    progress = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)


def steps_that_fit(max_minutes, elapsed, step_seconds, iter_num, last_iter, eval_interval, eval_iters, micro_steps):
    """The last step of a run that should take max_minutes in all, from the seconds elapsed and the seconds a
    step of micro_steps micro-batches takes now. Each evaluation ahead runs 2 x eval_iters micro-batches forward
    (shared among processes as a step's are), a third of a micro-step each (the backward pass is the other two
    thirds). Never past last_iter, never before iter_num."""
    seconds_per_step = step_seconds * (1 + 2 * eval_iters / (3 * eval_interval * micro_steps))
    return max(iter_num, min(last_iter, iter_num + int((60 * max_minutes - elapsed) / seconds_per_step)))


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


@torch.no_grad()
def estimate_loss(model, splits, run, ctx, procs):
    """Mean loss over eval_iters fixed batches per split (shared among processes)."""
    model.eval()
    out = {}
    for split, data in splits.items():
        offsets = data.offsets(run.eval_iters * run.batch_size, torch.Generator().manual_seed(run.seed + 1))
        total = torch.zeros(2, device=procs.device)  # (sum of losses, batches)
        for k in range(procs.rank, run.eval_iters, procs.world_size):
            with ctx:
                _, loss = model(*data.get(offsets[k * run.batch_size:(k + 1) * run.batch_size]))
            total += torch.stack([loss.float(), torch.ones((), device=procs.device)])
        if procs.ddp:
            torch.distributed.all_reduce(total)
        out[split] = (total[0] / total[1]).item()
    model.train()
    return out


@torch.no_grad()
def weights_look_finite(model, x, y, ctx, procs):
    """Finite weights that give a finite loss on batch (x, y), on every process. A step can ruin the
    weights although its own loss, computed before it, was finite: such weights are never saved."""
    model.eval()  # the graph estimate_loss compiled
    with ctx:
        _, loss = model(x, y)
    model.train()
    ok = torch.stack([p.isfinite().all() for p in model.parameters()] + [loss.isfinite()]).all().float()
    if procs.ddp:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok)


def diverged(what, iter_num, saved_at, run, ptdtype):
    remedy = "a lower learning_rate or grad_clip" + (", or dtype='float32'" if ptdtype != "float32" else "")
    if saved_at is None:
        then = f"no ckpt.pt was saved yet: start afresh in another --out_dir with {remedy}"
    else:
        then = (f"{os.path.join(run.out_dir, 'ckpt.pt')} holds step {saved_at}, the last good one: continue it with "
                f"--init_from=resume and {remedy}")
    raise SystemExit(f"error: {what} at step {iter_num}; stopping. {then}")


# ---- the pieces of setting up a run --------------------------------------------------------------

def resume_settings(config, overrides):
    """The checkpoint in out_dir, and the settings to go on with: the run's own as it was configured,
    except for what is given now (say, a larger max_iters)."""
    ckpt_path = os.path.join(config["out_dir"], "ckpt.pt")
    if not os.path.exists(ckpt_path):
        raise ConfigError(f"cannot resume: no checkpoint at {ckpt_path}; train with --init_from=scratch first")
    try:
        checkpoint = read_checkpoint(ckpt_path)
    except ValueError as e:
        raise ConfigError(f"cannot resume: {e}")
    keep = set(overrides) | {"init_from", "out_dir"}
    return {**config, **{k: v for k, v in checkpoint["config"].items() if k in config and k not in keep}}, checkpoint


def refuse_old_run(out_dir):
    """A new run in an old run's folder would overwrite its best.pt and mix into its log."""
    found = [name for name in ("ckpt.pt", "best.pt", "log.jsonl") if os.path.exists(os.path.join(out_dir, name))]
    if found:
        resume = "continue it with --init_from=resume, or " if "ckpt.pt" in found else ""
        raise ConfigError(f"{out_dir} already holds a run ({', '.join(found)}); {resume}start afresh in another "
                          f"--out_dir (or delete this one)")


def check_settings(config):
    """Values no run can use, named in one line (the model's shape and dropout are checked by GPTConfig)."""
    counts = ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval", "ckpt_interval")
    amounts = ("max_iters", "max_epochs", "max_minutes", "warmup_iters", "lr_decay_iters", "learning_rate", "min_lr",
               "weight_decay", "grad_clip")
    check_ranges(config, {**dict.fromkeys(counts, (1, None)), **dict.fromkeys(amounts, (0, None)), "seed": SEEDS})
    for name in ("beta1", "beta2"):
        if not 0 <= config[name] < 1:
            raise ConfigError(f"--{name} is a decay rate in [0, 1), got {config[name]}")


def start_processes(device_name, gradient_accumulation_steps):
    """This process's place in the job: one process, or one of torchrun's (which sets RANK and friends)."""
    dev = pick_device(device_name)
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world_size = 0, 1
    if ddp:
        rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
        init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
        if dev.startswith("cuda"):
            dev = f"cuda:{local_rank}"
            torch.cuda.set_device(dev)
    if gradient_accumulation_steps % world_size:
        raise ConfigError(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of "
                          f"the {world_size} processes")
    return SimpleNamespace(ddp=ddp, rank=rank, world_size=world_size, master=rank == 0, device=dev)


def build_model(run, meta, checkpoint, overrides):
    """The model to train: the checkpoint's when resuming, else a GPT-2 preset, one of our trained models
    (a folder) or a new one. Each way, a model that cannot train on this data is named in one line."""
    vocab_size = meta["vocab_size"]
    options = dict(dropout=run.dropout, fused_attention=run.fused_attention, chunked_loss=run.chunked_loss)
    if checkpoint is not None:
        # the architecture comes from the checkpoint; an explicit, different one is a mistake worth naming
        saved = checkpoint["model_args"]
        for key in ("n_layer", "n_head", "n_embd", "block_size", "bias"):
            if key in overrides and getattr(run, key) != saved[key]:
                raise ConfigError(f"the checkpoint in {run.out_dir} has {key}={saved[key]} but "
                                  f"{key}={getattr(run, key)} was given; drop it to resume, or use a new --out_dir")
        if saved["vocab_size"] != vocab_size:
            raise ConfigError(f"the checkpoint in {run.out_dir} has a {saved['vocab_size']}-token "
                              f"vocabulary but {run.data_dir} has {vocab_size}: resume on the data it was trained on")
        model = GPT(model_config({**saved, **options}))
        try:
            model.load_weights(checkpoint["model"])
        except ValueError as e:
            raise ConfigError(str(e))
    elif run.init_from in PRESETS:
        if vocab_size != 50257:
            raise ConfigError(f"{run.init_from} has GPT-2's 50257-token vocabulary but {run.data_dir} was made with "
                              f"{vocab_size}; prepare the data with --tokenizer=gpt2")
        model = GPT.from_pretrained(run.init_from, **options)
    elif run.init_from != "scratch":  # fine-tune one of our trained models: a folder with model.pt, best.pt or ckpt.pt
        if not os.path.isdir(run.init_from):
            raise ConfigError(f"init_from={run.init_from!r} is neither 'scratch', 'resume', a GPT-2 preset "
                              f"({', '.join(PRESETS)}) nor a folder holding model.pt, best.pt or ckpt.pt")
        path = find_checkpoint(run.init_from)
        try:
            saved = read_checkpoint(path)  # its errors name the path
        except ValueError as e:
            raise ConfigError(str(e))
        try:
            model = GPT.from_checkpoint(saved, **options)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e}")
        if model.config.vocab_size != vocab_size:
            raise ConfigError(f"{path} has a {model.config.vocab_size}-token vocabulary but {run.data_dir} has "
                              f"{vocab_size}; prepare the data with that model's tokenizer")
    else:
        model = GPT(model_config(dict(n_layer=run.n_layer, n_head=run.n_head, n_embd=run.n_embd,
                                      block_size=run.block_size, bias=run.bias, vocab_size=vocab_size, **options)))
    if model.config.block_size < run.block_size:
        raise ConfigError(f"block_size={run.block_size} exceeds the model's {model.config.block_size} positions")
    return model


def model_config(model_args):
    try:  # a shape no model can have, or a dropout that is no probability, in one line
        return GPTConfig(**model_args)
    except ValueError as e:
        raise ConfigError(str(e))


def restore_training_state(checkpoint, optimizer, scaler, sampler, procs, seed):
    """Everything but the weights that an uninterrupted run would have now: the optimizer's moments,
    float16's loss scale, the data order and every random stream (dropout)."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    sampler.set_state(checkpoint["sampler"])
    rng = checkpoint["rng"]
    random.setstate(rng["python"])
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    if procs.master:  # the saved dropout state is rank 0's
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and procs.device.startswith("cuda"):
            torch.cuda.set_rng_state(rng["cuda"], procs.device)
    else:  # the others start a stream of their own, rather than replay the masks of their first steps
        torch.manual_seed(seed + procs.rank + procs.world_size * checkpoint["iter_num"])


def prepare_out_dir(run, meta, resumed_at):
    """The output folder (created by hold_out_dir), self-contained, as sample.py and eval.py need nothing else:
    meta.json and the tokenizer beside the checkpoints. A resumed run drops the log lines of steps it will run again."""
    try:
        for name in ["meta.json"] + ([meta["tokenizer"]] if meta["tokenizer"] != "gpt2" else []):
            with atomic_write(os.path.join(run.out_dir, name)) as tmp:
                shutil.copyfile(os.path.join(run.data_dir, name), tmp)
    except OSError as e:
        raise ConfigError(f"cannot write to out_dir={run.out_dir!r} ({e.strerror}); pass a writable --out_dir")
    log_path = os.path.join(run.out_dir, "log.jsonl")
    if resumed_at is not None and os.path.exists(log_path):  # a run killed after its last checkpoint
        kept = [line for line in open(log_path) if logged_iter(line) <= resumed_at]
        with atomic_write(log_path) as tmp, open(tmp, "w") as f:
            f.writelines(kept)
    return log_path


def logged_iter(line):
    """The step a log.jsonl line records; infinity for a line cut off by a kill while it was written."""
    try:
        return json.loads(line)["iter"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def stop_on_signals(procs):
    """Ctrl-C or a scheduler's SIGTERM: the loop finishes its step, saves and exits. A second Ctrl-C stops
    at once, except under torchrun, whose launcher passes on the signal the terminal already sent every
    process. Returns the list the signals land in."""
    stop = []

    def request_stop(signum, frame):
        stop.append(signum)
        signal.signal(signum, signal.SIG_IGN if procs.ddp else signal.SIG_DFL)
        if procs.master:
            print(f"\n{signal.Signals(signum).name}: finishing this step, saving, then exiting")

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop


def numpy_state():
    """NumPy's RNG state as plain lists, so checkpoints load with torch.load(weights_only=True)."""
    name, keys, *rest = np.random.get_state()
    return [name, keys.tolist(), *rest]


def save(path, obj, if_full):
    """`if_full`: what to do if the disk is full (configurator.resume_advice)."""
    with atomic_write(path, if_full) as tmp:
        torch.save(obj, tmp)


def training_state(model, optimizer, scaler, sampler, device, **progress):
    """What a checkpoint holds besides the run's settings: weights, optimizer, and every random stream."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "model_args": dict(model.config.__dict__), "sampler": sampler.get_state(), **progress,
            "rng": {"python": random.getstate(), "numpy": numpy_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.startswith("cuda") else None}}


def log_record(iter_num, epoch, tokens, lr, tok_per_sec, mfu, elapsed, **losses):
    """One log.jsonl line: where the run is, the given losses, and its speed."""
    return dict(iter=iter_num, epoch=epoch, tokens=tokens, lr=lr, **losses, tok_per_sec=tok_per_sec, mfu=mfu,
                elapsed=elapsed)


def append_log(path, record, if_full):
    with one_line_if_full(path, if_full), open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---- the run -------------------------------------------------------------------------------------

def train(config, overrides=()):
    """Run training with the settings in `config` (a dict like DEFAULTS); `overrides` names the ones the
    user set explicitly (a resumed run keeps the checkpoint's others)."""
    checkpoint = None
    if config["init_from"] == "resume":
        config, checkpoint = resume_settings(config, overrides)
    check_settings(config)
    run = SimpleNamespace(**config)

    # processes and devices
    procs = start_processes(run.device, run.gradient_accumulation_steps)
    # a second launch into this out_dir stops here, before anything is written (main() releases the lock)
    hold_out_dir(run.out_dir, procs.master, procs.ddp)
    if checkpoint is None:
        refuse_old_run(run.out_dir)
    dev, device_type = procs.device, procs.device.split(":")[0]
    micro_steps = run.gradient_accumulation_steps // procs.world_size  # this process's share
    ptdtype = pick_dtype(run.dtype, device_type)
    ctx = autocast(device_type, ptdtype)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~same accuracy, several times faster
        torch.backends.cudnn.allow_tf32 = True
    random.seed(run.seed)
    np.random.seed(run.seed)
    # each process its own dropout masks; the weights still start equal, as DDP copies rank 0's to all
    torch.manual_seed(run.seed + procs.rank)

    # data
    meta = read_meta(run.data_dir, MAKE_DATA)
    train_data = Batches(os.path.join(run.data_dir, "train.bin"), run.block_size, dev)
    val_data = Batches(os.path.join(run.data_dir, "val.bin"), run.block_size, dev)
    tokens_per_iter = run.gradient_accumulation_steps * run.batch_size * run.block_size
    sampler = torch.Generator().manual_seed(run.seed)  # the order of the training batches

    # model and optimizer
    raw_model = build_model(run, meta, checkpoint, overrides).to(dev)
    # float16 needs its gradients scaled up so that small ones do not flush to zero; bf16 does not
    scaler = torch.amp.GradScaler(device_type, enabled=ptdtype == "float16")
    optimizer = raw_model.configure_optimizers(run.weight_decay, run.learning_rate, (run.beta1, run.beta2), device_type)
    iter_num, tokens_seen, best_val_loss, elapsed_before = 0, 0, float("inf"), 0.0
    fitted_before = False  # whether max_minutes has already fixed max_iters (in the run resumed here)
    saved_at = None  # the step of the last ckpt.pt, which a diverged run points to
    if checkpoint is not None:
        restore_training_state(checkpoint, optimizer, scaler, sampler, procs, run.seed)
        iter_num, tokens_seen = checkpoint["iter_num"], checkpoint["tokens"]
        best_val_loss, elapsed_before = checkpoint["best_val_loss"], checkpoint["elapsed"]
        fitted_before = checkpoint.get("fitted", True)
        saved_at = iter_num
        checkpoint = None  # free the memory
    use_compile = pick_compile(run.compile, device_type)
    model = torch.compile(raw_model) if use_compile else raw_model
    if procs.ddp:
        model = DDP(model, device_ids=[int(dev.split(":")[1])] if device_type == "cuda" else None)

    # the schedule; lr_decay_iters recorded resolved, so that a resumed run with a larger max_iters keeps
    # this run's schedule (then min_lr) instead of stretching the cosine and raising the learning rate again
    epoch_tokens = meta["splits"]["train"]["tokens"]
    last_iter = run.max_iters
    if run.max_epochs:
        last_iter = min(last_iter, math.ceil(run.max_epochs * epoch_tokens / tokens_per_iter))
    # max_minutes: time the warm-up's second half (the first steps compile), then fix last_iter before the cosine
    # starts, so that the schedule is a plain function of the step again; a resumed run keeps what was fixed
    fit_from = fit_at = None
    if run.max_minutes and not fitted_before:
        fit_from = max(run.warmup_iters // 2, 10, iter_num + 1)  # not the first step, which compiles
        fit_at = max(run.warmup_iters, fit_from + 10)
        if fit_at >= last_iter:  # a run this short ends before it could be timed
            fit_from = fit_at = None
    if fit_at is None:
        run.lr_decay_iters = run.lr_decay_iters or last_iter
    schedule = dict(learning_rate=run.learning_rate, min_lr=run.min_lr, warmup_iters=run.warmup_iters,
                    lr_decay_iters=run.lr_decay_iters or last_iter)
    log_path = prepare_out_dir(run, meta, iter_num if run.init_from == "resume" else None) if procs.master else None
    flops_peak = peak_flops(torch.cuda.get_device_name(dev)) if device_type == "cuda" else None
    stop = stop_on_signals(procs)

    # ---- the loop -------------------------------------------------------------------------------
    if procs.master:
        print(f"{raw_model.num_params() / 1e6:.2f}M parameters | {device_type} {ptdtype} | compile={use_compile} | "
              f"{procs.world_size} process(es) | {tokens_per_iter:,} tokens per step | steps {iter_num} -> {last_iter}"
              + (f", or fewer if {run.max_minutes:g} minutes end sooner" if fit_at else ""))
    t_start = time.time()
    start_iter, lr, tok_per_sec, mfu = iter_num, get_lr(iter_num, **schedule), None, None
    t_window, iters_window, eval_seconds = time.time(), 0, 0.0  # tokens/s and ETA over the steps since the last log

    def checkpoint_now():  # everything a resumed run needs to go on exactly as if it had never stopped
        return {**training_state(raw_model, optimizer, scaler, sampler, dev), "iter_num": iter_num,
                "tokens": tokens_seen, "best_val_loss": best_val_loss, "config": vars(run),
                "tokenizer": meta["tokenizer"], "elapsed": elapsed_before + time.time() - t_start,
                "fitted": fit_at is None}

    stopping = False  # set in the same step on every process, so that all of them leave the loop together
    while True:
        # evaluate the untrained model, then every eval_interval steps and at the end (not again on resuming)
        if (iter_num % run.eval_interval == 0 or iter_num == last_iter) and (iter_num == 0 or iter_num > start_iter):
            t_eval = time.time()
            losses = estimate_loss(model, {"train": train_data, "val": val_data}, run, ctx, procs)
            if procs.master:
                append_log(log_path, log_record(iter_num, tokens_seen / epoch_tokens, tokens_seen, lr, tok_per_sec, mfu,
                                                elapsed_before + time.time() - t_start, train_loss=losses["train"],
                                                val_loss=losses["val"]), resume_advice(run.out_dir, saved_at))
                print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if losses["val"] < best_val_loss:
                    best_val_loss = losses["val"]
                    save(os.path.join(run.out_dir, "best.pt"), checkpoint_now(), resume_advice(run.out_dir, saved_at))
            t_window += time.time() - t_eval  # tokens/s measures training, not evaluation
            if fit_at is not None and fit_from <= iter_num < fit_at:
                t_fit += time.time() - t_eval  # and so does the timing for max_minutes
            if iter_num > 0:  # the first evaluation may include compiling: not a guide to the others
                eval_seconds = time.time() - t_eval
        if iter_num > start_iter and (iter_num % run.ckpt_interval == 0 or iter_num == last_iter or stopping):
            if not weights_look_finite(model, *batches[-1], ctx, procs):
                diverged("the weights after this step are not finite or give a non-finite loss",
                         iter_num, saved_at, run, ptdtype)
            if procs.master:
                save(os.path.join(run.out_dir, "ckpt.pt"), checkpoint_now(), resume_advice(run.out_dir, saved_at))
            saved_at = iter_num
        if iter_num >= last_iter or stopping:
            break

        # one optimizer step: forward and backward over this process's micro-batches, then AdamW
        lr = get_lr(iter_num, **schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        offsets = train_data.offsets(run.gradient_accumulation_steps * run.batch_size, sampler)
        mine = offsets.view(procs.world_size, micro_steps, run.batch_size)[procs.rank]  # this process's share
        batches = [train_data.get(o) for o in mine]
        loss = accumulate_gradients(model, batches, ctx, scaler)
        stopping = bool(stop)
        if procs.ddp:  # average the loss over processes; a stop signal that reached any of them stops all
            shared = torch.stack([loss, torch.tensor(float(stopping), device=loss.device)])
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.AVG)
            loss, stopping = shared[0], bool(shared[1] > 0)
        # reading the loss makes the CPU wait for the GPU, which then idles while the next step is prepared
        # and launched: only the steps that log read it. A NaN is caught there; checkpoints check the weights.
        logging_now = (iter_num + 1) % run.log_interval == 0 or iter_num + 1 == last_iter
        if logging_now:
            train_loss = loss.item()
            if not math.isfinite(train_loss):
                diverged(f"loss is {train_loss}", iter_num, saved_at, run, ptdtype)
        if run.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        iters_window += 1
        tokens_seen += tokens_per_iter
        if iter_num == fit_from:
            t_fit = time.time()
        if iter_num == fit_at:  # max_minutes: the last step, from the time the steps since fit_from took
            fitted = torch.tensor(steps_that_fit(run.max_minutes, elapsed_before + time.time() - t_start,
                                                 (time.time() - t_fit) / (fit_at - fit_from), iter_num, last_iter,
                                                 run.eval_interval, run.eval_iters,
                                                 run.gradient_accumulation_steps), device=dev)
            if procs.ddp:  # the slowest process decides, so that all of them stop at the same step
                torch.distributed.all_reduce(fitted, op=torch.distributed.ReduceOp.MIN)
            if procs.master:
                print(f"max_minutes={run.max_minutes:g}: at this speed the run ends at step {int(fitted):,}")
            last_iter = run.max_iters = int(fitted)
            run.lr_decay_iters = schedule["lr_decay_iters"] = run.lr_decay_iters or last_iter
            fit_from = fit_at = None
        if logging_now:
            tok_per_sec = iters_window * tokens_per_iter / (time.time() - t_window)
            mfu = raw_model.estimate_mfu(tok_per_sec / procs.world_size, run.block_size, flops_peak) if flops_peak else None
            t_window, iters_window = time.time(), 0
            if procs.master:
                evals_left = (last_iter - iter_num) // run.eval_interval + 1  # about: the last step's is one of them
                eta = (last_iter - iter_num) * tokens_per_iter / tok_per_sec + evals_left * eval_seconds
                append_log(log_path, log_record(iter_num, tokens_seen / epoch_tokens, tokens_seen, lr, tok_per_sec, mfu,
                                                elapsed_before + time.time() - t_start, train_loss=train_loss),
                           resume_advice(run.out_dir, saved_at))
                print(f"iter {iter_num}/{last_iter} | loss {train_loss:.4f} | lr {lr:.2e} | {tok_per_sec:,.0f} tok/s"
                      + (f" | mfu {100 * mfu:.1f}%" if mfu else "") + f" | eta {eta / 60:.1f} min", flush=True)
    if procs.master:
        print(f"done: {iter_num - start_iter} steps in {time.time() - t_start:.1f}s; best val loss "
              f"{best_val_loss:.4f}; checkpoints in {run.out_dir}")
    if procs.ddp:
        # leave together: a process that tears down its connections while rank 0 is still saving has been
        # seen to abort at exit under gloo (the work was saved, but the job reported a failure)
        torch.distributed.barrier()
        destroy_process_group()


def main(argv=None):
    config = dict(DEFAULTS)  # a copy: the module's defaults stay as they are
    overrides = configure(config, argv)
    try:
        train(config, overrides)
    finally:
        release_out_dir(config["out_dir"])


if __name__ == "__main__":
    main()
