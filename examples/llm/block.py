"""LLM block: serves a Hugging Face causal LM checkpoint (generate / chat) over the block SDK's packets.

Everything is in sdk.llm.LLMBlock; this file is what the component's image runs. blockInitData.model_path
names the checkpoint directory (build a small one with make_tiny_model.py). See README.md for the task format.
"""

from sdk import Block
from sdk.llm.block import LLMBlock

if __name__ == "__main__":
    Block(LLMBlock).run()
