"""
Command-line configuration shared by every script, in the spirit of nanoGPT's configurator.

A script declares its settings as plain module globals with defaults, then calls

    configure(globals())

which applies, in order, any config files named on the command line (`config/foo.py`, plain Python
assigning the same globals) and any `--key=value` overrides. Values are parsed as Python literals and
must have the default's type, so a typo fails loudly instead of training the wrong model for an hour.
`--flag` alone sets a boolean setting (or an automatic one, whose default is None) to True.

It also owns what every script does the same way: which device to run on, the autocast context
that goes with it, writing output files atomically (and a full disk as one line), holding a run's
folder against a second launch, reading (possibly compressed) text files and meta.json, and loading a
trained model with its tokenizer (which folder, and every way it can be wrong, in one line).
"""
import ast
import contextlib
import difflib
import errno
import json
import os
import shutil
import socket
import sys

import torch

import bpe
from model import GPT, GPTConfig, check_sampling_args, read_checkpoint


class ConfigError(SystemExit):
    """A user mistake: printed as one line on stderr, exit status 1, no traceback."""

    def __init__(self, message):
        super().__init__(f"error: {message}")


def settings(config):
    """The script's settings: its lower-case globals of plain types (UPPER_CASE ones are constants)."""
    return {k: v for k, v in config.items() if not k.startswith("_") and not k.isupper()
            and isinstance(v, (bool, int, float, str, type(None), tuple, list))}


def _convert(name, raw, default):
    """`raw` parsed to the type of `default`; `name` says where it came from in errors ('--n_layer', or
    'n_layer in config/foo.py')."""
    if isinstance(default, str):
        return raw  # the text itself: --start='"Hi!"' keeps its quotes, --out_dir=2024 is not a number
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word such as --device=cuda is a string
    if default is None:  # an "auto" setting (compile = None): True, False or None
        if value is raw:
            raise ConfigError(f"{name} expects a Python literal such as True, False or None, got {raw!r}")
        return value
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"{name} expects True or False, got {raw!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # --learning_rate=1 means 1.0
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    if type(value) is not type(default):
        kind = type(default).__name__
        raise ConfigError(f"{name} expects {'an' if kind[0] in 'aeiou' else 'a'} {kind} (default {default!r}), "
                          f"got {raw!r}")
    if isinstance(default, tuple) and default:
        kind = type(default[0])
        value = tuple(float(v) if kind is float and type(v) is int else v for v in value)
        if not all(type(v) is kind for v in value):
            raise ConfigError(f"{name} expects a tuple of {kind.__name__} (default {default!r}), got {raw!r}")
    return value


def _unknown(key, known, where=""):
    """`where`: '' for a --key on the command line, else the config file the key was assigned in."""
    flag = "" if where else "--"
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {flag}{close[0]}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return ConfigError(f"unknown config key {key!r}" + (f" in {where}" if where else "") + hint)


def configure(config, argv=None):
    """Apply config files and --key=value arguments to the dict `config` (a script's globals()).
    Returns the list of keys that were changed, so scripts can log what differs from the defaults."""
    argv = sys.argv[1:] if argv is None else argv
    known = settings(config)
    changed = []
    for arg in argv:
        if not arg.startswith("--"):
            if not os.path.isfile(arg):
                raise ConfigError(f"config file {arg!r} not found (pass a path such as config/tinystories_cpu.py)")
            file_globals = {}
            try:
                exec(open(arg).read(), file_globals)
            except Exception as e:  # a config file is Python: its mistakes are the user's, named in one line
                raise ConfigError(f"config file {arg!r} does not run ({type(e).__name__}: {e})")
            for key, value in file_globals.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                    continue
                if key not in known:
                    raise _unknown(key, known, arg)
                config[key] = value if isinstance(value, str) and isinstance(known[key], str) else \
                    _convert(f"{key} in {arg}", repr(value), known[key])
                changed.append(key)
            continue
        key, eq, raw = arg[2:].partition("=")
        if key not in known:
            raise _unknown(key, known)
        if not eq:
            if not (isinstance(known[key], bool) or known[key] is None):
                raise ConfigError(f"--{key} needs a value, e.g. --{key}={known[key]!r}")
            raw = "True"
        config[key] = _convert(f"--{key}", raw, known[key])
        changed.append(key)
    return changed


