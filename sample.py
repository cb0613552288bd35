"""
Generate text with a trained model, printing tokens as they come:

    python sample.py --top_p=0.9                               # right after cloning: the shipped model
    python sample.py --out_dir=out --start="Once upon a time" --num_samples=3 --max_new_tokens=200 \
        --temperature=0.8 --top_k=50 --top_p=0.9 --seed=1337
    python sample.py --out_dir=out --greedy                    # same as --temperature=0
    python sample.py --out_dir=out --start=FILE:prompt.txt     # the prompt from a file
    python sample.py --out_dir=out --strategy=compare          # greedy, top-k and nucleus, one under the other
    python sample.py --out_dir=out --export_hf=hf-model        # a folder for transformers.pipeline instead

Sampling follows Hugging Face's conventions: --top_k=0 and --top_p=1.0 switch those filters off.
Generation stops at the end-of-text token or after max_new_tokens, and ends with a tokens/s figure.
While the default out_dir holds no checkpoint, the model shipped in pretrained/tinystories-cpu/ is used.
"""
import os
import shutil
import sys
import tempfile
import time

import torch

from configurator import (SEEDS, ConfigError, atomic_write, autocast, check_ranges, check_writable, configure,
                          encode_prompt, load_model, model_dir, one_line_if_full, pick_device, pick_dtype,
                          sampling_args, strategies)
from model import compile_generation

# ------------------------------------------------------------------------------------------------
out_dir = "out"  # a folder written by train.py, or a shipped pretrained/<name>/ folder
ckpt = "best"  # 'best' (best.pt, lowest validation loss) or 'last' (ckpt.pt); a shipped folder has model.pt
start = ""  # the prompt; 'FILE:prompt.txt' reads it from a file; empty starts a fresh document
num_samples = 1
max_new_tokens = 200
temperature = 0.8  # < 1 sharpens the distribution, > 1 flattens it; 0 is greedy
top_k = 50  # sample among the k most likely tokens only; 0 = no limit
top_p = 1.0  # nucleus: the fewest most likely tokens whose probability reaches top_p; 1.0 = no limit
greedy = False  # always take the most likely token (same as --temperature=0)
strategy = "sample"  # 'sample' (the settings above) or 'compare' (greedy, top-k 50 and nucleus 0.9)
seed = 1337
export = ""  # instead of sampling, write a small shareable copy of out_dir's model to this folder
export_hf = ""  # instead of sampling, write out_dir's model and tokenizer as a Hugging Face folder here
compile = False  # torch.compile the per-token step first: faster generation, after seconds to minutes of compiling
device = "auto"
dtype = "auto"
# ------------------------------------------------------------------------------------------------



def export_model(out_dir, ckpt, dest):
    """Write dest/ with what sample.py and eval.py need and nothing more: model.pt (the weights in half
    precision, the tied embedding stored once, no optimizer state) and the run's meta.json, tokenizer,
    log.jsonl, loss.png and eval.json where present. A folder to commit or share; float16 changes the test
    bits per byte by far less than 0.001 (eval.py on both folders shows it)."""
    model, _, meta = load_model(out_dir, ckpt)  # the checks sample.py makes: a folder that does not load is not exported
    path = meta["checkpoint_path"]
    weights = {k: v.half() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    check_writable(os.path.join(dest, "model.pt"))
    with atomic_write(os.path.join(dest, "model.pt")) as tmp:
        torch.save({"model": weights, **meta["checkpoint"]}, tmp)
    for name in ("meta.json", meta["tokenizer"], "log.jsonl", "loss.png", "eval.json"):
        if name != "gpt2" and os.path.isfile(os.path.join(out_dir, name)):
            with atomic_write(os.path.join(dest, name)) as tmp:
                shutil.copyfile(os.path.join(out_dir, name), tmp)
    size = sum(os.path.getsize(os.path.join(dest, f)) for f in os.listdir(dest))
    print(f"wrote {dest} from {path}: {size / 1e6:.1f} MB")


def export_hugging_face(out_dir, ckpt, dest):
    """Write dest/ as a Hugging Face GPT-2 folder: config.json and the float32 weights (GPT.save_pretrained)
    and the tokenizer's files (Tokenizer.save_hf), with <|endoftext|> as bos and eos, so that
    transformers.pipeline("text-generation", model=dest) continues a prompt as sample.py does. The files are
    written in a temporary folder first and moved into dest only when all are there."""
    model, tokenizer, meta = load_model(out_dir, ckpt)
    check_writable(os.path.join(dest, "config.json"))
    with tempfile.TemporaryDirectory(dir=dest, prefix=".export-") as tmp:  # inside dest: same filesystem
        try:
            with one_line_if_full(dest):  # the folder: it holds several files
                model.save_pretrained(tmp, eot_id=tokenizer.eot_id)
                tokenizer.save_hf(tmp, model_max_length=model.config.block_size)
        except ImportError:
            raise ConfigError("--export_hf needs the transformers package: pip install transformers")
        except ValueError as e:
            raise ConfigError(f"cannot export {meta['checkpoint_path']} for Hugging Face: {e}")
        names = os.listdir(tmp)
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(dest, name))
    size = sum(os.path.getsize(os.path.join(dest, name)) for name in names)
    print(f"wrote {dest} from {meta['checkpoint_path']}: {size / 1e6:.1f} MB, "
          f"for transformers.pipeline('text-generation', model={dest!r})")


