"""Build a tiny random Llama (tokenizer, chat template, float32 safetensors) for engine tests.

Run with the vLLM venv's python (tests/engines/engine_env.sh vllm prints it):
    python tests/engines/tiny_llama.py DIR
Offline and deterministic: the SentencePiece tokenizer is trained on Python stdlib sources and
the weights come from a fixed seed. A DIR that already holds a built model is left as it is.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaTokenizer  # type: ignore[import-not-found, unused-ignore]

SEED = 0
VOCAB = 1000
MAX_POSITIONS = 4096  # long answers: a test must still be generating when its client leaves
DONE = ".tiny-llama-complete"

# Plain-text roles, one turn per line block, each closed by the EOS token. The final message's
# content appears verbatim, so `continue_final_message` can cut the prompt right after it.
# `banner` is a chat_template_kwargs variable (vLLM passes on only those a template reads): the
# engine tier shows a caller's chat_template_kwargs reaching the template by its prompt tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if banner %}<|banner|>\n{{ banner }}{{ eos_token }}\n{% endif %}"
    "{% if tools %}<|tools|>\n{{ tools | tojson }}{{ eos_token }}\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus() -> str:
    """Text every Python install has: a few stdlib sources (prose, code, JSON punctuation)."""
    import argparse
    import json.decoder
    import textwrap

    return "\n".join(
        Path(m.__file__).read_text(encoding="utf-8")  # type: ignore[arg-type]
        for m in (argparse, json.decoder, textwrap)
    )


def build_tokenizer(out: Path) -> LlamaTokenizer:
    # In the vLLM venv only, not the project's: mypy may not find them.
    import sentencepiece as spm  # type: ignore[import-not-found, unused-ignore]
    from transformers import LlamaTokenizer  # type: ignore[import-not-found, unused-ignore]

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        text.write_text(corpus(), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(text),
            model_prefix=str(Path(tmp) / "tokenizer"),
            vocab_size=VOCAB,
            model_type="bpe",
            byte_fallback=True,  # every byte is a token: JSON and any Unicode can be encoded
            character_coverage=1.0,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            num_threads=1,  # one thread: the same pieces on every run
            seed_sentencepiece_size=100_000,
            minloglevel=2,
        )
        tokenizer = LlamaTokenizer.from_pretrained(
            tmp, vocab_file=str(Path(tmp) / "tokenizer.model"), legacy=False
        )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = MAX_POSITIONS
    tokenizer.save_pretrained(out, save_jinja_files=False)  # template in tokenizer_config.json
    return tokenizer


def build(out: Path) -> None:
    if (out / DONE).exists():
        return  # before the heavy imports: a second run is instant
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built beside and renamed into place: a reader never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        write_model(tmp)
        if (out / DONE).exists():  # a concurrent build finished first
            return
        shutil.rmtree(out, ignore_errors=True)  # an interrupted build's leftovers
        tmp.rename(out)
    except OSError:
        if not (out / DONE).exists():  # not a concurrent build that won the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_model(out: Path) -> None:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = build_tokenizer(out)
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # vLLM's CPU attention has no kernel for head_dim 16
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    (out / DONE).write_text(json.dumps({"seed": SEED, "vocab": len(tokenizer)}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tiny_llama.py DIR")
    build(Path(sys.argv[1]))
    print(sys.argv[1])
