"""Build a small Llama-style causal LM in Hugging Face format, offline, in seconds.

Random weights from a fixed seed (`save_pretrained` as safetensors) and a byte-level BPE tokenizer trained
here with `tokenizers` on corpus.txt (shipped beside this file), with a chat template. No hub is contacted.

    python3 examples/llm/make_tiny_model.py OUT_DIR [--hidden 64 --layers 4 --heads 4 --kv-heads 2 ...]

Any real checkpoint directory (config.json + *.safetensors + tokenizer files) loads the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus.txt"
SPECIALS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# One turn per line pair: role tag, content, end tag; add_generation_prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(vocab_size: int) -> object:
    """A byte-level BPE over corpus.txt: every string encodes (no unknown token), decode inverts encode."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(CORPUS)], trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # untyped upstream
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=SPECIALS[3:])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out_dir: str | os.PathLike[str], *, hidden: int = 64, layers: int = 4, heads: int = 4,
          kv_heads: int = 2, intermediate: int | None = None, vocab: int = 512, context: int = 256,
          seed: int = 1234, init_std: float = 0.2, tie_embeddings: bool = False,
          dtype: str = "float32") -> pathlib.Path:
    """Write config.json, model.safetensors and the tokenizer files into out_dir; returns the path.

    init_std is larger than a trained model's (0.02) so random logits are peaked: greedy decoding then has
    clear winners, and token-for-token comparisons do not hinge on float rounding.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab)
    n_vocab = len(tokenizer)  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=n_vocab, hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=context, rms_norm_eps=1e-5, initializer_range=init_std,
        tie_word_embeddings=tie_embeddings, bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # the norms start at 1.0 whatever the seed; vary them a little too
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.8, 1.2)
    model.to(getattr(torch, dtype)).save_pretrained(out)  # dtype: float32 | bfloat16 | float16
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    (out / "aiosd-tiny-model.json").write_text(json.dumps({"seed": seed, "hidden": hidden, "layers": layers}))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--init-std", type=float, default=0.2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    a = p.parse_args(argv)
    path = build(a.out_dir, hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
                 intermediate=a.intermediate, vocab=a.vocab, context=a.context, seed=a.seed,
                 init_std=a.init_std, dtype=a.dtype)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