def check_ranges(config, ranges):
    """One line for a setting outside its range, given as {name: (least, most)} (most None: no limit),
    instead of a traceback from deep inside torch or numpy once the value is used."""
    for name, (least, most) in ranges.items():
        value = config[name]
        if value < least or (most is not None and value > most):
            allowed = f"at least {least}" if most is None else f"from {least} to {most}"
            raise ConfigError(f"--{name} must be {allowed}, got {value!r}")


SEEDS = (0, 2**32 - 1)  # what numpy's seed accepts, and so the range of every script's --seed


def pick_device(device="auto", cuda_available=None, mps_available=None):
    """'auto' picks cuda, then Apple's mps, then cpu. The availability flags exist so the choice can be
    tested on a machine that has none of that hardware."""
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if mps_available is None:
        mps_available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if cuda_available else "mps" if mps_available else "cpu"
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and not (kind == "cuda" and index.isdigit())):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if index and torch.cuda.is_available() and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device={device!r}, but this machine has {torch.cuda.device_count()} GPU(s): cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1}")
    if not {"cpu": True, "cuda": cuda_available, "mps": mps_available}[kind]:
        raise ConfigError(f"device={device!r}, but torch sees no {kind} device here; use --device=auto or --device=cpu")
    return device


def pick_dtype(dtype, device_type):
    """'auto' is bfloat16 on GPUs that support it, float16 on older GPUs, float32 elsewhere: bf16 autocast
    on CPUs is often slower than float32 and on mps still incomplete."""
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    if dtype == "bfloat16" and device_type == "cpu" and not cpu_has_bfloat16():
        # emulated bf16 matmuls are several times slower than float32 ones: the speed asked for is not there
        print("note: this CPU has no native bfloat16 (AVX512-BF16 or AMX); using float32", file=sys.stderr)
        return "float32"
    if dtype != "auto":
        return dtype
    if device_type == "cuda":
        # emulated bf16 (V100, T4) is slow: those GPUs get float16 and its loss scaling
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
    return "float32"


def cpu_has_bfloat16():
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16, AMX): ~2.5x float32's matmul speed there."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def pick_compile(compile, device_type):
    """None compiles on CUDA only, where it pays for its compile time. On a CPU, inductor writes C++ and
    needs a compiler: without one, the run goes on uncompiled instead of failing at its first step."""
    if compile is None:
        return device_type == "cuda"
    if compile and device_type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "clang++")):
        print("note: torch.compile needs a C++ compiler on a CPU (g++ or clang++) and none was found; "
              "running uncompiled", file=sys.stderr)
        return False
    return compile


