"""The bundle's README.md: what each file is for and the commands that come next, from the
same `Bundle` that the notebook shows, plus what a target has to say on its own."""

from __future__ import annotations

from .bundle import Bundle

#: One line per kind of file, by path prefix (the first match wins).
_WHAT = (
    (
        "config/config.properties",
        "TorchServe config: addresses, token auth off, the model_snapshot",
    ),
    ("model-store/", "the model archive, unchanged"),
    ("model/", "the model archive, unchanged (what modelUri points at)"),
    ("inferenceservice.yaml", "the KServe InferenceService"),
    ("servingruntime.yaml", "the ServingRuntime that runs the image below"),
    ("mlservice.yaml", "the T9k MLService: one release per version"),
    ("mlserviceruntime.yaml", "the T9k runtime: the image below with T9k's TorchServe args"),
    ("serve_config.yaml", "Ray Serve config for serve run / serve deploy"),
    ("rayservice.yaml", "KubeRay RayService (serveConfigV2 + a cluster sketch)"),
    ("config.properties", "TorchServe config with the model_snapshot"),
    ("image/Dockerfile", "the serving image"),
    ("image/config.properties", "the image's default TorchServe config"),
    ("image/torchserve", "the `torchserve` command of the image"),
    ("image/wheels/", "optional jupyter_torchserve wheel for the image"),
    ("v1-request.json", "a KServe v1 request built from the archive's sample input"),
    ("v2-request.json", "a KServe v2 request: the archive's sample input"),
    ("predictions-request.json", "the archive's sample input, for the curl step"),
    ("grpc-v2-request.json", "the same input as a gRPC ModelInferRequest (protobuf JSON)"),
    ("grpc_predict_v2.proto", "KServe's v2 gRPC service, for grpcurl"),
    ("README.md", "this file"),
)


def readme(bundle: Bundle, intro: str, extra: str = "") -> str:
    lines = [f"# {bundle.model} for {bundle.target}", "", intro.strip(), "", "## Files", ""]
    for f in [*bundle.files, "README.md"]:
        what = next((w for prefix, w in _WHAT if str(f).startswith(prefix)), "")
        lines.append(f"- `{f}`" + (f": {what}" if what else ""))
    if bundle.next_steps:
        lines += ["", "## Next", ""]
        for i, (what, command) in enumerate(bundle.next_steps, 1):
            lines += [f"{i}. {what}:", "", "   ```bash"]
            lines += [f"   {line}" for line in command.splitlines()]
            lines += ["   ```", ""]
    if bundle.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in bundle.notes] + [""]
    if extra:
        lines += [extra.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"
