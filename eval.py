"""
Evaluate trained models: perplexity and bits per byte, how the decoding strategies behave, HellaSwag,
a loss plot, a Markdown report, and a comparison table across models.

    python eval.py --out_dir=out                            # test/val/train scores, sampling analysis, loss.png
    python eval.py                                          # right after cloning: the shipped model
    python eval.py --out_dir=out --report                   # ... and out/report.md + report.pdf, the assignment's report
    python eval.py --out_dir=out --stride=128               # sliding-window perplexity (more context per token)
    python eval.py --out_dir=out --hellaswag=hellaswag_val.jsonl
    python eval.py --out_dirs=out-small,out-medium          # one row per model, also written to comparison.md

Every run writes its numbers to out_dir/eval.json (merged with what an earlier run of the same
checkpoint found), so scripts read numbers instead of console text. `--splits= --num_prompts=0`
skips perplexity and the sampling analysis, e.g. to run HellaSwag alone. While the default out_dir holds
no checkpoint, the model shipped in pretrained/tinystories-cpu/ is evaluated (sample.py's rule).
"""
import datetime
import html
import json
import math
import os
import sys

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from configurator import (MAKE_DATA, SEEDS, ConfigError, atomic_write, autocast, check_ranges, check_writable,
                          configure, encode_prompt, json_lines, load_model, model_dir, pick_device, pick_dtype,
                          read_meta, sampling_args, strategies)

# ------------------------------------------------------------------------------------------------
out_dir = "out"  # a folder written by train.py, or a shipped pretrained/<name>/ folder
out_dirs = ""  # comma-separated folders: evaluate each (reusing eval.json) and print a comparison table
compare_file = "comparison.md"  # where --out_dirs writes its table
ckpt = "best"  # 'best' (best.pt) or 'last' (ckpt.pt)
data_dir = ""  # the folder with test.bin etc.; empty = the data_dir the model was trained on
splits = "test,val,train"  # which splits to score; empty for none
stride = 0  # 0: non-overlapping windows of block_size; else each window starts stride tokens after the last
train_tokens = 200_000  # the train split is scored on a random stretch this long (whole documents); 0 = all
batch_size = 4  # windows per forward pass; the logits take batch_size * block_size * vocab_size floats
num_prompts = 20  # sampling analysis: prompts from the first test documents; 0 skips it
prompt_tokens = 8  # the first tokens of each such document make its prompt
new_tokens = 64  # tokens generated per prompt and strategy; left unset, both shrink to fit a small block_size
temperatures = (0.5, 0.8, 1.0, 1.2)  # the temperature sweep (plain sampling, no top-k or top-p)
hellaswag = ""  # a .jsonl file of HellaSwag items to score
hellaswag_items = 0  # score only the first this many items; 0 = all
report = False  # also write out_dir/report.md
seed = 1337
device = "auto"
dtype = "auto"
# ------------------------------------------------------------------------------------------------


# ---- scoring: one function behind perplexity, fluency and HellaSwag ---------------------------------

@torch.no_grad()
def token_nll(model, x, y):
    """Negative log-likelihood in nats of each target token y (B, T) given the inputs x (B, T), where
    y[:, t] is the token that follows x[:, :t + 1]. Targets of -1 (padding, or tokens not to be
    scored) get 0."""
    logits, _ = model(x)
    nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="none")
    return nll.view(y.shape)


def continuation_nll(model, pairs, batch_size=8, desc=None):
    """[(summed NLL, token count)] of each continuation given its context, for (context ids,
    continuation ids) pairs: HellaSwag endings after their context, generated text after its prompt.
    A row longer than block_size + 1 loses the start of its context, never the continuation. Rows are
    batched in order of length, so little of each batch is padding."""
    block_size, dev = model.config.block_size, model.lm_head.weight.device
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results = [None] * len(pairs)
    for b in tqdm(range(0, len(order), batch_size), desc=desc, disable=desc is None, leave=False):
        rows = order[b:b + batch_size]
        seqs = [(list(pairs[i][0]) + list(pairs[i][1]))[-(block_size + 1):] for i in rows]
        T = max(len(s) for s in seqs) - 1
        x = torch.zeros(len(rows), T, dtype=torch.long)
        y = torch.full((len(rows), T), -1, dtype=torch.long)
        for r, (i, seq) in enumerate(zip(rows, seqs)):
            n = len(pairs[i][1])
            if n > block_size:
                raise ConfigError(f"a continuation of {n} tokens (a HellaSwag ending, say) does not fit in the model's "
                                  f"block_size={block_size}")
            x[r, :len(seq) - 1] = torch.tensor(seq[:-1])
            if n:
                y[r, len(seq) - 1 - n:len(seq) - 1] = torch.tensor(seq[-n:])
        nll = token_nll(model, x.to(dev), y.to(dev)).sum(dim=1).tolist()
        for r, i in enumerate(rows):
            results[i] = (nll[r], len(pairs[i][1]))
    return results


# ---- perplexity and bits per byte --------------------------------------------------------------------

def bits_per_byte(total_nll, n_bytes):
    """Bits per byte: the text's total negative log-likelihood, turned from nats into bits (divide by
    ln 2), per UTF-8 byte of the text.

    Why not just perplexity? Perplexity is per *token*, and what a token is depends on the tokenizer: a
    bigger vocabulary cuts the same text into fewer, longer tokens, each harder to guess, so its
    per-token perplexity is higher even when it models the text just as well. Bytes are the same for
    every tokenizer, so bits per byte ranks any two models on the same text. It is also a compression
    rate: an arithmetic coder driven by the model would store the text in this many bits per byte
    (8 is no model at all; gzip gets roughly 2 to 3 on English). The end-of-text tokens are scored
    too (knowing where a document ends is part of the text) but add no bytes; nanochat's evaluate_bpb
    leaves special tokens out instead, so its figures run slightly lower on the same model and text."""
    return total_nll / (math.log(2) * n_bytes)