def autocast(device_type, dtype):
    """The mixed-precision context for forward passes: a no-op in float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def peak_flops(device_name):
    """Dense bf16 peak of common accelerators, for MFU; None where we do not know it (CPUs)."""
    # the first name found in device_name wins, so a name comes before its prefixes (A100 before A10)
    for name, flops in (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
                        ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12), ("4090", 165e12),
                        ("3090", 71e12), ("V100", 125e12), ("T4", 65e12)):
        if name in device_name:
            return flops
    return None


def disk_is_full(error, folder):
    """Whether `error`, raised while writing into `folder`, means its disk (or the user's quota) is full."""
    if getattr(error, "errno", None) is not None:
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    # torch.save (a RuntimeError, chained to another) and numpy's tofile (an OSError) lose the errno: then free space
    # decides, measured while the half-written file still fills the disk (a quota torch.save exceeds goes unnoticed)
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


ELSEWHERE = "the previous version, if any, is intact; free some space, or write to another disk"


@contextlib.contextmanager
def one_line_if_full(path, then=ELSEWHERE):
    """A full disk while the block writes `path` ends the run with one line that names the file, then `then`:
    what is intact and what to do, which the script knows best. Other errors pass unchanged."""
    try:
        yield
    except Exception as e:
        if not disk_is_full(e, os.path.dirname(path) or "."):
            raise
        reason = getattr(e, "strerror", None) or os.strerror(errno.ENOSPC)
        raise ConfigError(f"no space left to write {path} ({reason}); {then}") from e


@contextlib.contextmanager
def atomic_write(path, then=ELSEWHERE):
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds. A crash
    or Ctrl-C halfway leaves the previous file intact and no half-written file that looks complete;
    a full disk is one line ending in `then` (see one_line_if_full)."""
    tmp = f"{path}.tmp"
    try:
        with one_line_if_full(path, then):  # inside: the check of free space needs the temporary still there
            yield tmp
            with open(tmp, "r+b") as f:  # on disk before it has the name: a power cut cannot leave an empty file
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX and Windows when both are on one filesystem
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resume_advice(out_dir, step):
    """What to do when train.py's disk fills, given the step its ckpt.pt holds (None: none yet)."""
    if step is None:
        return "no ckpt.pt to resume from was saved yet: free some space or pick another disk, and start afresh in a " \
               "new --out_dir"
    return (f"{os.path.join(out_dir, 'ckpt.pt')} holds step {step}, intact: free some space and continue it with "
            f"--init_from=resume, or copy {out_dir} to another disk and resume the copy with --out_dir=COPY "
            f"--init_from=resume")


def hold_out_dir(out_dir, holder=True, distributed=False):
    """Make sure no other run writes to out_dir while this one does: two launches of one command would mix their
    log lines and replace each other's checkpoints. The lock is flock's on out_dir/run.lock, which the OS drops
    when the process ends, however it ends, so a killed run never blocks its resume; release_out_dir drops it in a
    process that goes on. Where flock fails (some NFS setups) the run goes on unlocked, with a warning.
    Under torchrun only the process that writes (`holder`, rank 0) locks; with `distributed` the others learn
    whether it could, and stop with it instead of failing later in a collective that it never joins."""
    lock, refusal = None, None
    if holder:
        try:
            lock = _lock(out_dir)
        except ConfigError as e:
            refusal = e
    if distributed:  # each prints rank 0's line: torchrun may kill rank 0 before it does, once another has exited
        line = [refusal and refusal.code]
        torch.distributed.broadcast_object_list(line, src=0)
        if line[0] and not holder:
            raise SystemExit(line[0])
    if refusal:
        raise refusal
    if lock:
        _HELD[os.path.abspath(out_dir)] = lock
    return lock


_HELD = {}  # out_dir -> this process's open run.lock: the lock lasts as long as the file is open


def release_out_dir(out_dir):
    """Close this process's lock on out_dir, if it holds one: at the end of a run however it ended, also in an
    error whose traceback would keep the file (and the lock) alive in a process that goes on, a notebook say."""
    lock = _HELD.pop(os.path.abspath(out_dir), None)
    if lock:
        lock.close()


def _lock(out_dir):
    """out_dir/run.lock, open and locked by this process (or unlocked, with a warning, where flock fails)."""
    path = os.path.join(out_dir, "run.lock")
    try:
        os.makedirs(out_dir, exist_ok=True)
        lock = open(path, "a+")
    except OSError as e:
        raise ConfigError(f"cannot write to {out_dir} ({e.strerror}); pass a writable --out_dir")
    try:
        import fcntl  # POSIX only: elsewhere (Windows) too the run goes on unlocked
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        who = lock.read().strip() or "a process that has not written its id yet"
        lock.close()
        raise ConfigError(f"{out_dir} is in use by another run ({who}); let it finish or stop it, or pass "
                          f"another --out_dir")
    except (ImportError, OSError) as e:
        print(f"warning: cannot lock {path} ({e}); going on unlocked, so do not start a second run in {out_dir}",
              file=sys.stderr)
        return lock
    lock.truncate(0)  # "a+" writes at the end, which is now the start
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")  # who holds it, for the message above
    lock.flush()
    return lock


def check_writable(path):
    """Create the folder of the file `path` and make sure the file can be written there, before the work
    whose result it will hold: a bad path then costs a second, not the work, and gets one line."""
    if not os.path.basename(path) or os.path.isdir(path):
        raise ConfigError(f"{path!r} is not a file name; pass the path of a file to write")
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(f"{path}.tmp", "w"):  # the name atomic_write writes to
            pass
        os.remove(f"{path}.tmp")
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror}); pass a path in a writable folder")


