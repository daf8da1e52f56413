"""A small GPT-style decoder (after nanoGPT's model.py).

Batch keys: `input_ids` (B, T) and, for padded text, `attention_mask` (B, T) with 1 on real tokens.
- causal_lm: returns next-token logits (B, T, vocab); the output projection is tied to the token
  embedding by reusing its weight (no second parameter, so safetensors never sees shared tensors).
- classification/regression: the sequence is pooled (mean over real tokens, or the last real token)
  into a linear `head`; returns (B, out), or (B,) when out == 1. Padding is on the right, so causal
  attention alone keeps real tokens from seeing it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import TransformerConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout_p = config.dropout  # attention dropout inside SDPA; regularization.dropout overrides it
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_p if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig, out_features: int | None) -> None:
        """`out_features` None builds the language-model output; an int builds a pooled head."""
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("TransformerConfig.vocab_size must be resolved before building the model")
        self.config = config
        self.out_features = out_features
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, out_features) if out_features is not None else None
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by depth so the residual stream's variance stays put
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        if self.head is None:
            return F.linear(x, self.wte.weight)
        out = self.head(self._pool(x, attention_mask))
        return out.squeeze(-1) if self.out_features == 1 else out

    def _pool(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            return x.mean(dim=1) if self.config.pooling == "mean" else x[:, -1]
        mask = attention_mask.to(x.dtype).unsqueeze(-1)
        if self.config.pooling == "mean":
            return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        last = (attention_mask.sum(dim=1) - 1).clamp(min=0).long()
        return x[torch.arange(x.shape[0], device=x.device), last]

    def layer_prefixes(self) -> list[str]:
        return [f"blocks.{i}." for i in range(len(self.blocks))]

    def frozen_with_first_layers(self) -> list[str]:
        """Freezing the first layers also freezes what feeds them: the embeddings."""
        return ["wte.", "wpe."]

    def num_flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N for the weights plus 12·L·T·C for attention (PaLM appendix B)."""
        n_params = sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()
        c = self.config
        return 6 * n_params + 12 * c.n_layer * seq_len * c.n_embd

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `max_new_tokens` tokens; temperature 0 is greedy."""
        for _ in range(max_new_tokens):
            context = input_ids[:, -self.config.block_size :]
            logits = self(context)[:, -1, :]
            if temperature <= 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator)
            input_ids = torch.cat([input_ids, next_id], dim=1)
        return input_ids
