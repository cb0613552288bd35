"""
Turn a text dataset into the token files train.py reads.

    python prepare.py --dataset=data_sample/tinystories        # the TinyStories sample shipped here: works offline
    python prepare.py --dataset=tinystories                    # roneneldan/TinyStories from the Hugging Face hub

It writes, in data/<name>/ (or --out_dir):

    train.bin, val.bin, test.bin  the token ids of every document, each followed by the end-of-text id, back to
                                  back as raw uint16. train.py opens them with np.memmap and reads random windows
                                  without ever loading a whole file into memory.
    tokenizer.json                the BPE tokenizer (bpe.py) trained on the train split; absent with --tokenizer=gpt2
    meta.json                     vocab size, end-of-text id, dtype, per split the documents, tokens and UTF-8
                                  bytes (eval.py divides by the bytes for bits per byte), the source and the arguments

Why uint16: every vocabulary we use (4,096 by default, 32,000, GPT-2's 50,257) is below 2**16 = 65,536, so two bytes
per token suffice: half the disk and page cache of int32, a quarter of int64.

Where the data comes from: a dataset name (HUB below, streamed through the `datasets` library) or a local path: a .txt
file (documents separated by lines holding <|endoftext|>; a file without them is one running text), a .jsonl file (a
"text" field per line), a .parquet file (a "text" column), or a directory of such files named by split (train*,
val* / valid* / validation*, test*). A .txt or .jsonl file may be compressed (train.txt.xz, train.jsonl.gz): it is
decompressed as it is read.

Splits: the dataset's own train / val / test when it has all three. With train + validation only (TinyStories), the
validation documents are divided into a val half and a test half. With one split, val and test are carved from its
end (val_fraction, test_fraction of its documents, or of a running text's pieces). The tokenizer learns from the train
split only, so nothing about val or test leaks into training or model selection; test.bin is for the final report.

Memory: documents are streamed from the source in batches, encoded by num_proc worker processes and appended to the
files as they come back, so peak memory depends on the batch size, never on the size of the corpus.
"""
import collections
import contextlib
import itertools
import json
import lzma
import multiprocessing
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
from tqdm import tqdm

import bpe
from configurator import ConfigError, atomic_write, configure, json_lines, one_line_if_full, open_text

# -----------------------------------------------------------------------------
# settings, overridden from the command line: python prepare.py --dataset=... --vocab_size=32000
dataset = "tinystories"        # a name in HUB, or a local .txt / .jsonl / .parquet file or a directory of them
out_dir = ""                   # default: data/<name of the dataset>
tokenizer = "bpe"              # "bpe": train bpe.py on the train split; "gpt2": tiktoken's GPT-2; or a tokenizer file
vocab_size = 4096              # for "bpe"; at most 65,536 so that ids fit in uint16
bpe_train_bytes = 50_000_000   # the tokenizer learns from at most this much of the train split (about a minute)
val_fraction = 0.01            # carved from the end of a dataset that has a single split
test_fraction = 0.01
num_proc = os.cpu_count() or 1  # encoding processes
force = False                  # prepare again even if out_dir already holds a run with the same arguments
# -----------------------------------------------------------------------------

HUB = {  # name: (repository on the Hugging Face hub, configuration, whether its rows are the lines of a running text)
    "tinystories": ("roneneldan/TinyStories", None, False),
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1", True),
    "openwebtext": ("Skylion007/openwebtext", None, False),
}
SPLITS = ("train", "val", "test")
EOT = "<|endoftext|>"
PIECE_CHARS = 1 << 14   # a running text is handed on in pieces of about this many characters
BATCH_CHARS = 1 << 20   # text per task sent to a worker: amortizes the hand-off, bounds the memory in flight
MAX_VOCAB = 1 << 16     # the ids must fit in uint16
SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_sample", "tinystories")  # shipped, offline


def fail(message):
    """Bad input ends the run with one line, no traceback."""
    raise ConfigError(message)


# ---------------------------------------------------------------- reading: every format yields (text, ends_document)

def cut_is_safe(previous_line, line):
    """Whether GPT-2's pre-tokenizer splits the text between previous_line (ending in a newline) and line anyway,
    so the two sides encode alone exactly as they do together: a line starting with a visible character after one
    ending in a visible character ("...end.\n" | "Next"), or a line starting with one space and a visible
    character (WikiText's " = Title =" lines), where the whitespace run before it ends at the newline either way."""
    return bool((line[:1].strip() and previous_line[-2:-1].strip()) or (line[:1] == " " and line[1:2].strip()))


