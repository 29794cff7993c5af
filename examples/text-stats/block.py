"""Text statistics block: words, sentences, reading time and the most frequent words of a text.

A useful CPU block with no dependencies beyond the SDK. Written as an AIOS block (only the import
line differs from `aios_instance`). Parameters: `top_k` (live-updatable), `stopwords` (list).
"""

import json
import re
from collections import Counter

from sdk import Block, OnDataResult, PreProcessResult

WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
DEFAULT_STOPWORDS = {"the", "a", "an", "and", "or", "of", "to", "in", "is", "it", "that", "for", "on", "with",
                     "as", "was", "are", "be", "this", "by", "at", "from"}
WORDS_PER_MINUTE = 230  # adult silent reading speed (Brysbaert 2019)


class TextStatsBlock:
    def __init__(self, context):
        self.context = context
        params = context.block_init_parameters
        self.top_k = int(params.get("top_k", 5))
        self.stopwords = set(params.get("stopwords", DEFAULT_STOPWORDS))
        self.context.metrics.register_counter("text_words", "words analysed")

    def on_preprocess(self, packet):
        try:
            data = json.loads(packet.data) if packet.data else {}
        except ValueError as e:
            return False, "data is not JSON: " + str(e)
        text = data.get("text") if isinstance(data, dict) else None
        texts = [text] if isinstance(text, str) else []
        for f in packet.files:  # attached text files are analysed too, one result each
            texts.append(f.file_data.decode("utf-8", errors="replace"))
        if not texts:
            return False, "give data.text (a string) or attach text files"
        return True, [PreProcessResult(packet=packet, extra_data={"text": t}) for t in texts]

    def on_data(self, entry):
        text = entry.extra_data["text"]
        words = [w.lower() for w in WORD.findall(text)]
        sentences = max(1, len(SENTENCE_END.findall(text))) if words else 0
        counts = Counter(w for w in words if w not in self.stopwords)
        self.context.metrics.increment_counter("text_words", len(words))
        return True, OnDataResult(output={
            "characters": len(text),
            "words": len(words),
            "unique_words": len(set(words)),
            "sentences": sentences,
            "avg_words_per_sentence": round(len(words) / sentences, 2) if sentences else 0.0,
            "reading_time_s": round(len(words) * 60 / WORDS_PER_MINUTE, 1),
            "top_words": [[w, n] for w, n in counts.most_common(self.top_k)],
        })

    def on_update(self, updated_parameters):
        top_k = updated_parameters.get("top_k", self.top_k)
        if not isinstance(top_k, int) or not 1 <= top_k <= 100:
            return False, "top_k must be an integer in 1..100"
        self.top_k = top_k
        if "stopwords" in updated_parameters:
            self.stopwords = set(updated_parameters["stopwords"])
        return True, updated_parameters

    def health(self):
        return {"status": "healthy"}

    def management(self, action, data):
        if action == "get_config":
            return {"top_k": self.top_k, "stopwords": sorted(self.stopwords)}
        return {"status": "error", "message": "unknown action " + action}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    Block(TextStatsBlock).run()
