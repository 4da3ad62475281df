"""Publishing a checkpoint on the Hugging Face Hub: export, model card, upload.

``prepare_hub_folder`` writes everything that will be uploaded into a local folder (HF-format
weights, config, tokenizer, ``README.md`` model card, conversion report); ``upload_folder`` sends
it with ``huggingface_hub`` (``create_repo`` then ``upload_folder``). They are separate so a dry
run is the first step alone and a failed upload leaves the prepared folder, and the checkpoint,
untouched.

The token is never handled here: ``huggingface_hub`` reads ``HF_TOKEN`` or the
``huggingface-cli login`` file itself. Error messages are scrubbed of it all the same.
"""

import json
import os
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from zmaj_lm.interop.convert import HF_SOURCE_NAME, convert_to_hf, read_json
from zmaj_lm.interop.verify import REPORT_NAME
from zmaj_lm.models.io import CONFIG_NAME

SUMMARY_NAME = "summary.json"


class HubError(RuntimeError):
    """Upload to the Hub failed (network, authentication, permissions)."""


def _scrub(text: str) -> str:
    """Remove any Hub token from ``text`` (error messages may echo request details)."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        text = text.replace(token, "***")
    try:
        from huggingface_hub import get_token

        stored = get_token()
    except Exception:
        stored = None
    return text.replace(stored, "***") if stored else text


def _table(mapping: dict[str, Any]) -> str:
    rows = ["| key | value |", "| --- | --- |"]
    for key, value in mapping.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        rows.append(f"| {key} | {shown} |")
    return "\n".join(rows)


def build_model_card(
    ckpt: Path,
    folder: Path,
    repo_id: str,
    *,
    license: str = "apache-2.0",
    base_model: str | None = None,
    datasets: list[str] | None = None,
    tags: list[str] | None = None,
) -> str:
    """README.md: YAML metadata, then the training config, final metrics and conversion report."""
    hf_config = read_json(folder / "config.json")
    source = read_json(ckpt / HF_SOURCE_NAME) if (ckpt / HF_SOURCE_NAME).is_file() else {}
    base_model = base_model or source.get("repo_id")
    metadata: dict[str, Any] = {
        "license": license,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["zmaj-lm", hf_config["model_type"], *(tags or [])],
    }
    if base_model:
        metadata["base_model"] = base_model
    if datasets:
        metadata["datasets"] = list(datasets)
    name = repo_id.split("/")[-1]
    parts = [
        "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---",
        f"# {name}",
        f"A `{hf_config['architectures'][0]}` trained or converted with zmaj-lm and "
        "exported to transformers format; it loads with "
        f'`AutoModelForCausalLM.from_pretrained("{repo_id}")`, no remote code needed.',
    ]
    if base_model:
        parts.append(f"Base model: [{base_model}](https://huggingface.co/{base_model}).")
    config_text = (ckpt / CONFIG_NAME).read_text(encoding="utf-8")
    parts += ["## Training config", f"```yaml\n{config_text.rstrip()}\n```"]
    summary = ckpt / SUMMARY_NAME
    parts.append("## Final metrics")
    if summary.is_file():
        parts.append(_table(read_json(summary)))
    else:
        parts.append("No `summary.json` was found next to the checkpoint.")
    report = folder / REPORT_NAME
    parts.append("## Conversion report")
    if report.is_file():
        data = read_json(report)
        verdict = "passed" if data.get("passed") else "FAILED"
        parts.append(
            f"Logits of zmaj-lm and transformers on a probe batch (fp32): {verdict}, max absolute "
            f"difference {data.get('max_abs_logit_diff'):.3g} (tolerance {data.get('tolerance')})."
        )
        parts.append(_table({k: v for k, v in data.items() if k != "layer_max_abs_diff"}))
    else:
        parts.append("The export was not verified against transformers.")
    return "\n\n".join(parts) + "\n"


def prepare_hub_folder(
    ckpt: str | Path,
    folder: str | Path,
    repo_id: str,
    *,
    verify: bool = True,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    **card: Any,
) -> Path:
    """Export ``ckpt`` to ``folder`` in HF format, verify it, and write the model card."""
    ckpt, folder = Path(ckpt), Path(folder)
    family = convert_to_hf(ckpt, folder, max_shard_bytes=max_shard_bytes, overwrite=overwrite)
    if verify:
        from zmaj_lm.interop.verify import verify_conversion, write_report

        report = verify_conversion(ckpt, folder)
        report.family, report.direction = family, "to-hf"
        write_report(report, folder)
        if not report.passed:
            raise HubError(
                f"{folder / REPORT_NAME}: export does not match (max |logit diff| "
                f"{report.max_abs_logit_diff:.3g}, first diverging: {report.first_diverging}); "
                "not uploading"
            )
    (folder / "README.md").write_text(
        build_model_card(ckpt, folder, repo_id, **card), encoding="utf-8"
    )
    logger.info("prepared {} for {}", folder, repo_id)
    return folder


def upload_folder(
    folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None
) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message="Upload model exported by zmaj-lm",
        )
    except Exception as exc:
        raise HubError(
            _scrub(
                f"push to {repo_id} failed: {type(exc).__name__}: {str(exc).rstrip('.')}. "
                f"The exported folder "
                f"{folder} is intact; retry with the same command once the problem is fixed "
                "(check the network and `huggingface-cli login` or HF_TOKEN)"
            )
        ) from None
    url = str(getattr(info, "commit_url", None) or info)
    logger.info("uploaded {} to {}", folder, repo_id)
    return url