def text_items(lines):
    """Documents from lines of text separated by lines holding <|endoftext|>, as (text, ends_document) items.

    A long document (a file without separators is one long running text) comes in pieces of about PIECE_CHARS so
    that memory stays bounded and val / test can be carved from it. A piece ends only where cut_is_safe says GPT-2's
    pre-tokenizer splits the text anyway, so encoding the pieces one by one gives exactly the tokens of the whole."""
    piece, size, continued = [], 0, False
    for line in lines:
        if line.strip() == EOT:
            text = "".join(piece).removesuffix("\n")  # that newline belongs to the separator line
            if continued or text.strip():
                yield text, True
            piece, size, continued = [], 0, False
            continue
        if size >= PIECE_CHARS and cut_is_safe(piece[-1], line):
            yield "".join(piece), False
            piece, size, continued = [], 0, True
        piece.append(line)
        size += len(line)
    text = "".join(piece)
    if continued or text.strip():
        yield text, True


@contextlib.contextmanager
def reading_errors(path):
    """Turn a decoding error while reading `path` into one line naming the file and the byte offset (bpe.read_text
    reads the raw bytes again to find it; the offset in a compressed file's bytes would mean nothing), and a
    broken compressed file into one line too."""
    try:
        yield
    except (EOFError, OSError, lzma.LZMAError) as e:  # gzip's BadGzipFile is an OSError; a cut file ends early
        if os.path.splitext(path)[1] not in bpe.COMPRESSED:
            raise
        fail(f"{path} cannot be decompressed ({type(e).__name__}: {e}); copy or download it again")
    except UnicodeDecodeError as e:
        if os.path.splitext(path)[1] in bpe.COMPRESSED:
            fail(f"{path} does not hold UTF-8 text once decompressed ({e.reason}); convert it to UTF-8 first")
        try:
            for _ in bpe.read_text(path):
                pass
        except ValueError as e:
            fail(f"{e}; convert it to UTF-8 first")
        raise


def read_txt(path):
    with reading_errors(path), open_text(path) as f:
        yield from text_items(f)


def read_jsonl(path):
    with reading_errors(path):
        for number, record in json_lines(path):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                fail(f"{path}, line {number}: no \"text\" field (each line must be like {{\"text\": \"...\"}})")
            yield record["text"], True


def read_parquet(path):
    import pyarrow
    import pyarrow.parquet as pq  # both come with `datasets`
    try:
        table = pq.ParquetFile(path)
    except pyarrow.ArrowException as e:
        fail(f"{path} is not a readable Parquet file ({e})")
    if "text" not in table.schema_arrow.names:
        fail(f"{path}: no \"text\" column (it has {', '.join(table.schema_arrow.names)})")
    for batch in table.iter_batches(columns=["text"], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, (str, type(None))):
                fail(f"{path}: the \"text\" column holds {type(text).__name__} values, not strings")
            yield text or "", True


READERS = {".txt": read_txt, ".jsonl": read_jsonl, ".parquet": read_parquet}


def name_and_format(path):
    """A data file's name without its extensions, and the reader's key: 'train.txt.xz' -> ('train', '.txt').
    Text formats may be compressed (bpe.COMPRESSED); Parquet compresses itself."""
    stem, ext = os.path.splitext(os.path.basename(os.path.normpath(path)))
    if ext in bpe.COMPRESSED and os.path.splitext(stem)[1] in (".txt", ".jsonl"):
        stem, ext = os.path.splitext(stem)
    return stem, ext


@dataclass
class Stream:
    """One split of the source: a fresh pass over its (text, ends_document) items on every call of `items`."""
    items: Callable[[], Iterator[tuple]]
    known_count: Optional[int] = None  # the number of items, when the source says so without being read

    def count(self):
        if self.known_count is not None:
            return self.known_count
        return sum(1 for _ in tqdm(self.items(), desc="counting documents", unit=" docs", leave=False))


def split_of(name):
    """train* -> train, val* / valid* / validation* -> val, test* -> test, anything else -> None."""
    return next((split for split in SPLITS if name.lower().startswith(split)), None)


def file_stream(paths):
    for path in paths:
        if name_and_format(path)[1] not in READERS:
            fail(f"{path}: unsupported file type (use {', '.join(READERS)}; .txt and .jsonl may end in .gz or .xz)")
    return Stream(lambda: itertools.chain.from_iterable(READERS[name_and_format(p)[1]](p) for p in paths))


