"""The token ids a checkpoint decodes with, read from its config, never assumed.

T5 checkpoints agree on `<pad>` = 0 = decoder start and `</s>` = 1, but the numbers are the
checkpoint's to say (`config.json`), and the vocabulary size differs between them (t5-base
32128, the tokenizer 32100). The exporter records these in the export manifest; the config
generator passes them to the models that need them and publishes them in `t5_qa`'s parameters,
where the client reads them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class TokenIds:
    decoder_start: int  # the first decoder input
    eos: int  # `</s>`: ends an answer; the prompt's last token
    pad: int  # fills rows after their end
    vocab_size: int  # logits per step; input ids must lie below it

    @classmethod
    def from_model_config(cls, config: Any) -> "TokenIds":
        """From a `transformers` T5 config (or anything with its attribute names)."""
        values = {"decoder_start": config.decoder_start_token_id, "eos": config.eos_token_id,
                  "pad": config.pad_token_id, "vocab_size": config.vocab_size}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise ValueError(f"the model config does not set {', '.join(missing)}: a T5 config needs "
                             "decoder_start_token_id, eos_token_id, pad_token_id and vocab_size")
        return cls(**{name: int(value) for name, value in values.items()})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TokenIds":
        return cls(**{name: int(values[name]) for name in cls.__dataclass_fields__})
