"""Names of the built-in handlers, shared by the archiver and the handler runtime.

Kept in a module with no imports so that both sides (and the engine) can read it cheaply.
"""

#: Handler names served by our own built-ins (TorchServe's names plus ``tensor``).
BUILTIN_HANDLERS = (
    "tensor",
    "image_classifier",
    "image_segmenter",
    "object_detector",
    "text_classifier",
)
#: The handler used when neither the caller nor the manifest names one.
DEFAULT_HANDLER = "tensor"
