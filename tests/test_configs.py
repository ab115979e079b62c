"""Every config file composes; defaults, folder names and experiment files say what the README says.
Nothing here loads a model or runs a job."""

from __future__ import annotations

import itertools

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf
from sweeps import options, sweep_params

from kvexp.data.registry import REPORT_ORDER
from kvexp.models import ModelPreset
from kvexp.pipeline.cell import cell_name, differences, run_identity
from kvexp.pipeline.config import CONFIG_DIR, compose_config, quote_numeric_choices

GROUPS = ("model", "dataset", "policy", "budget", "generation", "logger", "experiment")
STUDY_DATASETS = ["gsm8k", "math500", "strategyqa", "folio", "drop", "reclor", "openbookqa", "commonsenseqa"]
STUDY_MODELS = ["llama31_8b_instruct", "nemotron_nano_8b", "r1_distill_llama_8b", "r1_distill_qwen_7b"]


def test_documented_options_exist():
    assert options("model") == sorted(
        [
            "smollm2_135m",
            "tiny_random",
            "llama31_8b_instruct",
            "nemotron_nano_8b",
            "r1_distill_llama_8b",
            "r1_distill_qwen_7b",
            "r1_distill_qwen_14b",
            "qwen3_8b",
            "organism",
        ]
    )
    # one YAML per registry entry (the study's datasets and the generated tasks), and nothing else
    assert options("dataset") == sorted(REPORT_ORDER)
    assert options("logger") == ["none", "wandb"]
    assert {"local"} <= set(options("hydra/launcher"))


def test_defaults():
    cfg = compose_config()
    assert (cfg.model.name, cfg.dataset.name, cfg.policy.name, cfg.budget.tokens, cfg.logger.name) == (
        "smollm2_135m",
        "gsm8k",
        "h2o",
        128,
        "wandb",
    )
    assert cfg.dataset.shard == {"index": 0, "count": 1} and cfg.dataset.source == "auto"
    assert cfg.generation.temperature == cfg.model.sampling.temperature  # model preset drives sampling defaults
    assert isinstance(cfg.seed, int)


def test_every_registered_policy_has_its_class_and_yaml_and_nothing_else_does():
    """The registry, the classes' names and conf/policy/ agree, so a policy is one module, one entry, one YAML."""
    from kvexp.policies import POLICY_NAMES, policy_class

    assert sorted(POLICY_NAMES) == options("policy")
    for name in POLICY_NAMES:
        assert policy_class(name).name == name


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "experiment"])
def test_every_option_composes_and_resolves(group):
    for option in options(group):
        cfg = compose_config([f"{group}={option}"])
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved[group] is not None, option
        if group in ("model", "dataset", "policy", "logger"):
            assert resolved[group]["name"] == option


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"experiment={experiment}"], return_hydra_config=True)
    OmegaConf.to_container(compose_config([f"experiment={experiment}"]), resolve=True)
    params = sweep_params(cfg)
    assert params, "an experiment pins its cells through hydra.sweeper.params"
    for key, values in params.items():
        if "." not in key and options(key):  # a group choice: the option exists (each composes: test above)
            assert set(values) <= set(options(key)), (key, values)
        else:  # a value: the experiment composes with each
            for value in values:
                compose_config([f"experiment={experiment}", f"{key}={value}"])


@pytest.mark.parametrize("model", STUDY_MODELS)
def test_paper_experiments_pin_the_reference_study(model):
    cfg = compose_config([f"experiment=paper_{model}"], return_hydra_config=True)
    params = sweep_params(cfg)
    assert cfg.model.name == model
    assert params["dataset"] == STUDY_DATASETS
    assert params["budget.tokens"] == ["128", "256", "384", "512"]
    assert "full" not in params["policy"] and len(params["policy"]) >= 5
    assert cfg.dataset.limit == 100 and cfg.generation.max_new_tokens == 2048


def test_paper_full_baseline():
    cfg = compose_config(["experiment=paper_full"], return_hydra_config=True)
    params = sweep_params(cfg)
    assert cfg.policy.name == "full" and cfg.budget.tokens is None
    assert params["model"] == STUDY_MODELS and params["dataset"] == STUDY_DATASETS
    assert cfg.dataset.limit == 100 and cfg.generation.max_new_tokens == 2048


def test_smoke_experiment_is_offline():
    cfg = compose_config(["experiment=smoke"], return_hydra_config=True)
    params = sweep_params(cfg)
    assert set(params["dataset"]) <= {"gsm8k", "math500"}
    assert set(params["policy"]) == set(options("policy"))
    assert cfg.model.name == "smollm2_135m"


