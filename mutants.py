"""
Mutation testing, by hand: plant one bug at a time in the core and check that the tests meant to guard
that code fail. A test that still passes with the bug planted cannot tell right code from wrong.

    python mutants.py                  # every mutant; a table of killed / survived, ~20 minutes on 2 cores
    python mutants.py --only=model.py  # the mutants of one file

Each mutant is a small edit (one line of the real code replaced by a plausible mistake) and the pytest -k
expression of the tests that should catch it, so that a mutant costs seconds instead of a whole suite; each
selection first runs on the unchanged code, which it must pass. The edits are made in a temporary copy of the
repository; the checkout itself is never changed. A mutant whose line is no longer in the code is reported as
stale (update it here). Results: results/mutation.md.
For development only: nothing else imports this file, and it needs nothing beyond requirements.txt.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from configurator import configure

only = ""  # run only the mutants of this file
# ------------------------------------------------------------------------------------------------

REPO = os.path.dirname(os.path.abspath(__file__))

# (file, the line as it is, the mistake, the tests that should catch it)
MUTANTS = [
    # model.py: attention, blocks, embeddings, the loss, the cache, sampling
    ("model.py", "(1.0 / math.sqrt(k.size(-1)))", "(1.0 / k.size(-1))", "fused_attention_equals_manual"),
    ("model.py", "torch.ones(T, T, dtype=torch.bool, device=x.device).tril()",
     "torch.ones(T, T, dtype=torch.bool, device=x.device).triu()", "fused_attention_equals_manual or causality"),
    ("model.py", "is_causal=causal)", "is_causal=False)", "causality"),
    ("model.py", "x = x + self.attn(self.ln_1(x), cache)", "x = self.attn(self.ln_1(x), cache)", "hugging_face_parity"),
    ("model.py", "x = x + self.mlp(self.ln_2(x))", "x = x + self.mlp(x)", "hugging_face_parity"),
    ("model.py", 'nn.GELU(approximate="tanh")', "nn.GELU()", "hugging_face_parity"),
    ("model.py", "self.transformer.wte.weight = self.lm_head.weight", "pass", "init_ties or preset_parameter_counts"),
    ("model.py", "std=0.02 / math.sqrt(2 * config.n_layer)", "std=0.02 / math.sqrt(config.n_layer)", "init_ties"),
    ("model.py", "self.transformer.wpe.weight[past:past + idx.size(1)]", "self.transformer.wpe.weight[:idx.size(1)]",
     "kv_cache"),
    ("model.py", "cache.pos += idx.size(1)", "cache.pos += 1", "kv_cache"),
    ("model.py", "targets.flatten().clamp(min=-1), ignore_index=-1)", "targets.flatten(), ignore_index=-1)",
     "chunked_cross_entropy_equals"),
    ("model.py", "loss += ((total.log() + top).squeeze(1) - target_logit).mul(keep).sum()",
     "loss += ((total.log() + top).squeeze(1) - target_logit).sum()", "chunked_cross_entropy_equals or loss_is_mean"),
    ("model.py", 'logits[:, V:] = float("-inf")', "pass", "chunked_cross_entropy_equals"),
    ("model.py", "grad_h /= n", "pass", "chunked_cross_entropy_equals"),
    ("model.py", "probs[torch.arange(len(target), device=h.device), target] -= keep.float()",
     "probs[torch.arange(len(target), device=h.device), target] -= 1.0", "chunked_cross_entropy_equals"),
    ("model.py", "probs = probs.div_(total).sub_(one_hot.to(probs.dtype)).mul_(keep[:, None])",
     "probs = probs.div_(total).sub_(one_hot.to(probs.dtype))", "compiles_without_graph_breaks"),
    ("model.py", "if use_cache and cache is not None and cache.pos < block_size:",
     "if use_cache and cache is not None:", "kv_cache_generation"),
    ("model.py", "if eot_id is not None and done.all():", "if eot_id is not None and done.any():", "stops_rows"),
    ("model.py", "next_id = next_id.masked_fill(done, eot_id)", "pass", "stops_rows"),
    ("model.py", "logits = logits.masked_fill(logits < kth_best", "logits = logits.masked_fill(logits <= kth_best",
     "filtered_distribution or stay_in_their_sets"),
    ("model.py", "drop = probs.cumsum(dim=-1) - probs >= top_p", "drop = probs.cumsum(dim=-1) >= top_p",
     "filtered_distribution or stay_in_their_sets"),
    ("model.py", "logits.max(dim=-1, keepdim=True).values) / temperature",
     "logits.max(dim=-1, keepdim=True).values) * temperature", "filtered_distribution"),
    ("model.py", '"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay',
     '"params": [p for p in params if p.dim() >= 1], "weight_decay": weight_decay', "configure_optimizers"),
    # train.py: the schedule, accumulation, the step, resume
    ("train.py", "return learning_rate * (it + 1) / warmup_iters", "return learning_rate * it / warmup_iters",
     "lr_schedule"),
    ("train.py", "math.cos(math.pi * progress)", "math.cos(0.5 * math.pi * progress)", "lr_schedule"),
    ("train.py", "loss = loss / len(micro_batches)", "loss = loss", "accumulation"),
    ("train.py", "model.require_backward_grad_sync = i == len(micro_batches) - 1",
     "model.require_backward_grad_sync = i == 0", "ddp_under_gloo"),
    ("train.py", "torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)", "pass", "gradient_clipping"),
    ("train.py", "scaler.update()", "pass", "float16_training"),
    ("train.py", 'sampler.set_state(checkpoint["sampler"])', "pass", "resumed_run_equals"),
    ("train.py", 'torch.set_rng_state(rng["torch"])', "pass", "resumed_run_equals"),
    ("train.py", "optimizer.load_state_dict(checkpoint[\"optimizer\"])", "pass", "resumed_run_equals"),
    ("train.py", "keep = set(overrides) | {\"init_from\", \"out_dir\"}", "keep = {\"init_from\", \"out_dir\"}",
     "resumed_run_equals or more_steps"),
    ("train.py", "kept = [line for line in open(log_path) if logged_iter(line) <= resumed_at]",
     "kept = [line for line in open(log_path) if logged_iter(line) < resumed_at]", "resumed_run_equals"),
    ("train.py", '"config": vars(run),', '"config": config,', "more_steps"),
    ("train.py", "torch.manual_seed(run.seed + procs.rank)", "torch.manual_seed(run.seed)", "own_dropout_masks"),
    ("train.py", "if losses[\"val\"] < best_val_loss:", "if losses[\"val\"] > best_val_loss:", "resumed_run_equals"),
    # eval.py: scoring
    ("eval.py", "return total_nll / (math.log(2) * n_bytes)", "return total_nll / n_bytes", "bits_per_byte"),
    ("eval.py", "y[r, first - start:end - start] = torch.from_numpy(stream[first + 1:end + 1])",
     "y[r, first - start:end - start] = torch.from_numpy(stream[first:end])", "perplexity_is_exp or sliding"),
    ("eval.py", "x[r, :end - start] = torch.from_numpy(stream[start:end])  # inputs: stream position p predicts p + 1\n"
     "            y[r, first - start:end - start] = torch.from_numpy(stream[first + 1:end + 1])",
     "x[r, :end - first] = torch.from_numpy(stream[first:end])\n"
     "            y[r, :end - first] = torch.from_numpy(stream[first + 1:end + 1])", "sliding"),
    ("eval.py", "start, scored = start + stride, end", "start, scored = start + stride, end - 1",
     "every_token_is_scored or sliding"),
    ("eval.py", "for i in range(len(words) - n + 1)]\n    return 1 -",
     "for i in range(len(words) - n)]\n    return 1 -", "distinct_n"),
    # bpe.py: training and encoding
    ("bpe.py", "best = max(pair_counts, key=lambda p: (pair_counts[p], vocab[p[0]], vocab[p[1]]))",
     "best = max(pair_counts, key=lambda p: (pair_counts[p], vocab[p[1]], vocab[p[0]]))",
     "fast_training_equals_reference or tie_break"),
    ("bpe.py", "documents = split.split(text)[::2] if split else [text]", "documents = [text]",
     "nothing_merges_across_special_tokens"),
    ("bpe.py", "return tuple(255 - b for b in token) + (256,)", "return tuple(255 - b for b in token)",
     "fast_training_equals_reference or tie_break"),
    ("bpe.py", "                continue  # an earlier merge already took the pair out of this word", "                pass",
     "fast_training_equals_reference"),
    ("bpe.py", "pending, size = [buffer[cut:]], len(buffer) - cut", "pending, size = [buffer[cut + 1:]], len(buffer) - cut",
     "encode_iterable"),
    ("bpe.py", 'return self.decode_bytes(ids).decode("utf-8", errors="replace")',
     'return self.decode_bytes(ids).decode("utf-8", errors="ignore")', "decode_replaces"),
]


def copy_repo(dest):
    """The tracked and untracked-but-not-ignored files: what a fresh clone plus the working tree holds."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if os.path.isfile(os.path.join(REPO, name)):
            os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), os.path.join(dest, name))


