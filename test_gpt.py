"""
The test suite: `python -m pytest -q test_gpt.py` (CI's command); `-m "not slow"` leaves out the tests that take
seconds each (training runs, subprocesses, compilation), a quick loop of about half a minute. Every test makes its
own small data or uses what the repository ships, so a fresh clone runs it without ../shared or the network; the
tests that need GPT-2's own tokenizer files skip, saying so, where tiktoken's cache lacks them.
"""
import contextlib
import dataclasses
import errno
import functools
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tiktoken
import torch
import torch.nn.functional as F

import bpe
import configurator
import eval as evaluation
import model as model_module
import prepare as prep
import sample
from configurator import ConfigError, configure, pick_device
from model import GPT, ChunkedCrossEntropy, GPTConfig, PRESETS, preset_config
from train import Batches, accumulate_gradients, get_lr, save, steps_that_fit

REPO = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(REPO, "..", "shared", "tiktoken_cache")):  # beside the checkout on our machines
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(REPO, "..", "shared", "tiktoken_cache"))
# tiktoken's cache names for GPT-2's encoder.json and vocab.bpe (sha1 of their addresses)
GPT2_FILES = [os.path.join(os.environ.get("TIKTOKEN_CACHE_DIR", ""), name) for name in
              ("6c7ea1a7e38e3a7f062df639a5b80947f075ffe6", "6d1cbeee0f20b3d9449abfede4726ed8212e3aee")]
needs_gpt2_files = pytest.mark.skipif(
    not all(os.path.isfile(f) for f in GPT2_FILES),
    reason="needs GPT-2's tokenizer files in tiktoken's cache: set TIKTOKEN_CACHE_DIR to a folder holding them "
           "(tiktoken downloads them once where there is a network)")
# Tiny models run faster on one thread: splitting a 32-wide matmul costs more than it saves, and much
# more on a busy machine, where a second thread waits for a free core at every operation.
torch.set_num_threads(1)


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
    configure(cfg, ["--out_dir=2024"])  # and so is a number given to a string setting
    assert cfg["out_dir"] == "2024"
    tri_state = {"compile": None}  # None defaults take any literal, but not a bare word
    configure(tri_state, ["--compile=False"])
    assert tri_state["compile"] is False
    with pytest.raises(ConfigError, match="expects a Python literal"):
        configure({"compile": None}, ["--compile=yes"])
    configure(tri_state, ["--compile"])  # a flag, like a boolean's
    assert tri_state["compile"] is True
    quoted = {"start": "Once"}
    configure(quoted, ['--start="Mom!" said Tom.'])  # a string setting takes the text as it is, quotes and all
    assert quoted["start"] == '"Mom!" said Tom.'
    configure(quoted, ['--start="Mom!"'])
    assert quoted["start"] == '"Mom!"'
    sweep = {"temperatures": (0.5, 1.0)}
    configure(sweep, ["--temperatures=(1, 0.8)"])
    assert sweep["temperatures"] == (1.0, 0.8) and all(type(t) is float for t in sweep["temperatures"])


@pytest.mark.parametrize("argv, message", [
    (["--n_layr=4"], "did you mean --n_layer"),
    (["--n_layer=4.5"], "expects an int"),
    (["--compile=yes"], "expects True or False"),
    (["--n_layer"], "needs a value"),
    (["missing_config.py"], "not found"),
    (["--n_layer=None"], "expects an int"),  # None only where the default is None
    (["--seq_lens=('a', 1)"], "expects a tuple of int"),
    (["--CHUNK_ROWS=8"], "unknown config key 'CHUNK_ROWS'; known keys: compile, n_layer, seq_lens$"),  # constants are not settings
])
def test_configure_rejects_bad_arguments(argv, message):
    with pytest.raises(ConfigError, match=message):
        configure({"n_layer": 12, "compile": False, "seq_lens": (128,), "CHUNK_ROWS": 1024}, argv)


def test_configure_names_the_config_file_a_bad_value_comes_from(tmp_path):
    config_file = tmp_path / "mine.py"
    for text, message in (("n_layers = 4\n", r"unknown config key 'n_layers' in .*mine.py; did you mean n_layer\?"),
                          ("n_layer = 4.5\n", r"n_layer in .*mine.py expects an int")):
        config_file.write_text(text)
        with pytest.raises(ConfigError, match=message):
            configure({"n_layer": 12}, [str(config_file)])


def test_configure_names_a_config_file_that_does_not_run(tmp_path):
    for text in ("n_layer = = 4\n", "n_layer = undefined_name\n", "\0binary"):
        config_file = tmp_path / "bad.py"
        config_file.write_text(text)
        with pytest.raises(ConfigError, match="config file .*bad.py' does not run"):
            configure({"n_layer": 12}, [str(config_file)])


def test_pick_device_prefers_cuda_then_mps_then_cpu():
    assert pick_device("auto", cuda_available=True, mps_available=True) == "cuda"
    assert pick_device("auto", cuda_available=False, mps_available=True) == "mps"
    assert pick_device("auto", cuda_available=False, mps_available=False) == "cpu"
    assert pick_device("cuda:0", cuda_available=True, mps_available=False) == "cuda:0"  # explicit wins
    with pytest.raises(ConfigError, match="no cuda device"):
        pick_device("cuda", cuda_available=False, mps_available=True)
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        pick_device("gpu")
    with pytest.raises(ConfigError, match="unknown device 'cuda:x'"):
        pick_device("cuda:x", cuda_available=True)
    with pytest.raises(ConfigError, match="unknown dtype 'bf16'"):
        configurator.pick_dtype("bf16", "cuda")
    assert configurator.pick_dtype("auto", "cpu") == "float32"
    assert configurator.pick_dtype("auto", "mps") == "float32"


def test_bfloat16_and_compile_on_a_cpu_that_cannot_fall_back_and_say_so(monkeypatch, capsys):
    monkeypatch.setattr(configurator, "cpu_has_bfloat16", lambda: True)
    assert configurator.pick_dtype("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setattr(configurator, "cpu_has_bfloat16", lambda: False)
    assert configurator.pick_dtype("bfloat16", "cpu") == "float32"
    assert configurator.pick_dtype("bfloat16", "cuda") == "bfloat16"  # a GPU's support is its own question
    assert "no native bfloat16" in capsys.readouterr().err
    assert configurator.pick_compile(None, "cpu") is False and configurator.pick_compile(None, "cuda") is True
    monkeypatch.setattr(configurator.shutil, "which", lambda name: None)
    assert configurator.pick_compile(True, "cpu") is False and configurator.pick_compile(True, "cuda") is True
    assert "needs a C++ compiler" in capsys.readouterr().err


def test_cpu_config_trains_for_a_time_and_compiles_only_with_native_bfloat16(monkeypatch):
    import train
    runs = {}
    for native in (True, False):
        monkeypatch.setattr(configurator, "cpu_has_bfloat16", lambda: native)
        config = dict(train.DEFAULTS)
        configure(config, [os.path.join(REPO, "config", "tinystories_cpu.py")])
        runs[native] = (config["max_minutes"], config["compile"], config["dtype"])
    assert runs[True] == (9.5, True, "bfloat16") and runs[False] == (9.5, False, "bfloat16")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with configurator.atomic_write(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error, free", [
    (OSError(errno.ENOSPC, "No space left on device"), None),  # open, write, json.dump, shutil.copyfile
    (OSError(errno.EDQUOT, "Disk quota exceeded"), None),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 0),  # torch.save
    (OSError("1000000 requested and 0 written"), 0),  # numpy's tofile
])
def test_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, error, free):
    """What each library raises when the disk fills; errors without an errno come with no space left."""
    if free is not None:
        monkeypatch.setattr(shutil, "disk_usage", lambda folder: types.SimpleNamespace(free=free))
    path = tmp_path / "eval.json"
    path.write_text("old")
    with pytest.raises(ConfigError) as full:
        with configurator.atomic_write(str(path), "do this") as tmp:
            open(tmp, "w").write("half")
            raise error
    assert str(full.value).startswith(f"error: no space left to write {path} (") and "\n" not in str(full.value)
    assert str(full.value).endswith("; do this")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["eval.json"]


def test_other_write_errors_are_not_taken_for_a_full_disk(tmp_path):
    for error in (RuntimeError("not a tensor"), OSError(errno.EACCES, "Permission denied")):  # on a roomy disk
        with pytest.raises(type(error)):
            with configurator.atomic_write(str(tmp_path / "out.pt")):
                raise error


