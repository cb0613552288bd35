"""
The whole GPT-2 in one file. Read it top to bottom: the config, then attention -> MLP -> Block -> GPT,
whose forward computes the loss. After the model come its fast paths, each tested equal to the plain
code it replaces (the (in, out) Linear layer, the chunked cross-entropy), then generation with a
KV cache, then weight exchange with Hugging Face's GPT2LMHeadModel (which is how we prove it is exactly
GPT-2).

Shapes are noted as B = batch, T = sequence length, C = n_embd, nh = n_head, hs = head size (C // nh),
V = vocab size.

References: Radford et al. 2019 (GPT-2) and OpenAI's TensorFlow code, whose layer names we keep
(wte, wpe, h, ln_1, attn.c_attn, ...) so that checkpoints map onto each other one to one.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the model sees (the number of position embeddings)
    vocab_size: int = 50257  # GPT-2's: 256 bytes + 50,000 merges + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # 0.1 in GPT-2's pretraining; 0 is better for short runs on small data
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2
    fused_attention: bool = True  # F.scaled_dot_product_attention; False runs the explicit version
    chunked_loss: bool = True  # ChunkedCrossEntropy; False runs F.cross_entropy on the full logits

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                             f"(each head gets n_embd // n_head channels)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout is the probability of zeroing an activation, in [0, 1); got {self.dropout}")


# The four sizes OpenAI released; all share the vocabulary and the 1024-token context.
PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M parameters
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}


def preset_config(name, **overrides):
    if name not in PRESETS:
        raise ValueError(f"unknown GPT-2 preset {name!r}; choose one of {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], "vocab_size": 50257, "block_size": 1024, **overrides})


def fused_attention(q, k, v, dropout_p, is_causal):
    """F.scaled_dot_product_attention, in float32 on a CPU even under bfloat16 autocast: there PyTorch's
    kernel is slower in bfloat16 than in float32 (3x at 64 tokens of 32 channels a head; measured in
    results/tinystories-recipe.md)."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p,
                                                  is_causal=is_causal)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)


