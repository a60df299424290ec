"""Built-in ``text_classifier`` handler: utf-8 text in, ``{label: probability}`` out.

Text is lower-cased and split into words and punctuation, mapped to ids with the archive's
vocabulary (``vocab.json``: ``{token: id}`` or a token list; or TorchServe's
``source_vocab.pt``), and fed to the model as a padded ``[N, L]`` id tensor, or, with
``handler_config["input_mode"] = "offsets"``, as TorchServe's ``(ids, offsets)`` pair for
``nn.EmbeddingBag`` models. The softmax over the classes is returned with the labels of
``index_to_name.json`` (all classes, or the ``topk`` best when ``handler_config`` sets it).
An explanation is Captum's LayerIntegratedGradients over the model's ``nn.Embedding``,
answered as TorchServe's Hugging Face handler does: ``{"words", "importances", "delta"}``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
from jts_base import (
    InputError,
    JtsBaseHandler,
    captum_attr,
    finite_float,
    first_tensor,
    prediction_error,
    request_payload,
    unwrapped,
)

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
    explain_method = "LayerIntegratedGradients"

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
        self.pad_token = str(pad)
        self.encoded: list[list[int]] = []
        settings = self.explain_settings
        if settings.baseline_given and (
            isinstance(settings.baseline, bool) or not isinstance(settings.baseline, int)
        ):
            raise ValueError("a text model's explain baseline is a token id (an int)")

    def text_of(self, payload: Any) -> str:
        payload = unwrapped(
            payload, ("text", "data", "input", "inputs"), "a JSON text input needs a 'text' field"
        )
        if isinstance(payload, list) and len(payload) == 1:
            return self.text_of(payload[0])
        if isinstance(payload, bytes):
            return payload.decode("utf-8")
        if isinstance(payload, str):
            return payload
        raise InputError(f"cannot read text from {type(payload).__name__}")

    def words(self, text: str) -> list[str]:
        """The words the model sees, in order (before the vocabulary maps them to ids)."""
        words = tokenize(text, self.lowercase)
        return words[: self.max_length] if self.max_length else words

    def encode(self, text: str) -> list[int]:
        ids = [int(self.vocab.get(token, self.unk_id)) for token in self.words(text)]
        return ids or [self.pad_id]

    def preprocess(self, data: list[Any]) -> Any:
        self.encoded = [self.encode(self.text_of(request_payload(row))) for row in data]
        self.request_sizes = [1] * len(self.encoded)
        return self.model_input(self.encoded)

    def model_input(self, encoded: list[list[int]]) -> Any:
        """Token ids -> the padded ``[N, L]`` tensor, or ``(ids, offsets)`` for EmbeddingBag."""
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

    # -- explanations ------------------------------------------------------------------------
    def request_inputs(self, model_input: Any) -> list[Any]:
        """Each request's ids padded on their own, so its explanation is the same in any batch."""
        return [self.model_input([ids]) for ids in self.encoded]

    def embedding_layer(self) -> torch.nn.Module:
        """The layer LayerIntegratedGradients integrates over: configured, else the first
        ``nn.Embedding`` of the model."""
        name = self.explain_settings.layer
        if name:
            try:
                return self.model.get_submodule(str(name))
            except AttributeError as exc:
                raise prediction_error(f"the model has no layer {name!r}: {exc}", 501) from None
        for module in self.model.modules():
            if isinstance(module, torch.nn.EmbeddingBag):
                raise prediction_error(
                    "per-word importances need an nn.Embedding layer (one vector per word); "
                    "this model's nn.EmbeddingBag pools the words before any layer can see them",
                    501,
                )
            if isinstance(module, torch.nn.Embedding):
                return module
        fmt = self.metadata.get("format")
        raise prediction_error(
            "LayerIntegratedGradients needs the model's nn.Embedding as a Python module, and "
            + (
                f"this archive holds a {fmt} model: archive it with format='eager'"
                if fmt in ("torchscript", "export")
                else "this model has none (name it in handler_config['explain']['layer'])"
            ),
            501,
        )

    def get_insights(self, text_preprocess: Any, raw_data: Any, target: Any) -> list[Any]:
        """TorchServe's hook: ``[{"words", "importances", "delta"}]`` for one request.

        ``importances`` are the attributions summed over the embedding dimension and divided
        by their norm (Captum's tutorial, TorchServe's Hugging Face handler); ``delta`` is
        the convergence delta of the unnormalised attributions. The reference sequence is
        the padding id (``handler_config["explain"]["baseline"]`` overrides it).
        """
        settings = self.explain_settings
        if not isinstance(text_preprocess, torch.Tensor):
            raise prediction_error("per-word importances need the padded input mode", 501)
        layer = self.embedding_layer()
        reference = int(settings.baseline) if settings.baseline_given else self.pad_id

        def forward(ids: torch.Tensor) -> torch.Tensor:
            output = first_tensor(self.model(ids))
            return output.reshape(output.shape[0], -1)

        lig = captum_attr().LayerIntegratedGradients(forward, layer)
        attributions, delta = lig.attribute(
            text_preprocess,
            baselines=torch.full_like(text_preprocess, reference),
            target=target,
            n_steps=settings.n_steps,
            method=settings.method,
            internal_batch_size=settings.internal_batch_size,
            return_convergence_delta=True,
        )
        self.convergence_delta = delta
        summed = attributions.sum(dim=-1).detach().float().cpu()
        norms = torch.linalg.vector_norm(summed, dim=1, keepdim=True)
        importances = summed / torch.where(norms > 0, norms, torch.ones_like(norms))
        words = self.words(self.text_of(request_payload(raw_data)))
        length = text_preprocess.shape[1]
        words = (words + [self.pad_token] * length)[:length]
        return [
            {"words": words, "importances": row, "delta": finite_float(d)}
            for row, d in zip(importances.tolist(), delta.reshape(-1).tolist(), strict=True)
        ]

    def class_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scores, dim=1) if self.apply_softmax else scores

    def _split_rows(self, model_input: Any) -> list[Any] | None:
        if self.input_mode == "offsets":
            return None  # (ids, offsets) cannot be cut row by row generically
        return super()._split_rows(model_input)

    def postprocess(self, output: Any) -> list[dict[str, float]]:
        logits = first_tensor(output).detach().float().cpu()
        probs = self.class_probabilities(logits.reshape(logits.shape[0], -1))
        if self.topk:
            k = max(1, min(int(self.topk), probs.shape[1]))
            values, classes = torch.topk(probs, k, dim=1)
            return [
                {self.label(c): p for c, p in zip(cs, vs, strict=True)}
                for cs, vs in zip(classes.tolist(), values.tolist(), strict=True)
            ]
        return [{self.label(c): p for c, p in enumerate(row)} for row in probs.tolist()]
