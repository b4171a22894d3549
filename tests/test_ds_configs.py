"""The DeepSpeed and accelerate configs in `ds_configs/` work with the libraries that read them.

Three claims, each checked with the library's own code rather than with a copy of its rules:

* every DeepSpeed JSON, once the transformers integration has filled its `"auto"` values from the training
  arguments, is accepted by DeepSpeed's config parser with the intended stage, offload and precision;
* every accelerate YAML passes `accelerate launch`'s validation and hands the training process a DeepSpeed plugin
  built from the matching JSON (and the CPU config really starts two processes);
* under ZeRO-3, TRL's `unwrap_model_for_generation` (what the trainer calls before sampling hypotheses) gathers the
  partitioned weights, so `generate` sees the full model, and partitions them again afterwards. This runs a real
  single-process ZeRO-3 engine on CPU (gloo), built by a real `Accelerator` from `ds_configs/zero3.json`.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command, launch_command_parser
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DeepSpeedPlugin, DistributedType, prepare_deepspeed_cmd_env
from transformers import T5Config, T5ForConditionalGeneration, TrainingArguments
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config
from trl.models.utils import unwrap_model_for_generation

# Only the tests that run DeepSpeed's own code skip without it; the accelerate checks run everywhere.
requires_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="needs DeepSpeed (`pip install deepspeed`)"
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DS_DIR = REPO_ROOT / "ds_configs"

# JSON file -> (ZeRO stage, offload device of parameters and optimizer states or None).
JSON_CONFIGS = {"zero2.json": (2, None), "zero3.json": (3, None), "zero3_offload.json": (3, "cpu")}
# accelerate YAML file -> the DeepSpeed JSON it must point to.
ACCELERATE_CONFIGS = {
    "accelerate_zero2.yaml": "zero2.json",
    "accelerate_zero3.yaml": "zero3.json",
    "accelerate_zero3_offload.yaml": "zero3_offload.json",
}
D_MODEL = 16  # the tiny model's hidden size, which the integration uses for the bucket-size "auto" values


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    """A randomly initialised T5 with one encoder and one decoder layer, built from a config (nothing downloaded)."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=64, d_model=D_MODEL, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def auto_paths(node, path: str = "") -> list[str]:
    """Dotted paths of every value still set to "auto" in a (nested) config."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in auto_paths(value, f"{path}.{key}".lstrip("."))]
    return [path] if node == "auto" else []


def fill_auto_values(json_name: str, args: TrainingArguments, model, num_training_steps: int) -> dict:
    """The JSON as the HF Trainer hands it to DeepSpeed: "auto" values filled from `args` and the model."""
    hf_config = HfTrainerDeepSpeedConfig(str(DS_DIR / json_name))
    try:
        hf_config.trainer_config_process(args)
        hf_config.trainer_config_finalize(args, model, num_training_steps)
        return copy.deepcopy(hf_config.config)
    finally:
        unset_hf_deepspeed_config()  # the constructor registers a process-wide config that would leak into other tests


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reset_accelerate_singletons() -> None:
    """Forget accelerate's process-wide state, as accelerate's own `AccelerateTestCase` does between tests."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# --------------------------------------------------------------------------------------------- DeepSpeed JSON


@requires_deepspeed
@pytest.mark.parametrize("json_name", sorted(JSON_CONFIGS))
def test_deepspeed_json_is_accepted_by_deepspeed_once_hf_fills_auto(json_name, tmp_path):
    """No "auto" survives the HF fill, each filled value comes from the arguments, and DeepSpeed parses the result.

    The training arguments are deliberately not the defaults: a value hard-coded in the JSON instead of "auto" would
    then disagree with them and `trainer_config_finalize` would raise.
    """
    stage, offload = JSON_CONFIGS[json_name]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, gradient_accumulation_steps=2, max_grad_norm=0.5,
        learning_rate=3e-4, weight_decay=0.01, adam_epsilon=1e-7, report_to=[],
        bf16=True, use_cpu=True,  # use_cpu only makes this GPU-less machine accept bf16
    )  # fmt: skip
    from deepspeed.runtime.config import DeepSpeedConfig

    config = fill_auto_values(json_name, args, tiny_t5(), num_training_steps=10)

    assert auto_paths(config) == []
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False

    parsed = DeepSpeedConfig(config)  # no process group: DeepSpeed assumes world size 1
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_batch_size == 4 * 2 * 1  # micro batch x accumulation x world size, derived by DeepSpeed
    assert parsed.gradient_clipping == 0.5
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    zero = parsed.zero_config
    assert zero.reduce_bucket_size == D_MODEL * D_MODEL
    if stage == 3:
        assert zero.prefetch_bucket_size == int(0.9 * D_MODEL * D_MODEL)
        assert zero.param_persistence_threshold == 10 * D_MODEL
        assert zero.gather_16bit_weights_on_model_save, "save_pretrained would write empty ZeRO-3 shards"
    if offload is None:
        assert zero.offload_param is None and zero.offload_optimizer is None
        assert "optimizer" not in config, "without offload the HF Trainer builds the optimizer from `optim`"
    else:
        assert zero.offload_param.device == offload and zero.offload_optimizer.device == offload
        # ZeRO-Offload refuses a client (torch) optimizer, so the JSON names DeepSpeed's, with the HF values.
        assert parsed.optimizer_name == "adamw"
        assert parsed.optimizer_params["lr"] == 3e-4
        assert parsed.optimizer_params["weight_decay"] == 0.01
        assert parsed.optimizer_params["eps"] == 1e-7
    assert "scheduler" not in config, "the HF Trainer builds the scheduler from `lr_scheduler_type`"