def read_prompt(start):
    if start.startswith("FILE:"):
        path = start[len("FILE:"):]
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"cannot read the prompt file {path!r} ({e.strerror})")
        except UnicodeDecodeError as e:
            raise ConfigError(f"the prompt file {path!r} is not UTF-8 text ({e.reason}); save it as UTF-8")
    return start


class TextStream:
    """Turns token ids, one at a time, into text that is safe to print. Byte-level BPE can split one
    character over two tokens (an emoji, most Chinese characters), and half a character decodes to the
    replacement character '\ufffd'. So we decode the tokens not yet printed together, and hold them
    back while their text ends in '\ufffd': the next token may complete the character."""

    def __init__(self, tokenizer):
        self.tokenizer, self.pending = tokenizer, []

    def push(self, token):
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd"):
            return ""
        self.pending = []
        return text

    def flush(self):
        """Whatever is still held back (a character the model never completed), at the end."""
        text = self.tokenizer.decode(self.pending) if self.pending else ""
        self.pending = []
        return text


def stream_sample(model, tokenizer, prompt, max_new_tokens, generator=None, out=None, **sampling):
    """Generate one continuation of the prompt ids, writing its text to `out` as it comes. Returns
    (token ids without the end-of-text token, tokens generated including it)."""
    out = out or sys.stdout
    idx = torch.tensor([prompt], dtype=torch.long, device=model.lm_head.weight.device)
    text, ids, steps = TextStream(tokenizer), [], 0
    for next_id in model.stream(idx, max_new_tokens, eot_id=tokenizer.eot_id, generator=generator, **sampling):
        steps += 1
        token = next_id.item()
        if token == tokenizer.eot_id:
            break
        ids.append(token)
        out.write(text.push(token))
        out.flush()
    out.write(text.flush())
    return ids, steps


def main(given=()):
    """given: the settings the user set (configure's list), which decides whether out_dir was chosen."""
    if export or export_hf:
        if export:
            export_model(out_dir, ckpt, export)
        if export_hf:
            export_hugging_face(out_dir, ckpt, export_hf)
        return
    dev = pick_device(device)
    device_type = dev.split(":")[0]
    ctx = autocast(device_type, pick_dtype(dtype, device_type))
    if strategy not in ("sample", "compare"):
        raise ConfigError(f"--strategy must be 'sample' or 'compare', got {strategy!r}")
    if strategy == "compare":
        runs = strategies(temperature)
    else:
        runs = {"": sampling_args(0.0 if greedy else temperature, top_k, top_p)}
    check_ranges(globals(), {"max_new_tokens": (1, None), "num_samples": (1, None), "seed": SEEDS})
    prompt_text = read_prompt(start)
    model, tokenizer, meta = load_model(model_dir(out_dir, given), ckpt, dev)
    prompt = encode_prompt(tokenizer, prompt_text)
    print(f"{meta['checkpoint_path']}: {model.num_params() / 1e6:.2f}M parameters, {len(prompt) - 1} prompt tokens",
          file=sys.stderr)
    if compile:
        print("compiling the generation step (once per run)...", file=sys.stderr)
        t0 = time.perf_counter()
        with ctx:
            compile_generation(model, prompt)
        print(f"compiled in {time.perf_counter() - t0:.0f}s", file=sys.stderr)

    generator = torch.Generator(device=dev).manual_seed(seed)
    total_tokens, total_time = 0, 0.0
    for i in range(num_samples):
        for label, sampling in runs.items():
            if strategy == "compare":
                print(f"--- sample {i + 1}/{num_samples}, {label}")
                generator.manual_seed(seed + i)  # the same seed for every strategy: only the rule differs
            elif num_samples > 1:
                print(f"--- sample {i + 1}/{num_samples}")
            sys.stdout.write(prompt_text)
            t0 = time.perf_counter()
            with ctx:
                _, steps = stream_sample(model, tokenizer, prompt, max_new_tokens, generator, **sampling)
            total_time += time.perf_counter() - t0
            total_tokens += steps
            print()
    print(f"--- {total_tokens} tokens in {total_time:.2f}s: {total_tokens / total_time:.1f} tokens/s "
          f"({dev}, KV cache{', compiled' if compile else ''})")


if __name__ == "__main__":
    main(configure(globals()))
