"""
The test suite: `python -m pytest -q test_gpt.py`. Every test makes its own small data, so a fresh clone
runs it without ../shared or the network (the one GPT-2 tokenizer-file check skips without them).
"""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import configurator
from configurator import ConfigError, configure, pick_device
from model import GPT, GPTConfig, PRESETS, preset_config

REPO = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(REPO, "..", "shared", "tiktoken_cache"))


def tiny_config(**overrides):
    return GPTConfig(**{**dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16), **overrides})


# ================================================================================================
# configurator.py

def test_configure_parses_literals_files_and_flags(tmp_path):
    cfg = {"n_layer": 12, "learning_rate": 6e-4, "compile": False, "out_dir": "out", "max_epochs": None}
    config_file = tmp_path / "small.py"
    config_file.write_text("n_layer = 4\nout_dir = 'out-small'\n")
    changed = configure(cfg, [str(config_file), "--learning_rate=1", "--compile", "--max_epochs=2.5"])
    assert cfg == {"n_layer": 4, "learning_rate": 1.0, "compile": True, "out_dir": "out-small", "max_epochs": 2.5}
    assert set(changed) == {"n_layer", "out_dir", "learning_rate", "compile", "max_epochs"}
    configure(cfg, ["--out_dir=runs/a"])  # a bare word is a string
    assert cfg["out_dir"] == "runs/a"


@pytest.mark.parametrize("argv, message", [
    (["--n_layr=4"], "did you mean --n_layer"),
    (["--n_layer=4.5"], "expects a int"),
    (["--compile=yes"], "expects True or False"),
    (["--n_layer"], "needs a value"),
    (["missing_config.py"], "not found"),
])
def test_configure_rejects_bad_arguments(argv, message):
    with pytest.raises(ConfigError, match=message):
        configure({"n_layer": 12, "compile": False}, argv)


def test_pick_device_prefers_cuda_then_mps_then_cpu():
    assert pick_device("auto", cuda_available=True, mps_available=True) == "cuda"
    assert pick_device("auto", cuda_available=False, mps_available=True) == "mps"
    assert pick_device("auto", cuda_available=False, mps_available=False) == "cpu"
    assert pick_device("cuda:1", cuda_available=False, mps_available=False) == "cuda:1"  # explicit wins
    assert configurator.pick_dtype("auto", "cpu") == "float32"
    assert configurator.pick_dtype("auto", "mps") == "float32"


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with configurator.atomic_write(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


# ================================================================================================
# model.py

def test_preset_parameter_counts_match_published_gpt2_sizes():
    published = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    with torch.device("meta"):  # no memory, no time
        for name in PRESETS:
            assert GPT(preset_config(name)).num_params() == published[name]


def test_causality_later_tokens_never_change_earlier_logits():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(50, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = torch.randint(50, (2, 5))
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_fused_attention_equals_manual_outputs_and_gradients():
    torch.manual_seed(0)
    fused = GPT(tiny_config(fused_attention=True))
    manual = GPT(tiny_config(fused_attention=False))
    manual.load_state_dict(fused.state_dict())
    idx = torch.randint(50, (3, 16))
    (lf, loss_f), (lm, loss_m) = fused(idx, idx), manual(idx, idx)
    loss_f.backward(), loss_m.backward()
    assert torch.allclose(lf, lm, atol=1e-5)
    for (name, pf), pm in zip(fused.named_parameters(), manual.parameters()):
        assert torch.allclose(pf.grad, pm.grad, atol=1e-6), name


def test_loss_is_mean_cross_entropy_and_ignores_minus_one():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = torch.randint(50, (2, 8))
    targets = torch.randint(50, (2, 8))
    targets[0, :3] = -1
    logits, loss = model(idx, targets)
    keep = targets != -1
    expected = -torch.log_softmax(logits, -1)[keep].gather(1, targets[keep][:, None]).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_init_ties_embeddings_and_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=8, n_head=4, n_embd=128))
    assert model.lm_head.weight is model.transformer.wte.weight
    c_proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    c_fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert abs(c_fc.std() - 0.02) < 0.001
    assert abs(c_proj.std() - 0.02 / math.sqrt(2 * 8)) < 0.0005


@pytest.mark.parametrize("fused", [True, False])
def test_kv_cache_generation_equals_no_cache_past_block_size(fused):
    torch.manual_seed(0)
    model = GPT(tiny_config(fused_attention=fused)).eval()
    prompt = torch.randint(50, (2, 5))
    with_cache = model.generate(prompt, 30, temperature=0)  # 35 tokens: the context slides past block_size=16
    without = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 35) and torch.equal(with_cache, without)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)  # sampled, same seed
    assert torch.equal(model.generate(prompt, 20, top_k=10, generator=g1),
                       model.generate(prompt, 20, top_k=10, generator=g2, use_cache=False))