class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        self.layer = layer  # index into the KV cache
        self.n_head, self.dropout, self.fused = config.n_head, config.dropout, config.fused_attention
        # Linear is nn.Linear's math with OpenAI's weight layout (see below)
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.size()
        # q, k and v side by side, each split into heads that attend independently:
        # (B, T, 3C) -> (B, T, 3 nh, hs) -> (B, 3 nh, T, hs) -> three (B, nh, T, hs)
        qkv = self.c_attn(x).view(B, T, 3 * self.n_head, C // self.n_head).transpose(1, 2)
        q, k, v = qkv.split(self.n_head, dim=1)
        if cache is not None:  # generating: attend to the keys and values of every earlier position too
            k, v = cache.update(self.layer, k, v)  # (B, nh, past + T, hs)
        # Query i may see keys 0..i: the lower triangle. A single new query (a cached generation step,
        # which GPT.hidden allows only one token at a time) is the last row and sees every key.
        causal = T > 1
        dropout = self.dropout if self.training else 0.0
        if self.fused:
            # one kernel (flash / memory-efficient attention): never materialises the (T, T) matrix
            y = fused_attention(q, k, v, dropout, causal)
        else:
            # the same computation spelled out: softmax(Q K^T / sqrt(hs)) V over the visible keys
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T)
            if causal:
                att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), float("-inf"))
            att = F.dropout(F.softmax(att, dim=-1), dropout, self.training)
            y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation; exactness needs it too
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x)). Normalising inside the
    branches leaves the residual stream an identity path, which is what lets deep stacks train."""

    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)  # tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, layer) for layer in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the same matrix maps tokens to vectors and vectors back to token scores.
        # It saves V * C parameters (38M of GPT-2 small's 124M) and helps small models.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # Each block adds two projections onto the residual stream; scaling them by 1/sqrt(2 n_layer)
        # keeps the stream's variance from growing with depth (GPT-2 paper, section 2.3).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (Linear, nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, (Linear, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding=False):
        """Parameters, counting the tied embedding once. Scaling laws count without the position
        embedding (non_embedding=True); GPT-2's published sizes count everything."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def hidden(self, idx, cache=None):
        """The final hidden states (B, T, C) for token ids idx (B, T), after the last LayerNorm."""
        past = 0 if cache is None else cache.pos
        self._check_tokens(idx, past)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe.weight[past:past + idx.size(1)]  # (T, C): positions past..past+T-1
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.pos += idx.size(1)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, cache=None):
        """Without targets: the logits (B, T, V) at every position, and None.
        With targets (B, T): the mean cross-entropy of predicting each next token, as (logits, loss);
        negative targets are not scored (-1 here, -100 in Hugging Face's code)."""
        if targets is not None:
            self._check_targets(targets)
        x = self.hidden(idx, cache)  # (B, T, C)
        if targets is None:
            return self.lm_head(x), None
        if self.config.chunked_loss:  # the fast path: the same loss without holding all the logits
            return None, chunked_cross_entropy(x, self.lm_head.weight, targets)
        logits = self.lm_head(x)  # (B, T, V): a score for every possible next token
        # -log softmax(logits)[target], averaged over the scored positions
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().clamp(min=-1), ignore_index=-1)
        return logits, loss

    def _check_tokens(self, idx, past):
        T = idx.size(1)
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size={self.config.block_size}; "
                             f"crop the input to the last {self.config.block_size} tokens")
        if past and T > 1:  # attention masks a cached step as the newest position (see CausalSelfAttention)
            raise ValueError(f"a cached step takes one new token, got {T}; run the prompt first, then one at a time")
        # ids fed back during generation come from our own sampler, so cached steps skip the check
        if past == 0 and not torch.compiler.is_compiling() and T > 0 and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size}); "
                             f"was the data made with another tokenizer?")

    def _check_targets(self, targets):
        # checked before the forward pass is queued, so that on a GPU the wait for the answer costs nothing
        if not torch.compiler.is_compiling() and targets.numel() and targets.max() >= self.config.vocab_size:
            raise ValueError(f"target id {int(targets.max())} is outside the vocabulary [0, {self.config.vocab_size})")

    # ----------------------------------------------------------------------------------------------
    # Training helpers

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on matrices only: decaying biases and LayerNorm gains just pulls
        them toward zero without regularising anything useful."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # the fused kernel updates every tensor in one pass instead of several operations per tensor: a few
        # launches on a GPU, and on a CPU a tenth of the plain loop's time (7 ms of a 100 ms step at 4 x 128)
        fused = device_type in ("cuda", "mps", "cpu")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))

    def flops_per_token(self, seq_len):
        """Training FLOPs per token (forward + backward = 3 x forward): 6 per parameter for the matrix
        multiplies, plus attention's QK^T and AV, which grow with the sequence (PaLM paper, appendix B)."""
        cfg = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * seq_len

    def estimate_mfu(self, tokens_per_sec, seq_len, peak_flops):
        """Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak FLOP/s."""
        return self.flops_per_token(seq_len) * tokens_per_sec / peak_flops

    # ----------------------------------------------------------------------------------------------
    # Generation (the KV cache and the sampler are defined after the model)

    @torch.inference_mode()
    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eot_id=None,
               generator=None, use_cache=True):
        """Yield the next token of every row, (B, 1), one step at a time (for printing as they come).
        The prompt is run once to fill the KV cache, then each step feeds only the newest token.
        Past block_size tokens the context slides: it is cropped to the last block_size tokens and the
        cache rebuilt, since learned position embeddings are absolute and every position shifts.
        A row that has emitted eot_id keeps emitting it; the stream ends when every row has."""
        check_sampling_args(temperature, top_k, top_p)
        block_size = self.config.block_size
        cache = None
        done = torch.zeros(idx.size(0), 1, dtype=torch.bool, device=idx.device)
        # the output layer in the (in, out) layout that multiplies a single row faster (see Linear)
        head = self.lm_head.weight.t().float().contiguous()  # (C, V)
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache.pos < block_size:
                x = self.hidden(idx[:, -1:], cache)  # one new position, attending to the cache
            else:
                cache = KVCache(self.config, idx.size(0), idx.device, self.lm_head.weight.dtype) if use_cache else None
                x = self.hidden(idx[:, -block_size:], cache)
            # (B, V): only the last position predicts the next token. In float32 even under autocast, where
            # bf16 would round nearby scores into ties that change greedy picks and let top-k keep more than k.
            with torch.autocast(idx.device.type, enabled=False):
                logits = x[:, -1, :].float() @ head
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)
            if eot_id is not None:
                next_id = next_id.masked_fill(done, eot_id)
                done |= next_id == eot_id
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id
            if eot_id is not None and done.all():
                return

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eot_id=None,
                 generator=None, use_cache=True):
        """The prompt idx (B, T) followed by up to max_new_tokens sampled tokens. temperature=0 is
        greedy; top_k and top_p filter the distribution first and compose (k first, then p)."""
        steps = list(self.stream(idx, max_new_tokens, temperature, top_k, top_p, eot_id, generator, use_cache))
        return torch.cat([idx, *steps], dim=1)

    # ----------------------------------------------------------------------------------------------
    # Weights in and out: our checkpoints, and Hugging Face's format (names and layouts are OpenAI's on
    # both sides, so tensors map one to one)

    def load_weights(self, state_dict):
        """load_state_dict with an error that names the first tensor that does not fit, so a checkpoint
        of another shape fails with a sentence instead of a page of shapes."""
        own = self.state_dict()
        for name, tensor in state_dict.items():
            if name not in own:
                raise ValueError(f"checkpoint tensor {name!r} does not exist in this model")
            if own[name].shape != tensor.shape:
                why = ("it holds the transpose: a checkpoint from before Linear stored its weights (in, out)"
                       if tensor.shape == own[name].shape[::-1] else "the checkpoint was made with another config")
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)} but this model's "
                                 f"is {tuple(own[name].shape)}: {why}")
        # the tied embedding is one tensor under two names; a checkpoint needs only one of them
        tied = ("transformer.wte.weight", "lm_head.weight")
        missing = [name for name in own if name not in state_dict and not (name in tied and any(t in state_dict for t in tied))]
        if missing:
            raise ValueError(f"checkpoint lacks tensor {missing[0]!r} ({len(missing)} missing in all)")
        self.load_state_dict(state_dict, strict=False)

    @classmethod
    def from_checkpoint(cls, checkpoint, device="cpu", **overrides):
        """A model from one of our checkpoints (a path, or a dict from read_checkpoint): 'model' holds the
        state dict, in any float precision, and 'model_args' the GPTConfig fields, which overrides may change
        where the weights allow it (dropout, fused_attention, chunked_loss). Weights come back in float32."""
        if not isinstance(checkpoint, dict):
            checkpoint = read_checkpoint(checkpoint)
        model = cls(GPTConfig(**{**checkpoint["model_args"], **overrides}))
        model.load_weights({k: v.float() for k, v in checkpoint["model"].items()})
        return model.to(device)

    _HF_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # HF's causal-mask buffers, not weights

    @classmethod
    def from_pretrained(cls, name_or_dir, **overrides):
        """Load OpenAI's GPT-2 weights by preset name (downloads through `transformers`) or a local
        directory in Hugging Face format (config.json + weights), e.g. one written by save_pretrained."""
        try:
            from transformers import GPT2LMHeadModel
        except ImportError:
            raise SystemExit("error: loading Hugging Face checkpoints needs `pip install transformers`")
        try:
            hf = GPT2LMHeadModel.from_pretrained(name_or_dir)
        except OSError as e:
            raise SystemExit(f"error: could not load {name_or_dir!r} ({str(e).splitlines()[0]}); a preset name "
                             f"needs internet access to the Hugging Face hub, or pass a local directory")
        hc = hf.config
        config = GPTConfig(block_size=hc.n_positions, vocab_size=hc.vocab_size, n_layer=hc.n_layer,
                           n_head=hc.n_head, n_embd=hc.n_embd, bias=True, **overrides)
        model = cls(config)
        model.load_weights({k: v for k, v in hf.state_dict().items() if not k.endswith(cls._HF_MASK_BUFFERS)})
        return model

    def save_pretrained(self, out_dir, eot_id=None):
        """Write a directory that transformers.GPT2LMHeadModel.from_pretrained(out_dir) loads. eot_id
        becomes its bos/eos token, so Hugging Face's generate() stops where ours does."""
        from transformers import GPT2LMHeadModel
        if not self.config.bias:
            raise ValueError("Hugging Face's GPT-2 always has biases; save_pretrained needs a model with bias=True")
        hf = GPT2LMHeadModel(hf_config(self.config, eot_id))
        missing, unexpected = hf.load_state_dict(self.state_dict(), strict=False)
        # HF may also keep causal-mask buffers we have no use for; anything else is a naming bug
        if unexpected or any(not k.endswith(self._HF_MASK_BUFFERS) for k in missing):
            raise RuntimeError(f"weights do not map onto GPT2LMHeadModel: missing {missing}, unexpected {unexpected}")
        hf.save_pretrained(out_dir)


