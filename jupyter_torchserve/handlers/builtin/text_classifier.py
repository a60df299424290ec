"""Built-in ``text_classifier`` handler: utf-8 text in, ``{label: probability}`` out.

Text is lower-cased and split into words and punctuation, mapped to ids with the archive's
vocabulary (``vocab.json``: ``{token: id}`` or a token list; or TorchServe's
``source_vocab.pt``), and fed to the model as a padded ``[N, L]`` id tensor, or, with
``handler_config["input_mode"] = "offsets"``, as TorchServe's ``(ids, offsets)`` pair for
``nn.EmbeddingBag`` models. The softmax over the classes is returned with the labels of
``index_to_name.json`` (all classes, or the ``topk`` best when ``handler_config`` sets it).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
from jts_base import JtsBaseHandler, as_bytes_or_text, first_tensor, request_payload

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def load_vocabulary(model_dir: str) -> dict[str, int]:
    """``vocab.json`` or ``source_vocab.pt`` as a ``{token: id}`` dict."""
    json_path = os.path.join(model_dir, "vocab.json")
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as f:
            vocab = json.load(f)
        if isinstance(vocab, list):
            return {str(token): i for i, token in enumerate(vocab)}
        return {str(k): int(v) for k, v in vocab.items()}
    pt_path = os.path.join(model_dir, "source_vocab.pt")
    if os.path.isfile(pt_path):
        try:
            vocab = torch.load(pt_path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a pickled vocab object (torchtext era) needs full unpickling
            vocab = torch.load(pt_path, map_location="cpu", weights_only=False)
        if hasattr(vocab, "get_stoi"):
            vocab = vocab.get_stoi()
        elif hasattr(vocab, "stoi"):
            vocab = vocab.stoi
        if isinstance(vocab, list):
            return {str(token): i for i, token in enumerate(vocab)}
        if isinstance(vocab, dict):
            return {str(k): int(v) for k, v in vocab.items()}
        raise ValueError(f"source_vocab.pt holds a {type(vocab).__name__}, not a token->id dict")
    raise FileNotFoundError(
        "the text classifier needs vocab.json or source_vocab.pt in the archive"
    )


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks, like torchtext's ``basic_english`` tokenizer."""
    return _TOKEN.findall(text.lower() if lowercase else text)


class TextClassifier(JtsBaseHandler):
    """Vocabulary lookup, padding, softmax."""

    input_format = "utf-8 text (or JSON {'text': ...})"

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        cfg = self.handler_config
        self.vocab = load_vocabulary(self.model_dir)
        self.lowercase = bool(cfg.get("lowercase", True))
        self.input_mode = str(cfg.get("input_mode", "padded"))
        self.topk = cfg.get("topk")
        self.apply_softmax = bool(cfg.get("apply_softmax", True))
        unk = cfg.get("unk_token", "<unk>")
        pad = cfg.get("pad_token", "<pad>")
        self.unk_id = int(self.vocab.get(unk, 0))
        self.pad_id = int(self.vocab.get(pad, cfg.get("pad_id", 0)))
        shape = self.input_shape(0)
        fixed = shape[1] if shape and len(shape) == 2 and isinstance(shape[1], int) else -1
        self.max_length = int(cfg.get("max_length", fixed if fixed > 0 else 0)) or None
        self.pad_to_max = fixed > 0

    def text_of(self, payload: Any) -> str:
        payload = as_bytes_or_text(payload)
        if isinstance(payload, dict):
            for key in ("text", "data", "input", "inputs"):
                if key in payload:
                    return self.text_of(payload[key])
            raise ValueError("a JSON text input needs a 'text' field")
        if isinstance(payload, list) and len(payload) == 1:
            return self.text_of(payload[0])
        if isinstance(payload, bytes):
            return payload.decode("utf-8")
        if isinstance(payload, str):
            return payload
        raise TypeError(f"cannot read text from {type(payload).__name__}")

    def encode(self, text: str) -> list[int]:
        ids = [int(self.vocab.get(token, self.unk_id)) for token in tokenize(text, self.lowercase)]
        if self.max_length:
            ids = ids[: self.max_length]
        return ids or [self.pad_id]

    def preprocess(self, data: list[Any]) -> Any:
        encoded = [self.encode(self.text_of(request_payload(row))) for row in data]
        self.request_sizes = [1] * len(encoded)
        dtype = self.input_dtype(0, torch.int64)
        if self.input_mode == "offsets":
            offsets = [0]
            for ids in encoded[:-1]:
                offsets.append(offsets[-1] + len(ids))
            flat = torch.tensor([i for ids in encoded for i in ids], dtype=dtype)
            return flat.to(self.device), torch.tensor(offsets, dtype=torch.int64).to(self.device)
        length = self.max_length if self.pad_to_max else max(len(ids) for ids in encoded)
        rows = [ids + [self.pad_id] * (length - len(ids)) for ids in encoded]
        return torch.tensor(rows, dtype=dtype).to(self.device)

    def _split_rows(self, model_input: Any) -> list[Any] | None:
        if self.input_mode == "offsets":
            return None  # (ids, offsets) cannot be cut row by row generically
        return super()._split_rows(model_input)

    def postprocess(self, output: Any) -> list[dict[str, float]]:
        logits = first_tensor(output).detach().float().cpu()
        logits = logits.reshape(logits.shape[0], -1)
        probs = torch.softmax(logits, dim=1) if self.apply_softmax else logits
        if self.topk:
            k = max(1, min(int(self.topk), probs.shape[1]))
            values, classes = torch.topk(probs, k, dim=1)
            return [
                {self.label(c): p for c, p in zip(cs, vs, strict=True)}
                for cs, vs in zip(classes.tolist(), values.tolist(), strict=True)
            ]
        return [{self.label(c): p for c, p in enumerate(row)} for row in probs.tolist()]