def test_out_dir_lock_names_its_holder_and_warns_where_flock_fails(tmp_path, monkeypatch, capsys):
    import fcntl
    held = configurator.hold_out_dir(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=rf"run is in use by another run \(pid {os.getpid()} on {socket.gethostname()}\)"):
        configurator.hold_out_dir(str(tmp_path / "run"))
    held.close()  # what the OS does when the holder dies
    configurator.hold_out_dir(str(tmp_path / "run")).close()

    def unsupported(file, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", unsupported)  # storage without flock, as some NFS setups
    assert configurator.hold_out_dir(str(tmp_path / "nfs"))
    assert "going on unlocked" in capsys.readouterr().err


# ================================================================================================
# bpe.py

EOT = bpe.EOT
# Texts every encoder must get right, most of them never seen in training.
BPE_TEXTS = [
    "", "a", " ", "\n", "é", "🙂", "👩‍👩‍👧", "日本語のテキスト", "Ünïcödé naïveté café", "Γειά σου κόσμε", "مرحبا",
    "Once upon a time, there was a little dog named Max.", "   leading and trailing   ", "a  b   c    d",
    "line\n\nbreaks\n\n\n  indented\n\tTabbed\r\nwindows\r\n", " \n \n\n  \n", "it's they're I'll we've he'd",
    "x = [1, 2, 3]  # 12345678901234567890", "!!!???...,,,;;;", "$5.99 / 100% + 3½ → ∞",
    EOT, EOT + EOT, EOT + "start", "end" + EOT, "a" + EOT + EOT + "b\n" + EOT + " c", "<|endoftext", "<|endoftext|",
    "zxqj wvkp unseen wordz", "\x00\x01\x7f control", "a" * 300, " " * 50 + "x",
]


def _bpe_corpus(n_docs=150, seed=0):
    """A small corpus with repetition (so there is something to merge), multi-byte text and odd spacing."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "mat", "The", "dog", "über", "naïve", "日本", "🙂", "1234", "it's",
             "don't", "   ", "\n", "\n\n", "!!", "Hello", ",", ".", "ran", "rat", "tattoo", "aaaa", "   x"]
    words += ["".join(rng.choices(["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "é"], k=rng.randint(1, 4)))
              for _ in range(60)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(n_docs)]
    return EOT.join(docs)


@pytest.fixture(scope="module")
def bpe_tok():
    return bpe.train_bpe([_bpe_corpus()], vocab_size=400)


@pytest.fixture(scope="module")
def bpe_shuffled(bpe_tok):
    """The trained tokenizer with its ids permuted, so that they no longer follow the merge order."""
    ids = list(bpe_tok.vocab)
    new_ids = dict(zip(ids, random.Random(1).sample(ids, len(ids))))
    vocab = {new_ids[i]: token for i, token in bpe_tok.vocab.items()}
    return bpe.Tokenizer(vocab, bpe_tok.merges, list(bpe_tok.special_tokens)), new_ids


# --- training ---------------------------------------------------------------------------------------

def test_fast_training_equals_reference():
    for vocab_size in (257, 300, 450, 2000):  # 2000: runs out of pairs first
        for specials in ([EOT], [], [EOT, "<|pad|>"]):
            if vocab_size < 256 + len(specials):
                continue
            fast = bpe.train_bpe([_bpe_corpus(60)], vocab_size, specials)
            slow = bpe.train_bpe_reference(_bpe_corpus(60), vocab_size, specials)
            assert fast.merges == slow.merges and fast.vocab == slow.vocab
            assert fast.special_tokens == slow.special_tokens


def test_id_layout(bpe_tok):
    assert all(bpe_tok.vocab[i] == bytes([i]) for i in range(256))
    assert all(bpe_tok.vocab[256 + k] == a + b for k, (a, b) in enumerate(bpe_tok.merges))
    assert bpe_tok.vocab_size == len(bpe_tok.vocab) == 400
    assert bpe_tok.special_tokens == {EOT: 399} and bpe_tok.eot_id == 399


def test_tie_break_prefers_greater_bytes():
    # Every pair occurs once: (b"c", b"d") > (b"a", b"b") > (b" ", b"c") as Python bytes.
    tok = bpe.train_bpe(["ab cd"], 258, [])
    assert tok.merges == [(b"c", b"d"), (b"a", b"b")]
    # After (b"b", b"c"), (b"a", b"b") and (b"a", b"bc") tie: a longer token is greater than its prefix.
    tok = bpe.train_bpe(["bc.bc.bc.bc.abc.ab"], 259, [])
    assert tok.merges == [(b"b", b"c"), (b"a", b"bc"), (b"a", b"b")]
    assert bpe.train_bpe_reference("bc.bc.bc.bc.abc.ab", 259, []).merges == tok.merges


def test_training_is_deterministic():
    docs = _bpe_corpus(100).split(EOT)
    first = bpe.train_bpe([EOT.join(docs)], 350)
    random.Random(3).shuffle(docs)  # a different order of the same documents: other dict and heap orders
    second = bpe.train_bpe([EOT.join(docs)], 350)
    assert first.merges == second.merges and first.vocab == second.vocab


def test_nothing_merges_across_special_tokens():
    # "abSEPcd" is one word to the regex pre-tokenizer: only the special tokens keep b, S and P, c apart, and
    # the special tokens' own bytes are never merged, so the pairs within "ab" and "cd" are all there is to learn
    text = "".join(["abSEPcd" + EOT] * 50)
    for train, corpus in ((bpe.train_bpe, [text]), (bpe.train_bpe_reference, text)):
        tok = train(corpus, 300, special_tokens=(EOT, "SEP"))
        assert set(tok.merges) == {(b"a", b"b"), (b"c", b"d")}, train.__name__


def test_training_from_file_in_parallel_equals_serial(tmp_path):
    text = _bpe_corpus(3000, seed=2)  # about 0.5 MB: more than one chunk, so worker processes run
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    serial = bpe.train_bpe([text], 320, num_workers=1)
    parallel = bpe.train_bpe(str(path), 320, num_workers=2)
    assert parallel.merges == serial.merges


def test_chunks_end_at_special_tokens():
    text = _bpe_corpus(200)
    pieces = [text[i:i + 37] for i in range(0, len(text), 37)]
    chunks = list(bpe._chunks_at_specials(pieces, [EOT], chunk_chars=500))
    assert "".join(chunks) == text and len(chunks) > 5
    assert all(chunk.endswith(EOT) for chunk in chunks[:-1])


# --- encoding ---------------------------------------------------------------------------------------

def test_fast_encoding_equals_reference(bpe_tok, bpe_shuffled):
    shuffled_tok, _ = bpe_shuffled
    for tok in (bpe_tok, shuffled_tok):
        for text in BPE_TEXTS + [_bpe_corpus(5, seed=9)]:
            assert tok.encode(text) == tok.encode_reference(text), text


def _bpe_random_texts(n, seed=0):
    """Random strings built from the pieces pre-tokenization and special-token matching find hardest."""
    rng = random.Random(seed)
    pieces = [" ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "a", "the", "é", "🙂", "'", "'s", "s", "l", "ll", "ve", "re", "d", "1", "23",
              "!", "<|", "|>", "endoftext", EOT, "日本", "\x00"]
    return ["".join(rng.choices(pieces, k=rng.randint(0, 30))) for _ in range(n)]


def test_fast_encoding_equals_reference_on_random_text(bpe_tok):
    for text in _bpe_random_texts(300):
        assert bpe_tok.encode(text) == bpe_tok.encode_reference(text), text


def test_ids_out_of_merge_order_encode_exactly(bpe_tok, bpe_shuffled):
    shuffled_tok, new_ids = bpe_shuffled
    assert shuffled_tok._rank_to_id is not None  # the remapping path is the one under test
    for text in BPE_TEXTS:
        ids = bpe_tok.encode(text)
        assert shuffled_tok.encode(text) == [new_ids[i] for i in ids]
        assert shuffled_tok.decode(shuffled_tok.encode(text)) == text
    assert shuffled_tok.encode_batch(BPE_TEXTS) == [shuffled_tok.encode(t) for t in BPE_TEXTS]


def test_round_trip_and_special_tokens(bpe_tok):
    for text in BPE_TEXTS:
        assert bpe_tok.decode(bpe_tok.encode(text)) == text
        assert bpe_tok.decode(bpe_tok.encode_ordinary(text)) == text
    assert bpe_tok.encode(EOT + "the" + EOT) == [399, *bpe_tok.encode("the"), 399]
    assert 399 not in bpe_tok.encode_ordinary("the" + EOT)
    assert bpe_tok.encode_batch(BPE_TEXTS, num_threads=2) == [bpe_tok.encode(t) for t in BPE_TEXTS]


def test_decode_replaces_invalid_utf8(bpe_tok):
    snake = bpe_tok.encode("🐍")
    assert len(snake) > 1  # a 4-byte character the corpus lacks: split into several tokens
    assert bpe_tok.decode(snake[:-1]) == "\ufffd" and bpe_tok.decode(snake[-1:] + snake) == "\ufffd🐍"
    assert bpe_tok.decode([0xff]) == "\ufffd"


@needs_gpt2_files
def test_encode_iterable_keeps_contractions_whole_at_any_cut():
    gpt2 = bpe.load_tokenizer("gpt2")  # it merges "'ve", "'ll", "'re": a wrong cut changes the ids
    for text in ("we've done", "I'll go, they're here", "it's", "you'd"):
        for cut in range(len(text) + 1):
            assert list(gpt2.encode_iterable([text[:cut], text[cut:]], 1)) == gpt2.encode(text), (text, cut)


def test_encode_iterable_is_exact_and_lazy(bpe_tok, tmp_path):
    text = "".join(BPE_TEXTS) + _bpe_corpus(20, seed=5)
    rng = random.Random(0)
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(text)), 40))
        pieces = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
        assert list(bpe_tok.encode_iterable(pieces, buffer_chars=rng.choice([1, 50]))) == bpe_tok.encode(text)
    for text in _bpe_random_texts(300, seed=1):  # every cut of every text
        for cut in range(len(text) + 1):
            assert list(bpe_tok.encode_iterable([text[:cut], text[cut:]], 1)) == bpe_tok.encode(text), (text, cut)
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, encoding="utf-8", newline="") as f:  # newline="": keep the "\r\n"
        assert list(bpe_tok.encode_iterable(f)) == bpe_tok.encode(text)
    endless = itertools.cycle(["Once upon a time\n", EOT, "the cat sat on the mat.\n"])
    assert len(list(itertools.islice(bpe_tok.encode_iterable(endless), 100_000))) == 100_000


# --- files ------------------------------------------------------------------------------------------

def test_save_load_round_trip(bpe_tok, bpe_shuffled, tmp_path):
    for tok in (bpe_tok, bpe_shuffled[0]):
        path = tmp_path / "tokenizer.json"
        tok.save(path)
        loaded = bpe.load_tokenizer(str(path))
        assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (tok.vocab, tok.merges, tok.special_tokens)
        assert [loaded.encode(t) for t in BPE_TEXTS] == [tok.encode(t) for t in BPE_TEXTS]
    state = json.loads(path.read_text(encoding="utf-8"))  # human-readable: GPT-2's byte spelling
    assert "Ġthe" in state["vocab"] and state["special_tokens"] == {EOT: bpe_shuffled[1][399]}


def test_vocab_tokens_no_merge_makes_decode_but_come_out_only_as_special_tokens(bpe_tok, bpe_shuffled, tmp_path):
    """Real vocabulary files hold tokens no merge makes (GPT-2's <|endoftext|>, reserved tokens), and course
    tests build tokenizers from such a (vocab, merges) without naming them special."""
    kalo = b" ka" + b"lo"  # " kalomi" encodes as " ka" "lo" "mi": its pieces are there, but no merge joins them
    assert [bpe_tok.vocab[i] for i in bpe_tok.encode(" kalomi")][:2] == [b" ka", b"lo"]
    texts = BPE_TEXTS + [" kalomi", "<|reserved_0|>", _bpe_corpus(5, seed=9)]
    for tok, ids in ((bpe_tok, {i: i for i in bpe_tok.vocab}), bpe_shuffled):
        eot, extra = ids[399], {max(tok.vocab) + 1: kalo, max(tok.vocab) + 2: b"<|reserved_0|>"}
        vocab = {**tok.vocab, **extra}
        plain = bpe.Tokenizer(vocab, tok.merges)  # <|endoftext|> too is just a vocab token here
        assert plain.special_tokens == {} and plain.vocab_size == tok.vocab_size + 2
        for text in texts:
            assert plain.encode(text) == tok.encode_ordinary(text) == plain.encode_reference(text), text
        assert plain.decode([eot, *extra]) == EOT + " kalo<|reserved_0|>"
        special = bpe.Tokenizer(vocab, tok.merges, [EOT, "<|reserved_0|>"])
        assert special.encode(EOT + " kalomi<|reserved_0|>") == [eot, *tok.encode(" kalomi"), max(extra)]
        plain.save(tmp_path / "tokenizer.json")
        loaded = bpe.load_tokenizer(str(tmp_path / "tokenizer.json"))
        assert loaded.vocab == vocab and [loaded.encode(t) for t in texts] == [plain.encode(t) for t in texts]


def test_hugging_face_tokenizer_files_give_the_same_ids(bpe_tok, bpe_shuffled, tmp_path):
    transformers = pytest.importorskip("transformers")
    two_specials = bpe.train_bpe([_bpe_corpus().replace(" ran ", " <|pad|> ")], 400, [EOT, "<|pad|>"])
    texts = BPE_TEXTS + _bpe_random_texts(100) + [_bpe_corpus(5, seed=9), "<|pad|> x<|pad|>" + EOT]
    for tok in (two_specials, bpe_shuffled[0], bpe_tok):
        tok.save_hf(tmp_path)
        hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
        for text in texts:
            assert hf.encode(text, add_special_tokens=False) == tok.encode(text), text
            assert hf.decode(tok.encode(text)) == text
        assert hf("a").input_ids == [tok.eot_id, *tok.encode("a")]  # <|endoftext|> first, as before prompts
    # the files are GPT-2's formats: bpe.py reads them back as OpenAI's
    loaded = bpe.Tokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (bpe_tok.vocab, bpe_tok.merges, bpe_tok.special_tokens)
    with pytest.raises(ValueError, match="GPT-2's pattern only"):
        bpe.Tokenizer(bpe_tok.vocab, bpe_tok.merges, pattern=r"\S+|\s+").save_hf(tmp_path)


@needs_gpt2_files
def test_gpt2_files_give_tiktoken_ids(tmp_path):
    encoder_json, vocab_bpe = GPT2_FILES
    from_files = bpe.Tokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    reference = tiktoken.get_encoding("gpt2")
    plain = bpe.Tokenizer(from_files.vocab, from_files.merges)  # as course tests load it: no special tokens
    assert plain.encode(EOT) == reference.encode_ordinary(EOT) and plain.decode([50256]) == EOT
    for tok in (from_files, bpe.load_tokenizer("gpt2")):
        assert tok.eot_id == 50256 and tok.vocab_size == 50257
        for text in BPE_TEXTS + [_bpe_corpus(20)]:
            ids = reference.encode(text, allowed_special="all")
            assert tok.encode(text) == ids, text
            assert tok.encode_ordinary(text) == reference.encode_ordinary(text)
            assert tok.decode(ids) == text
    for text in BPE_TEXTS[:12]:
        assert from_files.encode_reference(text) == reference.encode(text, allowed_special="all")
    from_files.save_hf(tmp_path)  # Hugging Face's GPT-2 files are OpenAI's, under other names
    with open(tmp_path / "vocab.json", encoding="utf-8") as f, open(encoder_json, encoding="utf-8") as g:
        assert json.load(f) == json.load(g)
    with open(tmp_path / "merges.txt", encoding="utf-8") as f, open(vocab_bpe, encoding="utf-8") as g:
        assert f.read().split("\n") == g.read().split("\n")


# --- bad input --------------------------------------------------------------------------------------

def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=257 is too small"):
        bpe.train_bpe(["hello"], 257, [EOT, "<|pad|>"])
    with pytest.raises(ValueError, match="empty corpus"):
        bpe.train_bpe([EOT, "", EOT], 300)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty corpus"):
        bpe.train_bpe(str(empty), 300)
    with pytest.raises(ValueError, match="not a file"):
        bpe.train_bpe(str(tmp_path / "missing.txt"), 300)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("hello world, café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8: .* at byte offset 16"):
        bpe.train_bpe(str(latin1), 300)
    path = tmp_path / "blocks.txt"  # beyond the first 1 MiB read, and an "é" split between two reads
    start = b"x" * ((1 << 20) - 1) + "é".encode() * 10
    path.write_bytes(start + b"\xe9 ok")
    with pytest.raises(ValueError, match=f"invalid continuation byte at byte offset {len(start)}"):
        bpe.train_bpe(str(path), 300)
    path.write_bytes(start + "é".encode()[:1])
    with pytest.raises(ValueError, match=f"unexpected end of data at byte offset {len(start)}"):
        bpe.train_bpe(str(path), 300)


def test_bad_tokenizer_files(bpe_tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    bpe_tok.save(path)
    state = json.loads(path.read_text(encoding="utf-8"))

    def load_broken(text):
        path.write_text(text, encoding="utf-8")
        return bpe.load_tokenizer(str(path))

    with pytest.raises(ValueError, match="not a valid tokenizer file"):
        load_broken(path.read_text(encoding="utf-8")[:-100])  # truncated JSON
    with pytest.raises(ValueError, match="no 'merges' field"):
        load_broken(json.dumps({k: v for k, v in state.items() if k != "merges"}))
    with pytest.raises(ValueError, match="merge 3 .* neither a byte nor made by an earlier merge"):
        load_broken(json.dumps({**state, "merges": state["merges"][:3] + ["Ġzzzq x"] + state["merges"][3:]}))
    with pytest.raises(ValueError, match="not two tokens"):
        load_broken(json.dumps({**state, "merges": ["abc"]}))
    with pytest.raises(ValueError, match="does not exist"):
        bpe.load_tokenizer(str(tmp_path / "nope.json"))
    byte_vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="makes a token that is not in the vocabulary"):
        bpe.Tokenizer(byte_vocab, [(b"a", b"b")])
    with pytest.raises(ValueError, match=r"vocab ids 97 and 256 are both b'a'"):
        bpe.Tokenizer({**byte_vocab, 256: b"a"}, [])
    with pytest.raises(ValueError, match="lacks 1 single bytes"):
        bpe.Tokenizer({i: bytes([i]) for i in range(255)}, [])


def test_decode_rejects_unknown_ids(bpe_tok):
    for bad in (400, -1, 10**9):
        with pytest.raises(ValueError, match=f"cannot decode id {bad}"):
            bpe_tok.decode([1, 2, bad])


# ================================================================================================
# prepare.py

# Tests of prepare.py on small corpora the tests write themselves (to be merged into test_gpt.py).



WORDS = "the cat sat on a mat and then ran to see dog who was happy with big red ball in park".split()


def _docs(n, seed, marker=""):
    """n small documents of random words; `marker` tags every document of a split so leaks can be spotted."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) + marker + "." for _ in range(n)]


def _write_txt(path, docs):
    path.write_text("".join(doc + "\n<|endoftext|>\n" for doc in docs))


def _read_bin(out, split):
    return np.fromfile(os.path.join(out, f"{split}.bin"), dtype=np.uint16)


def _meta(out):
    with open(os.path.join(out, "meta.json")) as f:
        return json.load(f)


def _expected(tok, docs):
    return [i for doc in docs for i in tok.encode_ordinary(doc) + [tok.eot_id]]


def _run(dataset, out, **settings):
    settings = {"vocab_size": 300, "num_proc": 1, **settings}
    return prep.prepare(str(dataset), str(out), **settings)


def test_prepare_txt_splits_offsets_and_meta(tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    docs = {"train": _docs(60, 0), "valid": _docs(10, 1), "test": _docs(12, 2)}
    for name, split_docs in docs.items():
        _write_txt(data / f"{name}.txt", split_docs)
    out = _run(data, tmp_path / "out")
    meta = _meta(out)
    tok = bpe.load_tokenizer(os.path.join(out, meta["tokenizer"]))
    assert meta["tokenizer"] == "tokenizer.json" and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == tok.vocab_size == 300 and meta["eot_id"] == tok.eot_id
    assert meta["args"]["dataset"] == str(data) and "source" in meta
    for split, name in [("train", "train"), ("val", "valid"), ("test", "test")]:
        ids = _read_bin(out, split)
        # each document's tokens followed by exactly one end-of-text, in order, nothing else
        assert ids.tolist() == _expected(tok, docs[name])
        stats = meta["splits"][split]
        assert stats == {"docs": len(docs[name]), "tokens": len(ids),
                         "bytes": sum(len(d.encode()) for d in docs[name])}
        assert os.path.getsize(os.path.join(out, f"{split}.bin")) == 2 * stats["tokens"]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@needs_gpt2_files
@pytest.mark.slow
def test_prepare_jsonl_parquet_and_gpt2(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    data = tmp_path / "mixed"
    data.mkdir()
    train, val, test = _docs(30, 0), _docs(6, 1), _docs(7, 2)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(train)))
    pq.write_table(pa.table({"text": val}), data / "validation.parquet")
    _write_txt(data / "test.txt", test)
    out = _run(data, tmp_path / "out", tokenizer="gpt2", num_proc=2)
    meta = _meta(out)
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257 and meta["eot_id"] == 50256
    assert not os.path.exists(os.path.join(out, "tokenizer.json"))
    tok = bpe.load_tokenizer("gpt2")
    for split, docs in [("train", train), ("val", val), ("test", test)]:
        assert _read_bin(out, split).tolist() == _expected(tok, docs)


def test_prepare_reads_gz_and_xz_files_as_the_text_they_hold(tmp_path):
    import gzip
    import lzma
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir()
    packed.mkdir()
    _write_txt(plain / "train.txt", _docs(40, 0))
    (plain / "valid.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs(10, 1)))
    (packed / "train.txt.xz").write_bytes(lzma.compress((plain / "train.txt").read_bytes()))
    (packed / "valid.jsonl.gz").write_bytes(gzip.compress((plain / "valid.jsonl").read_bytes()))
    with configurator.open_text(str(packed / "train.txt.xz")) as f:
        assert f.read() == (plain / "train.txt").read_text()
    a, b = _run(plain, tmp_path / "a"), _run(packed, tmp_path / "b")
    for name in ("train.bin", "val.bin", "test.bin", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert _meta(a)["splits"] == _meta(b)["splits"]
    assert prep.name_and_format("data/train.txt.xz") == ("train", ".txt")
    assert prep.name_and_format("data/t.parquet.gz") == ("t.parquet", ".gz")  # Parquet compresses itself
    # a compressed file cut off while copying: one line, not a traceback from lzma
    (packed / "train.txt.xz").write_bytes((packed / "train.txt.xz").read_bytes()[:200])
    assert "train.txt.xz cannot be decompressed" in _error(tmp_path, packed)


SAMPLE_META = os.path.join(REPO, "pretrained", "tinystories-cpu", "meta.json")


@pytest.mark.skipif(not os.path.isfile(SAMPLE_META), reason="no shipped model in this checkout")
def test_prepare_the_shipped_tinystories_sample(tmp_path):
    """The sample in data_sample/ is what the shipped model was trained on: the same stories, so the same
    documents and bytes per split (the tokens differ with this small, quick vocabulary)."""
    out = _run(prep.SAMPLE, tmp_path / "out", bpe_train_bytes=100_000)
    shipped = json.load(open(SAMPLE_META))["splits"]
    assert {s: (v["docs"], v["bytes"]) for s, v in _meta(out)["splits"].items()} == \
        {s: (v["docs"], v["bytes"]) for s, v in shipped.items()}


def test_prepare_train_and_validation_halves_validation(tmp_path):
    data = tmp_path / "ts"
    data.mkdir()
    train, valid = _docs(40, 0), _docs(11, 1)
    _write_txt(data / "train.txt", train)
    _write_txt(data / "valid.txt", valid)
    out = _run(data, tmp_path / "out")
    meta = _meta(out)
    assert meta["splits"]["val"]["docs"] == 5 and meta["splits"]["test"]["docs"] == 6
    tok = bpe.load_tokenizer(os.path.join(out, "tokenizer.json"))
    assert _read_bin(out, "val").tolist() == _expected(tok, valid[:5])
    assert _read_bin(out, "test").tolist() == _expected(tok, valid[5:])


def test_prepare_single_split_carves_val_and_test_from_the_end(tmp_path):
    docs = _docs(100, 0)
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = _run(path, tmp_path / "out", val_fraction=0.1, test_fraction=0.05)
    meta = _meta(out)
    assert [meta["splits"][s]["docs"] for s in ("train", "val", "test")] == [85, 10, 5]
    tok = bpe.load_tokenizer(os.path.join(out, "tokenizer.json"))
    assert _read_bin(out, "train").tolist() == _expected(tok, docs[:85])
    assert _read_bin(out, "test").tolist() == _expected(tok, docs[95:])


@needs_gpt2_files
@pytest.mark.parametrize("style", ["prose", "wikitext"])
def test_prepare_running_text_is_cut_without_changing_tokens(tmp_path, style):
    # no <|endoftext|> lines: one running text, long enough to come in many pieces
    if style == "prose":
        lines = [doc + ("\n\n" if i % 3 else "\n") for i, doc in enumerate(_docs(3000, 0))]
    else:  # WikiText's layout: every line starts with a space and ends with " \n", headings between paragraphs
        lines = [(f" = = {doc[:12]} = = \n \n" if i % 5 == 0 else f" {doc} \n \n") for i, doc in enumerate(_docs(3000, 0))]
    text = "".join(lines)
    assert len(text) > 10 * prep.PIECE_CHARS
    path = tmp_path / "book.txt"
    path.write_text(text)
    pieces = list(prep.read_txt(path))
    assert len(pieces) > 10 and "".join(t for t, _ in pieces) == text
    assert [end for _, end in pieces] == [False] * (len(pieces) - 1) + [True]
    out = _run(path, tmp_path / "out", tokenizer="gpt2", val_fraction=0.1, test_fraction=0.1)
    meta = _meta(out)
    eot = meta["eot_id"]
    ids = [_read_bin(out, split) for split in ("train", "val", "test")]
    for split_ids in ids:  # each split is one document: a single end-of-text, at its end
        assert split_ids[-1] == eot and (split_ids == eot).sum() == 1
    assert [meta["splits"][s]["docs"] for s in ("train", "val", "test")] == [1, 1, 1]
    assert sum(meta["splits"][s]["bytes"] for s in ("train", "val", "test")) == len(text.encode())
    # the pieces are cut where GPT-2's pre-tokenizer cuts anyway: same tokens as encoding the text whole
    joined = np.concatenate([split_ids[:-1] for split_ids in ids]).tolist()
    assert joined == bpe.load_tokenizer("gpt2").encode_ordinary(text)


def test_prepare_tokenizer_sees_train_only_and_at_most_bpe_train_bytes(tmp_path, monkeypatch):
    data = tmp_path / "leak"
    data.mkdir()
    _write_txt(data / "train.txt", _docs(200, 0))
    _write_txt(data / "val.txt", _docs(20, 1, marker=" zvalmark"))
    _write_txt(data / "test.txt", _docs(20, 2, marker=" ztestmark"))
    seen = []
    real_train_bpe = bpe.train_bpe

    def spy(texts, *args, **kwargs):
        texts = list(texts)
        seen.extend(texts)
        return real_train_bpe(texts, *args, **kwargs)

    monkeypatch.setattr(bpe, "train_bpe", spy)
    _run(data, tmp_path / "out", bpe_train_bytes=5000)
    text = "".join(seen)  # what train_bpe joins: documents separated by <|endoftext|>
    assert text and "zvalmark" not in text and "ztestmark" not in text
    assert 4500 < len(text.replace("<|endoftext|>", "").encode()) <= 5000

    # carved from one file: the tokenizer stops where train ends
    seen.clear()
    path = tmp_path / "one.txt"
    _write_txt(path, _docs(90, 0) + _docs(10, 1, marker=" zheldout"))
    _run(path, tmp_path / "out2", val_fraction=0.05, test_fraction=0.05)
    assert "".join(seen).count("<|endoftext|>") == 90 and "zheldout" not in "".join(seen)


def test_prepare_reuses_a_finished_run_and_force_redoes_it(tmp_path, monkeypatch):
    path = tmp_path / "small.txt"
    _write_txt(path, _docs(50, 0))
    out = _run(path, tmp_path / "out")
    stamps = {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)}

    calls = []
    real_train_bpe = bpe.train_bpe
    monkeypatch.setattr(bpe, "train_bpe", lambda *a, **k: calls.append(1) or real_train_bpe(*a, **k))
    _run(path, tmp_path / "out")  # same arguments: nothing is redone
    assert calls == [] and stamps == {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in os.listdir(out)}
    _run(path, tmp_path / "out", force=True)
    assert calls == [1]
    _run(path, tmp_path / "out", vocab_size=280)  # other arguments: prepared again
    assert calls == [1, 1] and _meta(out)["vocab_size"] == 280

    # a damaged file is not reused either
    with open(os.path.join(out, "val.bin"), "ab") as f:
        f.write(b"\0\0")
    _run(path, tmp_path / "out", vocab_size=280)
    assert calls == [1, 1, 1]


def test_prepare_tokenizer_without_endoftext_is_one_line(tmp_path):
    # every document in the .bin files ends with <|endoftext|>: a tokenizer without it cannot write them
    no_eot = tmp_path / "no_eot.json"
    bpe.train_bpe([" ".join(_docs(20, 0))], 280, special_tokens=[]).save(str(no_eot))
    path = tmp_path / "small.txt"
    _write_txt(path, _docs(50, 0))
    message = _error(tmp_path, path, tokenizer=str(no_eot))
    assert "<|endoftext|>" in message and "--tokenizer=bpe" in message
    assert not os.path.exists(tmp_path / "out" / "tokenizer.json")  # nothing was written


def _contents(out):
    return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))}


