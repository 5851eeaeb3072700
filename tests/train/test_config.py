"""RunConfig: the template is valid, cross-field checks refuse bad combinations with one line."""

from __future__ import annotations

import re

import pytest
import yaml

from megadocs.config import parse_config
from megadocs.errors import UserError
from train.config import DocumentMask, RunConfig, template
from train.train_cli import apply_overrides, load_run_config


def _config(**sections) -> dict:
    data = {"data": {"store": "runs/demo/data"}}
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return data


def test_template_is_a_valid_config_with_the_documented_defaults():
    loaded = yaml.safe_load(template())
    config = parse_config(loaded, RunConfig, source="template")
    defaults = RunConfig.model_validate({"data": {"store": loaded["data"]["store"]}})
    assert config == defaults  # every value the template shows is the real default
    assert "#" in template()  # it is commented


@pytest.mark.parametrize(
    ("sections", "field", "words"),
    [
        ({"data": {"mixing_fraction": 0.5}}, "data.mixing_fraction", "0.5 draws from a synthetic stream but "
         "data.synthetic is null"),
        ({"data": {"synthetic": {"pool": "p", "algorithm": "stitched", "g": 4}}}, "data.synthetic",
         "set but mixing_fraction is 0"),
        ({"data": {"mixing_fraction": 1.5, "synthetic": {"pool": "p", "algorithm": "simple", "g": 1}}},
         "data.mixing_fraction", "less than or equal to 1"),
        ({"data": {"mixing_fraction": 1.0, "synthetic": {"pool": "p", "algorithm": "simple", "g": 1}}},
         "data.synthetic_epochs", "mixing_fraction 1 (synthetic only)"),
        ({"data": {"mixing_fraction": 0.5, "synthetic_epochs": 2,
                   "synthetic": {"pool": "p", "algorithm": "simple", "g": 1}}},
         "data.synthetic_epochs", "only for mixing_fraction 1"),
        ({"data": {"mixing_fraction": 1.0, "synthetic_epochs": 0,
                   "synthetic": {"pool": "p", "algorithm": "simple", "g": 1}}},
         "data.synthetic_epochs", "greater than or equal to 1"),
        ({"data": {"synthetic": {"pool": "p", "algorithm": "wrap", "g": 4}, "mixing_fraction": 0.5}},
         "data.synthetic.algorithm", "stitched"),
        ({"data": {"synthetic": {"pool": "p", "algorithm": "latent", "g": 0}, "mixing_fraction": 0.5}},
         "data.synthetic.g", "greater than or equal to 1"),
        ({"optim": {"batch_size": 64, "micro_batch_size": 24}}, "optim.micro_batch_size", "24 must divide "
         "batch_size 64"),
        ({"optim": {"weight_decay_on": ["head", "head"]}}, "optim.weight_decay_on", "'head' is listed twice"),
        ({"model": {"preset": "7b"}}, "model.preset", "unknown preset '7b'"),
        ({"eval": {"extra": {"iid_long": {"store": "s"}}}}, "eval.extra.iid_long", "reserved"),
        ({"eval": {"every": -3}}, "eval.every", "expected a number of steps >= 0"),
        ({"eval": {"every": "x/run"}}, "eval.every", "expected a number of steps (e.g. 200) or 'K/run'"),
        ({"data": {"document_mask": "xx"}}, "data.document_mask", "expected off | document | segment"),
        ({"device": "tpu"}, "device", "'auto', 'cpu' or 'cuda'"),
        ({"optim": {"lr_peak": 0.1}}, "optim.lr_peak", "unknown field"),
        ({"optim": {"lr": float("inf")}}, "optim.lr", "finite number"),  # diverges at step 1
        ({"optim": {"weight_decay": float("inf")}}, "optim.weight_decay", "finite number"),
        ({"optim": {"grad_clip": float("inf")}}, "optim.grad_clip", "finite number"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_field(sections, field, words):
    with pytest.raises(UserError) as info:
        parse_config(_config(**sections), RunConfig, source="run.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"run.yaml: {field}: ")
    assert words in message


def test_set_overrides_parse_values_as_yaml_and_create_sections(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(template())
    config = load_run_config(path, ["optim.lr=1e-3", "data.document_mask=true", "eval.benchmarks=[piqa, sciq]",
                                    "data.synthetic={pool: P, algorithm: latent, g: 2}",
                                    "data.mixing_fraction=0.75"])
    assert config.optim.lr == 0.001 and config.data.document_mask is DocumentMask.DOCUMENT  # legacy true
    assert config.eval.benchmarks == ["piqa", "sciq"]
    assert config.data.synthetic.algorithm == "latent" and config.data.synthetic.g == 2
    assert apply_overrides({}, ["a.b.c=3"]) == {"a": {"b": {"c": 3}}}
    with pytest.raises(UserError, match="--set: expected KEY.PATH=VALUE, got 'optim.lr'"):
        load_run_config(path, ["optim.lr"])
    for item in ("optim.lr=", "seed= "):  # YAML reads an empty value as null: the item is malformed, not the field
        with pytest.raises(UserError, match=rf"^--set: expected KEY.PATH=VALUE, got {re.escape(repr(item))}: no VALUE"):
            load_run_config(path, ["seed=3", item])
    with pytest.raises(UserError, match=r"^--set optim.lr=-1: optim.lr: Input should be greater than 0, got -1"):
        load_run_config(path, ["optim.lr=-1"])


def test_self_distillation_pool_is_a_synthetic_stream_and_unknown_algorithms_are_refused():
    data = {"store": "s", "mixing_fraction": 0.5, "synthetic": {"pool": "p", "algorithm": "self-distill", "g": 1}}
    config = parse_config({"data": data}, RunConfig)
    assert config.data.synthetic.algorithm == "self-distill"
    data["synthetic"]["algorithm"] = "distill"
    with pytest.raises(UserError, match="data.synthetic.algorithm"):
        parse_config({"data": data}, RunConfig)


def test_a_config_is_checked_when_loaded_without_importing_torch():
    """The preset and the benchmark tasks are pure tables (`train.presets`, `train.benchmarks`):
    a bad name fails when the config is read, in a process that has not loaded torch."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from megadocs.config import parse_config
        from megadocs.errors import UserError
        from train.config import RunConfig
        for bad in ({"model": {"preset": "7b"}}, {"eval": {"benchmarks": ["piqa", "hellaswag"]}}):
            try:
                parse_config({"data": {"store": "s"}, **bad}, RunConfig, source="run.yaml")
            except UserError as exc:
                print(exc)
        parse_config({"data": {"store": "s"}, "model": {"preset": "300m"}, "eval": {"benchmarks": ["sciq"]}}, RunConfig)
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    preset, benchmarks, torch_loaded = done.stdout.splitlines()
    assert preset.startswith("run.yaml: model.preset: ") and "unknown preset '7b'" in preset
    assert benchmarks == "run.yaml: eval.benchmarks: unknown task 'hellaswag'; expected one of piqa, sciq, arc_easy"
    assert torch_loaded == "False"


def test_a_section_given_twice_is_refused_not_silently_replaced(tmp_path):
    """PyYAML keeps the last of two equal keys: the second `optim:` would drop batch_size without a word."""
    path = tmp_path / "run.yaml"
    path.write_text("data: {store: s}\noptim: {batch_size: 8, micro_batch_size: 4}\noptim: {lr: 0.1}\n")
    with pytest.raises(UserError, match=r"run.yaml: line 3: invalid YAML: duplicate key 'optim'"):
        load_run_config(path)
    merged = tmp_path / "merged.yaml"  # a merge key ("<<") is not a duplicate
    merged.write_text("data: {store: s}\noptim:\n  <<: {batch_size: 8, micro_batch_size: 4}\n  lr: 0.1\n")
    assert load_run_config(merged).optim.batch_size == 8



def test_a_validator_that_says_what_it_got_is_not_followed_by_a_second_got():
    with pytest.raises(UserError) as info:
        parse_config(_config(data={"document_mask": "maybe"}), RunConfig, source="run.yaml")
    assert str(info.value) == ("run.yaml: data.document_mask: expected off | document | segment "
                               "(or true/false), got 'maybe'")  # the field named once


def _sections(model, path=()):
    """(dotted path, model class) of every model inside ``model``'s fields, recursively (optional too)."""
    from megadocs.config import _is_model, _members

    for name, field in model.model_fields.items():
        for member in _members(field.annotation):
            if _is_model(member):
                yield ".".join((*path, name)), member
                yield from _sections(member, (*path, name))


# a setting each section's own cross-field check refuses (one per model validator)
CROSS_FIELD = {
    "data": [{"mixing_fraction": 0.5},
             {"mixing_fraction": 0.5, "synthetic_epochs": 2, "synthetic": {"pool": "p", "algorithm": "simple", "g": 1}}],
    "model": [{"preset": "7b"}],
    "optim": [{"batch_size": 64, "micro_batch_size": 24}, {"weight_decay_on": ["linear", "linear"]}],
    "eval": [{"extra": {"iid": {"store": "s"}}}, {"every": "often"}],
}


def test_every_sections_cross_field_check_names_the_full_dotted_path_of_its_field():
    """A section's model validator begins its message with the field it refuses (``FIELD: REST``)
    and names the values itself: its line is ``run.yaml: SECTION.FIELD: REST`` (``model.preset``,
    ``eval.every``), never ``SECTION: ...`` nor followed by ``, got {...the whole section...}``."""
    from pydantic import ValidationError

    checked = {path for path, section in _sections(RunConfig) if section.__pydantic_decorators__.model_validators}
    assert checked == set(CROSS_FIELD)  # a new section validator gets a case here
    sections = dict(_sections(RunConfig))
    for path, settings in CROSS_FIELD.items():
        for setting in settings:
            config = _config(**{path: setting})
            with pytest.raises(ValidationError) as own:
                sections[path].model_validate(config[path])
            with pytest.raises(UserError) as info:
                parse_config(config, RunConfig, source="run.yaml")
            named, _, rest = str(own.value.errors()[0]["ctx"]["error"]).partition(": ")
            assert re.split(r"[.\[]", named)[0] in sections[path].model_fields, (path, named)  # its field first
            assert str(info.value) == f"run.yaml: {path}.{named}: {rest}"


def test_field_level_errors_still_say_what_they_got():
    with pytest.raises(UserError, match=r"^run.yaml: optim.lr: Input should be greater than 0, got -1$"):
        parse_config(_config(optim={"lr": -1}), RunConfig, source="run.yaml")
    with pytest.raises(UserError, match=r"^run.yaml: data: Input should be a valid dictionary .*, got 5$"):
        parse_config({"data": 5}, RunConfig, source="run.yaml")
