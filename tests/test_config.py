from pathlib import Path

import pytest
import yaml

from vreid.core.config import Config, load_config, save_config
from vreid.core.errors import ConfigError


def test_defaults_are_the_papers_values():
    cfg = load_config()
    assert cfg.train.lr == pytest.approx(2e-4)
    assert (cfg.train.p, cfg.train.k, cfg.train.margin) == (8, 4, 0.3)
    assert (cfg.retrieval.k1, cfg.retrieval.k2, cfg.retrieval.lambda_value) == (20, 6, 0.3)
    assert (cfg.retrieval.gamma_type, cfg.retrieval.gamma_colour) == (0.2, 0.1)
    assert cfg.model.image_size == (128, 256)


def test_yaml_then_overrides(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.001\n  epochs: 3\nmodel:\n  name: counter_glamor\n")
    cfg = load_config(f, ["train.epochs=7", "pipeline.models=[glamor]", "data.root=null"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.epochs == 7
    assert cfg.model.name == "counter_glamor"
    assert cfg.pipeline.models == ["glamor"]


def test_unknown_key_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lrr=1"])
    msg = str(e.value)
    assert "train.lrr" in msg
    assert "lr" in msg
    assert "weight_decay" in msg


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*retrieval"):
        load_config(None, ["trian.lr=1"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.epochs.*'many'"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train\.amp"):
        load_config(None, ["train.amp=fp8"])


def test_bad_yaml_file_names_file(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["train.lr"])


def test_saved_config_reloads_identically(tmp_path: Path):
    cfg = load_config(None, ["train.lr=0.01", "model.image_size=[64,128]"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text())["train"]["lr"] == pytest.approx(0.01)
    assert load_config(out) == cfg
    assert isinstance(load_config(out), Config)


def test_presets_load_by_name_and_flags_sit_between_file_and_set():
    """Every command reads settings through load_config: a preset name works as well as a file,
    flag values override the file, --set overrides both, and None flags are 'not given'."""
    cfg = load_config("tiny", ["train.lr=0.5"], values={"train.lr": 0.1, "train.epochs": 3})
    assert cfg.pipeline.name == "tiny"
    assert cfg.train.lr == pytest.approx(0.5)
    assert cfg.train.epochs == 3
    assert (
        load_config("tiny", values={"train.epochs": None}).train.epochs
        == load_config("tiny").train.epochs
    )
    with pytest.raises(ConfigError, match=r"no such config file or preset; presets: .*demo"):
        load_config("tinyy")
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config("missing.yaml")


def test_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lr: [1, 2\n  epochs: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(f) in msg
    assert "line 3, column" in msg


def test_one_device_setting():
    """runtime.device is the only device key; the per-stage ones are gone."""
    cfg = load_config(None, ["runtime.device=cpu"])
    assert cfg.runtime.device == "cpu"
    for section in ("train", "crop", "retrieval", "pipeline"):
        with pytest.raises(ConfigError, match="unknown key"):
            load_config(None, [f"{section}.device=cpu"])


def test_flags_are_validated_as_the_config_keys_they_set(vreid_cli, tmp_path: Path):
    """A flag goes through the config: out-of-range values are one line naming the key."""
    proc = vreid_cli("crop", str(tmp_path / "src"), str(tmp_path / "dst"), "--min-score", "2")
    assert proc.returncode == 2
    assert "'crop.min_score': Input should be less than or equal to 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "dst").exists()