def test_organism_suite_sweeps_every_task_every_policy_and_the_pinned_prompt():
    """experiment=organism_suite, composed through Hydra's compose API: every organism task of the data
    registry, every registered policy, budgets up to 256, policy.protect_prompt on and off, offline; and
    every cell can run: each task's pinned prompt plus each policy's recent window fits every budget."""
    from kvexp.data import load_problems
    from kvexp.data.registry import CATEGORIES, ORGANISM
    from kvexp.organism.evaluate import organism_preset, prompt_ids
    from kvexp.organism.tokenizer import build_tokenizer
    from kvexp.policies import POLICY_NAMES, build_policy

    cfg = compose_config(["experiment=organism_suite"], return_hydra_config=True)
    params = sweep_params(cfg)
    tasks = [d for d in REPORT_ORDER if CATEGORIES[d] == ORGANISM]
    assert params["dataset"] == tasks
    assert sorted(params["policy"]) == sorted(POLICY_NAMES)
    assert sorted(v.lower() for v in params["++policy.protect_prompt"]) == ["false", "true"]
    budgets = [int(b) for b in params["budget.tokens"]]
    assert max(budgets) == 256 and len(budgets) >= 3
    assert cfg.model.name == "organism" and cfg.logger.name == "none"
    assert cfg.generation.max_new_tokens >= 360  # the longest default reply is ~320 tokens
    tok, preset = build_tokenizer(), organism_preset()
    longest = max(len(prompt_ids(tok, p.question, preset)) for t in tasks for p in load_problems(t, limit=20))
    for name in POLICY_NAMES:
        for b in budgets:
            policy = build_policy(compose_config([f"policy={name}", "++policy.protect_prompt=true"]).policy)
            if policy.evicts:
                assert longest + policy.recent_window(b) <= b - cfg.budget.slack, (name, b, longest)
        composed = compose_config(["experiment=organism_suite", f"policy={name}", "++policy.protect_prompt=true"])
        assert composed.policy.protect_prompt is True


@pytest.mark.parametrize(
    "override, group",
    [
        ("policy=foo", "policy"),
        ("model=gpt5", "model"),
        ("dataset=mmlu", "dataset"),
        ("budget=100", "budget"),
        ("experiment=nope", "experiment"),
        ("logger=tensorboard", "logger"),
    ],
)
def test_unknown_option_lists_valid_ones(override, group):
    with pytest.raises(MissingConfigException) as err:
        compose_config([override])
    message = str(err.value)
    assert f"Available options in '{group}'" in message
    assert all(option in message for option in options(group))


def test_numeric_budget_choices_work_as_typed():
    assert quote_numeric_choices(["budget=128,512", "budget=64", "budget.tokens=5", "policy=h2o", "budget=none"]) == [
        "budget='128','512'",
        "budget='64'",
        "budget.tokens=5",
        "policy=h2o",
        "budget=none",
    ]
    assert compose_config(["budget=512"]).budget.tokens == 512
    assert compose_config(["budget.tokens=300", "budget.slack=8"]).budget == {
        "tokens": 300,
        "slack": 8,
        "schedule": "cap",
    }


def test_job_folders_name_the_cell():
    cfg = compose_config(
        ["policy=snapkv", "budget=512", "model=tiny_random", "dataset=math500"], return_hydra_config=True
    )
    assert cfg.hydra.sweep.subdir == "tiny_random/math500/snapkv-b512-s1"
    assert cfg.hydra.run.dir.endswith("/tiny_random/math500/snapkv-b512-s1")
    full = compose_config(["policy=full", "budget=none"], return_hydra_config=True)
    assert full.hydra.sweep.subdir.endswith("/full")  # the full cache ignores the budget: one folder
    sharded = compose_config(["policy=h2o", "dataset.shard.count=2", "dataset.shard.index=1"], return_hydra_config=True)
    assert sharded.hydra.sweep.subdir.endswith("/h2o-b128-s1-shard1of2")
    assert cell_name("full", 128, 1) == "full" and cell_name("h2o", 64, 4) == "h2o-b64-s4"
    assert cell_name("full", 128, 1, 0, 2) == "full-shard0of2"
    assert cell_name("h2o", 64, 4, 1, 3) == "h2o-b64-s4-shard1of3"
    assert cell_name("h2o", 64, 4, 0, 1, "interval") == "h2o-b64-s4-interval"
    interval = compose_config(["budget.slack=8", "budget.schedule=interval"], return_hydra_config=True)
    assert interval.hydra.sweep.subdir.endswith("/h2o-b128-s8-interval")
    assert cell_name("h2o", 64, 4, 1, 3, "cap") == "h2o-b64-s4-shard1of3"
    assert cell_name("full", None, None, 0, 1, "interval") == "full"


