"""A valid model card for test models (bratskeras.pretrained.CARD_SCHEMA), and a model folder made of one."""

import json


def example_card(name, model, parameters):
    """A valid card for a test model `name`: registry `model` with `parameters` parameters, barely trained."""
    from bratskeras import pretrained

    return {
        "card_version": pretrained.CARD_VERSION,
        "name": name,
        "description": "A test model: lightweight-unet with 4 base filters after one epoch on 4 phantoms.",
        "architecture": {"model": model, "parameters": parameters},
        "training": {
            "data": "4 simple phantoms of 24 x 24 x 16 voxels (bratskeras synth, seed 3)",
            "command": "bratskeras synth data --cases 4 --shape 24,24,16 --layout brats2021 --seed 3 && "
                       "bratskeras fit data --epochs 1 --steps-per-epoch 2 --model-arg base_filters=4",
            "epochs": 1,
            "duration_s": 9.5,
            "hardware": "2-core x86 VM, no GPU",
        },
        "evaluation": {
            "synthetic_heldout": {"data": "the run's validation phantom", "references": "the generator's labels",
                                  "command": "printed by bratskeras fit", "figures": {"WT": 0.1, "TC": 0.0}},
            "real_scans": {"figures": None, "note": "not measured: no real scans were at hand"},
        },
        "limits": ["one epoch of training: it segments almost nothing"],
        "not_validated_on": ["real MRI", "any BraTS release"],
        "licence": "Apache-2.0, as the code; trained only on generated data",
    }


def write_untrained_model(folder, base_filters=2):
    """`folder` as a shipped model's: an untrained lightweight-unet's best.keras, its config.json and card.

    For tests that need the files, not a trained model (packaging).
    """
    from bratskeras.config.train_config import resolve_config
    from bratskeras.models import build_model

    config = resolve_config("lightweight2020", {"model_overrides": {"base_filters": base_filters}})
    network = build_model(config.model, **config.model_overrides)
    folder.mkdir(parents=True)
    network.save(folder / "best.keras")
    (folder / "config.json").write_text(config.to_json())
    card = example_card(folder.name, config.model, int(network.count_params()))
    (folder / "card.json").write_text(json.dumps(card, indent=1))