def test_prepare_failed_rerun_leaves_the_finished_dataset_alone(tmp_path, monkeypatch):
    data = tmp_path / "corpus"
    data.mkdir()
    _write_txt(data / "train.txt", _docs(60, 0))
    _write_txt(data / "val.txt", _docs(10, 1))
    _write_txt(data / "test.txt", _docs(10, 2))
    out = _run(data, tmp_path / "out")
    before = _contents(out)
    assert set(before) == {"meta.json", "tokenizer.json", "train.bin", "val.bin", "test.bin"}

    # a late failure (the test split, encoded last, is now empty), with another tokenizer already trained
    (data / "test.txt").write_text("")
    assert "test split is empty" in _error(tmp_path, data, vocab_size=280, force=True)
    assert _contents(out) == before  # the same five files, byte for byte, and no temporary one

    # a failure inside the workers, and an interruption: the same
    _write_txt(data / "test.txt", _docs(10, 2))
    for error in (ValueError, KeyboardInterrupt):
        def crash(task):
            raise error
        monkeypatch.setattr(prep, "encode_batch", crash)
        with pytest.raises(error):
            _run(data, out, vocab_size=280, force=True)
        assert _contents(out) == before


@pytest.mark.slow
def test_bpe_cli_creates_the_output_folder(tmp_path):
    corpus = tmp_path / "corpus.txt"
    _write_txt(corpus, _docs(30, 0))
    script = os.path.join(REPO, "bpe.py")

    def cli(out):
        return subprocess.run([sys.executable, script, f"--input={corpus}", "--vocab_size=270", f"--out={out}"],
                              capture_output=True, text=True, cwd=tmp_path)

    result = cli("new_dir/tok.json")  # like prepare.py's and train.py's out_dir, a missing folder is created
    assert result.returncode == 0, result.stderr
    assert bpe.load_tokenizer(str(tmp_path / "new_dir" / "tok.json")).vocab_size == 270
    (tmp_path / "file").write_text("in the way")
    result = cli("file/tok.json")  # a folder that cannot be made: one line, before the training
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: cannot write file/tok.json") and len(result.stderr.splitlines()) == 1
    result = cli("new_dir")  # a folder, not a file name
    assert "is not a file name" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(OSError):  # a save that fails anyway leaves the folder as it was: no stray temporary file
        bpe.load_tokenizer(str(tmp_path / "new_dir" / "tok.json")).save(str(tmp_path / "new_dir"))
    assert not os.path.exists(tmp_path / "new_dir.tmp")


def test_prepare_reuses_a_saved_tokenizer(tmp_path):
    path = tmp_path / "small.txt"
    _write_txt(path, _docs(50, 0))
    first = _run(path, tmp_path / "a")
    second = _run(path, tmp_path / "b", tokenizer=os.path.join(first, "tokenizer.json"), num_proc=2)
    for split in ("train", "val", "test"):
        assert np.array_equal(_read_bin(first, split), _read_bin(second, split))
    assert _meta(second)["tokenizer"] == "tokenizer.json"


