"""Text <-> token ids with the model's own GPT-2-style byte-level BPE, and its chat template.

Built in-process with the ``tokenizers`` library from the vocabulary and merges stored in the model
file's tokenizer section (:func:`gpu.llm.gguf_import.tokenizer_meta`); no download. Control tokens
(GGUF token type 3, e.g. ``<|im_start|>``) are matched as whole special tokens. The ``smollm`` / GPT-2
pre-tokenizer splits digits individually, then applies the byte-level regex.
"""

from __future__ import annotations

from typing import Any

from state import codec

CONTROL = 3
USER_DEFINED = 4


class BpeTokenizer:
    """Encode / decode with a byte-level BPE given as GGUF tokenizer metadata."""

    def __init__(self, meta: dict[str, Any]) -> None:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        if meta.get("model") != "gpt2":
            raise ValueError(f"tokenizer model {meta.get('model')!r} is not gpt2 (byte-level BPE)")
        tokens: list[str] = meta["tokens"]
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        pre = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if meta.get("pre") in ("smollm", "starcoder", "qwen2", "llama-bpe", "default"):
            pre.insert(0, pre_tokenizers.Digits(individual_digits=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
        tok.decoder = decoders.ByteLevel()
        specials = [t for t, ty in zip(tokens, meta["token_types"], strict=True) if ty in (CONTROL, USER_DEFINED)]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        self._tok = tok
        self.meta = meta
        self.bos_id: int = meta["bos"]
        self.eos_id: int = meta["eos"]
        self.chat_template: str = meta.get("chat_template", "")

    @classmethod
    def from_section(cls, data: bytes) -> BpeTokenizer:
        """From the model file's tokenizer section (canonical CBOR)."""
        return cls(codec.decode(data, max_bytes=64 << 20))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render the model's Jinja chat template (sandboxed)."""
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        tpl = env.from_string(self.chat_template)
        return tpl.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.meta["tokens"][self.bos_id],
            eos_token=self.meta["tokens"][self.eos_id],
        )

    def chat_ids(self, user: str, system: str | None = None) -> list[int]:
        """Token ids of a one-turn chat ready for generation."""
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.encode(self.apply_chat_template(msgs))