def scoring_windows(n, block_size, stride):
    """(start, end, first) for each window over n targets: the window feeds inputs start..end-1 and
    scores targets first..end-1. Consecutive windows start stride apart and score only the targets
    the last one did not, so every target is scored exactly once; with stride == block_size they do
    not overlap, with a smaller stride every target after the first window has at least
    block_size - stride tokens of context, at block_size / stride times the compute."""
    start, scored = 0, 0
    while scored < n:
        end = min(start + block_size, n)
        yield start, end, scored
        start, scored = start + stride, end


def evaluate_tokens(model, tokens, eot_id, n_bytes, stride=0, batch_size=4, desc=None):
    """Loss, perplexity and bits per byte of a token stream (a split's documents, each followed by
    eot_id), scoring every token exactly once. An end-of-text token is put before the first document,
    as one precedes every other document, so the very first token is scored too."""
    block_size, dev = model.config.block_size, model.lm_head.weight.device
    stride = stride or block_size
    if not 0 < stride <= block_size:
        raise ConfigError(f"--stride must be between 1 and block_size={block_size} (0 for non-overlapping windows)")
    n = len(tokens)
    if n == 0:
        raise ConfigError("no tokens to evaluate")
    stream = np.concatenate([np.array([eot_id], dtype=np.int64), np.asarray(tokens, dtype=np.int64)])
    windows = list(scoring_windows(n, block_size, stride))
    total_nll, scored = 0.0, 0
    for b in tqdm(range(0, len(windows), batch_size), desc=desc, disable=desc is None, leave=False):
        batch = windows[b:b + batch_size]
        x = torch.zeros(len(batch), block_size, dtype=torch.long)
        y = torch.full((len(batch), block_size), -1, dtype=torch.long)
        for r, (start, end, first) in enumerate(batch):
            x[r, :end - start] = torch.from_numpy(stream[start:end])  # inputs: stream position p predicts p + 1
            y[r, first - start:end - start] = torch.from_numpy(stream[first + 1:end + 1])
        total_nll += token_nll(model, x.to(dev), y.to(dev)).cpu().double().sum().item()  # (mps has no float64)
        scored += int((y != -1).sum())
    assert scored == n, f"scored {scored} of {n} tokens"  # the windows' contract; a bug if it fails
    loss = total_nll / n
    how = (f"non-overlapping windows of {block_size} tokens" if stride == block_size else
           f"sliding windows of {block_size} tokens, stride {stride}")
    return dict(loss=loss, perplexity=math.exp(loss), bits_per_byte=bits_per_byte(total_nll, n_bytes), tokens=n,
                bytes=n_bytes, scoring=how, block_size=block_size, stride=stride)


def document_sample(tokens, eot_id, n_tokens, seed):
    """A stretch of whole documents, about n_tokens long, from a random place in the split (its start
    is as typical as its middle only if the documents were shuffled, which we do not assume). Where the
    last document would overshoot by more than a tenth (WikiText is one running text), a window of
    exactly n_tokens inside it instead."""
    if n_tokens <= 0 or len(tokens) <= n_tokens:
        return tokens
    rng = np.random.default_rng(seed)
    ends = eot_positions(tokens, eot_id)  # each document ends with eot_id
    starts = np.concatenate([[0], ends[:-1] + 1])
    start = int(rng.choice(starts[starts <= len(tokens) - n_tokens]))
    end = int(ends[np.searchsorted(ends, start + n_tokens - 1)]) + 1
    if end - start > 1.1 * n_tokens:
        start = int(rng.integers(start, end - n_tokens + 1))
        end = start + n_tokens
    return tokens[start:end]


def eot_positions(tokens, eot_id, chunk=1 << 24):
    """Where eot_id stands in a token file, read a chunk at a time: a mask of a whole OpenWebText-sized
    train.bin at once would take a byte per token (gigabytes)."""
    return np.concatenate([np.empty(0, dtype=np.int64)] +
                          [start + np.flatnonzero(np.asarray(tokens[start:start + chunk]) == eot_id)
                           for start in range(0, len(tokens), chunk)])


def text_bytes(tokenizer, tokens, eot_id):
    """UTF-8 bytes of the text in a token stream: its tokens' bytes (BPE is lossless), except those of
    the end-of-text tokens, which are not text. Exact for any slice, even one that cuts a character."""
    ids = np.asarray(tokens)
    return len(tokenizer.decode_bytes(ids[ids != eot_id].tolist()))


# ---- sampling analysis ---------------------------------------------------------------------------

def distinct_n(texts, n):
    """Distinct-n (Li et al., 2016): the share of word n-grams across all the texts that are
    different from one another. 1.0 = no n-gram repeats; a model that loops, or says the same thing
    whatever the prompt, scores low. N-grams do not cross from one text into the next."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_ngram_share(text, n=4):
    """The share of a text's word n-grams that already occurred earlier in the same text (rep-n,
    Welleck et al., 2019): 0 for fresh text, near 1 for a loop."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def test_prompts(tokens, eot_id, num_prompts, prompt_tokens, new_tokens):
    """The first prompt_tokens tokens of the first num_prompts test documents that are longer than
    that, and the next (up to) new_tokens tokens of each: what a person actually wrote next."""
    ends = eot_positions(tokens, eot_id)
    prompts, references = [], []
    for start, end in zip(np.concatenate([[0], ends + 1]), ends):
        if end - start > prompt_tokens:
            doc = np.asarray(tokens[start:end], dtype=np.int64).tolist()
            prompts.append(doc[:prompt_tokens])
            references.append(doc[prompt_tokens:prompt_tokens + new_tokens])
            if len(prompts) == num_prompts:
                break
    if not prompts:
        raise ConfigError(f"no test document is longer than prompt_tokens={prompt_tokens}; lower --prompt_tokens")
    return prompts, references