def _error(tmp_path, dataset, **settings):
    with pytest.raises(SystemExit) as e:
        _run(dataset, tmp_path / "out", **settings)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_prepare_bad_input_is_one_line(tmp_path, monkeypatch):
    assert "tinystories" in _error(tmp_path, "no_such_dataset")
    assert "neither" in _error(tmp_path, str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"content": "no text field"}\n')
    assert "line 2" in _error(tmp_path, bad) and "text" in _error(tmp_path, bad)
    empty = tmp_path / "emptytest"
    empty.mkdir()
    _write_txt(empty / "train.txt", _docs(20, 0))
    _write_txt(empty / "val.txt", _docs(5, 1))
    (empty / "test.txt").write_text("")
    assert "test split is empty" in _error(tmp_path, empty)
    (empty / "test.txt").unlink()
    (empty / "test.jsonl").write_text('{"text": ""}\n{"text": ""}\n')  # documents, but no text to score per byte
    assert "test split's 2 documents hold no text" in _error(tmp_path, empty)
    assert not os.path.exists(tmp_path / "out" / "test.bin")
    one = tmp_path / "one.txt"
    _write_txt(one, _docs(2, 0))
    assert "too few" in _error(tmp_path, one)
    assert "65,536" in _error(tmp_path, one, vocab_size=70000)
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(SystemExit, match="cannot write"):
        prep.prepare(str(one), str(tmp_path / "file" / "out"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a caf\u00e9 in Paris\n".encode("latin-1") * 50)
    assert "latin1.txt is not UTF-8" in _error(tmp_path, latin1) and "byte offset 5" in _error(tmp_path, latin1)
    nosplits = tmp_path / "nosplits"
    nosplits.mkdir()
    (nosplits / "notes.txt").write_text("x")
    assert "train*" in _error(tmp_path, nosplits)

    # the hub is never called in tests: a stand-in that fails like an offline machine
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    five = tmp_path / "five.txt"
    _write_txt(five, _docs(5, 0))
    _run(five, tmp_path / "out")  # a finished run, which the failing run below must leave alone
    message = _error(tmp_path, "tinystories")
    assert "did not answer" in message and "--dataset=data_sample/tinystories" in message
    assert os.path.exists(tmp_path / "out" / "meta.json")  # a failed run leaves the finished one in out_dir alone
    assert "at least 1" in _error(tmp_path, one, num_proc=0)


@pytest.mark.slow
def test_prepare_cli_error_has_no_traceback(tmp_path):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prepare.py")
    result = subprocess.run([sys.executable, script, f"--dataset={tmp_path / 'missing'}"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prepare_workers_read_ahead_a_bounded_number_of_batches():
    # Pool.imap would pull the whole input (the whole corpus) ahead of the workers; map_in_order pulls 2 per process
    pulled = []

    def tasks():
        for i in range(100):
            pulled.append(i)
            yield -i

    results = prep.map_in_order(abs, tasks(), 2, int, ())
    assert next(results) == 0 and len(pulled) <= 5
    assert list(results) == list(range(1, 100))


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
    (_, loss_f), (_, loss_m) = fused(idx, idx), manual(idx, idx)
    loss_f.backward(), loss_m.backward()
    assert torch.allclose(fused(idx)[0], manual(idx)[0], atol=1e-5)
    for (name, pf), pm in zip(fused.named_parameters(), manual.parameters()):
        assert torch.allclose(pf.grad, pm.grad, atol=1e-6), name


def test_fused_attention_under_cpu_bfloat16_autocast_runs_in_float32():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 9, 8).bfloat16().float().unbind(0)  # values exact in both precisions
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model_module.fused_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 0.0, True)
    assert y.dtype == torch.float32
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)


def test_loss_is_mean_cross_entropy_and_ignores_minus_one():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = torch.randint(50, (2, 8))
    targets = torch.randint(50, (2, 8))
    targets[0, :3] = -1
    logits, _ = model(idx)
    keep = targets != -1
    expected = -torch.log_softmax(logits, -1)[keep].gather(1, targets[keep][:, None]).mean()
    assert torch.allclose(model(idx, targets)[1], expected, atol=1e-6)


@pytest.mark.parametrize("chunk_rows", [5, 1024])  # several chunks, a ragged last one; one chunk
def test_chunked_cross_entropy_equals_full_logits_loss_and_gradients(monkeypatch, chunk_rows):
    """The fast path (chunked_loss=True, the default) against forward's plain F.cross_entropy."""
    monkeypatch.setattr(model_module, "CHUNK_ROWS", chunk_rows)
    torch.manual_seed(0)
    chunked, plain = GPT(tiny_config(chunked_loss=True)), GPT(tiny_config(chunked_loss=False))
    plain.load_state_dict(chunked.state_dict())
    idx, targets = torch.randint(50, (3, 16)), torch.randint(50, (3, 16))
    targets[0, :4] = -1
    targets[0, 4:7] = -100  # Hugging Face's "not scored": every negative target is skipped
    for model in (chunked, plain):
        model(idx, targets)[1].backward()
    logits, reference = plain(idx, targets)
    scored = targets >= 0
    assert torch.allclose(reference, F.cross_entropy(logits[scored], targets[scored]), atol=1e-6)
    assert torch.allclose(chunked(idx, targets)[1], reference, atol=1e-6)
    for (name, p), q in zip(chunked.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    with torch.no_grad():  # evaluation: the same loss, no gradient work
        assert torch.allclose(chunked(idx, targets)[1], reference, atol=1e-6)
    with pytest.raises(ValueError, match="target id 50 is outside the vocabulary"):
        chunked(idx, torch.full_like(idx, 50))  # the padding rows (50..63) must not pass for tokens


def test_training_step_compiles_without_graph_breaks():
    """train.py compiles the model on CUDA; a graph break would leave the loss running op by op. The
    traced loss computes its gradient's one-hot differently (a comparison, not a scatter): same numbers."""
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx, targets = torch.randint(50, (2, 16)), torch.randint(50, (2, 16))
    targets[0, :3] = -100
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    _, loss = torch.compile(model, backend="eager")(idx, targets)  # tracing only: no code generation needed
    loss.backward()
    traced = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    _, eager_loss = model(idx, targets)
    eager_loss.backward()
    assert torch.allclose(loss, eager_loss) and not counters["graph_break"]
    for name, p in model.named_parameters():
        assert torch.allclose(traced[name], p.grad, atol=1e-7), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_cross_entropy_gradients_under_autocast(dtype):
    """The GPU's training precisions, run on the CPU at a size where the per-element gradients (about
    1 / (N V)) underflow float16: the gradients must stay those of float32, as F.cross_entropy's do."""
    torch.manual_seed(0)
    N, C, V = 4096, 16, 8192  # 16 x 256 tokens, 8,192-token vocabulary
    h, weight = (0.1 * torch.randn(N, C)).requires_grad_(), torch.randn(V, C, requires_grad=True)  # near-uniform softmax
    targets = torch.randint(V, (N,))
    F.cross_entropy(h @ weight.t(), targets).backward()
    expected = h.grad.clone(), weight.grad.clone()
    h.grad = weight.grad = None
    with torch.autocast("cpu", dtype=dtype):
        loss = ChunkedCrossEntropy.apply(h, weight, targets, True)
    (loss * 65536).backward()  # float16 training scales the loss (torch.amp.GradScaler) to keep gradients representable
    for got, want in zip((h.grad / 65536, weight.grad / 65536), expected):
        error = ((got - want).norm() / want.norm()).item()  # measured: 2.4e-3 in bfloat16, 3.2e-4 in float16
        assert got.dtype == torch.float32 and error < (6e-3 if dtype == torch.bfloat16 else 1e-3)


def test_init_ties_embeddings_and_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=8, n_head=4, n_embd=128))
    assert model.lm_head.weight is model.transformer.wte.weight
    c_proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    c_fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert abs(c_fc.std() - 0.02) < 0.001
    assert abs(c_proj.std() - 0.02 / math.sqrt(2 * 8)) < 0.0005


def test_generation_scores_in_float32_under_autocast():
    """bf16 logits round scores 0.001% apart into ties: greedy must still pick the truly most likely token."""
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(50, (1, 4))
    with torch.no_grad():
        h = model.hidden(prompt)[0, -1]
        ramp = 1 + 1e-5 * torch.arange(model.config.vocab_size)  # token 49 is the best, by a hair
        model.lm_head.weight = torch.nn.Parameter(ramp[:, None] * h / h.norm() * 8)  # untied from wte
    assert model.generate(prompt, 1, temperature=0)[0, -1] == 49
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.generate(prompt, 1, temperature=0)[0, -1] == 49


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


@pytest.mark.slow
def test_compiled_generation_equals_eager():
    """sample.py --compile=True gives the same tokens, also past block_size (where the cache is rebuilt
    every step: another shape to compile)."""
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(50, (1, 9))
    expected = model.generate(prompt, 12, temperature=0.0)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model_module.compile_generation(model, prompt[0].tolist())
    assert torch.equal(model.generate(prompt, 12, temperature=0.0), expected)
    # compiled whole, not fallen back to eager piece by piece
    assert counters["stats"]["unique_graphs"] > 0 and not counters["graph_break"]


def test_kv_cache_logits_equal_full_forward():
    from model import KVCache
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    idx = torch.randint(50, (2, 10))
    full, _ = model(idx)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    prefill, _ = model(idx[:, :6], cache=cache)  # a prompt, then one token at a time
    steps = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(6, 10)]
    assert torch.allclose(torch.cat([prefill, *steps], 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="a cached step takes one new token"):
        model(idx[:, :2], cache=cache)


def test_generation_stops_rows_at_end_of_text():
    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(50, (3, 4))
    greedy = model.generate(prompt, 10, temperature=0)
    eot = int(greedy[0, 6])  # row 0's third generated token plays end-of-text
    out = model.generate(prompt, 10, temperature=0, eot_id=eot)
    assert (out[0, 6:] == eot).all()  # a finished row only pads with eot
    going = [row for row in (1, 2) if eot not in greedy[row, 4:]]
    assert going  # (the seed gives rows that never emit it) those rows go on to the end, untouched
    assert out.size(1) == 14 and all(torch.equal(out[row], greedy[row]) for row in going)
    same = model.generate(prompt[:1].repeat(3, 1), 10, temperature=0, eot_id=eot)
    first = int((greedy[0, 4:] == eot).nonzero()[0])  # the step at which row 0 first emits it
    assert same.size(1) == 4 + first + 1 < 14  # every row has stopped: generation ends early


def test_bad_model_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown GPT-2 preset"):
        preset_config("gpt3")
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="token id 50 is outside the vocabulary"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="token id -1 is outside the vocabulary"):
        model(torch.tensor([[-1, 3]]))
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


@pytest.mark.slow
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
            elif "mlp.c_fc" in name:  # GELU inputs of order 1, where its tanh approximation differs from erf's
                p.normal_(0, 0.2)
    hf.save_pretrained(tmp_path / "hf")
    idx = torch.randint(99, (2, 32))
    ours = GPT.from_pretrained(str(tmp_path / "hf")).eval()  # HF -> ours
    with torch.no_grad():
        reference = hf(idx).logits
        assert torch.allclose(ours(idx)[0], reference, atol=1e-5)  # measured 1.8e-7; erf GELU: 1.4e-4
    ours.save_pretrained(tmp_path / "ours", eot_id=98)  # ours -> HF
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert torch.allclose(back(idx).logits, reference, atol=1e-5)


def test_configure_optimizers_decays_matrices_only():
    model = GPT(tiny_config())
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == model.num_params()
    assert optimizer.defaults["fused"]
    for gpu in ("cuda", "mps"):  # the choice follows the device type (built here on CPU tensors, never stepped)
        assert model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), gpu).defaults["fused"]


def test_fused_adamw_steps_like_the_plain_loop():
    torch.manual_seed(0)
    models = [GPT(tiny_config()) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = models[0].configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    plain = models[1].configure_optimizers(0.1, 1e-2, (0.9, 0.95), "some-device")  # no fused kernel asked for
    assert not plain.defaults.get("fused")
    for step in range(3):  # the same gradients for both (a key bias's true gradient is 0: Adam would amplify noise)
        for model, optimizer in zip(models, (fused, plain)):
            g = torch.Generator().manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            optimizer.step()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


# ================================================================================================
# train.py

def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    lr = lambda it: get_lr(it, learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110)
    assert lr(0) == pytest.approx(0.1) and lr(4) == pytest.approx(0.5) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # halfway through the cosine: the midpoint of 1.0 and 0.1
    assert lr(110) == pytest.approx(0.1) and lr(10_000) == pytest.approx(0.1)
    assert all(lr(i) >= lr(i + 1) for i in range(10, 120))


def test_steps_that_fit_count_the_evaluations_ahead_and_never_pass_max_iters():
    # 50 s left at 0.1 s a step, plus 2 x 15 forward passes (a third of a step each) per 100 steps: 0.11 s a step
    fit = functools.partial(steps_that_fit, eval_interval=100, eval_iters=15)
    assert fit(1.0, 10.0, 0.1, 100, 10_000, micro_steps=1) == 100 + 454
    assert fit(1.0, 10.0, 0.1, 100, 10_000, micro_steps=4) == 100 + 487  # an evaluation is 15 of 4 x 100 micro-steps
    assert fit(1.0, 10.0, 0.1, 100, 300, micro_steps=1) == 300
    assert fit(1.0, 70.0, 0.1, 100, 10_000, micro_steps=1) == 100  # over: stop now


def test_peak_flops_matches_the_most_specific_gpu_name():
    from configurator import peak_flops
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12 and peak_flops("NVIDIA A10G") == 125e12
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("AMD EPYC") is None
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12


def test_gradient_accumulation_of_4x4_equals_one_batch_of_16():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    x, y = torch.randint(50, (16, 16)), torch.randint(50, (16, 16))
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
    save(path, {"iter_num": 1}, "")

    def crash(obj, f):  # write half a file, then die, like a kill or a failing disk
        open(f, "wb").write(b"PK\x03\x04 half a checkpoint")
        raise OSError("input/output error")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save(path, {"iter_num": 2}, "")
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


def train_here(argv):
    """train.py's command in this process, to spare an interpreter start; the signal handlers that train()
    installs are put back afterwards."""
    import train as training
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        training.main(argv)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def read_log(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "log.jsonl"))]


def train_losses(out_dir):
    return {r["iter"]: r["train_loss"] for r in read_log(out_dir) if "val_loss" not in r}


