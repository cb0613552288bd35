"""
Byte-level BPE, the tokenizer of GPT-2: train one on your corpus, or load OpenAI's.

Text is UTF-8 bytes, so the 256 byte values are the starting vocabulary and any string can be encoded.
Training repeatedly takes the most frequent pair of adjacent tokens and merges it into a new token,
so frequent words end up as one token and rare ones as a few pieces. Two rules keep tokens sensible:
text is first cut into pre-tokens with GPT-2's regex (words, numbers, punctuation and whitespace runs
apart), and into documents at special tokens such as <|endoftext|>; merges never cross either cut.
Encoding replays the learned merges, lowest rank first, on each pre-token.

The idea fits in one screen: `merge`, `train_bpe_reference` and `Tokenizer.encode_reference`. The fast
paths sit apart: `train_bpe` counts pre-tokens in parallel processes and keeps pair counts
incrementally, and `Tokenizer.encode` runs tiktoken's Rust BPE on the learned ranks. Tests prove each
fast path equal to its reference.

    tok = train_bpe("data/tinystories/train.txt", vocab_size=8192)
    tok.save("tokenizer.json")
    Tokenizer.load("tokenizer.json").decode(tok.encode("Once upon a time"))
"""
import codecs
import gzip
import heapq
import json
import lzma
import multiprocessing
import os
from collections import Counter, defaultdict
from functools import partial
from itertools import chain, islice

import regex
import tiktoken
from tqdm import tqdm

# GPT-2's pre-tokenizer: contractions, words, numbers and punctuation (each with one optional leading
# space), then whitespace runs. `\s+(?!\S)` leaves the last space of a run to the word that follows.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
_WHITESPACE = regex.compile(r"\s")
COMPRESSED = {".gz": gzip.open, ".xz": lzma.open}  # files read as the text they hold, so data can ship small


# ---------------------------------------------------------------------------------------------------
# The idea


def merge(ids, pair, new_id):
    """Replace each occurrence of `pair` in `ids` by `new_id`, scanning left to right (so "aaa" -> "aa a")."""
    out, i = [], 0
    while i < len(ids):
        if ids[i] == pair[0] and i + 1 < len(ids) and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_reference(text, vocab_size, special_tokens=(EOT,), pattern=GPT2_SPLIT_PATTERN):
    """BPE training the slow, obvious way: recount every pair of every word before each merge.
    Same result as `train_bpe`, including the tie-break (see there); kept as the readable reference."""
    num_merges = _num_merges(vocab_size, special_tokens)
    words = {tuple(word): n for word, n in _count_words([text], special_tokens, pattern).items()}
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(merges) < num_merges:
        pair_counts = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] += n
        if not pair_counts:
            break  # every word is a single token: nothing left to merge
        best = max(pair_counts, key=lambda p: (pair_counts[p], vocab[p[0]], vocab[p[1]]))
        new_id = 256 + len(merges)
        merges.append((vocab[best[0]], vocab[best[1]]))
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        words = {tuple(merge(word, best, new_id)): n for word, n in words.items()}
    return Tokenizer(vocab, merges, special_tokens, pattern)


# ---------------------------------------------------------------------------------------------------
# Pre-tokenization: text -> {pre-token bytes: count}, in parallel for large inputs


def _special_regex(special_tokens):
    """A regex whose `split` cuts text into [text, special, text, special, ..., text]. Longest first, so
    a special token that contains another one wins."""
    alternatives = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(s) for s in alternatives) + ")") if alternatives else None


def _count_pretokens(text, special_tokens, pattern):
    """Counts of the pre-tokens of `text`, as UTF-8 bytes. Special tokens only separate documents."""
    split = _special_regex(special_tokens)
    documents = split.split(text)[::2] if split else [text]
    compiled = regex.compile(pattern)
    counts = Counter()
    for document in documents:
        counts.update(compiled.findall(document))
    return {word.encode("utf-8"): n for word, n in counts.items()}