def continuation_metrics(model, tokenizer, prompts, continuations, batch_size=8):
    """Fluency and diversity of continuations (token ids) of the prompts. Fluency: the model's own
    perplexity of the text, given the prompt (low = the model finds it likely; greedy text scores very
    low precisely because it always takes the likeliest token). Diversity: distinct-1/2/3 over all
    continuations and rep-4, the mean share of repeated 4-grams within one."""
    eot = tokenizer.eot_id
    scores = continuation_nll(model, [([eot] + p, c) for p, c in zip(prompts, continuations)], batch_size)
    nll, count = sum(s for s, _ in scores), sum(n for _, n in scores)
    texts = [tokenizer.decode(c) for c in continuations]
    return dict(fluency_ppl=math.exp(nll / count) if count else None,
                **{f"distinct_{n}": distinct_n(texts, n) for n in (1, 2, 3)},
                rep_4=float(np.mean([repeated_ngram_share(t, 4) for t in texts])),
                mean_tokens=count / len(continuations),
                examples=[dict(prompt=tokenizer.decode(p), continuation=t) for p, t in zip(prompts[:2], texts[:2])])


def fit_in_context(block_size, prompt_tokens, new_tokens, given):
    """The prompt and continuation lengths to use: the defaults shortened, the continuation first, until
    the end-of-text token, prompt and continuation fit in the model's block_size positions, so that the
    defaults work for any model. Lengths in `given` (set by the user) are kept as they are, and
    sampling_analysis refuses them if they do not fit. Returns (prompt_tokens, new_tokens, note or None)."""
    room = block_size - 1
    fitted = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens}
    for key, other in (("new_tokens", "prompt_tokens"), ("prompt_tokens", "new_tokens")):
        if key not in given and sum(fitted.values()) > room:
            fitted[key] = max(1, room - fitted[other])
    if sum(fitted.values()) > room:  # a length the user set cannot fit: sampling_analysis says so, about it
        return prompt_tokens, new_tokens, None
    changed = [f"--{k} {v} -> {fitted[k]}" for k, v in (("prompt_tokens", prompt_tokens), ("new_tokens", new_tokens))
               if fitted[k] != v]
    note = f"shortened to fit the model's block_size={block_size}: {', '.join(changed)}" if changed else None
    return fitted["prompt_tokens"], fitted["new_tokens"], note


def sampling_analysis(model, tokenizer, tokens, num_prompts=20, prompt_tokens=8, new_tokens=64,
                      temperatures=(0.5, 0.8, 1.0, 1.2), seed=1337, batch_size=8):
    """Continue the same test prompts with greedy, top-k 50 and nucleus 0.9 decoding (at temperature
    1) and plain sampling at each of `temperatures`, and measure each (continuation_metrics). The
    first row, 'reference', measures what the documents really say next, for scale."""
    eot, dev = tokenizer.eot_id, model.lm_head.weight.device
    if 1 + prompt_tokens + new_tokens > model.config.block_size:
        raise ConfigError(f"--prompt_tokens + --new_tokens must be below block_size={model.config.block_size}, so that "
                          f"each continuation is scored with its whole prompt; lower them, or leave them unset to fit")
    prompts, references = test_prompts(tokens, eot, num_prompts, prompt_tokens, new_tokens)
    runs = {**strategies(1.0), **{f"sampling, T={t:g}": sampling_args(t, None, 1.0) for t in temperatures}}
    results = {"reference": continuation_metrics(model, tokenizer, prompts, references, batch_size)}
    idx = torch.tensor([[eot] + p for p in prompts], device=dev)
    for label, args in tqdm(runs.items(), desc="sampling", leave=False, disable=None):
        generator = torch.Generator(device=dev).manual_seed(seed)  # every strategy gets the same seed
        rows = model.generate(idx, new_tokens, eot_id=eot, generator=generator, **args)[:, idx.size(1):].tolist()
        continuations = [row[:row.index(eot)] if eot in row else row for row in rows]
        results[label] = continuation_metrics(model, tokenizer, prompts, continuations, batch_size)
    return dict(strategies=results, prompts=len(prompts), prompt_tokens=prompt_tokens, new_tokens=new_tokens, seed=seed)


# ---- HellaSwag -----------------------------------------------------------------------------------

def read_hellaswag(path, limit=0):
    """Items {"ctx": str, "endings": [4 str], "label": 0..3}, one JSON object a line."""
    if not os.path.isfile(path):
        raise ConfigError(f"HellaSwag file {path} not found")
    items = []
    for lineno, item in json_lines(path):
        if not (isinstance(item, dict) and isinstance(item.get("ctx"), str)):
            raise ConfigError(f"{path}, line {lineno}: needs a string 'ctx'")
        endings = item.get("endings")
        if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) for e in endings)):
            raise ConfigError(f"{path}, line {lineno}: 'endings' must be a list of 4 strings")
        if type(item.get("label")) is not int or not 0 <= item["label"] < 4:
            raise ConfigError(f"{path}, line {lineno}: 'label' must be 0, 1, 2 or 3, got {item.get('label')!r}")
        items.append(item)
        if len(items) == limit:
            break
    if not items:
        raise ConfigError(f"{path} holds no HellaSwag items")
    return items


