"""Tokenizers: the backbone's own (``transformers.AutoTokenizer`` from a local path) or a built-in byte tokenizer.

The byte tokenizer exists so random-init backbones (tests, bring-up, the small demo model) have a real, lossless,
deterministic tokenizer without downloading anything. Its special ids sit above the 256 byte ids so that the
end-of-text id is also the largest id, which is what CLIP's text pooling expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Tokenizer(Protocol):
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int

    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text`` with BOS first, no EOS, no padding."""


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255; PAD 256, BOS 257, EOS 258."""

    vocab_size = 259
    pad_token_id = 256
    bos_token_id = 257
    eos_token_id = 258

    def encode_text(self, text: str) -> list[int]:
        return [self.bos_token_id, *text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "sentencepiece.bpe.model")


class HFTokenizer:
    """A ``transformers`` tokenizer loaded from a local directory, behind the same small interface."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise FileNotFoundError(f"no tokenizer files in {path} (expected one of {', '.join(TOKENIZER_FILES)})")
        try:
            self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(
                f"no usable tokenizer files in {path} ({exc}); set tokenizer 'bytes' for a random-init backbone"
            ) from exc
        self.bos_token_id = self._tok.bos_token_id if self._tok.bos_token_id is not None else self._tok.cls_token_id
        self.eos_token_id = self._tok.eos_token_id
        self.pad_token_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_token_id
        if self.bos_token_id is None or self.eos_token_id is None:
            raise ValueError(f"tokenizer in {path} defines no BOS/EOS token")

    def encode_text(self, text: str) -> list[int]:
        ids = self._tok(text, add_special_tokens=False)["input_ids"]
        return [self.bos_token_id, *ids]

    def save(self, path: str | Path) -> None:
        self._tok.save_pretrained(str(path))


MAX_BYTES_PER_TOKEN = 32
"""No tokenizer in use packs more UTF-8 bytes than this into one token, so text longer than ``limit`` times this is
refused before it is tokenized: a megabyte published on ``instruction`` costs nothing."""


class InstructionTooLong(ValueError):
    """An instruction has more tokens than the checkpoint's ``backbone.max_instruction_tokens``."""


def count_instruction_tokens(tokenizer: Tokenizer, text: str, limit: int) -> int:
    """Tokens of ``text`` (BOS not counted); ``InstructionTooLong`` names the limit and the length when above it.

    The model's memory and compute grow with the prompt (attention is quadratic), so the limit is what keeps a
    hostile or mistaken instruction from exhausting the robot computer."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > limit * MAX_BYTES_PER_TOKEN:
        raise InstructionTooLong(
            f"instruction of {size} bytes is longer than max_instruction_tokens={limit} tokens "
            f"can hold (at most {limit * MAX_BYTES_PER_TOKEN} bytes); refused"
        )
    n = len(tokenizer.encode_text(text)) - 1
    if n > limit:
        raise InstructionTooLong(f"instruction has {n} tokens, more than max_instruction_tokens={limit}; refused")
    return n


def load_tokenizer(kind: str, path: str | None) -> Tokenizer:
    """``kind`` is the config's ``tokenizer`` field: ``bytes`` or ``auto`` (from ``path``)."""
    if kind == "bytes":
        return ByteTokenizer()
    if path is None:
        raise ValueError("tokenizer 'auto' needs a local path")
    return HFTokenizer(path)


def checkpoint_tokenizer(kind: str, backbone_path: str | None, checkpoint: str | Path) -> Tokenizer:
    """The tokenizer a saved checkpoint uses: its own ``tokenizer/`` folder (``checkpoint``), or as
    ``load_tokenizer``."""
    if kind == "checkpoint":
        return HFTokenizer(Path(checkpoint) / "tokenizer")
    return load_tokenizer(kind, backbone_path)