@pytest.mark.slow
def test_float16_training_scales_its_loss_and_learns_like_float32(token_data, tmp_path):
    """dtype='auto' picks float16 on GPUs without bf16; train.py must scale the loss for the GradScaler
    (which divides the gradients by its scale). Run here on the CPU, which has float16 autocast too."""
    runs = {}
    for dtype in ("float32", "float16"):
        out = str(tmp_path / dtype)
        run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out}", "--max_iters=16", f"--dtype={dtype}")
        runs[dtype] = train_losses(out)
    assert runs["float32"][16] < runs["float32"][1] - 0.1  # it learns
    assert all(abs(runs["float16"][i] - runs["float32"][i]) < 1e-4 for i in range(1, 17))  # measured: 9.5e-6
    scaler = torch.load(os.path.join(tmp_path, "float16", "ckpt.pt"), weights_only=True)["scaler"]
    # saved, so that a resumed run continues with the scale it had reached: 16 steps without an overflow
    assert scaler["scale"] == 65536.0 and scaler["_growth_tracker"] == 16


def test_gradient_clipping_changes_the_steps(token_data, tmp_path):
    """AdamW is nearly blind to a gradient's overall scale, so clipping shows where it rescales some steps and
    not others: the runs part ways (without the clip's line in train.py they would be equal)."""
    runs = {}
    for clip in ("0.0", "0.05"):
        train_here([*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={tmp_path / clip}", "--max_iters=4",
                    f"--grad_clip={clip}"])
        runs[clip] = train_losses(tmp_path / clip)
    assert runs["0.0"][1] == runs["0.05"][1] and runs["0.0"][4] != runs["0.05"][4]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(token_data, tmp_path):
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={straight}", "--max_iters=16", "--dropout=0.1")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={interrupted}", "--max_iters=8", "--dropout=0.1")
    # a run killed after its last checkpoint has logged steps that the resumed run will do again
    with open(os.path.join(interrupted, "log.jsonl"), "a") as f:
        f.write(json.dumps({"iter": 9, "train_loss": 123.0}) + "\n" + '{"iter": 10, "train_lo')  # the kill cut a line
    # the resumed run takes its settings from the checkpoint, except what is given again
    run_train(f"--out_dir={interrupted}", "--init_from=resume", "--max_iters=16")
    assert [r["iter"] for r in read_log(interrupted) if "val_loss" not in r] == list(range(1, 17))
    a, b = train_losses(straight), train_losses(interrupted)
    assert sorted(a) == sorted(b) == list(range(1, 17))
    assert a == b  # bit for bit: weights, optimizer, data order and dropout all continue exactly
    log = read_log(straight)
    assert set(log[1]) == {"iter", "epoch", "tokens", "lr", "train_loss", "tok_per_sec", "mfu", "elapsed"}
    assert "val_loss" in log[0] and log[-1]["tokens"] == 16 * 8 * 32
    assert a[16] < a[1]  # it learns
    best = torch.load(os.path.join(straight, "best.pt"), weights_only=True)
    assert best["best_val_loss"] == min(r["val_loss"] for r in log if "val_loss" in r)


@pytest.mark.slow
def test_resume_with_more_steps_keeps_the_learning_rate_schedule(token_data, tmp_path):
    out_dir = str(tmp_path / "out")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=4", "--lr_decay_iters=0",
              "--min_lr=1e-4")  # 0: decay over the run, 4 steps
    run_train(f"--out_dir={out_dir}", "--init_from=resume", "--max_iters=6")
    lrs = {r["iter"]: r["lr"] for r in read_log(out_dir) if "val_loss" not in r}
    assert lrs[4] > 1e-4 and lrs[5] == lrs[6] == 1e-4  # past the decay: min_lr, not a cosine stretched to step 6


def test_max_minutes_fixes_the_last_step_and_the_schedule_ends_there(token_data, tmp_path):
    out_dir = str(tmp_path / "out")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=100000",
                     "--lr_decay_iters=0", "--min_lr=1e-4", "--max_minutes=0.05")
    fitted = int(re.search(r"run ends at step ([\d,]+)", proc.stdout).group(1).replace(",", ""))
    log = read_log(out_dir)
    assert 20 <= fitted < 100000 and log[-1]["iter"] == fitted
    lrs = [r["lr"] for r in log if "val_loss" not in r]
    assert lrs[-1] == pytest.approx(1e-4, rel=0.1) and max(lrs) > 5e-4  # the cosine spans the fitted run
    saved = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=False)["config"]
    assert saved["max_iters"] == saved["lr_decay_iters"] == fitted  # a resumed run goes on to the same step
    short = str(tmp_path / "short")  # over before it could be timed: a plain run of max_iters
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={short}", "--max_iters=8", "--lr_decay_iters=0",
              "--max_minutes=0.05")
    assert torch.load(os.path.join(short, "ckpt.pt"), weights_only=False)["config"]["lr_decay_iters"] == 8