def evaluate_hellaswag(model, tokenizer, items, batch_size=8):
    """Multiple choice by likelihood: each ending is scored by the log-likelihood of its tokens after
    the context, and the model picks the likeliest. 'accuracy' compares summed log-likelihoods, which
    favour short endings (fewer tokens, fewer chances to lose probability); 'accuracy_norm' divides
    by the ending's token count first. Chance is 25%."""
    pairs = [(encode_prompt(tokenizer, item["ctx"]), tokenizer.encode_ordinary(" " + ending))
             for item in items for ending in item["endings"]]
    scores = continuation_nll(model, pairs, batch_size, desc="hellaswag")
    correct = correct_norm = 0
    for i, item in enumerate(items):
        ll = [-nll for nll, _ in scores[4 * i:4 * i + 4]]
        ll_norm = [-nll / max(n, 1) for nll, n in scores[4 * i:4 * i + 4]]
        correct += int(np.argmax(ll)) == item["label"]
        correct_norm += int(np.argmax(ll_norm)) == item["label"]
    return dict(items=len(items), accuracy=correct / len(items), accuracy_norm=correct_norm / len(items),
                normalisation="log-likelihood per ending token")


# ---- training history, plot, report, comparison ---------------------------------------------------

def read_log(out_dir):
    """log.jsonl's records; a line cut off by a run that is still writing is skipped."""
    path = os.path.join(out_dir, "log.jsonl")
    records = []
    if os.path.isfile(path):
        for line in open(path):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def plot_loss(log, path):
    """Training and validation loss against tokens seen (epochs on the top axis). The per-step
    training loss is one batch each, so noisy; at each evaluation both splits are measured on the same
    fixed batches, and the gap between those two is the overfitting."""
    import matplotlib
    matplotlib.use("Agg")  # draw to a file; no display needed
    import matplotlib.pyplot as plt
    steps = [r for r in log if r.get("val_loss") is None and r.get("train_loss") is not None]
    evals = [r for r in log if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["tokens"] for r in steps], [r["train_loss"] for r in steps], color="tab:blue", alpha=0.35,
            linewidth=1, label="train (one batch)")
    ax.plot([r["tokens"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue", label="train")
    ax.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", label="validation")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    per_epoch = next((r["tokens"] / r["epoch"] for r in log if r.get("epoch")), None)
    if per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda t: t / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epochs")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def training_summary(model, meta, log):
    """What a checkpoint says about its training, falling back to log.jsonl for what it lacks (a
    shipped model.pt may hold only weights and model_args)."""
    info, last = meta.get("checkpoint", {}), (log[-1] if log else {})
    tokens = info.get("tokens", last.get("tokens"))
    train_tokens = meta["splits"]["train"]["tokens"]
    speeds = [r["tok_per_sec"] for r in log if r.get("tok_per_sec")]
    val_losses = [r["val_loss"] for r in log if r.get("val_loss") is not None]
    return dict(parameters=model.num_params(), tokens=tokens,
                epochs=tokens / train_tokens if tokens and train_tokens else last.get("epoch"),
                elapsed=info.get("elapsed", last.get("elapsed")),
                tok_per_sec=float(np.median(speeds)) if speeds else None,
                best_val_loss=info.get("best_val_loss", min(val_losses) if val_losses else None),
                iter_num=info.get("iter_num", last.get("iter")))


def fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def fmt_count(n):
    """12345678 -> '12.3M': counts of parameters and tokens, readable in a table."""
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def fmt_time(seconds):
    if seconds is None:
        return "-"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def split_table(results):
    """(header, rows) of the perplexity table; sampling_table likewise, for the decoding strategies."""
    rows = [(s, f"{results[s]['tokens']:,}", f"{results[s]['bytes']:,}", fmt(results[s]["loss"], ".4f"),
             fmt(results[s]["perplexity"], ".2f"), fmt(results[s]["bits_per_byte"], ".4f"), results[s]["scoring"])
            for s in ("test", "val", "train") if s in results]
    return ["split", "tokens", "bytes", "loss", "perplexity", "bits/byte", "scored with"], rows


def sampling_table(sampling):
    rows = [(label, fmt(m["fluency_ppl"], ".2f"), fmt(m["distinct_1"]), fmt(m["distinct_2"]), fmt(m["distinct_3"]),
             fmt(m["rep_4"]), fmt(m["mean_tokens"], ".1f")) for label, m in sampling["strategies"].items()]
    return ["strategy", "fluency (self-PPL)", "distinct-1", "distinct-2", "distinct-3", "rep-4", "tokens"], rows


EQUATIONS = {  # TeX that both GitHub's Markdown math and matplotlib's mathtext typeset
    "attention": r"\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left(\dfrac{Q K^{T}}{\sqrt{d}} + M\right) V",
    "loss": r"\mathcal{L} = -\dfrac{1}{N} \sum_{t=1}^{N} \log p_\theta(x_{t+1} \mid x_{\leq t})",
    "perplexity": r"\mathrm{PPL} = e^{\mathcal{L}}, \qquad \mathrm{BPB} = \dfrac{N \mathcal{L}}{\ln 2 \cdot n_{\mathrm{bytes}}}",
}


def discussion(results, log):
    """The report's closing paragraphs: what its numbers say, each sentence built from them. The two
    thresholds (a change of 0.005 nats counts as flat, a train-validation gap of 0.2 as large) are
    rules of thumb, not measured limits."""
    points = []
    val_losses = [r["val_loss"] for r in log if r.get("val_loss") is not None]
    if len(val_losses) >= 2:
        before, last = val_losses[-2:]
        points.append(f"*Convergence.* Validation loss went from {before:.3f} to {last:.3f} over the last evaluation "
                      "interval: " + ("still falling, so more steps or more data would still help." if last < before - 0.005
                                      else "it has flattened (or turned up): more steps alone would not help much."))
    if "train" in results and "val" in results:
        gap = results["val"]["loss"] - results["train"]["loss"]
        points.append(f"*Overfitting.* The train sample scores {gap:.3f} nats per token below validation, "
                      + ("a small gap: the model has not memorised its training text." if gap < 0.2 else
                         "a large gap: the model memorises its training text (more data, fewer epochs or dropout)."))
    if "test" in results and "val" in results:
        diff = results["test"]["loss"] - results["val"]["loss"]
        points.append(f"*Held-out text.* Test and validation, both unseen, differ by {diff:+.3f} nats per token. At "
                      f"{results['test']['bits_per_byte']:.3f} bits per byte the model would compress the test text to "
                      f"{results['test']['bits_per_byte'] / 8:.0%} of its UTF-8 size (gzip: roughly 25 to 35%).")
    rows = results.get("sampling", {}).get("strategies", {})
    if "reference" in rows and "greedy" in rows:
        ref = rows["reference"]
        closest = min((label for label in rows if label != "reference"),
                      key=lambda label: abs(rows[label]["distinct_2"] - ref["distinct_2"]))
        points.append(f"*Decoding.* Greedy decoding repeats {rows['greedy']['rep_4']:.0%} of its 4-grams (the real "
                      f"text: {ref['rep_4']:.0%}). Closest to the real text's variety (distinct-2 {ref['distinct_2']:.2f}) "
                      f"is {closest} at {rows[closest]['distinct_2']:.2f}.")
    return points


def report_blocks(out_dir, model, meta, results, log):
    """The report as a list of blocks, (kind, ...) tuples, which write_report renders twice: as Markdown
    and as a PDF. Text may hold *emphasis* and `code`, in Markdown's notation."""
    cfg, summary = model.config, training_summary(model, meta, log)
    train_config = meta.get("checkpoint", {}).get("config", {})
    splits = meta["splits"]
    blocks = [("title", f"Report: `{os.path.basename(os.path.normpath(out_dir))}`"),
              ("text", f"Generated by `python eval.py --out_dir={out_dir} --report` on {datetime.date.today()} from "
                       f"`{os.path.basename(meta['checkpoint_path'])}`. Numbers are also in `eval.json`."),
              ("h2", "Implementation"),
              ("text", f"A decoder-only transformer, GPT-2: token and position embeddings, {cfg.n_layer} blocks of "
                       f"causal self-attention ({cfg.n_head} heads) and an MLP, each after a LayerNorm and added back "
                       f"to its input, then a final LayerNorm and an output layer that shares the token embedding's "
                       f"weights. Each head compares queries Q with keys K (size d = {cfg.n_embd // cfg.n_head}) and "
                       f"averages the values V; the mask M (minus infinity above the diagonal) keeps every position "
                       f"from seeing later ones:"),
              ("math", EQUATIONS["attention"]),
              ("text", "Training minimises the cross-entropy of each next token, averaged over the N tokens predicted "
                       "(AdamW, warm-up then cosine learning rate):"),
              ("math", EQUATIONS["loss"]),
              ("text", "Perplexity is its exponential, the number of equally likely next tokens the model is as unsure "
                       "as; bits per byte divides the total loss, in bits, by the UTF-8 bytes of the text, which makes "
                       "models with different tokenizers comparable:"),
              ("math", EQUATIONS["perplexity"]),
              ("h2", "Model, data and training"),
              ("table", ["", ""], [
                  ("parameters", f"{summary['parameters']:,} ({fmt_count(summary['parameters'])})"),
                  ("layers / heads / embedding", f"{cfg.n_layer} / {cfg.n_head} / {cfg.n_embd}"),
                  ("context (block_size)", cfg.block_size),
                  ("vocabulary", f"{cfg.vocab_size:,} (tokenizer: {meta.get('tokenizer')})"),
                  ("data", meta.get("source", "-")),
                  ("splits (documents / tokens)", "; ".join(f"{s} {splits[s]['docs']:,} / {fmt_count(splits[s]['tokens'])}"
                                                            for s in ("train", "val", "test") if s in splits)),
                  ("trained on", f"{fmt_count(summary['tokens'])} tokens, {fmt(summary['epochs'], '.2f')} epochs, "
                                 f"step {summary['iter_num']}"),
                  ("training time", f"{fmt_time(summary['elapsed'])} at {fmt(summary['tok_per_sec'], ',.0f')} tokens/s"),
                  ("best validation loss", fmt(summary["best_val_loss"], ".4f")),
              ])]
    if os.path.isfile(os.path.join(out_dir, "loss.png")):
        blocks += [("h2", "Loss curve"), ("image", "loss.png", "training and validation loss")]
    if any(s in results for s in ("test", "val", "train")):
        blocks += [("h2", "Perplexity and bits per byte"),
                   ("text", "Every token of a split is scored exactly once. Perplexity is exp(mean loss per token); bits "
                            "per byte is the total loss in bits over the text's UTF-8 bytes, which compares models with "
                            "different tokenizers. The train split is scored on a random stretch of it."),
                   ("table", *split_table(results))]
    if "sampling" in results:
        s = results["sampling"]
        blocks += [("h2", "Decoding strategies"),
                   ("text", f"{s['prompts']} prompts, each the first {s['prompt_tokens']} tokens of a test document, "
                            f"continued for up to {s['new_tokens']} tokens by each strategy (same seed"
                            f"{'; ' + s['note'] if s.get('note') else ''}). *Fluency* is the model's own perplexity of "
                            "the continuation: low means likely text, and very low usually means repetitive. *distinct-n* "
                            "is the share of word n-grams that are unique across all continuations (higher = more "
                            "varied); *rep-4* the share of 4-grams a continuation repeats from itself (greedy decoding "
                            "loops). *reference* is what the documents really say next."),
                   ("table", *sampling_table(s)), ("h3", "Samples")]
        for label, m in s["strategies"].items():
            blocks.append(("bold", label))
            blocks += [("sample", ex["prompt"], ex["continuation"]) for ex in m["examples"]]
    if "hellaswag" in results:
        h = results["hellaswag"]
        blocks += [("h2", "HellaSwag"),
                   ("table", ["items", "accuracy (summed log-likelihood)", "accuracy (per-token)"],
                    [(h["items"], f"{100 * h['accuracy']:.2f}%", f"{100 * h['accuracy_norm']:.2f}%")]),
                   ("text", "Chance is 25%.")]
    points = discussion(results, log)
    if points:
        blocks += [("h2", "Discussion")] + [("text", p) for p in points]
    if train_config:  # last: a long table that few readers need
        blocks.append(("details", "Full training configuration",
                       ["setting", "value"], [(k, f"`{v!r}`") for k, v in train_config.items()]))
    return blocks


def report_markdown(blocks):
    """Markdown for GitHub: tables, math blocks, and samples as HTML so that whatever the model wrote
    (*, #, <) shows as text."""
    lines = []
    for kind, *args in blocks:
        if kind in ("title", "h2", "h3"):
            lines.append({"title": "# ", "h2": "## ", "h3": "### "}[kind] + args[0])
        elif kind == "bold":
            lines.append(f"**{args[0]}**")
        elif kind == "text":
            lines.append(args[0])
        elif kind == "math":
            lines += ["```math", args[0], "```"]
        elif kind == "table":
            lines.append(markdown_table(*args))
        elif kind == "details":
            lines += [f"<details><summary>{args[0]}</summary>", "", markdown_table(*args[1:]), "", "</details>"]
        elif kind == "image":
            lines.append(f"![{args[1]}]({args[0]})")
        elif kind == "sample":  # the prompt in bold
            prompt, continuation = (html.escape(text, quote=False) for text in args)
            lines.append(f"<blockquote><b>{prompt}</b>{continuation}</blockquote>".replace("\n", "<br>"))
        lines.append("")
    return "\n".join(lines)


def report_pdf(blocks, out_dir, path, preview):
    """The same blocks laid out on A4 pages with matplotlib alone: PdfPages writes the PDF, mathtext
    typesets the equations (a subset of TeX: no LaTeX install needed). Text is wrapped by a character
    count, tables are set in a monospaced font, shrunk to fit the width. Page 1 also goes to `preview`
    as a PNG, which shows where a PDF does not (a README)."""
    import textwrap
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages
    width, height, margin = 8.27, 11.69, 0.8  # A4, in inches
    text_width = width - 2 * margin

    def plain(text):  # Markdown's * and ` dropped; a $ would start mathtext; control characters have no glyph
        text = "".join(c if c.isprintable() else " " for c in text)
        return text.replace("**", "").replace("*", "").replace("`", "").replace("$", r"\$")

    def paragraph(text, size, indent=0.0, gap=0.1, **style):
        """(height, draw) of wrapped lines; DejaVu Sans averages about half its size per character."""
        lines = textwrap.wrap(plain(text), int((text_width - indent) * 72 / (0.5 * size))) or [""]
        return lines_block(lines, size, indent, gap, **style)

    def lines_block(lines, size, indent=0.0, gap=0.1, **style):
        step = size * 1.4 / 72

        def draw(page, top):
            for i, line in enumerate(lines):
                page.text((margin + indent) / width, (top - i * step) / height, line, fontsize=size, va="top", **style)
        return len(lines) * step + gap, draw

    def table(header, rows):
        cells = [[plain(str(c)) for c in row] for row in ([header] if any(header) else []) + list(rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        if any(header):
            lines.insert(1, "-" * max(len(line) for line in lines))
        size = min(8.5, text_width * 72 / (0.6 * max(len(line) for line in lines)))  # a mono glyph is 0.6 em
        return lines_block(lines, size, gap=0.15, family="monospace")

    def stacked(*parts):  # blocks drawn one under the other, kept on one page
        def draw(page, top):
            for h, part in parts:
                part(page, top)
                top -= h
        return sum(h for h, _ in parts), draw

    def layout(kind, *args):
        """(height in inches, a function that draws the block on a page below `top`)."""
        if kind in ("title", "h2", "h3", "bold"):
            size = {"title": 16, "h2": 13, "h3": 11, "bold": 9.5}[kind]
            space = {"title": 0.0, "h2": 0.2, "h3": 0.1, "bold": 0.0}[kind]
            return stacked((space, lambda page, top: None), paragraph(args[0], size, gap=0.06, weight="bold"))
        if kind == "text":
            return paragraph(args[0], 9.5, gap=0.12)
        if kind == "math":
            return 0.7, lambda page, top: page.text(0.5, (top - 0.35) / height, f"${args[0]}$", fontsize=14,
                                                    ha="center", va="center")
        if kind == "table":
            return table(*args)
        if kind == "details":
            return stacked(paragraph(args[0], 9.5, gap=0.06, weight="bold"), table(*args[1:]))
        if kind == "image":
            image = plt.imread(os.path.join(out_dir, args[0]))
            w = min(text_width, 6.0)
            h = w * image.shape[0] / image.shape[1]

            def draw(page, top):
                ax = page.add_axes([(width - w) / 2 / width, (top - h) / height, w / width, h / height])
                ax.imshow(image)
                ax.axis("off")
            return h + 0.15, draw
        if kind == "sample":  # the prompt in bold, the continuation after it, indented
            return stacked(paragraph(args[0], 9, 0.3, gap=0.0, weight="bold"),
                           paragraph("..." + args[1], 9, 0.3, gap=0.1))
        raise ValueError(f"unknown report block {kind!r}")

    pages, y = [], 0.0
    laid_out = [(kind, *layout(kind, *args)) for kind, *args in blocks]
    for i, (kind, h, draw) in enumerate(laid_out):
        # a heading stays on the page of the block after it (blocks are never split, so all of it)
        keep = laid_out[i + 1][1] if kind in ("h2", "h3", "bold") and i + 1 < len(laid_out) else 0.0
        if not pages or y - h - keep < margin:
            pages.append(plt.figure(figsize=(width, height)))
            pages[-1].text(0.5, 0.4 / height, str(len(pages)), ha="center", fontsize=8, color="gray")
            y = height - margin
        draw(pages[-1], y)
        y -= h
    with atomic_write(path) as tmp, PdfPages(tmp) as pdf:
        for page in pages:
            pdf.savefig(page)
    with atomic_write(preview) as tmp:
        pages[0].savefig(tmp, format="png", dpi=100)
    for page in pages:
        plt.close(page)


def write_report(out_dir, model, meta, results, log):
    """out_dir/report.md (rendered by GitHub), report.pdf with the same content, and report-page1.png,
    a picture of its first page: implementation and equations, configuration, data, loss curve, scores,
    sampling, samples, discussion. Returns the paths written."""
    blocks = report_blocks(out_dir, model, meta, results, log)
    paths = [os.path.join(out_dir, name) for name in ("report.md", "report.pdf", "report-page1.png")]
    with atomic_write(paths[0]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(report_markdown(blocks))
    report_pdf(blocks, out_dir, paths[1], paths[2])
    return paths


COMPARISON = ["model", "parameters", "training tokens", "epochs", "training time", "tokens/s", "best val loss",
              "test PPL", "test bits/byte", "greedy rep-4", "nucleus self-PPL", "nucleus distinct-2"]


def comparison_row(name, summary, results):
    test = results.get("test", {})
    sampling = results.get("sampling", {}).get("strategies", {})
    greedy = sampling.get("greedy", {})
    nucleus = next((m for label, m in sampling.items() if label.startswith("nucleus")), {})
    return (name, fmt_count(summary["parameters"]), fmt_count(summary["tokens"]), fmt(summary["epochs"], ".2f"),
            fmt_time(summary["elapsed"]), fmt(summary["tok_per_sec"], ",.0f"), fmt(summary["best_val_loss"], ".4f"),
            fmt(test.get("perplexity"), ".2f"), fmt(test.get("bits_per_byte"), ".4f"), fmt(greedy.get("rep_4")),
            fmt(nucleus.get("fluency_ppl"), ".2f"), fmt(nucleus.get("distinct_2")))


# ---- the command line ------------------------------------------------------------------------------

def read_split(data_dir, split):
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        raise ConfigError(f"{path} not found; {MAKE_DATA}")
    if os.path.getsize(path) == 0:
        raise ConfigError(f"the {split} split {path} is empty; prepare the data with enough documents for it")
    if os.path.getsize(path) % 2:
        raise ConfigError(f"{path} has an odd number of bytes, so it is not a file of uint16 token ids (cut off "
                          f"while copying?); prepare the data again")
    return np.memmap(path, dtype=np.uint16, mode="r")


def find_data(data_dir, out_dir, meta):
    """The data folder to score (--data_dir, else the one the model was trained on) and its meta.json,
    which must describe the model's tokenizer: token ids of another one would be scored as nonsense."""
    data_dir = data_dir or meta["checkpoint"].get("config", {}).get("data_dir")
    if not data_dir:
        raise ConfigError(f"{out_dir} does not say which data it was trained on; pass --data_dir")
    data_meta = read_meta(data_dir, MAKE_DATA)
    same = all(data_meta[k] == meta[k] for k in ("tokenizer", "vocab_size", "eot_id"))
    if same and meta["tokenizer"] != "gpt2":  # two trained tokenizers of one size: compare the files
        files = [os.path.join(folder, meta["tokenizer"]) for folder in (data_dir, out_dir)]
        if not os.path.isfile(files[0]):
            raise ConfigError(f"{files[0]} not found, though {data_dir}/meta.json names it as the data's tokenizer; "
                              f"copy it back or prepare the data again")
        same = open(files[0], "rb").read() == open(files[1], "rb").read()
    if not same:
        raise ConfigError(f"the data in {data_dir} was tokenized with another tokenizer than the model in {out_dir}; "
                          f"pass the --data_dir it was trained on, or prepare the data with its tokenizer")
    return data_dir, data_meta


def scored_with(what, precision):
    """The settings that the figures of `what` (a split, or 'sampling') depend on, `precision` (the
    autocast dtype) among them. They are stored with the figures, and --out_dirs reuses only figures made
    with the settings asked for now."""
    common = dict(data_dir=data_dir, precision=precision)
    if what == "sampling":
        return dict(common, num_prompts=num_prompts, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                    temperatures=list(temperatures), seed=seed)
    return dict(common, stride=stride, **(dict(train_tokens=train_tokens, seed=seed) if what == "train" else {}))


def checkpoint_id(meta):
    info = meta["checkpoint"]
    return dict(file=os.path.basename(meta["checkpoint_path"]), iter_num=info.get("iter_num"), tokens=info.get("tokens"))


def read_results(out_dir, meta):
    """eval.json's earlier results if they are for this very checkpoint, else nothing."""
    path = os.path.join(out_dir, "eval.json")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return {}
    return results if results.get("checkpoint") == checkpoint_id(meta) else {}


def evaluate_dir(out_dir, dev, precision, reuse=False, given=()):
    """Run the configured evaluations of one out_dir, under autocast to `precision`, and write eval.json
    (and loss.png, and with --report report.md and report.pdf). reuse: keep results eval.json already has
    for this checkpoint. given: the settings the user set (configure's list)."""
    model, tokenizer, meta = load_model(out_dir, ckpt, dev)
    check_writable(os.path.join(out_dir, "eval.json"))  # now, not after the evaluation
    results = {**read_results(out_dir, meta), "checkpoint": checkpoint_id(meta)}
    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    for s in wanted:
        if s not in ("train", "val", "test"):
            raise ConfigError(f"--splits takes train, val and test; got {s!r}")
    done = {what for what in wanted + ["sampling"]
            if reuse and results.get(what, {}).get("settings") == scored_with(what, precision)}
    todo = [s for s in wanted if s not in done]
    sample_now = num_prompts > 0 and "sampling" not in done
    print(f"{meta['checkpoint_path']}: {model.num_params() / 1e6:.2f}M parameters", file=sys.stderr)
    if todo or sample_now:
        data, data_meta = find_data(data_dir, out_dir, meta)
        for split in todo:
            tokens = read_split(data, split)
            n_bytes = data_meta["splits"][split]["bytes"]
            if n_bytes == 0:
                raise ConfigError(f"the {split} split of {data} holds no text (0 bytes): nothing to score per byte")
            if split == "train" and 0 < train_tokens < len(tokens):
                tokens = np.asarray(document_sample(tokens, tokenizer.eot_id, train_tokens, seed))
                n_bytes = text_bytes(tokenizer, tokens, tokenizer.eot_id)
            # the tokens to be scored, not the whole split: a train.bin can hold billions
            if int(tokens.max()) >= model.config.vocab_size:
                raise ConfigError(f"{data}/{split}.bin holds token id {int(tokens.max())}, outside the model's "
                                  f"{model.config.vocab_size}-token vocabulary; prepare the data again")
            results[split] = evaluate_tokens(model, tokens, tokenizer.eot_id, n_bytes, stride, batch_size, desc=split)
            results[split]["settings"] = scored_with(split, precision)
            if split == "train" and len(tokens) < data_meta["splits"]["train"]["tokens"]:
                results[split]["scoring"] += f", on a random stretch of {len(tokens):,} tokens"
            r = results[split]
            print(f"{split}: loss {r['loss']:.4f} | perplexity {r['perplexity']:.2f} | {r['bits_per_byte']:.4f} "
                  f"bits/byte | {r['tokens']:,} tokens, {r['scoring']}")
        if sample_now:
            prompt_len, new_len, note = fit_in_context(model.config.block_size, prompt_tokens, new_tokens, given)
            if note:
                print(f"note: sampling analysis {note}", file=sys.stderr)
            results["sampling"] = sampling_analysis(model, tokenizer, read_split(data, "test"), num_prompts,
                                                    prompt_len, new_len, temperatures, seed, batch_size)
            results["sampling"].update(settings=scored_with("sampling", precision), **({"note": note} if note else {}))
            print(markdown_table(*sampling_table(results["sampling"])))
    if hellaswag:
        results["hellaswag"] = evaluate_hellaswag(model, tokenizer, read_hellaswag(hellaswag, hellaswag_items),
                                                  batch_size)
        h = results["hellaswag"]
        print(f"hellaswag: {100 * h['accuracy']:.2f}% (summed log-likelihood), {100 * h['accuracy_norm']:.2f}% "
              f"(per token) on {h['items']:,} items")
    # earlier figures made with other settings would be read as if made with these: they go
    results = {k: v for k, v in results.items()
               if k not in ("train", "val", "test", "sampling") or v.get("settings") == scored_with(k, precision)}
    with atomic_write(os.path.join(out_dir, "eval.json")) as tmp, open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    log = read_log(out_dir)
    if log:
        plot_loss(log, os.path.join(out_dir, "loss.png"))
    if report:
        print(f"wrote {', '.join(write_report(out_dir, model, meta, results, log))}")
    return model, meta, results, log


def main(given=()):
    """given: the settings the user set (configure's list): defaults may adapt to the model, they may not."""
    check_ranges(globals(), {**dict.fromkeys(("batch_size", "prompt_tokens", "new_tokens"), (1, None)),
                             **dict.fromkeys(("num_prompts", "train_tokens", "hellaswag_items"), (0, None)),
                             "seed": SEEDS})
    folders = [d.strip() for d in out_dirs.split(",") if d.strip()]
    if out_dirs and not folders:
        raise ConfigError(f"--out_dirs={out_dirs!r} names no folder; pass comma-separated out_dirs")
    if folders:
        check_writable(compare_file)
    dev = pick_device(device)
    device_type = dev.split(":")[0]
    torch.manual_seed(seed)
    precision = pick_dtype(dtype, device_type)  # once: a fallback is said once
    with autocast(device_type, precision):
        if not folders:
            evaluate_dir(model_dir(out_dir, given), dev, precision, given=given)
            return
        rows = []
        for d in folders:
            model, meta, results, log = evaluate_dir(d, dev, precision, reuse=True, given=given)
            rows.append(comparison_row(d, training_summary(model, meta, log), results))
    table = markdown_table(COMPARISON, rows)
    print(table)
    with atomic_write(compare_file) as tmp, open(tmp, "w") as f:
        f.write(table + "\n")
    print(f"wrote {compare_file}")


if __name__ == "__main__":
    main(configure(globals()))
