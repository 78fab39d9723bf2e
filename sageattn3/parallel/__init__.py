"""sageattn3 as the local attention of sequence-parallel engines (yunchang, xDiT).

    from sageattn3.parallel import merge_attention, yunchang_attn_processor, xdit_attn_backend

- `merge_attention`: combine two partial attentions over disjoint key sets by their LSE.
- `yunchang_attn_processor`: yunchang's forward-only kernel contract, for
  `LongContextAttention(attn_type=None, attn_processor=yunchang_attn_processor)`.
- `xdit_attn_backend` / `register_xdit_backend`: xDiT's attention-backend contract.
All three route through `sageattn3._lse.attention_with_lse` (output + LSE per call).
"""
from .merge import merge_attention
from .yunchang import yunchang_attn_processor
from .xdit import register_xdit_backend, xdit_attn_backend

__all__ = ["merge_attention", "yunchang_attn_processor", "xdit_attn_backend", "register_xdit_backend"]