def wait_for_log_lines(log, n, timeout=60):
    """Until a run in the background has logged n lines (or timeout seconds have passed)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (os.path.exists(log) and len(open(log).readlines()) >= n):
        time.sleep(0.2)


@pytest.mark.slow
def test_sigint_finishes_the_step_saves_and_exits(token_data, tmp_path):
    out_dir = str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "train.py", *TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}",
                             "--max_iters=100000", "--eval_interval=100000", "--ckpt_interval=100000"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out_dir, "log.jsonl")
    wait_for_log_lines(log, 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)
    assert 2 <= checkpoint["iter_num"] < 100000 and "saving" in out


@pytest.mark.parametrize("fault", ["ckpt.pt", "log.jsonl"])
def test_full_disk_names_the_file_and_the_intact_checkpoint(token_data, tmp_path, monkeypatch, fault):
    """The disk fills once ckpt.pt holds step 2: torch.save then raises a RuntimeError without an errno and leaves
    no space; a log line is cut off by an OSError(ENOSPC). One line says so, and the run resumes from step 2."""
    out_dir = tmp_path / "out"
    real_save, real_open = torch.save, open

    def save_to_a_full_disk(obj, f):
        if f.endswith("ckpt.pt.tmp") and os.path.exists(out_dir / "ckpt.pt"):
            real_open(f, "wb").write(b"PK\x03\x04 half a checkpoint")
            monkeypatch.setattr(shutil, "disk_usage", lambda folder: types.SimpleNamespace(free=0))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        real_save(obj, f)

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if mode == "a" and os.path.exists(out_dir / "ckpt.pt"):
            write = f.write

            def write_part(text):  # the line cut off where the disk filled
                write(text[:10])
                raise OSError(errno.ENOSPC, "No space left on device")

            f.write = write_part
        return f

    import train as training
    if fault == "ckpt.pt":
        monkeypatch.setattr(torch, "save", save_to_a_full_disk)
    else:
        monkeypatch.setattr(training, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(ConfigError) as full:
        train_here([*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=6",
                                 "--ckpt_interval=2", "--eval_interval=100"])
    message = str(full.value)
    del full
    monkeypatch.undo()
    assert message.startswith(f"error: no space left to write {out_dir / fault} (No space left on device); ")
    assert f"{out_dir / 'ckpt.pt'} holds step 2, intact: free some space and continue it with --init_from=resume" \
           in message and "\n" not in message
    assert torch.load(out_dir / "ckpt.pt", weights_only=True)["iter_num"] == 2
    assert not [name for name in os.listdir(out_dir) if name.endswith(".tmp")]
    train_here([f"--out_dir={out_dir}", "--init_from=resume"])
    assert [r["iter"] for r in read_log(out_dir) if "val_loss" not in r] == list(range(1, 7))


@pytest.mark.slow
def test_a_second_launch_into_a_running_out_dir_refuses(token_data, tmp_path, monkeypatch):
    """The same command run twice, or a job requeued while its first copy still runs: the second launch stops in
    one line naming the first, which goes on unharmed; once the first is killed, the OS has dropped its lock, and
    the folder resumes. (Under torchrun every process of the second launch stops with that line: checked by
    hand, as a torchrun start would double this test's time.)"""
    out_dir = str(tmp_path / "out")
    first = subprocess.Popen([sys.executable, "train.py", *TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}",
                              "--max_iters=100000", "--eval_interval=100000", "--log_interval=10", "--ckpt_interval=20"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt, log = os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, "log.jsonl")
    deadline = time.time() + 60
    while not os.path.exists(ckpt) and time.time() < deadline:
        time.sleep(0.2)
    holder = f"error: {out_dir} is in use by another run (pid {first.pid} on {socket.gethostname()})"
    with pytest.raises(ConfigError) as second:
        train_here([f"--out_dir={out_dir}", "--init_from=resume"])
    assert str(second.value).startswith(holder)
    with pytest.raises(ConfigError) as again:  # the very same command again: the lock speaks before the old files
        train_here([*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}"])
    assert str(again.value).startswith(holder)
    lines = len(open(log).readlines())
    wait_for_log_lines(log, lines + 2)
    assert first.poll() is None, first.stderr.read()  # still training
    first.kill()
    first.wait()
    step = torch.load(ckpt, weights_only=True)["iter_num"]
    train_here([f"--out_dir={out_dir}", "--init_from=resume", f"--max_iters={step + 10}"])
    assert [r["iter"] for r in read_log(out_dir) if "val_loss" not in r] == list(range(10, step + 11, 10))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes through /proc")
@pytest.mark.slow
def test_sigterm_to_one_ddp_process_stops_all_at_the_same_step_and_saves(token_data, tmp_path):
    """A scheduler may signal one process of a torchrun job: the others must stop with it after the same
    step (not wait forever for it in the next all-reduce), and rank 0 saves that step."""
    out_dir = str(tmp_path / "out")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "train.py", *TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}",
                             "--max_iters=100000", "--eval_interval=100000", "--ckpt_interval=100000",
                             "--gradient_accumulation_steps=2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = os.path.join(out_dir, "log.jsonl")
    wait_for_log_lines(log, 3)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    rank_1 = [int(pid) for pid in workers if b"RANK=1" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")]
    os.kill(rank_1[0], signal.SIGTERM)
    time.sleep(0.05)
    try:  # torchrun passes on the signal that the job already got: a second one must not be fatal
        os.kill(rank_1[0], signal.SIGTERM)
    except ProcessLookupError:  # rank 1 had already finished its step and exited cleanly
        pass
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)
    assert 2 <= checkpoint["iter_num"] == max(train_losses(out_dir)) < 100000


@pytest.mark.slow
def test_nan_loss_stops_with_a_message(token_data, tmp_path):
    out_dir = str(tmp_path / "out")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=50",
                     "--learning_rate=1e30", "--warmup_iters=1", "--grad_clip=0.0", "--ckpt_interval=10", "--log_interval=3",
                     check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "loss is nan at step 2" in proc.stderr  # step 2 is the first to log (every third step), so to read it
    assert "dtype='float32'" not in proc.stderr  # no use suggesting what the run already had
    # before its first ckpt.pt (due at step 10): the message says so, and best.pt (step 0) is what is left
    assert "no ckpt.pt was saved yet: start afresh in another --out_dir" in proc.stderr
    assert not os.path.exists(os.path.join(out_dir, "ckpt.pt"))
    # what is left to resume from is good: a step can make the weights inf while its own loss was finite
    saved = [os.path.join(out_dir, f) for f in ("ckpt.pt", "best.pt") if os.path.exists(os.path.join(out_dir, f))]
    assert saved
    x = torch.from_numpy(np.fromfile(os.path.join(token_data, "val.bin"), dtype=np.uint16)[:33].astype(np.int64))
    for path in saved:
        model = GPT.from_checkpoint(path)
        assert model(x[None, :-1], x[None, 1:])[1].isfinite(), path
    # with a good checkpoint behind it, the message names it, and resuming from it is the way on
    good = str(tmp_path / "good")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={good}", "--max_iters=2")
    proc = run_train(f"--out_dir={good}", "--init_from=resume", "--max_iters=50", "--learning_rate=1e30",
                     "--grad_clip=0.0", "--ckpt_interval=1", check=False)
    assert f"{os.path.join(good, 'ckpt.pt')} holds step 2, the last good one" in proc.stderr, proc.stderr
    assert torch.load(os.path.join(good, "ckpt.pt"), weights_only=True)["iter_num"] == 2


@pytest.mark.slow
def test_ddp_under_gloo_matches_one_process(token_data, tmp_path):
    # two micro-steps per process: their gradients are summed locally and averaged across processes once
    args = [*TINY_RUN, f"--data_dir={token_data}", "--max_iters=4", "--gradient_accumulation_steps=4"]
    run_train(*args, f"--out_dir={tmp_path / 'one'}")
    run_train(*args, f"--out_dir={tmp_path / 'two'}",
              launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    assert all(abs(one[i] - two[i]) < 1e-4 for i in one)


@pytest.mark.slow
def test_ddp_processes_draw_their_own_dropout_masks(token_data, tmp_path):
    """On data whose windows are all the same, micro-batches differ only in their dropout masks: were one
    process's masks copied to the other, two processes would log exactly the loss of one."""
    data = tmp_path / "same"
    data.mkdir()
    meta = json.load(open(os.path.join(token_data, "meta.json")))
    for split in ("train", "val", "test"):
        np.full(meta["splits"][split]["tokens"], 5, dtype=np.uint16).tofile(data / f"{split}.bin")
    (data / "meta.json").write_text(json.dumps(meta))
    args = [*TINY_RUN, f"--data_dir={data}", "--max_iters=1", "--dropout=0.5"]
    run_train(*args, f"--out_dir={tmp_path / 'one'}")
    run_train(*args, f"--out_dir={tmp_path / 'two'}", "--gradient_accumulation_steps=2",
              launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert train_losses(tmp_path / "one")[1] != train_losses(tmp_path / "two")[1]


@pytest.mark.parametrize("args, message", [
    (["--data_dir=/nonexistent"], "no meta.json in /nonexistent; make the data with `python prepare.py"),
    (["--init_from=resume"], "no checkpoint"),
    (["--n_layr=2"], "did you mean --n_layer"),
    (["--batch_size=eight"], "expects an int"),
    (["--max_epochs=two"], "expects a float"),
    (["--init_from=gpt3"], "neither 'scratch'"),
    (["--n_head=5"], "must be divisible by n_head=5"),
    (["--eval_interval=0"], "eval_interval must be at least 1"),
    (["--dropout=1.5"], "dropout is the probability"),
    (["--beta2=1.0"], "beta2 is a decay rate in [0, 1)"),
    (["--seed=-1"], "--seed must be from 0 to 4294967295"),
])
def test_train_bad_input_is_one_line(token_data, tmp_path, args, message):
    """In this process, to spare an interpreter start per case: a ConfigError is what the command line
    prints as one line without a traceback (the tests above and below run the real command)."""
    with pytest.raises(ConfigError) as error:
        train_here([f"--data_dir={token_data}", f"--out_dir={tmp_path / 'out'}", "--device=cpu", *args])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_train_refuses_unwritable_out_dir_and_resume_of_another_shape(token_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={blocker / 'out'}", check=False)
    assert f"cannot write to {blocker / 'out'} (Not a directory)" in proc.stderr and "Traceback" not in proc.stderr
    out_dir = str(tmp_path / "out")
    run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", "--max_iters=2")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={out_dir}", check=False)  # forgot resume
    assert "already holds a run (ckpt.pt, best.pt, log.jsonl)" in proc.stderr and "Traceback" not in proc.stderr
    stopped_early = tmp_path / "stopped_early"  # a run that never reached its first ckpt.pt
    stopped_early.mkdir()
    (stopped_early / "log.jsonl").write_text("")
    proc = run_train(*TINY_RUN, f"--data_dir={token_data}", f"--out_dir={stopped_early}", check=False)
    assert "already holds a run (log.jsonl)" in proc.stderr and "resume" not in proc.stderr
    proc = run_train(f"--out_dir={out_dir}", "--init_from=resume", "--n_layer=3", check=False)
    assert "has n_layer=2 but n_layer=3 was given" in proc.stderr and "Traceback" not in proc.stderr
    ckpt = os.path.join(out_dir, "ckpt.pt")
    open(ckpt, "r+b").truncate(1000)  # cut off, like a copy that did not finish
    proc = run_train(f"--out_dir={out_dir}", "--init_from=resume", check=False)
    assert "cannot resume" in proc.stderr and "not a readable checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


# ================================================================================================
# sample.py and eval.py

# ---- a tiny trained out_dir, built once ------------------------------------------------------------

def tiny_corpus(n_docs, seed):
    """Short stories from a small grammar (so a tiny model can learn something), with some multi-byte
    characters so that tokens split UTF-8 characters."""
    rng = random.Random(seed)
    names, animals = ["Tom", "Lily", "Zoë", "Max"], ["cat", "dog", "bird", "fish"]
    places, feelings = ["park", "garden", "café", "river"], ["happy", "sad", "sleepy", "naïve"]
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            sentences.append(f"{rng.choice(names)} saw a {rng.choice(animals)} in the {rng.choice(places)}. "
                             f"The {rng.choice(animals)} was {rng.choice(feelings)}.")
        if rng.random() < 0.2:
            sentences.append("They smiled 🙂 and went home.")
        docs.append(" ".join(sentences))
    return docs


def train_tiny(model, tokens, steps, block_size, seed=0):
    """A few dozen AdamW steps on random windows: enough for the model to prefer the corpus' text."""
    g = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(tokens.astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    log, loss = [], None
    for step in range(steps):
        ix = torch.randint(len(data) - block_size - 1, (16,), generator=g)
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + block_size + 1] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append(dict(iter=step + 1, epoch=(step + 1) * 16 * block_size / len(data), tokens=(step + 1) * 16 * block_size,
                        lr=1e-2, train_loss=loss.item(), tok_per_sec=1000.0, mfu=None, elapsed=0.1 * (step + 1)))
        if (step + 1) % 20 == 0:
            log.append({**log[-1], "val_loss": loss.item() + 0.1})
    return log, opt


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """data/ (train/val/test.bin, meta.json, tokenizer.json) and out/ (best.pt, ckpt.pt, meta.json,
    tokenizer.json, log.jsonl), as prepare.py and train.py write them."""
    root = tmp_path_factory.mktemp("tiny")
    data_dir, out_dir = root / "data", root / "out"
    data_dir.mkdir()
    out_dir.mkdir()
    docs = {"train": tiny_corpus(300, 0), "val": tiny_corpus(20, 1), "test": tiny_corpus(30, 2)}
    tok = bpe.train_bpe([d + bpe.EOT for d in docs["train"]], 300)
    tok.save(str(data_dir / "tokenizer.json"))
    splits = {}
    for split, texts in docs.items():
        ids = np.array([i for d in texts for i in tok.encode_ordinary(d) + [tok.eot_id]], dtype=np.uint16)
        ids.tofile(data_dir / f"{split}.bin")
        splits[split] = dict(docs=len(texts), tokens=len(ids), bytes=sum(len(d.encode()) for d in texts))
    meta = dict(vocab_size=tok.vocab_size, eot_id=tok.eot_id, dtype="uint16", tokenizer="tokenizer.json",
                splits=splits, source="tiny grammar", args={})
    (data_dir / "meta.json").write_text(json.dumps(meta))

    torch.manual_seed(0)
    config = GPTConfig(block_size=32, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    train = np.fromfile(data_dir / "train.bin", dtype=np.uint16)
    log, opt = train_tiny(model, train, 60, config.block_size)
    model.eval()
    checkpoint = dict(model=model.state_dict(), optimizer=opt.state_dict(), model_args=dataclasses.asdict(config),
                      iter_num=60, best_val_loss=log[-1]["val_loss"], tokens=log[-1]["tokens"], elapsed=6.0,
                      config=dict(data_dir=str(data_dir), block_size=32, batch_size=16),
                      rng=dict(python=random.getstate()))
    torch.save(checkpoint, out_dir / "best.pt")
    torch.save({**checkpoint, "iter_num": 61}, out_dir / "ckpt.pt")
    for name in ("meta.json", "tokenizer.json"):
        shutil.copy(data_dir / name, out_dir / name)
    (out_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return dict(root=root, data_dir=data_dir, out_dir=out_dir, model=model, tok=tok, meta=meta, docs=docs,
                test=np.fromfile(data_dir / "test.bin", dtype=np.uint16))


def copy_out_dir(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained["out_dir"], out)
    return out


def run_main(module, monkeypatch, **settings):
    """module.main() with some settings changed, as `--key=value` would (and told so); restored afterwards."""
    with monkeypatch.context() as m:
        for key, value in settings.items():
            assert hasattr(module, key), key
            m.setattr(module, key, value)
        module.main(given=list(settings))


# ---- the loader --------------------------------------------------------------------------------

def test_load_maps_best_last_and_model_pt(trained, tmp_path):
    model, tok, meta = configurator.load_model(str(trained["out_dir"]), "best")
    assert meta["checkpoint"]["iter_num"] == 60 and meta["checkpoint_path"].endswith("best.pt")
    assert tok.vocab_size == model.config.vocab_size == meta["vocab_size"]
    for p, q in zip(model.parameters(), trained["model"].parameters()):
        assert torch.equal(p, q)
    assert configurator.load_model(str(trained["out_dir"]), "last")[2]["checkpoint"]["iter_num"] == 61
    # a shipped pretrained folder: only model.pt, fp16 weights and model_args
    out = copy_out_dir(trained, tmp_path)
    ckpt = torch.load(out / "best.pt", weights_only=True)
    torch.save(dict(model={k: v.half() for k, v in ckpt["model"].items()}, model_args=ckpt["model_args"]),
               out / "model.pt")
    os.remove(out / "best.pt")
    os.remove(out / "ckpt.pt")
    model16, _, meta16 = configurator.load_model(str(out), "best")
    assert meta16["checkpoint_path"].endswith("model.pt")
    for p, q in zip(model16.parameters(), trained["model"].parameters()):
        assert torch.equal(p, q.half().float())  # float16 weights, read back exactly


def test_load_rejects_broken_folders(trained, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no checkpoint in .*train.py --out_dir"):
        configurator.load_model(str(empty))
    with pytest.raises(ConfigError, match="'best' or 'last'"):
        configurator.load_model(str(trained["out_dir"]), "newest")

    out = copy_out_dir(trained, tmp_path)
    (out / "ckpt.pt").write_bytes((out / "ckpt.pt").read_bytes()[:1000])  # cut off while copying
    with pytest.raises(ConfigError, match="not a readable checkpoint") as error:
        configurator.load_model(str(out), "last")
    assert str(error.value).count(str(out / "ckpt.pt")) == 1  # named once, not by read_checkpoint and again by load

    os.remove(out / "meta.json")
    with pytest.raises(ConfigError, match="no meta.json"):
        configurator.load_model(str(out))
    shutil.copy(trained["out_dir"] / "meta.json", out / "meta.json")
    os.remove(out / "tokenizer.json")
    with pytest.raises(ConfigError, match="tokenizer.json not found"):
        configurator.load_model(str(out))

    # a tokenizer of another size: the three vocabulary records disagree
    bpe.train_bpe(["some other text entirely"], 270).save(str(out / "tokenizer.json"))
    with pytest.raises(ConfigError, match="vocabulary sizes .* do not match"):
        configurator.load_model(str(out))
    shutil.copy(trained["out_dir"] / "tokenizer.json", out / "tokenizer.json")
    (out / "meta.json").write_text(json.dumps({**trained["meta"], "vocab_size": 8192}))
    with pytest.raises(ConfigError, match="meta.json 8192"):
        configurator.load_model(str(out))

    # weights of another shape than model_args says
    shutil.copy(trained["out_dir"] / "meta.json", out / "meta.json")
    ckpt = torch.load(trained["out_dir"] / "best.pt", weights_only=True)
    ckpt["model"]["transformer.wpe.weight"] = torch.zeros(64, 32)
    torch.save(ckpt, out / "best.pt")
    with pytest.raises(ConfigError, match="wpe.weight.*shape"):
        configurator.load_model(str(out))


# ---- sampling ----------------------------------------------------------------------------------

def test_greedy_is_deterministic(trained):
    model, tok = trained["model"], trained["tok"]
    prompt = configurator.encode_prompt(tok, "Tom saw a")
    runs = [sample.stream_sample(model, tok, prompt, 20, torch.Generator().manual_seed(s), out=open(os.devnull, "w"),
                                 **configurator.sampling_args(0.0, 0, 1.0))[0] for s in (1, 2)]
    assert runs[0] == runs[1] and len(runs[0]) > 0
    logits, _ = model(torch.tensor([prompt]))
    assert runs[0][0] == logits[0, -1].argmax().item()  # greedy = the most likely token


def next_token_draws(model, prompt, n, **sampling):
    """n independent draws of the token after prompt, and the model's probabilities for it."""
    idx = torch.tensor([prompt] * n)
    draws = next(model.stream(idx, 1, generator=torch.Generator().manual_seed(0), **sampling))[:, 0]
    probs = F.softmax(model(idx[:1])[0][0, -1], dim=-1)
    return set(draws.tolist()), probs


@pytest.mark.parametrize("text", ["", "Lily saw a", "The cat was"])
def test_top_k_and_nucleus_stay_in_their_sets(trained, text):
    model, tok = trained["model"], trained["tok"]
    prompt = configurator.encode_prompt(tok, text)
    # temperature 2 flattens the distribution, so a token outside the set would be drawn if allowed
    drawn, probs = next_token_draws(model, prompt, 2000, **configurator.sampling_args(2.0, 5, 1.0))
    assert drawn <= set(probs.topk(5).indices.tolist())
    assert len(drawn) > 1

    drawn, probs = next_token_draws(model, prompt, 2000, **configurator.sampling_args(1.0, 0, 0.8))
    sorted_probs, order = probs.sort(descending=True)
    size = int((sorted_probs.cumsum(0) < 0.8).sum()) + 1  # the fewest tokens whose probability reaches 0.8
    assert drawn <= set(order[:size].tolist())


@pytest.mark.parametrize("temperature, top_k, top_p, kept", [
    (0.5, None, None, [0.16, 0.0625, 0.0225, 0.01, 0.0036, 0.0016]),  # p ** (1 / T), renormalised
    (1.0, 3, None, [0.4, 0.25, 0.15]),  # the k-th likeliest token stays in
    (0.5, 4, 0.8, [0.16, 0.0625]),  # temperature first: at T = 1 the 0.8 nucleus would keep token 2 too
    (0.5, 2, 0.7, [0.16]),  # top-k first: renormalised over 2 tokens, token 0 alone reaches 0.7
])
def test_sampling_draws_from_the_filtered_distribution(temperature, top_k, top_p, kept):
    """Temperature, then top-k, then top-p on what is left (Hugging Face's order), checked against the
    distribution computed by hand, not only the set it draws from."""
    from model import sample_next_token
    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    draws = sample_next_token(probs.log().repeat(20000, 1), temperature, top_k, top_p, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws[:, 0], minlength=6) / 20000
    expected = torch.zeros(6)
    expected[:len(kept)] = torch.tensor(kept) / sum(kept)
    assert (frequencies - expected).abs().max() < 0.015  # ~4 standard deviations of 20,000 draws


def test_sampling_at_the_edges_of_its_ranges_is_the_greedy_limit():
    """A temperature or top_p so small that float32 arithmetic underflows must not turn into NaN
    probabilities: as they shrink to 0, sampling becomes greedy, and it must be greedy there too."""
    from model import sample_next_token
    logits = torch.randn(64, 500, generator=torch.Generator().manual_seed(0)) * 5
    greedy = logits.argmax(dim=-1, keepdim=True)
    for temperature, top_k, top_p in ((1e-50, None, None), (1e-37, None, None), (0.8, 50, 1e-50), (1.0, None, 1e-30)):
        assert torch.equal(sample_next_token(logits, temperature, top_k, top_p), greedy), (temperature, top_k, top_p)


def test_text_stream_prints_split_characters_whole(trained):
    tok = trained["tok"]
    text = "Zoë smiled 🙂 at the café"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the test means something: tokens split characters
    stream = sample.TextStream(tok)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_sample_cli_streams_compares_and_reports_speed(trained, monkeypatch, capsys, tmp_path):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("Max saw a")
    common = dict(out_dir=str(trained["out_dir"]), device="cpu", max_new_tokens=12)
    run_main(sample, monkeypatch, **common, start=f"FILE:{prompt_file}", num_samples=2, top_p=0.9)
    out = capsys.readouterr().out
    assert out.count("Max saw a") == 2 and "tokens/s" in out
    run_main(sample, monkeypatch, **common, start="Tom", strategy="compare")
    out = capsys.readouterr().out
    assert all(label in out for label in ("greedy", "top-k 50", "nucleus 0.9"))
    model, tok = trained["model"], trained["tok"]
    prompt = torch.tensor([configurator.encode_prompt(tok, "Tom")])
    ids = model.generate(prompt, 12, temperature=0, eot_id=tok.eot_id)[0, 1:].tolist()  # the prompt, then its greedy run
    greedy = tok.decode([i for i in ids if i != tok.eot_id])  # printed up to the end-of-text token
    assert out.split("greedy\n")[1].startswith(greedy + "\n")
    run_main(sample, monkeypatch, **common, greedy=True)
    first = capsys.readouterr().out.rsplit("---", 1)[0]
    run_main(sample, monkeypatch, **common, greedy=True, seed=7)
    assert capsys.readouterr().out.rsplit("---", 1)[0] == first


@pytest.mark.parametrize("args, message", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=-1), "top_k must be >= 1, or 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(strategy="beam"), "'sample' or 'compare'"),
    (dict(start="FILE:/nonexistent/prompt.txt"), "cannot read the prompt file"),
    (dict(max_new_tokens=0), "--max_new_tokens must be at least 1"),
    (dict(seed=2**70), "--seed must be from 0 to 4294967295"),
])
def test_sample_rejects_bad_settings(trained, monkeypatch, args, message):
    with pytest.raises(ConfigError, match=message):
        run_main(sample, monkeypatch, out_dir=str(trained["out_dir"]), device="cpu", **args)


@pytest.mark.slow
def test_bad_input_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "sample.py", f"--out_dir={tmp_path}", "--device=cpu"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: no checkpoint in {tmp_path}; train with "
                                                  f"`python train.py --out_dir={tmp_path}`"]


@pytest.mark.slow
def test_default_out_dir_without_a_checkpoint_uses_the_shipped_model(trained, tmp_path, monkeypatch, capsys):
    """Right after cloning there is no out/: sample.py and eval.py then use pretrained/'s model (here a
    stand-in for it), but an out_dir the user named stays theirs, and an empty one an error."""
    shipped = copy_out_dir(trained, tmp_path)
    monkeypatch.setattr(configurator, "SHIPPED_MODEL", str(shipped))
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")  # no out/ here
    run_main(sample, monkeypatch, device="cpu", max_new_tokens=5, top_p=0.9)
    captured = capsys.readouterr()
    assert "note: no checkpoint in out yet; using the shipped model" in captured.err and "tokens/s" in captured.out
    run_main(evaluation, monkeypatch, **{**EVAL_FAST, "splits": "test", "num_prompts": 0})
    assert "using the shipped model" in capsys.readouterr().err and (shipped / "eval.json").is_file()
    with pytest.raises(ConfigError, match="no checkpoint in out; train with"):
        run_main(sample, monkeypatch, out_dir="out", device="cpu")


# ---- perplexity and bits per byte ----------------------------------------------------------------

def test_perplexity_is_exp_of_hand_computed_mean_nll(trained):
    model, tokens, eot = trained["model"], trained["test"], trained["tok"].eot_id
    T = model.config.block_size
    # by hand: prepend eot, cut into block_size windows, sum -log p(target) with log_softmax
    stream = torch.tensor([eot] + tokens.tolist())
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(tokens), T):
            x = stream[start:start + T]
            y = stream[start + 1:start + T + 1]
            logp = F.log_softmax(model(x[None, :len(y)])[0][0], dim=-1)
            total -= logp[torch.arange(len(y)), y].double().sum().item()
    n_bytes = trained["meta"]["splits"]["test"]["bytes"]
    result = evaluation.evaluate_tokens(model, tokens, eot, n_bytes, batch_size=3)
    assert result["tokens"] == len(tokens)
    assert result["loss"] == pytest.approx(total / len(tokens), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / len(tokens)), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(total / (math.log(2) * n_bytes), rel=1e-5)
    assert "non-overlapping" in result["scoring"]


def test_bits_per_byte_formula_and_byte_count(trained):
    assert evaluation.bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)  # 8 bits over 4 bytes
    tok, meta = trained["tok"], trained["meta"]
    assert evaluation.text_bytes(tok, trained["test"], tok.eot_id) == meta["splits"]["test"]["bytes"]


@pytest.mark.parametrize("n, block_size, stride", [(100, 32, 32), (100, 32, 8), (33, 32, 1), (5, 32, 32), (64, 32, 31)])
def test_every_token_is_scored_exactly_once(n, block_size, stride):
    scored = np.zeros(n, dtype=int)
    for i, (start, end, first) in enumerate(evaluation.scoring_windows(n, block_size, stride)):
        assert end - start <= block_size and start <= first < end
        if i > 0:  # after the first window, every scored token has block_size - stride tokens before it
            assert first - start >= min(block_size - stride, first)
        scored[first:end] += 1
    assert (scored == 1).all()


def test_sliding_window_scores_every_token_with_more_context(trained):
    model, eot = trained["model"], trained["tok"].eot_id
    tokens, T, stride = trained["test"][:150], model.config.block_size, 8
    # by hand, a token at a time: token t (stream position t + 1, after the leading eot) is scored by the first
    # window that reaches it, which starts at the first multiple of the stride past t - T
    stream = torch.tensor([eot] + tokens.tolist())
    total = 0.0
    with torch.no_grad():
        for t in range(len(tokens)):
            start = 0 if t < T else (math.floor((t - T) / stride) + 1) * stride
            logits = model(stream[None, start:t + 1])[0][0, -1]
            total -= F.log_softmax(logits, dim=-1)[stream[t + 1]].item()
    sliding = evaluation.evaluate_tokens(model, tokens, eot, 1000, stride=stride)
    assert sliding["tokens"] == len(tokens) and "stride 8" in sliding["scoring"]
    assert sliding["loss"] == pytest.approx(total / len(tokens), rel=1e-5)
    plain = evaluation.evaluate_tokens(model, tokens, eot, 1000)
    assert sliding["loss"] != plain["loss"]  # the same tokens, scored with other contexts
    assert evaluation.evaluate_tokens(model, tokens, eot, 1000, stride=T)["loss"] == plain["loss"]
    with pytest.raises(ConfigError, match="--stride"):
        evaluation.evaluate_tokens(model, tokens, eot, 1000, stride=T + 1)


def test_document_sample_is_whole_documents(trained):
    train = np.fromfile(trained["data_dir"] / "train.bin", dtype=np.uint16)
    eot = trained["tok"].eot_id
    part = evaluation.document_sample(train, eot, 500, seed=3)
    assert len(part) >= 500 and part[-1] == eot  # ends where a document ends
    starts = [0] + [i + 1 for i in np.flatnonzero(train == eot)]
    assert any(np.array_equal(train[s:s + len(part)], part) for s in starts)  # begins where one begins
    running_text = np.append(np.arange(5000, dtype=np.uint16) % eot, eot)  # one document (WikiText): a window in it
    part = evaluation.document_sample(running_text, eot, 500, seed=3)
    assert len(part) == 500 and any(np.array_equal(running_text[s:s + 500], part) for s in range(1, 4501))


def test_text_bytes_are_exact_for_slices_that_cut_characters(trained):
    tok = trained["tok"]
    text = "Zoë smiled 🙂 at the café"
    ids = tok.encode(text + bpe.EOT)
    for cut in range(len(ids) + 1):  # some cuts split a character's bytes between the two halves
        assert (evaluation.text_bytes(tok, ids[:cut], tok.eot_id) + evaluation.text_bytes(tok, ids[cut:], tok.eot_id)
                == len(text.encode("utf-8")))


# ---- sampling analysis -------------------------------------------------------------------------

def test_distinct_n_and_repeated_ngrams_on_hand_made_strings():
    assert evaluation.distinct_n(["a b a b"], 1) == 0.5  # 2 different words of 4
    assert evaluation.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert evaluation.distinct_n(["a b", "a b"], 2) == 0.5  # the same bigram in two texts
    assert evaluation.distinct_n(["a b", "c"], 2) == 1.0  # n-grams do not cross texts
    assert evaluation.distinct_n(["x"], 3) == 0.0
    assert evaluation.repeated_ngram_share("a b c d a b c d", 4) == pytest.approx(1 / 5)  # abcd again
    assert evaluation.repeated_ngram_share("the cat sat on the mat", 4) == 0.0
    assert evaluation.repeated_ngram_share("go go go go go go", 4) == pytest.approx(2 / 3)


def test_sampling_analysis_measures_each_strategy(trained):
    model, tok = trained["model"], trained["tok"]
    result = evaluation.sampling_analysis(model, tok, trained["test"], num_prompts=4, prompt_tokens=4,
                                          new_tokens=16, temperatures=(0.7,))
    rows = result["strategies"]
    assert list(rows) == ["reference", "greedy", "top-k 50, T=1", "nucleus 0.9, T=1", "sampling, T=0.7"]
    for m in rows.values():
        assert m["fluency_ppl"] > 1 and 0 < m["distinct_2"] <= 1 and 0 <= m["rep_4"] <= 1
        assert len(m["examples"]) == 2
    # greedy always takes the likeliest token, so the model finds its text likelier than sampled text
    assert rows["greedy"]["fluency_ppl"] < rows["top-k 50, T=1"]["fluency_ppl"]
    # fluency is the model's own perplexity of the text: check one continuation by hand
    prompt = tok.encode_ordinary(rows["reference"]["examples"][0]["prompt"])
    ((nll, n),) = evaluation.continuation_nll(model, [([tok.eot_id] + prompt[:2], prompt[2:])])
    logp = F.log_softmax(model(torch.tensor([[tok.eot_id] + prompt[:-1]]))[0][0], dim=-1)
    assert n == len(prompt) - 2
    assert nll == pytest.approx(-sum(logp[i + 2, t].item() for i, t in enumerate(prompt[2:])), rel=1e-5)


# ---- HellaSwag ---------------------------------------------------------------------------------

HELLASWAG = [  # the right ending is the corpus' grammar; the others are not
    {"ctx": "Tom saw a cat in the", "endings": ["zqx vvk pfft.", "park. The dog was happy.", "qq qq qq", "!!??"], "label": 1},
    {"ctx": "The bird was", "endings": ["sleepy.", "xkcd jjj zzz wq", "vv bb nn", "zzzz"], "label": 0},
    {"ctx": "Lily saw a dog in the", "endings": ["qwp", "zzx xxz", "jjj kkk", "garden. The fish was sad."], "label": 3},
]


def test_hellaswag_scores_a_known_fixture(trained, tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in HELLASWAG))
    items = evaluation.read_hellaswag(str(path))
    model, tok = trained["model"], trained["tok"]
    result = evaluation.evaluate_hellaswag(model, tok, items, batch_size=5)
    assert result["items"] == 3 and result["accuracy"] == 1.0 and result["accuracy_norm"] == 1.0
    # the score of an ending is its log-likelihood after the context: check one by hand
    ctx, ending = configurator.encode_prompt(tok, HELLASWAG[0]["ctx"]), tok.encode_ordinary(" " + HELLASWAG[0]["endings"][1])
    logp = F.log_softmax(model(torch.tensor([ctx + ending[:-1]]))[0][0], dim=-1)
    by_hand = -sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(ending))
    ((nll, n),) = evaluation.continuation_nll(model, [(ctx, ending)])
    assert n == len(ending) and nll == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    (json.dumps({"ctx": "a", "endings": ["b", "c"], "label": 0}), "line 2: 'endings' must be a list of 4"),
    (json.dumps({"ctx": "a", "endings": ["b"] * 4, "label": 4}), "line 2: 'label' must be 0, 1, 2 or 3"),
    (json.dumps({"endings": ["b"] * 4, "label": 1}), "line 2: needs a string 'ctx'"),
])
def test_malformed_hellaswag_line_names_the_line(tmp_path, line, message):
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps(HELLASWAG[0]) + "\n" + line + "\n")
    with pytest.raises(ConfigError, match=message):
        evaluation.read_hellaswag(str(path))