def open_text(path):
    """A UTF-8 text file opened for reading, decompressed on the fly when its name ends in .gz or .xz."""
    return bpe.COMPRESSED.get(os.path.splitext(path)[1], open)(path, "rt", encoding="utf-8")


def json_lines(path):
    """(line number, object) for each non-empty line of a JSON-lines file (.gz or .xz too); a line that
    is not JSON ends the run with one line that names it."""
    try:
        with open_text(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{path}, line {number}: not valid JSON ({e.msg})")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e.reason}); save it as UTF-8")


def read_meta(folder, fix):
    """A folder's meta.json (prepare.py writes it with the token files, train.py copies it next to its
    checkpoints); a missing or broken one ends the run with one line that ends in `fix`."""
    path = os.path.join(folder, "meta.json")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        missing = [key for key in ("vocab_size", "eot_id", "tokenizer", "splits") if key not in meta]
    except FileNotFoundError:
        raise ConfigError(f"no meta.json in {folder}; {fix}")
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not a meta.json written by prepare.py ({type(e).__name__}: {e}); {fix}")
    if missing:
        raise ConfigError(f"{path} is not a meta.json written by prepare.py (no {missing[0]!r}); {fix}")
    if not (isinstance(meta["tokenizer"], str) and isinstance(meta["vocab_size"], int)):
        raise ConfigError(f"{path} is not a meta.json written by prepare.py (its tokenizer is not a name, or its "
                          f"vocab_size not a number); {fix}")
    return meta


# what train.py and eval.py say when there is no data to read
MAKE_DATA = ("make the data with `python prepare.py --dataset=data_sample/tinystories` (the TinyStories sample shipped "
             "here, which the shipped model was trained on; or another dataset) and pass its --data_dir")

CHECKPOINTS = {"best": "best.pt", "last": "ckpt.pt"}  # what --ckpt names
SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", "tinystories-cpu")


def model_dir(out_dir, given):
    """The folder sample.py and eval.py load from: out_dir, unless it is the default one (not among
    `given`, the keys the user set) and holds no checkpoint, as right after cloning: then the model
    shipped in pretrained/, with a note. A folder the user named is never swapped for another."""
    trained = any(os.path.isfile(os.path.join(out_dir, name)) for name in (*CHECKPOINTS.values(), "model.pt"))
    if "out_dir" in given or trained or not os.path.isdir(SHIPPED_MODEL):
        return out_dir
    shipped = os.path.relpath(SHIPPED_MODEL)  # what the user would type, in messages and the report
    print(f"note: no checkpoint in {out_dir} yet; using the shipped model {shipped} (pass --out_dir to choose one)",
          file=sys.stderr)
    return shipped


def find_checkpoint(out_dir, ckpt="best"):
    """The checkpoint file --ckpt names, else a shipped folder's model.pt, else the other one (a run
    stopped early may have written only best.pt, or only ckpt.pt)."""
    if ckpt not in CHECKPOINTS:
        raise ConfigError(f"--ckpt must be 'best' or 'last', got {ckpt!r}")
    wanted, other = CHECKPOINTS[ckpt], CHECKPOINTS["last" if ckpt == "best" else "best"]
    for name in (wanted, "model.pt", other):
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            if name == other:
                print(f"note: {out_dir} has no {wanted}; using {name}", file=sys.stderr)
            return path
    raise ConfigError(f"no checkpoint in {out_dir}; train with `python train.py --out_dir={out_dir}`")


# ------------------------------------------------------------------------------------------------
# A trained model, its tokenizer and prompts: what sample.py, eval.py and bench.py share