# --------------------------------------------------------------------------------------------- accelerate YAML


def launch_env(config_file: Path, *extra: str) -> tuple[object, dict[str, str]]:
    """What `accelerate launch --config_file ... train.py` decides: its final args and the training process's env.

    The real `launch_command` runs; only the last step, spawning the workers through DeepSpeed's launcher, is
    replaced by a recorder of the arguments and environment they would get.
    """
    seen = {}

    def record(args):
        seen["args"], seen["env"] = args, prepare_deepspeed_cmd_env(args)[1]

    args = launch_command_parser().parse_args(["--config_file", str(config_file), *extra, "train.py"])
    with mock.patch("accelerate.commands.launch.deepspeed_launcher", record):
        launch_command(args)
    assert seen, "accelerate did not pick its DeepSpeed launcher"
    return seen["args"], {k: v for k, v in seen["env"].items() if k.startswith("ACCELERATE_")}


@pytest.mark.parametrize("yaml_name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_yaml_loads_and_points_to_matching_json(yaml_name):
    """accelerate's loader reads the YAML; it names an existing JSON whose stage matches the file name."""
    config = load_config_from_file(str(DS_DIR / yaml_name))
    json_path = config.deepspeed_config["deepspeed_config_file"]
    stage = json.loads((REPO_ROOT / json_path).read_text())["zero_optimization"]["stage"]

    assert config.distributed_type == DistributedType.DEEPSPEED
    assert Path(json_path) == Path("ds_configs") / ACCELERATE_CONFIGS[yaml_name]  # relative to the repository root
    assert stage == JSON_CONFIGS[ACCELERATE_CONFIGS[yaml_name]][0]
    assert config.deepspeed_config["zero3_init_flag"] is (stage == 3)
    assert config.num_processes == 8
    assert config.mixed_precision is None, "precision lives in the JSON; accelerate rejects it next to a JSON file"


@pytest.mark.parametrize("yaml_name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_launch_hands_the_json_to_the_training_process(yaml_name, monkeypatch):
    """`accelerate launch` accepts the YAML, `--num_processes` overrides it, and each process gets the right plugin."""
    args, env = launch_env(DS_DIR / yaml_name, "--num_processes", "2")
    assert args.use_deepspeed and args.num_processes == 2 and args.nproc_per_node == "2"
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == f"ds_configs/{ACCELERATE_CONFIGS[yaml_name]}"

    # Build the plugin as the launched process does: from the environment, in the repository root.
    monkeypatch.chdir(REPO_ROOT)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()  # raises if the YAML sets a value that must live in the JSON

    stage, offload = JSON_CONFIGS[ACCELERATE_CONFIGS[yaml_name]]
    assert plugin.zero_stage == stage
    assert plugin.hf_ds_config.is_zero3() is (stage == 3)
    assert plugin.zero3_init_flag is (stage == 3)
    device = offload or "none"
    assert plugin.offload_param_device == device and plugin.offload_optimizer_device == device
    if stage == 3:
        assert plugin.zero3_save_16bit_model is True


def test_accelerate_rejects_mixed_precision_next_to_a_json(tmp_path, monkeypatch):
    """Why the YAMLs carry no `mixed_precision`: with a DeepSpeed JSON, accelerate refuses it (precision is "auto")."""
    config = yaml.safe_load((DS_DIR / "accelerate_zero3.yaml").read_text())
    config["mixed_precision"] = "bf16"
    config["deepspeed_config"]["deepspeed_config_file"] = str(DS_DIR / "zero3.json")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(yaml.safe_dump(config))

    _, env = launch_env(bad_yaml)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="deepspeed_config_file"):
        DeepSpeedPlugin()


@pytest.mark.slow
def test_multi_cpu_config_starts_two_cpu_processes(tmp_path):
    """`accelerate launch --config_file ds_configs/accelerate_multi_cpu.yaml` gives a gloo world of two processes.

    The script asks for CPU the way `TrainingArguments(use_cpu=True)` does (`PartialState(cpu=True)`); the YAML's
    MULTI_GPU type is what makes accelerate start `num_processes` workers at all.
    """
    script = tmp_path / "world.py"
    script.write_text(
        "import json, sys\nfrom accelerate import PartialState\n"
        "s = PartialState(cpu=True)\n"
        "record = [s.process_index, s.num_processes, str(s.distributed_type)]\n"
        "open(f'{sys.argv[1]}/rank{s.process_index}.json', 'w').write(json.dumps(record))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(DS_DIR / "accelerate_multi_cpu.yaml"), "--main_process_port", str(free_port())]
    command += [str(script), str(tmp_path)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    worlds = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert worlds == [[0, 2, "DistributedType.MULTI_CPU"], [1, 2, "DistributedType.MULTI_CPU"]]


# --------------------------------------------------------------------------------------------- ZeRO-3 generation


@pytest.fixture
def single_process_world(monkeypatch):
    """The environment of rank 0 in a world of one, and a clean slate of process-wide state before and after."""
    for key, value in {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
        "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "ACCELERATE_USE_DEEPSPEED": "false",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)  # restored afterwards, also where the Accelerator overwrote them
    reset_accelerate_singletons()
    yield
    unset_hf_deepspeed_config()
    import deepspeed

    if deepspeed.comm.is_initialized():
        deepspeed.comm.destroy_process_group()
    reset_accelerate_singletons()


@requires_deepspeed
def test_zero3_generation_gathers_the_partitioned_weights(single_process_world, tmp_path):
    """Under a real ZeRO-3 engine, TRL's unwrap for generation gives `generate` the full weights, then re-partitions.

    The weights inside the context must equal the model's before DeepSpeed took it over, and greedy generation must
    match the unpartitioned copy token for token; a training step afterwards checks the ZeRO-3 hooks came back.
    """
    import deepspeed

    model = tiny_t5()
    reference = copy.deepcopy(model)
    prompt = torch.tensor([[3, 4, 5, 6, 1]])
    expected = reference.generate(prompt, max_new_tokens=6, do_sample=False)

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1, report_to=[])
    config = fill_auto_values("zero3.json", args, model, num_training_steps=1)
    config["zero_allow_untested_optimizer"] = True  # what the HF Trainer sets when it brings a torch optimizer
    accelerator = Accelerator(deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=config))
    assert accelerator.distributed_type == DistributedType.DEEPSPEED
    engine, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert isinstance(engine, deepspeed.DeepSpeedEngine) and engine.zero_optimization_stage() == 3

    def named_params():
        return dict(accelerator.unwrap_model(engine).named_parameters())

    threshold = config["zero_optimization"]["stage3_param_persistence_threshold"]
    partitioned = [name for name, p in named_params().items() if p.ds_numel > threshold]
    assert "shared.weight" in partitioned  # the embedding is far above the persistence threshold
    assert all(named_params()[name].numel() == 0 for name in partitioned)

    with unwrap_model_for_generation(engine, accelerator, gather_deepspeed3_params=False) as unwrapped:
        assert unwrapped.shared.weight.numel() == 0, "without gathering, the weights stay partitioned"

    with unwrap_model_for_generation(engine, accelerator) as unwrapped:
        gathered = dict(unwrapped.named_parameters())
        for name, weight in reference.named_parameters():
            torch.testing.assert_close(gathered[name].detach(), weight.detach(), rtol=0, atol=0, msg=name)
        generated = unwrapped.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, expected)
    assert all(named_params()[name].numel() == 0 for name in partitioned), "weights must be re-partitioned"

    engine.train()
    loss = engine(input_ids=prompt, labels=torch.tensor([[7, 8, 1]])).loss
    engine.backward(loss)
    engine.step()
    assert torch.isfinite(loss)
    with deepspeed.zero.GatheredParameters([engine.module.shared.weight]):
        assert not torch.equal(engine.module.shared.weight.detach(), reference.shared.weight.detach())