# ---- the command line: eval.json, plot, report, comparison, bad data ----------------------------

EVAL_FAST = dict(device="cpu", num_prompts=3, prompt_tokens=4, new_tokens=8, temperatures=(1.0,), train_tokens=400)


@pytest.mark.slow
def test_report_with_loss_plot_and_eval_json(trained, tmp_path, monkeypatch, capsys):
    out = copy_out_dir(trained, tmp_path)
    hs = tmp_path / "hs.jsonl"
    hs.write_text("".join(json.dumps(item) + "\n" for item in HELLASWAG))
    run_main(evaluation, monkeypatch, out_dir=str(out), report=True, hellaswag=str(hs), **EVAL_FAST)
    results = json.loads((out / "eval.json").read_text())
    for split in ("test", "val", "train"):
        assert {"loss", "perplexity", "bits_per_byte", "tokens", "bytes", "scoring"} <= set(results[split])
    assert results["test"]["tokens"] == trained["meta"]["splits"]["test"]["tokens"]  # all of it
    assert results["train"]["tokens"] < trained["meta"]["splits"]["train"]["tokens"]  # a sample
    assert "random stretch" in results["train"]["scoring"] and results["hellaswag"]["items"] == 3
    assert (out / "loss.png").read_bytes()[:8] == (out / "report-page1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for heading in ("## Implementation", "\\sqrt{d}", "## Model, data and training",
                    "![training and validation loss](loss.png)", "## Perplexity and bits per byte",
                    "## Decoding strategies", "nucleus 0.9", "## HellaSwag", "<blockquote><b>", "## Discussion"):
        assert heading in report
    # the report's numbers are eval.json's
    test, greedy = results["test"], results["sampling"]["strategies"]["greedy"]
    assert f"| test | {test['tokens']:,} | {test['bytes']:,} | {test['loss']:.4f} | {test['perplexity']:.2f} | " \
           f"{test['bits_per_byte']:.4f} |" in report
    assert f"| greedy | {greedy['fluency_ppl']:.2f} | {greedy['distinct_1']:.3f} |" in report
    assert f"{results['test']['bits_per_byte']:.3f} bits per byte" in report  # the discussion's
    assert f"{100 * results['hellaswag']['accuracy']:.2f}%" in report
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b", pdf)) > 1
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # a later run of the same checkpoint keeps what it does not redo
    run_main(evaluation, monkeypatch, out_dir=str(out), splits="", num_prompts=0, device="cpu")
    assert json.loads((out / "eval.json").read_text())["hellaswag"]["items"] == 3


