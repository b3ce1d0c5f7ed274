"""Fine-tuning (`train.init_from`): a new run that starts from a trained model (a `.pt`,
a model folder or a Hub id). It takes the model's weights, tokenizers and vocabularies,
and with them every setting that makes the model's shape or its text side; the
optimizer, the schedule and the step count start fresh."""

from __future__ import annotations

from typing import Any

from seq2seq.checkpoint import load_bundle
from seq2seq.config import Config, config_from_dict
from seq2seq.errors import UserError
from seq2seq.run import flatten

# The settings that make the model's shape or its text side: a run started from a model
# has the model's (dropout, data and training settings stay the run's own).
MODEL_SETTINGS = (
    "model.encoder",
    "model.decoder",
    "vocab",
    "data.src_lang",
    "data.trg_lang",
    "data.lowercase",
    "data.src_pipeline",
    "data.trg_pipeline",
)


def with_model_settings(config: Config, model: Config) -> tuple[Config, dict[str, tuple]]:
    """`config` with the MODEL_SETTINGS of `model` -> (that config, {key: (this config's
    value, the model's)} for each that differed)."""
    raw, taken = config.model_dump(), model.model_dump()
    for setting in MODEL_SETTINGS:
        *sections, key = setting.split(".")
        into, source = raw, taken
        for section in sections:
            into, source = into[section], source[section]
        into[key] = source[key]
    adopted = config_from_dict(raw, source="train.init_from (the model's settings)")
    before, after = flatten(config.model_dump()), flatten(adopted.model_dump())
    return adopted, {key: (before[key], after[key]) for key in after if before[key] != after[key]}


def start_from_model(config: Config) -> tuple[Config, dict[str, Any], str]:
    """The model `train.init_from` names, read with every check of a model to translate
    with (config sizes against the weights' shapes before it is built, tokenizer names)
    -> (the config with its settings, its checkpoint payload, the line that says which
    settings it changed, or '')."""
    path = config.train.init_from
    try:
        bundle = load_bundle(path)
    except UserError as error:
        raise UserError(f"train.init_from: {error}") from None
    adopted, taken = with_model_settings(config, bundle.config)
    changed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in taken.items())
    said = f"{path} sets the model and text settings: {changed}" if changed else ""
    return adopted, bundle.payload(), said