def _chunks_at_specials(pieces, special_tokens, chunk_chars=1 << 19):
    """Join the strings `pieces` and re-cut them into chunks of about `chunk_chars` that each end just
    after a special token, so every chunk can be pre-tokenized on its own with the same result.
    Without special tokens there is nowhere safe to cut, and the whole text is one chunk."""
    overlap = max(map(len, special_tokens), default=1) - 1  # a special token may straddle two pieces
    buffered, size, cut, recent = [], 0, 0, ""  # cut: the end of the last special token in the buffer
    for piece in pieces:
        window = recent + piece
        for s in special_tokens:
            if (i := window.rfind(s)) >= 0:
                cut = max(cut, size - len(recent) + i + len(s))
        buffered.append(piece)
        size += len(piece)
        recent = window[-overlap:] if overlap else ""
        if size >= chunk_chars and cut:
            text = "".join(buffered)
            yield text[:cut]
            buffered, size, cut = [text[cut:]], size - cut, 0
    if size:
        yield "".join(buffered)


def read_text(path, block_bytes=1 << 20):
    """Yield the text of a UTF-8 file in blocks. Decoding the raw bytes ourselves, rather than opening the
    file as text, keeps Windows line ends as they are and lets a decoding error name the byte offset."""
    if not os.path.isfile(path):
        raise ValueError(f"training input {path!r} is not a file")
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with COMPRESSED.get(os.path.splitext(path)[1], open)(path, "rb") as f:
        for block in chain(iter(lambda: f.read(block_bytes), b""), [b""]):
            undecoded = len(decoder.getstate()[0])  # the start of a character cut by the previous block
            try:
                yield decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not UTF-8: {e.reason} at byte offset {offset - undecoded + e.start}"
                                 ) from None
            offset += len(block)


def _count_words(input, special_tokens, pattern, num_workers=None):
    """{pre-token bytes: count} over `input` (a file path or an iterable of strings), counted in
    `num_workers` processes (default: one per CPU) when the input is bigger than one chunk."""
    pieces = read_text(input) if isinstance(input, (str, os.PathLike)) else input
    chunks = _chunks_at_specials(pieces, special_tokens)
    first_two = list(islice(chunks, 2))
    count_chunk = partial(_count_pretokens, special_tokens=special_tokens, pattern=pattern)
    if len(first_two) < 2 or num_workers == 1:
        counts = _sum_counts(map(count_chunk, chain(first_two, chunks)))
    else:
        with multiprocessing.Pool(num_workers or os.cpu_count()) as pool:
            counts = _sum_counts(pool.imap_unordered(count_chunk, chain(first_two, chunks)))
    if not counts:
        raise ValueError("empty corpus: there is no text to train on")
    return counts


def _sum_counts(counters):
    total = Counter()
    for counts in counters:
        total.update(counts)
    return total


# ---------------------------------------------------------------------------------------------------
# Fast training


def _descending(token):
    """A key that sorts tokens in descending byte order, so heapq's minimum is the greatest pair:
    each byte inverted, and an end mark above every inverted byte, so that b"ab" comes before b"a"."""
    return tuple(255 - b for b in token) + (256,)