def test_kv_cache_logits_equal_full_forward():
    from model import KVCache
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(50, (2, 10))
    full, _ = model(idx)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    prefill, _ = model(idx[:, :6], cache=cache)  # a prompt, then a chunk of 3, then one token
    chunk, _ = model(idx[:, 6:9], cache=cache)
    step, _ = model(idx[:, 9:], cache=cache)
    assert torch.allclose(torch.cat([prefill, chunk, step], 1), full, atol=1e-5)


def test_generation_stops_rows_at_end_of_text():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(50, (3, 4))
    greedy = model.generate(prompt, 10, temperature=0)
    eot = int(greedy[0, 6])  # row 0's third generated token plays end-of-text
    out = model.generate(prompt, 10, temperature=0, eot_id=eot)
    assert (out[0, 6:] == eot).all()  # a finished row only pads with eot
    assert out.size(1) <= 14


def test_bad_model_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown GPT-2 preset"):
        preset_config("gpt3")
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    other = GPT(tiny_config(n_embd=32))
    with pytest.raises(ValueError, match="transformer.wte.weight|lm_head.weight"):
        model.load_weights(other.state_dict())
    for kwargs, message in ((dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p")):
        with pytest.raises(ValueError, match=message):
            model.generate(torch.zeros(1, 1, dtype=torch.long), 1, **kwargs)


def test_from_checkpoint_loads_half_precision_weights_and_names_bad_files(tmp_path):
    torch.manual_seed(0)
    model = GPT(tiny_config())
    path = tmp_path / "model.pt"
    torch.save({"model": {k: v.half() for k, v in model.state_dict().items()}, "model_args": tiny_config().__dict__}, path)
    loaded = GPT.from_checkpoint(path)
    assert loaded.lm_head.weight.dtype == torch.float32
    assert torch.allclose(loaded.lm_head.weight, model.lm_head.weight, atol=1e-3)
    with pytest.raises(ValueError, match="no checkpoint"):
        GPT.from_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        GPT.from_checkpoint(tmp_path / "cut.pt")


def test_hugging_face_parity_both_ways(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=99, n_positions=32, n_embd=48, n_layer=3, n_head=4,
                                        bos_token_id=98, eos_token_id=98)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # HF initialises biases to zero; random ones make the check meaningful
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    hf.save_pretrained(tmp_path / "hf")
    idx = torch.randint(99, (2, 32))
    ours = GPT.from_pretrained(str(tmp_path / "hf")).eval()  # HF -> ours
    with torch.no_grad():
        reference = hf(idx).logits
        assert torch.allclose(ours(idx)[0], reference, atol=1e-4)
    ours.save_pretrained(tmp_path / "ours", eot_id=98)  # ours -> HF
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert torch.allclose(back(idx).logits, reference, atol=1e-4)


def test_configure_optimizers_decays_matrices_only():
    model = GPT(tiny_config())
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.num_params()


# ================================================================================================
# train.py

from train import Batches, accumulate_gradients, get_lr, save  # noqa: E402


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    lr = lambda it: get_lr(it, learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert lr(0) == pytest.approx(0.1) and lr(4) == pytest.approx(0.5) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # halfway through the cosine: the midpoint of 1.0 and 0.1
    assert lr(110) == pytest.approx(0.1) and lr(10_000) == pytest.approx(0.1)
    assert all(lr(i) >= lr(i + 1) for i in range(10, 120))


def test_gradient_accumulation_of_4x4_equals_one_batch_of_16():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    x, y = torch.randint(50, (16, 16)), torch.randint(50, (16, 16))
    import contextlib
    loss_one = accumulate_gradients(model, [(x, y)], contextlib.nullcontext())
    grads_one = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_four = accumulate_gradients(model, [(x[i:i + 4], y[i:i + 4]) for i in range(0, 16, 4)], contextlib.nullcontext())
    assert torch.allclose(loss_one, loss_four, atol=1e-6)
    for g1, p in zip(grads_one, model.parameters()):
        assert torch.allclose(g1, p.grad, atol=1e-6)


def test_batches_are_next_token_windows(tmp_path):
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    batches = Batches(str(tmp_path / "train.bin"), block_size=8, device="cpu")
    x, y = batches.get(batches.offsets(5, torch.Generator().manual_seed(0)))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1) and int(x.max()) <= 98


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    save(path, {"iter_num": 1})

    def crash(obj, f):  # write half a file, then die, like a full disk or a kill
        open(f, "wb").write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save(path, {"iter_num": 2})
    monkeypatch.undo()
    assert torch.load(path)["iter_num"] == 1 and os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    """A tiny learnable 'language' (each token mostly determines the next) in prepare.py's format."""
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    sizes = {"train": 20_000, "val": 3_000, "test": 3_000}
    for split, n in sizes.items():
        tokens = np.zeros(n, dtype=np.uint16)
        for i in range(1, n):
            tokens[i] = (tokens[i - 1] * 3 + 1) % 64 if rng.random() > 0.2 else rng.integers(64)
        tokens.tofile(root / f"{split}.bin")
    meta = {"vocab_size": 64, "eot_id": 63, "dtype": "uint16", "tokenizer": "gpt2",
            "splits": {s: {"docs": 1, "tokens": n, "bytes": 4 * n} for s, n in sizes.items()}}
    (root / "meta.json").write_text(json.dumps(meta))
    return str(root)


TINY_RUN = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8", "--eval_interval=5",
            "--eval_iters=2", "--log_interval=1", "--warmup_iters=3", "--lr_decay_iters=16", "--device=cpu"]


def run_train(*args, check=True, launcher=(sys.executable,)):
    proc = subprocess.run([*launcher, os.path.join(REPO, "train.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


def read_log(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "log.jsonl"))]


def train_losses(out_dir):
    return {r["iter"]: r["train_loss"] for r in read_log(out_dir) if "val_loss" not in r}


def test_resumed_run_equals_uninterrupted_run(token_data, tmp_path):
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={straight}", "--max_iters=16", "--dropout=0.1")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={interrupted}", "--max_iters=8", "--dropout=0.1")
    # the resumed run takes its settings from the checkpoint, except what is given again
    run_train(f"--out_dir={interrupted}", "--init_from=resume", "--max_iters=16")
    a, b = train_losses(straight), train_losses(interrupted)
    assert sorted(a) == sorted(b) == list(range(1, 17))
    assert a == b  # bit for bit: weights, optimizer, data order and dropout all continue exactly
    log = read_log(straight)
    assert set(log[1]) == {"iter", "epoch", "tokens", "lr", "train_loss", "tok_per_sec", "mfu", "elapsed"}
    assert "val_loss" in log[0] and log[-1]["tokens"] == 16 * 8 * 32
    assert a[16] < a[1]  # it learns
    best = torch.load(os.path.join(straight, "best.pt"), weights_only=False)
    assert best["best_val_loss"] == min(r["val_loss"] for r in log if "val_loss" in r)


def test_sigint_finishes_the_step_saves_and_exits(token_data, tmp_path):
    out_dir = str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "train.py", *TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}",
                             "--max_iters=100000", "--eval_interval=100000", "--ckpt_interval=100000"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out_dir, "log.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(log) and len(open(log).readlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=False)
    assert 2 <= checkpoint["iter_num"] < 100000 and "saving" in out