def run_tests(copy, tests):
    """pytest's exit code for the tests `-k tests` selects (5: none selected), or None if they hang."""
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "test_gpt.py",
                               "-k", tests], cwd=copy, capture_output=True, text=True, timeout=600).returncode
    except subprocess.TimeoutExpired:
        return None


def run_mutant(copy, file, old, new, tests):
    path = os.path.join(copy, file)
    original = open(path).read()
    if original.count(old) != 1:
        return "stale", 0.0
    with open(path, "w") as f:
        f.write(original.replace(old, new))
    start = time.time()
    try:
        code = run_tests(copy, tests)
    finally:
        with open(path, "w") as f:
            f.write(original)
    outcomes = {None: "killed (the tests hang)", 0: "survived", 5: "no tests selected"}
    return outcomes.get(code, "killed"), time.time() - start


def main():
    configure(globals())
    mutants = [m for m in MUTANTS if not only or m[0] == only]
    with tempfile.TemporaryDirectory() as copy:
        copy_repo(copy)
        # each selection must pass on the unchanged code, or a mutant's failure would prove nothing
        failing = {tests for tests in {m[3] for m in mutants} if run_tests(copy, tests) != 0}
        print("| file | the line | the mistake | tests | outcome | seconds |\n|---|---|---|---|---|---|")
        outcomes = []
        for file, old, new, tests in mutants:
            outcome, seconds = ("its tests fail unchanged", 0.0) if tests in failing else \
                run_mutant(copy, file, old, new, tests)
            outcomes.append(outcome)
            cell = lambda code: "`" + code.strip().replace("\n", " ").replace("|", "\\|") + "`"
            print(f"| {file} | {cell(old)} | {cell(new)} | `{tests}` | {outcome} | {seconds:.0f} |", flush=True)
    tried = len([o for o in outcomes if o.startswith("killed") or o == "survived"])
    killed = len([o for o in outcomes if o.startswith("killed")])
    print(f"\nkilled {killed} of {tried} mutants ({100 * killed / max(tried, 1):.0f}%)"
          + (f"; {len(outcomes) - tried} not tried (stale, or their tests fail unchanged)" if len(outcomes) > tried
             else ""))


if __name__ == "__main__":
    main()
