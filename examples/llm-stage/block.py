"""LLM stage block: layers [a, b) of a checkpoint, one stage of a split model (sdk.llm.stage_block).

`aiosd llm split MODEL_DIR --stages N --apply` creates one block of this component per layer range and the
vDAG that chains them; blockInitData = {model_path, layers: [start, end)}.
"""

from sdk import Block
from sdk.llm.stage_block import LLMStageBlock

if __name__ == "__main__":
    Block(LLMStageBlock).run()