def test_nan_loss_stops_with_a_message(token_data, tmp_path):
    out_dir = str(tmp_path / "out")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=50",
                     "--learning_rate=1e30", "--warmup_iters=1", "--grad_clip=0.0", "--ckpt_interval=1", check=False)
    assert proc.returncode != 0 and "loss is nan" in proc.stderr.lower() and "Traceback" not in proc.stderr
    checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=False)  # the last good one
    assert checkpoint["iter_num"] == max(train_losses(out_dir))


def test_ddp_under_gloo_matches_one_process(token_data, tmp_path):
    args = [*TINY_RUN, f"--data_dir={token_data}", "--max_iters=4", "--gradient_accumulation_steps=2"]
    run_train(*args, f"--out_dir={tmp_path / 'one'}")
    run_train(*args, f"--out_dir={tmp_path / 'two'}",
              launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    assert all(abs(one[i] - two[i]) < 1e-4 for i in one)


@pytest.mark.parametrize("args, message", [
    (["--data_dir=/nonexistent"], "run `python prepare.py"),
    (["--init_from=resume"], "no checkpoint"),
    (["--n_layr=2"], "did you mean --n_layer"),
    (["--batch_size=eight"], "expects a int"),
    (["--init_from=gpt3"], "neither 'scratch'"),
])
def test_train_bad_input_is_one_line(token_data, tmp_path, args, message):
    proc = run_train(f"--data_dir={token_data}", f"--out_dir={tmp_path / 'out'}", "--device=cpu", *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_train_refuses_unwritable_out_dir_and_resume_of_another_shape(token_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={blocker / 'out'}", check=False)
    assert "cannot write to out_dir" in proc.stderr and "Traceback" not in proc.stderr
    out_dir = str(tmp_path / "out")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=2")
    proc = run_train(f"--out_dir={out_dir}", "--init_from=resume", "--n_layer=3", check=False)
    assert "has n_layer=2 but --n_layer=3" in proc.stderr and "Traceback" not in proc.stderr