def local_streams(path):
    """The splits of a local file (one split) or of a directory whose files are named by split."""
    if os.path.isfile(path):
        return {"train": file_stream([path])}
    by_split = collections.defaultdict(list)
    for name in sorted(os.listdir(path)):
        if split_of(name) and name_and_format(name)[1] in READERS:
            by_split[split_of(name)].append(os.path.join(path, name))
    if "train" not in by_split:
        fail(f"{path} has no train* file (expected files named train*, val* / valid* / validation*, test*, "
             f"ending in {', '.join(READERS)}, the first two optionally compressed as .gz or .xz)")
    return {split: file_stream(paths) for split, paths in by_split.items()}


def hub_streams(name):
    """The splits of a hub dataset, streamed: never downloaded whole, never fully in memory."""
    import datasets  # slow to import, and only needed here
    import huggingface_hub
    huggingface_hub.utils.logging.set_verbosity_error()  # offline it warns at each of its retries; we say it once
    repo, config, running_text = HUB[name]
    print(f"streaming {repo} from the Hugging Face hub")
    try:
        splits = datasets.load_dataset(repo, config, streaming=True)
    except Exception as e:  # offline this is a ConnectionError after a long wait; any failure means: use a local copy
        fail(f"the Hugging Face hub did not answer for {repo} ({type(e).__name__}); offline, prepare the TinyStories "
             f"sample shipped in this repository, python prepare.py --dataset={os.path.relpath(SAMPLE)}, or a local "
             f"copy of the data, --dataset=path/to/{name}")
    streams = {}
    for split_name, rows in splits.items():
        if running_text:  # wikitext: each row is one line of the articles
            streams[split_of(split_name)] = Stream(lambda rows=rows: text_items(row["text"] for row in rows))
        else:
            info = rows.info.splits.get(split_name) if rows.info.splits else None
            streams[split_of(split_name)] = Stream(lambda rows=rows: ((row["text"], True) for row in rows),
                                                   info.num_examples if info else None)
    return streams


# ---------------------------------------------------------------- splits

def carve(n, fraction):
    return max(1, round(n * fraction))