def train_bpe(input, vocab_size, special_tokens=(EOT,), pattern=GPT2_SPLIT_PATTERN, num_workers=None, progress=False):
    """Train a byte-level BPE tokenizer on `input`: a path to a UTF-8 text file, or an iterable of
    strings that are joined (for example the lines of an open file).

    Ids: 0-255 are the bytes, 256.. the merges in the order learned, then `special_tokens`;
    `vocab_size` counts all three. It comes out smaller when the corpus runs out of pairs to merge.

    Deterministic merges: the most frequent adjacent pair wins; a tie goes to the lexicographically
    greater pair, comparing (bytes_a, bytes_b) as Python bytes. A rule on the bytes, not on the ids
    or on dict order, so the same corpus gives the same tokenizer in any process, on any machine.

    Why it is fast: pre-tokens are counted once (in parallel, chunked at special tokens), and merging
    works on the distinct words, each weighted by its count. After a merge only the words that contain
    the pair change; an index pair -> words finds them, their pair counts are updated by difference, and
    a heap holds the counts. Heap entries are never removed: a popped entry whose count is out of date
    is skipped (the current count was pushed when it changed)."""
    num_merges = _num_merges(vocab_size, special_tokens)
    word_counts = _count_words(input, special_tokens, pattern, num_workers)
    words = [list(word) for word in word_counts]
    counts = list(word_counts.values())
    pair_counts = defaultdict(int)
    words_with = defaultdict(set)  # pair -> indices of the words that contain it (or once did)
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += counts[i]
            words_with[pair].add(i)

    vocab = {i: bytes([i]) for i in range(256)}
    descending = [_descending(vocab[i]) for i in range(256)]
    heap = [(-n, descending[a], descending[b], (a, b)) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    bar = tqdm(total=num_merges, desc="learning merges", unit=" merges", disable=not progress, leave=False)
    while len(merges) < num_merges and heap:
        negative_count, _, _, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -negative_count:
            continue  # stale entry
        new_id = 256 + len(merges)
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        bar.update()
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        descending.append(_descending(vocab[new_id]))

        change = defaultdict(int)
        for i in words_with.pop(pair):
            word = words[i]
            merged = merge(word, pair, new_id)
            if len(merged) == len(word):
                continue  # an earlier merge already took the pair out of this word
            for old in zip(word, word[1:]):
                change[old] -= counts[i]
            for new in zip(merged, merged[1:]):
                change[new] += counts[i]
                if new_id in new:
                    words_with[new].add(i)
            words[i] = merged
        for p, delta in change.items():
            if delta:
                pair_counts[p] += delta
                if pair_counts[p]:
                    heapq.heappush(heap, (-pair_counts[p], descending[p[0]], descending[p[1]], p))
                else:
                    del pair_counts[p]
    bar.close()
    return Tokenizer(vocab, merges, special_tokens, pattern)


def _num_merges(vocab_size, special_tokens):
    if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
        raise ValueError(f"special tokens must be distinct non-empty strings, got {list(special_tokens)!r}")
    smallest = 256 + len(special_tokens)
    if vocab_size < smallest:
        raise ValueError(f"vocab_size={vocab_size} is too small: it must be at least 256 bytes + "
                         f"{len(special_tokens)} special tokens = {smallest}")
    return vocab_size - smallest


# ---------------------------------------------------------------------------------------------------
# The tokenizer


def _bytes_to_unicode():
    """GPT-2's map from each byte to a printable character ('Ġ' for space, 'Ċ' for newline), which makes
    tokens readable in JSON: printable ASCII and Latin-1 stand for themselves, the rest are shifted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(shifted)}}


_BYTE_TO_CHAR = _bytes_to_unicode()
_SPELLING = str.maketrans({chr(b): c for b, c in _BYTE_TO_CHAR.items()})  # applied to the Latin-1 decoding
_UNSPELLING = str.maketrans({c: chr(b) for b, c in _BYTE_TO_CHAR.items()})
_NOT_SPELLING = regex.compile("[^" + regex.escape("".join(_BYTE_TO_CHAR.values())) + "]")


def _spell(token):
    """b" the" -> "Ġthe": a token as it appears in tokenizer files."""
    return token.decode("latin-1").translate(_SPELLING)


def _unspell(text):
    if _NOT_SPELLING.search(text):
        raise ValueError(f"token {text!r} has characters that do not stand for bytes")
    return text.translate(_UNSPELLING).encode("latin-1")


class Tokenizer:
    """A byte-level BPE tokenizer.

    vocab: id -> bytes, with all 256 single bytes and one token per merge. It may hold tokens that no merge
    makes, as real vocabulary files do (GPT-2's <|endoftext|>, reserved tokens): such a token decodes to its
    bytes, and encoding produces it only if it is one of the special tokens.
    merges: (bytes_a, bytes_b) in the order learned, the first merged first.
    special_tokens: strings matched whole in `encode`; one missing from `vocab` gets the next free id.
    Attributes: .vocab (incl. special tokens), .merges, .special_tokens (str -> id), .pattern.

    Encoding runs through a tiktoken Encoding, which ranks merged byte strings rather than pairs: the
    token made by merge k gets rank 256 + k. The vocabulary's ids serve as these ranks directly when
    they grow in merge order (trained and GPT-2 vocabularies do; only the order of GPT-2's byte ids
    differs, and byte ranks are never compared). Other vocabularies are encoded with the merge-order
    ranks and their ids mapped back, so encoding stays exact. For merges that BPE training learned,
    ranking byte strings merges the same pairs as `encode_reference` does; the tests check it."""

    def __init__(self, vocab, merges, special_tokens=None, pattern=GPT2_SPLIT_PATTERN):
        self.vocab = dict(vocab)
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self.pattern = pattern
        id_of = {}
        for i, token in self.vocab.items():
            if not isinstance(i, int) or i < 0 or not isinstance(token, bytes):
                raise ValueError(f"vocab entry {i!r}: {token!r} is not a (non-negative int id, bytes) pair")
            if token in id_of:
                raise ValueError(f"vocab ids {id_of[token]} and {i} are both {token!r}")
            id_of[token] = i
        self.special_tokens = {}
        for s in dict.fromkeys(special_tokens or []):
            i = id_of.pop(s.encode("utf-8"), None)
            self.special_tokens[s] = max(self.vocab, default=-1) + 1 if i is None else i
            self.vocab[self.special_tokens[s]] = s.encode("utf-8")
        missing = [b for b in range(256) if bytes([b]) not in id_of]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} single bytes, e.g. {bytes(missing[:1])!r}: "
                             "a byte-level vocabulary needs all 256")

        # (id_a, id_b) -> (rank, id of the merged token): the form `encode_reference` uses.
        self._pair_ranks = {}
        made = {bytes([b]) for b in range(256)}
        for rank, (a, b) in enumerate(self.merges):
            problem = ("uses a token that is neither a byte nor made by an earlier merge" if not {a, b} <= made else
                       "makes a token that is not in the vocabulary" if a + b not in id_of else
                       "makes a token that an earlier merge made" if a + b in made else None)
            if problem:
                raise ValueError(f"merge {rank} ({_spell(a)} {_spell(b)}) {problem}")
            made.add(a + b)
            self._pair_ranks[id_of[a], id_of[b]] = (rank, id_of[a + b])

        # Only bytes and merge results are ranked: tiktoken would build any ranked token out of its pieces,
        # and a token no merge makes must come out of encoding only as a special token.
        merged_ids = [id_of[a + b] for a, b in self.merges]
        if all(i < j for i, j in zip(merged_ids, merged_ids[1:])):
            ranks, special_ranks, self._rank_to_id = {t: id_of[t] for t in made}, self.special_tokens, None
        else:
            ranks = {bytes([b]): b for b in range(256)}
            ranks.update((a + b, 256 + k) for k, (a, b) in enumerate(self.merges))
            special_ranks = {s: len(ranks) + k for k, s in enumerate(self.special_tokens)}
            self._rank_to_id = [id_of[t] for t in ranks] + list(self.special_tokens.values())
        self._tiktoken = tiktoken.Encoding("bpe.py", pat_str=pattern, mergeable_ranks=ranks,
                                           special_tokens=special_ranks)

    @property
    def vocab_size(self):
        """Number of ids an embedding table needs: the largest id + 1."""
        return max(self.vocab) + 1

    @property
    def eot_id(self):
        return self.special_tokens.get(EOT)

    def _ids(self, ranks):
        return ranks if self._rank_to_id is None else [self._rank_to_id[r] for r in ranks]

    def encode(self, text):
        """Token ids of `text`; special tokens in the text become their ids."""
        return self._ids(self._tiktoken.encode(text, allowed_special="all"))

    def encode_ordinary(self, text):
        """Token ids of `text`, with special tokens treated as plain text."""
        return self._ids(self._tiktoken.encode_ordinary(text))

    def encode_batch(self, texts, num_threads=8):
        """`encode` of each text, in tiktoken's thread pool."""
        return [self._ids(ranks) for ranks in
                self._tiktoken.encode_batch(texts, num_threads=num_threads, allowed_special="all")]

    def encode_iterable(self, texts, buffer_chars=1 << 16):
        """Yield the ids of the joined strings `texts` (the lines of a 5 GB file, say) lazily, in bounded
        memory: the same ids as `encode("".join(texts))`. Text is encoded once what follows can no longer
        change its tokens: up to the last complete special token, then up to the start of the last but one
        pre-token that follows a non-space character (a whitespace run splits according to the character
        after it), looking only at the text before a possible start of a special token (the special
        token would end that text). Strings are collected up to `buffer_chars` first, to call tiktoken
        on sizeable pieces."""
        special, pretoken = _special_regex(self.special_tokens), regex.compile(self.pattern)
        pending, size = [], 0
        for text in texts:
            pending.append(text)
            size += len(text)
            if size < buffer_chars:
                continue
            buffer = "".join(pending)
            start = 0
            for match in special.finditer(buffer) if special else ():
                start = match.end()
            end = min([len(buffer)] + [len(buffer) - k for s in self.special_tokens for k in range(1, len(s))
                                       if buffer.endswith(s[:k]) and len(buffer) - k >= start])
            # cut before the second-to-last such pre-token: the last one may grow, and so may the one before
            # it ("we'v" + "e": the "'" becomes the contraction "'ve")
            cuts = [start, start]
            for match in pretoken.finditer(buffer, start, end):
                if match.start() > start and not _WHITESPACE.match(buffer, match.start() - 1):
                    cuts.append(match.start())
            cut = cuts[-2]
            yield from self.encode(buffer[:cut])
            pending, size = [buffer[cut:]], len(buffer) - cut
        yield from self.encode("".join(pending))

    def decode_bytes(self, ids):
        """The bytes of `ids`: exact even for a slice that cuts a character in two."""
        try:
            return b"".join([self.vocab[i] for i in ids])
        except KeyError as e:
            raise ValueError(f"cannot decode id {e.args[0]!r}: it is not in the vocabulary "
                             f"(ids 0..{self.vocab_size - 1})") from None

    def decode(self, ids):
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode_reference(self, text):
        """`encode` in pure Python, the readable version: split off special tokens, pre-tokenize, then
        in each pre-token keep merging the adjacent pair that was learned first, until none is left."""
        byte_id = {token[0]: i for i, token in self.vocab.items() if len(token) == 1}
        special = _special_regex(self.special_tokens)
        ids = []
        for part in special.split(text) if special else [text]:
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
                continue
            for pretoken in regex.findall(self.pattern, part):
                piece = [byte_id[b] for b in pretoken.encode("utf-8")]
                while len(piece) > 1:
                    pair = min(zip(piece, piece[1:]), key=lambda p: self._pair_ranks.get(p, (float("inf"),)))
                    if pair not in self._pair_ranks:
                        break
                    piece = merge(piece, pair, self._pair_ranks[pair][1])
                ids.extend(piece)
        return ids

    def save(self, path):
        """Write one human-readable JSON file. Tokens are spelled with GPT-2's byte -> character map
        ('Ġthe' is b' the', 'Ċ' a newline; see `_bytes_to_unicode`), merges as "a b" strings, as in
        OpenAI's encoder.json and vocab.bpe."""
        state = {
            "format": "bpe.py byte-level BPE",
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "merges": self._spelled_merges(),
            "vocab": self._spelled_vocab(),
        }
        _write_atomically(path, json.dumps(state, ensure_ascii=False, indent=1))

    def save_hf(self, folder, model_max_length=None):
        """Write Hugging Face's GPT-2 tokenizer files (vocab.json, merges.txt, tokenizer_config.json,
        special_tokens_map.json) into `folder`, so that transformers.AutoTokenizer.from_pretrained(folder)
        gives the ids of `encode`: its GPT2Tokenizer is this same byte-level BPE, with GPT-2's pre-tokenizer
        and byte spelling. <|endoftext|>, if the tokenizer has it, becomes the bos, eos and unk token, and is
        put before each text (add_bos_token), as sample.py puts it before each prompt; `add_special_tokens=False`
        leaves it out. model_max_length: the context length of the model the tokenizer goes with, if any.
        OpenAI's tokenizer gets its own encoder.json and vocab.bpe back, under Hugging Face's names."""
        if self.pattern != GPT2_SPLIT_PATTERN:
            raise ValueError(f"Hugging Face's GPT-2 tokenizer splits text with GPT-2's pattern only, and this "
                             f"tokenizer uses another one ({self.pattern!r})")
        eot = EOT if EOT in self.special_tokens else None
        special = {"bos_token": eot, "eos_token": eot, "unk_token": eot,
                   "additional_special_tokens": [s for s in self.special_tokens if s != EOT]}
        config = {"tokenizer_class": "GPT2Tokenizer", **special,  # None: not GPT2Tokenizer's default <|endoftext|>
                  "add_bos_token": eot is not None, "add_prefix_space": False,
                  "clean_up_tokenization_spaces": False}  # True would turn " ." into "." when decoding
        if model_max_length is not None:
            config["model_max_length"] = model_max_length
        files = {
            "vocab.json": json.dumps({**self._spelled_vocab(), **self.special_tokens}, ensure_ascii=False),
            "merges.txt": "".join(line + "\n" for line in ["#version: 0.2", *self._spelled_merges()]),
            "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=1),
            "special_tokens_map.json": json.dumps({k: v for k, v in special.items() if v}, ensure_ascii=False, indent=1),
        }
        os.makedirs(folder, exist_ok=True)
        for name, text in files.items():
            _write_atomically(os.path.join(folder, name), text)

    def _spelled_vocab(self):
        """{spelled token: id} of every token but the special ones, as in `save`'s file and GPT-2's vocab.json."""
        special_bytes = {s.encode("utf-8") for s in self.special_tokens}
        return {_spell(t): i for i, t in sorted(self.vocab.items()) if t not in special_bytes}

    def _spelled_merges(self):
        return [f"{_spell(a)} {_spell(b)}" for a, b in self.merges]

    @classmethod
    def load(cls, path):
        """Read a file written by `save`; a missing, corrupt or inconsistent file raises ValueError."""
        if not os.path.isfile(path):
            raise ValueError(f"tokenizer file {path!r} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
            return cls._from_spelled(state["vocab"], state["merges"], state["special_tokens"], state["pattern"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            problem = f"no {e} field" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{path} is not a valid tokenizer file: {problem}") from None

    @classmethod
    def from_gpt2_files(cls, encoder_json, vocab_bpe):
        """OpenAI's original GPT-2 tokenizer, from its encoder.json (token -> id) and vocab.bpe (merges)."""
        try:
            with open(encoder_json, "rb") as f, open(vocab_bpe, "rb") as g:
                return cls._from_gpt2(f.read(), g.read())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError,
                ValueError) as e:
            raise ValueError(f"cannot load GPT-2 files {encoder_json}, {vocab_bpe}: {e}") from None

    @classmethod
    def _from_gpt2(cls, encoder_json, vocab_bpe):
        encoder = json.loads(encoder_json)
        merges = vocab_bpe.decode("utf-8").split("\n")[1:]  # the first line is "#version: 0.2"
        return cls._from_spelled(encoder, [m for m in merges if m], {EOT: encoder.pop(EOT)}, GPT2_SPLIT_PATTERN)

    @classmethod
    def _from_spelled(cls, vocab, merges, special_tokens, pattern):
        """A Tokenizer from the saved form: {spelled token: id}, ["a b"], {special token: id}."""
        ids = {i: _unspell(t) for t, i in vocab.items()}
        ids.update((i, s.encode("utf-8")) for s, i in special_tokens.items())
        if len(ids) != len(vocab) + len(special_tokens):
            raise ValueError("two tokens share an id")
        pairs = []
        for line in merges:
            a, space, b = line.partition(" ")
            if not (a and space and b) or " " in b:
                raise ValueError(f"merge {line!r} is not two tokens separated by one space")
            pairs.append((_unspell(a), _unspell(b)))
        return cls(ids, pairs, list(special_tokens), pattern)


def _write_atomically(path, text):
    """configurator.atomic_write's way, spelled out: bpe.py stays importable without torch."""
    try:
        with open(f"{path}.tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)  # atomic: an interrupted save never leaves half a tokenizer
    finally:
        if os.path.exists(f"{path}.tmp"):  # a failed save leaves no stray file either
            os.remove(f"{path}.tmp")


GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


def load_tokenizer(spec):
    """"gpt2": OpenAI's GPT-2 tokenizer, the same ids as tiktoken's "gpt2" (its files come through
    tiktoken's download cache, so TIKTOKEN_CACHE_DIR works offline). Anything else: the path of a file
    written by `Tokenizer.save`."""
    if spec != "gpt2":
        return Tokenizer.load(spec)
    from tiktoken.load import read_file_cached
    return Tokenizer._from_gpt2(
        read_file_cached(GPT2_URL + "encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        read_file_cached(GPT2_URL + "vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"))


if __name__ == "__main__":
    # python bpe.py --input=data_sample/tinystories/train.txt.xz --vocab_size=8192 --out=tokenizer.json
    import time

    from configurator import check_writable, configure, one_line_if_full
    config = dict(input="data_sample/tinystories/train.txt.xz", vocab_size=8192, out="tokenizer.json")
    configure(config)
    check_writable(config["out"])
    started = time.perf_counter()
    try:
        tokenizer = train_bpe(config["input"], config["vocab_size"], progress=True)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    # Tokenizer.save, which may not exit as a library, reports a full disk as an OSError with its errno
    with one_line_if_full(config["out"]):
        tokenizer.save(config["out"])
    print(f"trained {len(tokenizer.merges)} merges in {time.perf_counter() - started:.1f} s, "
          f"vocab_size={tokenizer.vocab_size}, saved to {config['out']}")