# ================================================================================================
# Fast paths, each equal to the plain computation it replaces (tested)

class Linear(nn.Module):
    """y = x W + b, with W stored (in, out) as in OpenAI's GPT-2 code (Hugging Face's Conv1D): the
    transpose of nn.Linear's (out, in). The math is the same; this layout lets OpenAI's and Hugging
    Face's weights load as they are, and a CPU multiplies a single row by it faster, which is what
    generating one token at a time does (bench.py sample)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight.t(), self.bias)


def chunked_cross_entropy(x, weight, targets):
    """F.cross_entropy(x @ weight.T, targets) for hidden states x (B, T, C), the output matrix (V, C)
    and targets (B, T), without materialising the logits: see ChunkedCrossEntropy."""
    need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return ChunkedCrossEntropy.apply(x.flatten(0, 1), weight, targets.flatten(), need_grad)


# Rows of logits ChunkedCrossEntropy holds at once (module globals, so torch.compile traces them): few
# enough to stay in a CPU's cache and bound a GPU's memory. Compiled for a GPU, where inductor keeps no
# float32 copy, GPT-2 small's whole 16 x 1024-token batch fits in one chunk, which was fastest there.
CHUNK_ROWS = 1024
COMPILED_GPU_CHUNK_ROWS = 16384


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of targets (N,) under logits h @ weight.T, for hidden states h (N, C) and the
    output embedding weight (V, C), computed a chunk of rows at a time instead of holding all logits.

    Why: the logits are the largest tensor in training, N x V floats (134 MB at the CPU config, 3.3 GB
    for GPT-2 small at 16 x 1024 tokens), and log-softmax with its backward reads and writes that much
    several times. Yet the gradient is simple, d loss / d logits = (softmax - one_hot(target)) / N, so
    each chunk is scored and differentiated at once, while it is still in cache, and only the small
    gradients of h and weight are kept for backward. The numbers are F.cross_entropy's (tested), except
    that a batch with no target scored has loss 0 instead of nan. It is most of the CPU step's lead over
    Hugging Face's (bench.py train; results/bench-cpu.md has the step with and without it)."""

    @staticmethod
    def forward(ctx, h, weight, targets, need_grad):
        V = weight.size(0)
        scored = targets >= 0
        n = scored.sum().clamp(min=1)
        loss = torch.zeros((), device=h.device)
        # The matrix and the hidden states in the matmuls' precision, cast once instead of once per chunk
        # and per matmul; the matrix with zero rows up to a multiple of 64, because a GPU multiplies much
        # faster when every dimension is one (GPT-2's 50,257 is not: 50,304). Their logits are masked out
        # below, so the vocabulary stays exactly V.
        device_type = h.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
        w, h_cast = weight.to(dtype), h.to(dtype)
        if V % 64:
            w = F.pad(w, (0, 0, 0, -V % 64))  # (V_padded, C)
        grad_h = torch.empty_like(h) if need_grad else None
        grad_w = torch.zeros(w.shape, dtype=weight.dtype, device=weight.device) if need_grad else None
        compiling = torch.compiler.is_compiling()  # traced by torch.compile, not run op by op
        chunk_rows = COMPILED_GPU_CHUNK_ROWS if compiling and device_type != "cpu" else CHUNK_ROWS
        for start in range(0, h.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            hc, target, keep = h_cast[rows], targets[rows].clamp(min=0), scored[rows]
            logits = (hc @ w.t()).float()  # (chunk, V_padded), in float32 even under autocast
            logits[:, V:] = float("-inf")  # the padding rows are not tokens: probability 0
            target_logit = logits.gather(1, target[:, None]).squeeze(1)
            top = logits.amax(dim=1, keepdim=True)  # subtracted before exp so that it cannot overflow
            probs = logits.sub_(top).exp_()  # in place: softmax, not yet normalised
            total = probs.sum(dim=1, keepdim=True)
            # -log softmax(target) = logsumexp(logits) - target's logit
            loss += ((total.log() + top).squeeze(1) - target_logit).mul(keep).sum()
            if need_grad:
                # d loss / d logits = softmax - one_hot(target) on scored rows, 0 elsewhere
                if compiling:
                    # the one-hot as a comparison, which inductor fuses with the lines above into one pass
                    # writing the matmuls' dtype (a scatter would make it keep probs whole in float32);
                    # run eagerly, the scatter is the cheap one
                    one_hot = torch.arange(w.size(0), device=h.device) == target[:, None]  # (chunk, V_padded)
                    probs = probs.div_(total).sub_(one_hot.to(probs.dtype)).mul_(keep[:, None])
                else:
                    probs.mul_(keep[:, None] / total)
                    probs[torch.arange(len(target), device=h.device), target] -= keep.float()
                probs = probs.to(dtype)  # once for both matmuls (autocast would cast it for each)
                # gradients of the chunk's summed loss; the 1/n comes after, in float32, so that a float16
                # matmul under autocast sees values near 1 instead of underflowing ones near 1/n
                grad_h[rows] = probs @ w
                grad_w += probs.t() @ hc
        if need_grad:
            grad_h /= n
            grad_w = grad_w.div_(n)[:V]
        ctx.save_for_backward(grad_h, grad_w)
        return loss / n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None


# ================================================================================================
# Generation: the KV cache and the sampler that GPT.stream uses

class KVCache:
    """Keys and values of every position seen so far, for each layer. Generating token t+1 then needs
    attention for one new query only, instead of recomputing all t positions: O(T) work per token
    instead of O(T^2). Preallocated to block_size so a step writes in place instead of concatenating;
    one buffer per layer, so that a compiled step writes its layer's slice, not a copy of all layers."""

    def __init__(self, config, batch_size, device, dtype):
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = 0  # positions already cached (the same in every layer)

    def update(self, layer, k, v):
        """Store this step's (B, nh, T, hs) keys and values; return all of them so far."""
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def check_sampling_args(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps everything), got {top_p}")


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token id (B, 1) from logits (B, V).
    temperature: divides the logits; < 1 sharpens the distribution, > 1 flattens it, 0 means argmax.
    top_k: keep only the k most likely tokens.
    top_p (nucleus): keep the smallest set of most likely tokens whose probability sums to >= top_p,
    so the candidate set shrinks when the model is sure and grows when it is not."""
    if temperature < torch.finfo(torch.float32).tiny:  # 0, or so small that float32 rounds it to 0: greedy, the limit
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float()
    # shifted so the largest is 0: a tiny temperature then sends the others to -inf instead of all to inf (NaN)
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_best = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p; the first always stays, also when
        # top_p is so small that float32 rounds it to 0 (and 0 >= 0 would drop it)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def compile_generation(model, prompt):
    """torch.compile the model's per-token work (model.hidden: embeddings, blocks, final LayerNorm), and
    compile it right away for the prompt ids' length and for one-token steps, so that what is timed
    afterwards is generation alone. In eager mode a small model spends most of each step in Python
    and dispatch overhead of ~100 small operations; compiled, the step is a few fused kernels."""
    model.hidden = torch.compile(model.hidden)
    idx = torch.tensor([prompt], dtype=torch.long, device=model.lm_head.weight.device)
    model.generate(idx, 3, temperature=0.0)  # the prompt, the first step, then steps at any position
    return model


# ================================================================================================
# Files

def hf_config(config, eot_id=None, **overrides):
    """The transformers.GPT2Config of a model of this config (GPT-2's tanh GELU is their 'gelu_new')."""
    from transformers import GPT2Config
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, activation_function="gelu_new",
                      resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=eot_id, eos_token_id=eot_id,
                      **overrides)


def read_checkpoint(path):
    """The dict saved by train.py (or a shipped model.pt), with a sentence for each way the file can be wrong.
    weights_only: unpickling an arbitrary file can run code, so only tensors and plain containers are allowed;
    mmap: the optimizer state of a training checkpoint is never read unless it is used."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise ValueError(f"no checkpoint at {path}; train one with train.py or pass another path")
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}); was it cut off while copying?")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_args" not in checkpoint:
        raise ValueError(f"{path} is not a checkpoint of this project (it needs 'model' and 'model_args')")
    return checkpoint