CHECKPOINT_INFO = ("model_args", "iter_num", "best_val_loss", "config", "tokens", "elapsed")


def load_model(out_dir, ckpt="best", device="cpu"):
    """(model, tokenizer, meta) from a training out_dir or a shipped pretrained folder.
    model: a GPT in eval mode on `device`, float32 weights. tokenizer: the one the model was trained
    with. meta: the data's meta.json plus meta['checkpoint'] (model_args, iter_num, best_val_loss,
    config, tokens, elapsed: whichever the file has) and meta['checkpoint_path']."""
    path = find_checkpoint(out_dir, ckpt)
    try:
        checkpoint = read_checkpoint(path)
    except ValueError as e:
        raise ConfigError(str(e))  # its sentence names the file already
    try:
        config = GPTConfig(**checkpoint["model_args"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}")

    meta = read_meta(out_dir, "copy the one from the data dir the model was trained on (train.py does this, "
                              "with the tokenizer file)")
    tokenizer = load_tokenizer(out_dir, meta["tokenizer"])

    # Three records of the vocabulary must agree, or every token id would mean another string.
    sizes = {"the tokenizer": tokenizer.vocab_size, "meta.json": meta["vocab_size"], "the checkpoint": config.vocab_size}
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise ConfigError(f"vocabulary sizes in {out_dir} do not match ({found}); the checkpoint, meta.json and "
                          f"tokenizer must come from the same prepare.py + train.py run")
    if meta["eot_id"] != tokenizer.eot_id:
        raise ConfigError(f"meta.json in {out_dir} says eot_id={meta['eot_id']} but the tokenizer's is "
                          f"{tokenizer.eot_id}; they come from different prepare.py runs")

    try:
        model = GPT.from_checkpoint(checkpoint)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}")
    meta["checkpoint"] = {k: checkpoint[k] for k in CHECKPOINT_INFO if k in checkpoint}
    meta["checkpoint_path"] = path
    return model.to(device).eval(), tokenizer, meta


def load_tokenizer(folder, spec):
    """meta.json's 'tokenizer' is 'gpt2' (OpenAI's, through tiktoken) or a file name in the same folder."""
    if spec != "gpt2":
        spec = os.path.join(folder, spec)
        if not os.path.isfile(spec):
            raise ConfigError(f"{spec} not found; meta.json names it as the tokenizer (copy it from the data dir)")
    try:
        return bpe.load_tokenizer(spec)
    except Exception as e:
        raise ConfigError(f"cannot load the tokenizer {spec!r} ({type(e).__name__}: {e})")


def sampling_args(temperature, top_k, top_p):
    """Command-line values -> keyword arguments for model.stream / model.generate, with Hugging Face's
    conventions: top_k=0 (or None) and top_p=1.0 mean no filter. Bad values are one-line errors."""
    if top_k is not None and top_k < 0:
        raise ConfigError(f"--top_k must be >= 1, or 0 for no limit; got {top_k}")
    top_k = top_k or None
    top_p = None if top_p == 1.0 else top_p
    try:
        check_sampling_args(temperature, top_k, top_p)
    except ValueError as e:
        raise ConfigError(f"--{e}")
    return dict(temperature=float(temperature), top_k=top_k, top_p=top_p)


def strategies(temperature=1.0):
    """The three decoding strategies compared by --strategy=compare and by eval.py. temperature
    applies to the two sampling ones (0 would make them greedy too, so it is taken as 1)."""
    t = temperature or 1.0
    return {
        "greedy": sampling_args(0.0, None, 1.0),
        f"top-k 50, T={t:g}": sampling_args(t, 50, 1.0),
        f"nucleus 0.9, T={t:g}": sampling_args(t, None, 0.9),
    }


def encode_prompt(tokenizer, text):
    """The prompt's token ids, after an end-of-text token: in training every document followed one,
    so this is how the model knows a document begins here. An empty prompt is just that token."""
    return [tokenizer.eot_id] + tokenizer.encode_ordinary(text)