def test_compare_writes_a_table(trained, tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(trained["out_dir"], a)
    shutil.copytree(trained["out_dir"], b)
    table = tmp_path / "comparison.md"
    run_main(evaluation, monkeypatch, out_dir=str(a), splits="test,val", stride=8, **EVAL_FAST)  # other figures...
    run_main(evaluation, monkeypatch, out_dirs=f"{a},{b}", compare_file=str(table), splits="test", **EVAL_FAST)
    assert "val" not in json.load(open(a / "eval.json"))  # ...which are not kept beside the new ones either
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| model | parameters | training tokens | epochs |") and len(lines) == 4
    assert lines[2].split("|")[2:] == lines[3].split("|")[2:]  # same model, same numbers (...not reused)
    assert "test PPL" in capsys.readouterr().out


def test_eval_rejects_bad_data(trained, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(trained["data_dir"], data)
    (data / "test.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="test split .* is empty"):
        run_main(evaluation, monkeypatch, out_dir=str(copy_out_dir(trained, tmp_path)), data_dir=str(data), **EVAL_FAST)
    # data made with another tokenizer
    shutil.copy(trained["data_dir"] / "test.bin", data / "test.bin")
    (data / "meta.json").write_text(json.dumps({**trained["meta"], "tokenizer": "gpt2", "vocab_size": 50257}))
    with pytest.raises(ConfigError, match="another tokenizer"):
        run_main(evaluation, monkeypatch, out_dir=str(trained["out_dir"]), data_dir=str(data), **EVAL_FAST)
    with pytest.raises(ConfigError, match="HellaSwag file .* not found"):
        evaluation.read_hellaswag(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="must be below block_size=32"):
        evaluation.sampling_analysis(trained["model"], trained["tok"], trained["test"], prompt_tokens=16, new_tokens=16)
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        run_main(evaluation, monkeypatch, out_dir=str(trained["out_dir"]), **{**EVAL_FAST, "batch_size": 0})
    with pytest.raises(ConfigError, match="new_tokens must be at least 1"):
        run_main(evaluation, monkeypatch, out_dir=str(trained["out_dir"]), **{**EVAL_FAST, "new_tokens": 0})
    with pytest.raises(ConfigError, match="names no folder"):
        run_main(evaluation, monkeypatch, out_dirs=",", **EVAL_FAST)
    # token files that are not what meta.json says: cut off mid-token, or holding ids beyond the vocabulary
    shutil.copy(trained["data_dir"] / "meta.json", data / "meta.json")
    test_bin = trained["data_dir"] / "test.bin"
    (data / "test.bin").write_bytes(test_bin.read_bytes()[:-1])
    with pytest.raises(ConfigError, match="odd number of bytes"):
        run_main(evaluation, monkeypatch, out_dir=str(tmp_path / "out"), data_dir=str(data), **EVAL_FAST)
    np.full(8, 60000, dtype=np.uint16).tofile(data / "test.bin")
    with pytest.raises(ConfigError, match="token id 60000, outside the model's"):
        run_main(evaluation, monkeypatch, out_dir=str(tmp_path / "out"), data_dir=str(data), **EVAL_FAST)


def test_eval_defaults_fit_a_small_block_size_but_explicit_lengths_must(trained, tmp_path, monkeypatch, capsys):
    fit = evaluation.fit_in_context
    assert fit(64, 8, 64, ()) == (8, 55, "shortened to fit the model's block_size=64: --new_tokens 64 -> 55")
    assert fit(8, 8, 64, ())[:2] == (6, 1)  # the continuation first, then the prompt
    assert fit(64, 8, 40, ()) == (8, 40, None)  # fits already
    assert fit(64, 8, 64, ["new_tokens"]) == (8, 64, None)  # the user's lengths are theirs: sampling_analysis refuses
    # the trained model has block_size=32: eval.py's defaults (8 + 64 tokens) shorten, and say so
    out = copy_out_dir(trained, tmp_path)
    run_main(evaluation, monkeypatch, out_dir=str(out), device="cpu", splits="", num_prompts=2, temperatures=(1.0,),
             report=True)
    sampling = json.loads((out / "eval.json").read_text())["sampling"]
    assert (sampling["prompt_tokens"], sampling["new_tokens"]) == (8, 23)
    assert sampling["note"] == "shortened to fit the model's block_size=32: --new_tokens 64 -> 23"
    assert sampling["note"] in capsys.readouterr().err and sampling["note"] in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="must be below block_size=32"):
        run_main(evaluation, monkeypatch, out_dir=str(out), device="cpu", splits="", new_tokens=64)


def test_unwritable_outputs_are_refused_before_the_work(trained, tmp_path, monkeypatch):
    """A path that cannot take the result fails in one line before the work: no evaluation is lost."""
    (tmp_path / "file").write_text("in the way")
    for bad, message in ((tmp_path / "file" / "out.md", "cannot write"), (tmp_path, "is not a file name"),
                         ("", "is not a file name")):
        with pytest.raises(ConfigError, match=message):
            configurator.check_writable(str(bad))
    configurator.check_writable(str(tmp_path / "new" / "ok.md"))  # creates the folder, leaves no file behind
    assert os.listdir(tmp_path / "new") == []
    scored = []
    monkeypatch.setattr(evaluation, "evaluate_dir", lambda *args, **kwargs: scored.append(args))
    with pytest.raises(ConfigError, match="cannot write"):
        run_main(evaluation, monkeypatch, out_dirs=str(trained["out_dir"]),
                 compare_file=str(tmp_path / "file" / "c.md"), **EVAL_FAST)
    assert scored == []


# ================================================================================================
# shipping a trained model: sample.py --export, pretrained/, train.py --init_from=<folder>

def test_export_writes_a_small_half_precision_folder_that_loads(trained, tmp_path, monkeypatch):
    dest = tmp_path / "shipped"
    run_main(sample, monkeypatch, out_dir=str(trained["out_dir"]), export=str(dest))
    assert sorted(os.listdir(dest)) == ["log.jsonl", "meta.json", "model.pt", "tokenizer.json"]
    weights = torch.load(dest / "model.pt", weights_only=True)["model"]
    assert "lm_head.weight" not in weights  # tied to wte: stored once
    assert all(t.dtype == torch.float16 for t in weights.values())
    model, tok, meta = configurator.load_model(str(dest))
    assert meta["checkpoint_path"].endswith("model.pt")
    x = torch.tensor([configurator.encode_prompt(tok, "Tom saw a cat")])
    rounded = GPT(trained["model"].config)  # the trained weights rounded to float16: what the export holds, exactly
    rounded.load_state_dict({k: v.half().float() for k, v in trained["model"].state_dict().items()})
    assert torch.equal(model(x)[0], rounded(x)[0])
    os.remove(dest / "tokenizer.json")  # an incomplete folder: one line saying what is missing
    with pytest.raises(ConfigError, match="tokenizer.json not found"):
        configurator.load_model(str(dest))


@pytest.mark.slow
def test_fine_tune_from_an_exported_folder(trained, tmp_path, monkeypatch):
    dest = tmp_path / "shipped"
    run_main(sample, monkeypatch, out_dir=str(trained["out_dir"]), export=str(dest))
    args = [f"--init_from={dest}", f"--data_dir={trained['data_dir']}", "--device=cpu", "--max_iters=3",
            "--eval_interval=3", "--eval_iters=1", "--batch_size=4", "--block_size=32"]
    run_train(*args, f"--out_dir={tmp_path / 'tuned'}")
    log = read_log(tmp_path / "tuned")
    # it starts from the exported weights: its first evaluation is theirs, on train.py's own val batches
    from train import Batches, estimate_loss
    exported = GPT.from_checkpoint(str(dest / "model.pt")).eval()
    val = Batches(os.path.join(trained["data_dir"], "val.bin"), 32, "cpu")
    run, procs = types.SimpleNamespace(eval_iters=1, batch_size=4, seed=1337), types.SimpleNamespace(rank=0, world_size=1, ddp=False,
                                                                                          device="cpu")
    with torch.no_grad():
        expected = estimate_loss(exported, {"val": val}, run, contextlib.nullcontext(), procs)["val"]
    assert log[0]["iter"] == 0 and log[0]["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert math.isfinite(log[-1]["val_loss"])
    # the fine-tune's own dropout applies, not the one the shipped model was trained with (0)
    run_train(*args, f"--out_dir={tmp_path / 'dropout'}", "--dropout=0.5")
    assert train_losses(tmp_path / "dropout")[3] != train_losses(tmp_path / "tuned")[3]


SHIPPED = os.path.join(REPO, "pretrained", "tinystories-cpu")


@pytest.mark.skipif(not os.path.isdir(SHIPPED), reason="no shipped model in this checkout")
def test_shipped_model_loads_and_stops_at_end_of_text():
    model, tok, meta = configurator.load_model(SHIPPED)
    size = sum(os.path.getsize(os.path.join(SHIPPED, f)) for f in os.listdir(SHIPPED))
    assert size < 10e6 and meta["vocab_size"] == model.config.vocab_size
    prompt = torch.tensor([configurator.encode_prompt(tok, "Once upon a time")])
    steps = list(model.stream(prompt, 400, temperature=0.8, top_k=50, eot_id=tok.eot_id,
                              generator=torch.Generator().manual_seed(0)))
    assert int(steps[-1]) == tok.eot_id and len(steps) < 400  # a story that ends by itself
    text = tok.decode(torch.cat(steps[:-1], 1)[0].tolist())
    assert len(text.split()) > 20


@pytest.mark.skipif(not os.path.isdir(SHIPPED), reason="no shipped model in this checkout")
def test_shipped_model_exports_to_hugging_face_with_the_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    model, tok, meta = configurator.load_model(SHIPPED)
    model.save_pretrained(tmp_path / "hf", eot_id=tok.eot_id)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.tensor([configurator.encode_prompt(tok, "Once upon a time there was a little dog.")])
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x)[0], atol=1e-4)


@pytest.mark.skipif(not os.path.isdir(SHIPPED), reason="no shipped model in this checkout")
def test_shipped_model_exports_with_its_tokenizer_for_the_text_generation_pipeline(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    dest = tmp_path / "hf"
    run_main(sample, monkeypatch, out_dir=SHIPPED, export_hf=str(dest))
    model, tok, _ = configurator.load_model(SHIPPED)
    hf_tok = transformers.AutoTokenizer.from_pretrained(dest)
    stories = tiny_corpus(6, 0)
    for text in BPE_TEXTS + [EOT.join(stories), "\n\n".join(stories).replace(". ", ".  ")]:
        assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text), text
    generate = transformers.pipeline("text-generation", model=str(dest), device="cpu")
    for prompt in ("Once upon a time", ""):  # "": a fresh story after <|endoftext|>, as in sample.py
        ids = configurator.encode_prompt(tok, prompt)
        assert hf_tok(prompt).input_ids == ids
        greedy = model.generate(torch.tensor([ids]), 60, temperature=0.0, eot_id=tok.eot_id)[0].tolist()
        hf = generate(prompt, do_sample=False, max_new_tokens=60, return_tensors=True)[0]["generated_token_ids"]
        assert list(hf) == greedy
        story = generate(prompt, do_sample=False, max_new_tokens=60)[0]["generated_text"]
        assert story == prompt + tok.decode([i for i in greedy[len(ids):] if i != tok.eot_id])


def test_export_hf_mistakes_are_one_line_and_leave_no_files(trained, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ConfigError, match="cannot write"):
        run_main(sample, monkeypatch, out_dir=str(trained["out_dir"]), export_hf=str(tmp_path / "file" / "hf"))
    out = copy_out_dir(trained, tmp_path)
    os.remove(out / "tokenizer.json")
    with pytest.raises(ConfigError, match="tokenizer.json not found"):
        run_main(sample, monkeypatch, out_dir=str(out), export_hf=str(tmp_path / "hf"))

    def no_room(*args, **kwargs):
        raise ValueError("no room")

    monkeypatch.setattr(bpe.Tokenizer, "save_hf", no_room)
    with pytest.raises(ConfigError, match="cannot export .*best.pt for Hugging Face: no room"):
        run_main(sample, monkeypatch, out_dir=str(trained["out_dir"]), export_hf=str(tmp_path / "hf"))
    assert os.listdir(tmp_path / "hf") == []  # the weights written before the failure are gone with it


@pytest.mark.parametrize("config_file", sorted(os.listdir(os.path.join(REPO, "config"))))
def test_config_files_hold_only_known_settings_of_the_right_type(config_file):
    import train
    config = dict(train.DEFAULTS)
    assert configure(config, [os.path.join(REPO, "config", config_file)])
    train.check_settings(config)  # values a run can use, and a model that can be built
    GPTConfig(**{k: config[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")})


# ================================================================================================
# bench.py

@pytest.mark.slow
def test_bench_train_compares_and_profiles_at_a_toy_size():
    """The training benchmark end to end (both implementations, the ratio, the profile), so that the command
    a GPU session runs is known to work before the GPU is there."""
    proc = subprocess.run([sys.executable, "bench.py", "train", "--repeats=1", "--steps=1", "--batch_size=2",
                           "--block_size=64", "--profile=True", "--attention=math,flash"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "| Hugging Face GPT2LMHeadModel (sdpa, eager) |" in proc.stdout and "| ours, eager |" in proc.stdout
    # its step is inside the profile (a share under 1% on a busy machine, where the matmuls slow down most)
    assert float(re.search(r"by kind: optimizer ([\d.]+)%", proc.stdout)[1]) > 0
    assert "the optimizer step (clipping + AdamW) alone" in proc.stdout