def plan_splits(streams, val_fraction, test_fraction):
    """Where each output split comes from: a list of (stream, [(split, number of items, None for the rest), ...]),
    train first, and a sentence saying how, for meta.json."""
    train, val, test = streams["train"], streams.get("val"), streams.get("test")
    if val and test:
        return [(train, [("train", None)]), (val, [("val", None)]), (test, [("test", None)])], "the dataset's own"
    if val:
        n = val.count()
        if n < 2:
            fail(f"the validation split has {n} document(s): too few to divide into val and test")
        return [(train, [("train", None)]), (val, [("val", n // 2), ("test", None)])], "validation halved: val, test"
    n = train.count()
    n_val = carve(n, val_fraction)
    n_test = 0 if test else carve(n, test_fraction)
    if n - n_val - n_test < 1:
        fail(f"the train split has {n} document(s): too few to carve val and test from")
    if test:
        return [(train, [("train", n - n_val), ("val", None)]), (test, [("test", None)])], "val carved from train's end"
    return ([(train, [("train", n - n_val - n_test), ("val", n_val), ("test", None)])],
            "val and test carved from the end of the single split")


def labelled_items(plan):
    """(split, text, ends_document) for the whole dataset in one pass, train first."""
    for stream, parts in plan:
        items = stream.items()
        for split, count in parts:
            for i, (text, ends_document) in enumerate(itertools.islice(items, count)):
                # a carved split closes its last document, even one cut in the middle of a running text
                yield split, text, ends_document or i + 1 == count


# ---------------------------------------------------------------- tokenizer

def train_texts(plan, limit):
    """The train split's texts, at most `limit` UTF-8 bytes of them: all the tokenizer ever sees. train_bpe joins
    the strings it is given, so each document is followed by <|endoftext|>, across which it never merges."""
    seen = 0
    with tqdm(desc="reading for the tokenizer", unit="B", unit_scale=True, total=limit) as bar:
        for split, text, ends_document in labelled_items(plan):
            if split != "train" or seen >= limit:
                break
            data = text.encode("utf-8")[: limit - seen]
            seen += len(data)
            bar.update(len(data))
            yield data.decode("utf-8", errors="ignore")  # the cut may fall inside a character
            if ends_document:
                yield EOT


def make_tokenizer(kind, plan, vocab_size, bpe_train_bytes, num_proc):
    """Train, load or fetch the tokenizer; returns it and its name for meta.json: "gpt2", or "tokenizer.json" for a
    trained or loaded one, which prepare saves in out_dir so that the directory is self-contained."""
    if kind == "gpt2":
        try:
            return bpe.load_tokenizer("gpt2"), "gpt2"
        except Exception as e:  # tiktoken downloads GPT-2's files once; offline they must already be in its cache
            fail(f"cannot load GPT-2's tokenizer ({type(e).__name__}); offline, point TIKTOKEN_CACHE_DIR at a copy "
                 f"of its files (export TIKTOKEN_CACHE_DIR=/path/to/cache)")
    try:
        if kind == "bpe":
            print(f"training a {vocab_size:,}-token BPE tokenizer on at most {bpe_train_bytes:,} bytes of train")
            tok = bpe.train_bpe(train_texts(plan, bpe_train_bytes), vocab_size, special_tokens=[EOT],
                                num_workers=num_proc, progress=True)
            if tok.vocab_size < vocab_size:  # every pair of adjacent tokens in the corpus is merged already
                print(f"note: the corpus allows only {tok.vocab_size:,} tokens, fewer than --vocab_size={vocab_size:,}",
                      file=sys.stderr)
        elif os.path.isfile(kind):
            tok = bpe.load_tokenizer(kind)
            if tok.eot_id is None:  # it ends every document in the .bin files
                fail(f"--tokenizer={kind} has no {EOT} special token, which ends every document; use a tokenizer "
                     f"saved by prepare.py or bpe.py (both add it), or --tokenizer=bpe")
        else:
            fail(f"--tokenizer={kind!r}: not bpe, gpt2 or an existing tokenizer file")
    except ValueError as e:  # bpe.py's messages for an empty corpus or a broken tokenizer file
        fail(str(e))
    return tok, "tokenizer.json"


# ---------------------------------------------------------------- encoding

_tokenizer = None  # each worker process loads its own copy


def init_worker(spec):
    global _tokenizer
    _tokenizer = bpe.load_tokenizer(spec)


def encode_batch(task):
    """In a worker: the uint16 token ids of a batch of items, each document followed by end-of-text."""
    split, items = task
    ids, docs, nbytes = [], 0, 0
    for text, ends_document in items:
        ids.extend(_tokenizer.encode_ordinary(text))  # tiktoken's Rust BPE; a literal "<|endoftext|>" stays text
        if ends_document:
            ids.append(_tokenizer.eot_id)
            docs += 1
        nbytes += len(text.encode("utf-8"))  # the documents' own bytes; the separators are not counted
    return split, np.array(ids, dtype=np.uint16), docs, nbytes


def batches(items):
    """Consecutive items of one split, grouped into tasks of about BATCH_CHARS characters."""
    batch, size, batch_split = [], 0, None
    for split, text, ends_document in items:
        if batch and (split != batch_split or size >= BATCH_CHARS):
            yield batch_split, batch
            batch, size = [], 0
        batch_split = split
        batch.append((text, ends_document))
        size += len(text)
    if batch:
        yield batch_split, batch


def map_in_order(fn, tasks, num_proc, initializer, initargs):
    """fn over tasks in num_proc processes, results in order. At most 2 * num_proc tasks are in flight: Pool.imap
    would read its whole input ahead, and with it the whole corpus into memory."""
    if num_proc == 1:
        initializer(*initargs)
        yield from map(fn, tasks)
        return
    with multiprocessing.Pool(num_proc, initializer, initargs) as pool:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def encode_splits(plan, spec, paths, num_proc):
    """Stream the dataset through the workers into the files `paths` names ({split: path}); returns per-split
    counts."""
    stats = {split: {"docs": 0, "tokens": 0, "bytes": 0} for split in SPLITS}
    with contextlib.ExitStack() as stack:
        files = {split: stack.enter_context(open(paths[split], "wb")) for split in SPLITS}
        bar = stack.enter_context(tqdm(desc="encoding", unit="B", unit_scale=True))
        tasks = batches(labelled_items(plan))
        for split, ids, docs, nbytes in map_in_order(encode_batch, tasks, num_proc, init_worker, (spec,)):
            # a full disk named here: the atomic_write of each of the three files sees it, the last opened first
            with one_line_if_full(paths[split]):
                ids.tofile(files[split])
            stats[split]["docs"] += docs
            stats[split]["tokens"] += len(ids)
            stats[split]["bytes"] += nbytes
            bar.update(nbytes)
            bar.set_postfix_str(split)
        for split in SPLITS:
            if stats[split]["docs"] == 0:
                fail(f"the {split} split is empty")  # before prepare renames anything: out_dir stays as it was
            if stats[split]["bytes"] == 0:
                fail(f"the {split} split's {stats[split]['docs']} documents hold no text")
    return stats


# ---------------------------------------------------------------- files

def finished_run(out_dir, args):
    """The meta.json of a complete earlier run with the same arguments, or None."""
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if meta.get("args") != args:
        return None
    for split in SPLITS:
        path = os.path.join(out_dir, f"{split}.bin")
        if not os.path.isfile(path) or os.path.getsize(path) != 2 * meta["splits"][split]["tokens"]:
            return None
    if meta["tokenizer"] != "gpt2" and not os.path.isfile(os.path.join(out_dir, meta["tokenizer"])):
        return None
    return meta


def summary(meta):
    lines = [f"{'split':<6} {'docs':>12} {'bytes':>15} {'tokens':>15} {'bytes/token':>12}"]
    for split in SPLITS:
        s = meta["splits"][split]
        lines.append(f"{split:<6} {s['docs']:>12,} {s['bytes']:>15,} {s['tokens']:>15,} "
                     f"{s['bytes'] / max(s['tokens'], 1):>12.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the whole job

def prepare(dataset, out_dir=None, *, tokenizer=tokenizer, vocab_size=vocab_size, bpe_train_bytes=bpe_train_bytes,
            val_fraction=val_fraction, test_fraction=test_fraction, num_proc=num_proc, force=force):
    """Prepare `dataset` (a HUB name or a local path) into out_dir (default data/<name>); returns out_dir."""
    if tokenizer == "bpe" and not 257 <= vocab_size <= MAX_VOCAB:
        fail(f"--vocab_size={vocab_size}: must be between 257 (256 bytes + end-of-text) and {MAX_VOCAB:,} (uint16 ids)")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        fail("--val_fraction and --test_fraction must be above 0 and sum to less than 1")
    if num_proc < 1 or bpe_train_bytes < 1:
        fail("--num_proc and --bpe_train_bytes must be at least 1")
    if dataset in HUB:
        name = dataset
    elif os.path.exists(dataset):
        name = name_and_format(dataset)[0]
    else:
        fail(f"--dataset={dataset!r}: neither a dataset name ({', '.join(HUB)}) nor an existing file or directory")
    out_dir = out_dir or os.path.join("data", name)
    try:
        os.makedirs(out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        fail(f"cannot write to {out_dir}: {e.strerror}")

    # what decides the contents of the files (num_proc and force do not)
    args = dict(dataset=dataset, tokenizer=tokenizer, vocab_size=vocab_size, bpe_train_bytes=bpe_train_bytes,
                val_fraction=val_fraction, test_fraction=test_fraction)
    meta = None if force else finished_run(out_dir, args)
    if meta:
        print(f"{out_dir} already holds this dataset prepared with the same arguments; --force prepares it again")
    else:
        streams = hub_streams(dataset) if dataset in HUB else local_streams(dataset)
        plan, split_rule = plan_splits(streams, val_fraction, test_fraction)
        tok, tokenizer_name = make_tokenizer(tokenizer, plan, vocab_size, bpe_train_bytes, num_proc)
        if tok.vocab_size > MAX_VOCAB:
            fail(f"the tokenizer has {tok.vocab_size:,} tokens: too many for uint16 ids (at most {MAX_VOCAB:,})")
        # the new files are written under temporary names and renamed into place together when the block ends, so
        # a run that fails, however late, leaves the previous finished dataset in out_dir as it was
        with contextlib.ExitStack() as stack:
            def new_file(name):
                return stack.enter_context(atomic_write(os.path.join(out_dir, name)))
            spec = "gpt2"  # what the workers load the tokenizer from
            if tokenizer_name != "gpt2":
                spec = new_file(tokenizer_name)
                tok.save(spec)
            stats = encode_splits(plan, spec, {split: new_file(f"{split}.bin") for split in SPLITS}, num_proc)
            # all complete: from the first rename until the new meta.json lands, the directory must look incomplete
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, "meta.json"))
        meta = {
            "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id,
            "dtype": "uint16",
            "tokenizer": tokenizer_name,
            "splits": stats,  # bytes: UTF-8 bytes of the documents; the <|endoftext|> separators are not counted
            "source": f"{HUB[dataset][0]} (Hugging Face hub)" if dataset in HUB else os.path.abspath(dataset),
            "split_rule": split_rule,
            "args": args,
        }
        with atomic_write(os.path.join(out_dir, "meta.json")) as tmp, open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
    print(summary(meta))
    return out_dir


if __name__ == "__main__":
    configure(globals())
    prepare(dataset, out_dir or None, tokenizer=tokenizer, vocab_size=vocab_size, bpe_train_bytes=bpe_train_bytes,
            val_fraction=val_fraction, test_fraction=test_fraction, num_proc=num_proc, force=force)