def test_launchers():
    local = compose_config(["hydra/launcher=local"], return_hydra_config=True).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    basic = compose_config([], return_hydra_config=True).hydra.launcher
    assert basic._target_.endswith("BasicLauncher")


def test_wandb_offline_unless_asked(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_config().logger.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_config().logger.mode == "online"
    assert compose_config(["logger.mode=disabled"]).logger.mode == "disabled"


@pytest.mark.parametrize("model", options("model"))
def test_model_presets_are_valid(model):
    cfg = compose_config([f"model={model}"])
    preset = ModelPreset.from_cfg(OmegaConf.to_container(cfg.model, resolve=True))
    if preset.source == "hub":
        assert "/" in preset.hub_id and preset.dtype == "bfloat16"
    assert 0 <= cfg.generation.temperature and 0 < cfg.generation.top_p <= 1


def test_model_generation_defaults_follow_the_model_cards():
    def sampling(model):
        g = compose_config([f"model={model}"]).generation
        return g.temperature, g.top_p, g.top_k

    for r1 in ("r1_distill_llama_8b", "r1_distill_qwen_7b", "r1_distill_qwen_14b"):
        assert sampling(r1) == (0.6, 0.95, 0)
        assert compose_config([f"model={r1}"]).model.system_prompt is None  # the card: no system prompt
    assert sampling("qwen3_8b") == (0.6, 0.95, 20)
    assert sampling("nemotron_nano_8b") == (0.6, 0.95, 0)
    assert sampling("smollm2_135m")[0] == 0.0
    assert compose_config(["model=qwen3_8b"]).model.thinking_switch == "enable_thinking"
    assert compose_config(["model=nemotron_nano_8b"]).model.thinking_switch == "detailed_thinking"
    assert compose_config(["model=qwen3_8b", "generation.temperature=0"]).generation.temperature == 0


def test_resume_identity_ignores_only_harmless_changes():
    base = OmegaConf.to_container(compose_config(["model=tiny_random"]), resolve=True)
    same = OmegaConf.to_container(
        compose_config(["model=tiny_random", "dataset.limit=7", "logger=none", "generation.batch_size=3"]), resolve=True
    )
    assert differences(run_identity(base), run_identity(same)) == []
    changes = ("seed=1", "generation.max_new_tokens=9", "policy.window=3", "budget=512", "budget.schedule=interval")
    for change in (*changes, "dataset=math500"):
        other = OmegaConf.to_container(compose_config(["model=tiny_random", change]), resolve=True)
        assert differences(run_identity(base), run_identity(other)), change
    # the full cache records no budget (the config the job writes), so its launches at two budgets agree
    from kvexp.pipeline.job import _recorded_config

    full_a, full_b = (
        _recorded_config(compose_config(["model=tiny_random", "policy=full", f"budget={b}"])) for b in (128, 512)
    )
    assert full_a["budget"] == {"tokens": None, "slack": None, "schedule": None}
    assert differences(run_identity(full_a), run_identity(full_b)) == []
    h2o = _recorded_config(compose_config(["model=tiny_random", "policy=h2o", "budget=128"]))
    assert h2o["budget"] == {"tokens": 128, "slack": 1, "schedule": "cap"}  # an evicting policy keeps its budget


def test_sweep_product_is_exactly_as_typed():
    """`-m policy=h2o,snapkv budget=128,512` is a 2 x 2 sweep: Hydra's own parser agrees after quoting."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(quote_numeric_choices(["policy=h2o,snapkv", "budget=128,512"]))
    cells = list(itertools.product(*[list(o.sweep_string_iterator()) for o in parsed]))
    assert len(cells) == 4
    for policy, budget in cells:
        cfg = compose_config([f"policy={policy}", f"budget={budget}"])
        assert (cfg.policy.name, str(cfg.budget.tokens)) == (policy, budget.strip("'"))


@pytest.mark.parametrize("name", sorted(options("policy")))
def test_a_policy_yaml_holds_its_class_defaults(name):
    """conf/policy/<name>.yaml sets its parameters at the class's own defaults (an unknown key is refused),
    so `policy=<name>` is the class as written and the recorded config.yaml says what ran."""
    from kvexp.policies import build_policy

    params = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "policy" / f"{name}.yaml"))
    assert params.pop("name") == name
    default, configured = build_policy(name), build_policy(name, **params)
    for budget in (64, 256):
        assert configured.recent_window(budget) == default.recent_window(budget)

    def settings(policy):  # its plain parameters (the window as the budget resolves it, above)
        return {k: v for k, v in vars(policy).items() if isinstance(v, (int, float, str, bool)) and k != "window"}

    assert settings(configured) == settings(default)
