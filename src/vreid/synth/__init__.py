"""Procedural synthetic vehicle re-id data in the AIC layout (the embedded default dataset).

``generate(out, preset="demo")`` writes ``out/real/`` (AIC real layout with local ground truth)
and ``out/simulation/`` (AIC simulation layout with colour/type/orientation/light/camera fields).
See ``docs/readme/synth.md``.
"""

from vreid.synth.generate import PRESETS, Preset, generate, generate_from_config, plan_dataset

__all__ = ["PRESETS", "Preset", "generate", "generate_from_config", "plan_dataset"]
