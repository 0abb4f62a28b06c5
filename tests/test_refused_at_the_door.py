"""Issue 14, case by case: bad input is refused where it comes in, with our own error naming it and the fix, and
nothing omni_ref does changes process-wide state. (tests/test_fuzz.py throws hundreds of generated inputs at
the same doors.)"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import omni_ref
from omni_ref import hf, presets
from omni_ref.checkpoint import INDEX_FILE, CheckpointError, save
from omni_ref.config import ConfigError
from omni_ref.processor import Processor, ProcessorError

DATA = presets.REPO_DIR / "data"
AUDIO = "<|audio_start|><|audio_pad|><|audio_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def proc(tiny_dir):
    return Processor.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def hf_proc(tiny_dir):
    return hf.load_hf_processor(tiny_dir)


def _copy(tiny_dir, dst):
    shutil.copytree(tiny_dir, dst)
    return dst


# ---- 1. paths stay inside the checkpoint -------------------------------------------------------------------
@pytest.fixture()
def sharded(tiny_dir, tmp_path):
    """The tiny checkpoint in shards, plus a planted copy of its last shard outside the folder, with one tensor
    changed: what an index pointing outside the folder would load."""
    model = omni_ref.load(tiny_dir)
    d = tmp_path / "ckpt"
    names = save(model, d, max_shard_bytes=1_000_000)
    index = json.loads((d / INDEX_FILE).read_text())
    key = next(k for k, v in sorted(index["weight_map"].items()) if v == names[-1])
    planted = tmp_path / "outside" / "planted.safetensors"
    planted.parent.mkdir()
    from safetensors.torch import load_file, save_file
    tensors = load_file(d / names[-1])
    tensors[key] = torch.full_like(tensors[key], 1234.0)
    save_file(tensors, planted)
    return d, index, key, planted


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_shard_outside_the_checkpoint_is_refused(sharded, where):
    d, index, key, planted = sharded
    name = "../outside/planted.safetensors" if where == "relative" else str(planted)
    index["weight_map"] = {k: name if v == index["weight_map"][key] else v for k, v in index["weight_map"].items()}
    (d / INDEX_FILE).write_text(json.dumps(index))
    for call in (omni_ref.verify, omni_ref.load):
        with pytest.raises(CheckpointError) as err:
            call(d)
        assert f"names the shard {name!r}, which is outside the checkpoint folder" in str(err.value)
        assert str(d / INDEX_FILE) in str(err.value)
    with pytest.raises(CheckpointError):     # even when only another component is loaded
        omni_ref.load(d, components=("thinker",) if not key.startswith("thinker") else ("code2wav",))


def test_a_shard_in_a_subfolder_or_linked_in_is_fine(sharded):
    """Only names that leave the folder are refused: a sub-folder or a symbolic link (HF's download cache links
    every file to a blob elsewhere) is the folder's own business."""
    d, index, key, planted = sharded
    shard = index["weight_map"][key]
    (d / "sub").mkdir()
    os.replace(d / shard, d / "sub" / shard)
    index["weight_map"] = {k: "sub/" + v if v == shard else v for k, v in index["weight_map"].items()}
    (d / INDEX_FILE).write_text(json.dumps(index))
    reference = omni_ref.load(d, components=("talker",)).state_dict()
    os.replace(d / "sub" / shard, d.parent / "blob")
    os.symlink(d.parent / "blob", d / "sub" / shard)
    again = omni_ref.load(d, components=("talker",)).state_dict()
    assert all(torch.equal(reference[k], again[k]) for k in reference)


def _video_folder(tmp_path, meta, name="clip"):
    d = tmp_path / name
    shutil.copytree(DATA / "video", d)
    (d / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return d


@pytest.mark.parametrize("audio", ["../outside.wav", "ABSOLUTE", "frames/../../outside.wav"])
def test_a_video_sound_track_outside_its_folder_is_refused(proc, tmp_path, audio):
    outside = tmp_path / "outside.wav"
    shutil.copyfile(DATA / "video" / "audio.wav", outside)
    d = _video_folder(tmp_path, {"fps": 4, "audio": str(outside) if audio == "ABSOLUTE" else audio})
    with pytest.raises(ProcessorError) as err:
        proc(text=VIDEO, videos=[str(d)], use_audio_in_video=True)
    assert str(d / "meta.json") in str(err.value) and "points outside the video folder" in str(err.value)


def test_a_named_sound_track_must_exist(proc, tmp_path):
    d = _video_folder(tmp_path, {"fps": 4, "audio": "sound.wav"})
    with pytest.raises(ProcessorError, match="names a sound track that is not in the folder"):
        proc(text=VIDEO, videos=[str(d)])


# ---- 2. config values of the wrong type, and files that are not what they should be ---------------------------
@pytest.mark.parametrize("path,value,message", [
    (("thinker_config", "text_config", "rms_norm_eps"), "1e-6",
     "rms_norm_eps='1e-6' is a string, but rms_norm_eps must be a finite number: write 1e-06 without quotes"),
    (("thinker_config", "text_config", "num_experts"), 4.5,
     "num_experts=4.5 is a number with a decimal point, but num_experts must be an integer"),
    (("thinker_config", "text_config", "hidden_size"), "64",
     "hidden_size='64' is a string, but hidden_size must be an integer: write 64 without quotes"),
    (("talker_config", "speaker_id"), ["ethan"],
     "speaker_id=['ethan'] is a list, but speaker_id must be an object of string -> integer or null"),
    (("thinker_config", "text_config", "rope_parameters"), {"rope_type": "default", "rope_theta": "1e6"},
     "rope_parameters.rope_theta='1e6' is a string"),
    (("thinker_config", "audio_config", "d_model"), -32, "d_model=-32 must be >= 1"),
    (("thinker_config", "text_config", "rms_norm_eps"), float("nan"), "rms_norm_eps=nan is not a finite number"),
])
def test_a_config_value_of_the_wrong_type_is_refused_when_read(tiny_dir, tmp_path, path, value, message):
    d = _copy(tiny_dir, tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (d / "config.json").write_text(json.dumps(cfg))
    for call in (omni_ref.verify, omni_ref.load):
        with pytest.raises(ConfigError) as err:
            call(d)
        assert message in str(err.value)
        assert str(d / "config.json") in str(err.value) and ".".join(path[:-1]) in str(err.value)


@pytest.mark.parametrize("text", ["", '{"thinker_config": {', "not json at all", "[1, 2, 3]"])
def test_a_config_json_that_is_not_a_json_object(tiny_dir, tmp_path, text):
    d = _copy(tiny_dir, tmp_path / "ckpt")
    (d / "config.json").write_text(text)
    with pytest.raises(ConfigError) as err:
        omni_ref.load(d)
    assert str(d / "config.json") in str(err.value)
    with pytest.raises(ProcessorError) as err:     # the processor reads it too
        Processor.from_pretrained(d)
    assert str(d / "config.json") in str(err.value)


@pytest.mark.parametrize("text,message", [
    ('{"metadata": {}}', 'has no "weight_map" object'), ('{"weight_map": [1]}', 'has no "weight_map" object'),
    ("{weight", "is not valid JSON"), ("", "is not valid JSON"),
    ('{"weight_map": {"talker.x": 5}}', "is not the name of a .safetensors shard"),
])
def test_an_index_without_a_weight_map(sharded, text, message):
    d = sharded[0]
    (d / INDEX_FILE).write_text(text)
    with pytest.raises(CheckpointError) as err:
        omni_ref.verify(d)
    assert message in str(err.value) and str(d / INDEX_FILE) in str(err.value)


@pytest.mark.parametrize("cut", [0, 5, 100, -1000])
def test_a_truncated_or_empty_safetensors_file(tiny_dir, tmp_path, cut):
    d = _copy(tiny_dir, tmp_path / "ckpt")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:cut])
    for call in (omni_ref.verify, omni_ref.load):
        with pytest.raises(CheckpointError, match=r"shard model.safetensors cannot be read: .*fetch it again"):
            call(d)


def test_a_missing_shard_of_a_sharded_checkpoint(sharded):
    d, index, key, _ = sharded
    (d / index["weight_map"][key]).unlink()
    with pytest.raises(CheckpointError, match=f"shard {index['weight_map'][key]} named in {INDEX_FILE} is missing"):
        omni_ref.load(d)


def test_a_weight_stored_as_integers(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    d = _copy(tiny_dir, tmp_path / "ckpt")
    tensors = load_file(d / "model.safetensors")
    tensors["code2wav.code_embedding.weight"] = tensors["code2wav.code_embedding.weight"].to(torch.int32)
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match="code2wav.code_embedding.weight in model.safetensors stored as I32"):
        omni_ref.load(d)


def test_keys_of_no_component_are_unexpected(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    d = _copy(tiny_dir, tmp_path / "ckpt")
    tensors = load_file(d / "model.safetensors")
    tensors["vocoder.weight"] = torch.zeros(2)
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): vocoder.weight"):
        omni_ref.load(d, components=("code2wav",))


# ---- 3. audio and video that cannot be right -----------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_sample_is_refused_saying_where(proc, tmp_path, bad):
    wave = np.zeros(16000, np.float32)
    wave[4000] = bad
    with pytest.raises(ProcessorError, match=r"audio has 1 sample\(s\) that are NaN or infinite, the first at index "
                                             r"4000 \(0.250 s\)"):
        proc(text=AUDIO, audio=[wave])
    path = tmp_path / "bad.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    with pytest.raises(ProcessorError, match="first at index 4000") as err:
        proc.apply_chat_template([{"role": "user", "content": [{"type": "audio", "audio": str(path)}]}],
                                 tokenize=True)
    assert str(path) in str(err.value)


def test_audio_of_200_samples_or_fewer_says_the_minimum(proc, hf_proc):
    wave = (0.1 * np.sin(np.arange(400) / 3)).astype(np.float32)
    for n in (1, 100, 200):
        with pytest.raises(ProcessorError, match=rf"audio 0 .* has {n} samples .* fewer than the 201 \(12.6 ms at "
                                                 rf"16000 Hz\) the features need"):
            proc(text=AUDIO, audio=[wave[:n]])
    with pytest.raises(ProcessorError, match=r"audio 1 .* has 150 samples"):   # named by its place in the call
        proc(text=AUDIO + AUDIO, audio=[wave, wave[:150]])
    for n in (201, 202):   # the minimum works, and equals HF
        ours = proc(text=AUDIO, audio=[wave[:n]])
        with hf.quiet():
            theirs = hf_proc(text=AUDIO, audio=[wave[:n]], return_tensors="pt", padding=True)
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.allclose(ours["input_features"], theirs["input_features"], atol=1e-5, rtol=0)


def test_sampling_rate_is_honoured_not_ignored(proc, hf_proc):
    wave = (0.1 * np.sin(np.arange(8000) / 3)).astype(np.float32)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": wave}, {"type": "text", "text": "hi"}]}]
    with pytest.raises(ProcessorError, match="the audio is sampled at 8000 Hz but the model expects 16000 Hz"):
        proc.apply_chat_template(messages, tokenize=True, return_dict=True, sampling_rate=8000)
    with pytest.raises(ProcessorError, match="sampled at 8000 Hz"):
        proc.apply_chat_template(messages, tokenize=True, processor_kwargs={"sampling_rate": 8000})
    with pytest.raises(ValueError, match="sampling rate of 16000"), hf.quiet():   # HF refuses it too
        hf_proc.apply_chat_template(messages, tokenize=True, return_dict=True, sampling_rate=8000)
    ours = proc.apply_chat_template(messages, tokenize=True, return_dict=True, sampling_rate=16000)
    plain = proc.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert all(torch.equal(ours[k], plain[k]) for k in plain)
    assert "sampling_rate" not in proc.apply_chat_template(messages, sampling_rate=16000)   # not a template word


@pytest.mark.parametrize("meta,message", [
    ({"fps": 0}, "fps=0 is not a frame rate"), ({"fps": -2}, "fps=-2 is not a frame rate"),
    ({"fps": "4"}, "fps='4' is not a frame rate"), ({"fps": [4]}, "fps=[4] is not a frame rate"),
    ({"fps": True}, "fps=True is not a frame rate"), ('{"fps": NaN}', "fps=nan is not a frame rate"),
    ('{"fps": 4', "is not valid JSON"), ("", "is not valid JSON"), ("[4]", "holds a JSON list"),
])
def test_a_bad_meta_json_names_the_file_and_the_field(proc, tmp_path, meta, message):
    d = _video_folder(tmp_path, meta)
    for fps in (None, 2.0):   # refused whether or not the rate is used
        with pytest.raises(ProcessorError) as err:
            proc(text=VIDEO, videos=[str(d)], fps=fps, do_sample_frames=fps is not None)
        assert str(d / "meta.json") in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("fps", [0, -1, float("nan"), "2"])
def test_a_bad_frame_rate_argument_is_refused(proc, fps):
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ProcessorError, match="fps argument: fps=.* is not a frame rate"):
        proc(text=VIDEO, videos=[frames], fps=fps)
    with pytest.raises(ProcessorError, match=r"video_metadata\[0\]: fps=.* is not a frame rate"):
        proc(text=VIDEO, videos=[frames], fps=2.0, do_sample_frames=True, video_metadata=[{"fps": fps}])


def test_unreadable_media_files_name_the_file(proc, tmp_path):
    for suffix, kind in ((".png", "image"), (".wav", "audio")):
        path = tmp_path / f"broken{suffix}"
        path.write_bytes(b"definitely not media")
        with pytest.raises(ProcessorError, match="cannot be read as") as err:
            proc.apply_chat_template([{"role": "user", "content": [{"type": kind, kind: str(path)}]}], tokenize=True)
        assert str(path) in str(err.value)


def test_message_content_of_the_wrong_type(proc):
    with pytest.raises(ProcessorError, match=r"message 0 \('user'\) has content of type int"):
        proc.apply_chat_template([{"role": "user", "content": 5}], tokenize=True)


# ---- 4. no process-wide side effects -------------------------------------------------------------------------
def test_importing_and_using_hf_changes_nothing_process_wide(tiny_dir):
    """In a fresh interpreter: transformers' verbosity, progress bars and the warnings filters are the same
    before `import omni_ref.hf`, after it, and after its functions ran (they are quiet only while they run)."""
    script = f"""
import warnings
from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeProcessor
from transformers.utils import logging
state = lambda: (logging.get_verbosity(), logging.is_progress_bar_enabled(), list(warnings.filters))
before = state()
import omni_ref.hf as hf
after_import = state()
hf.load_hf_processor({str(tiny_dir)!r}); hf.hf_config(hf.OmniConfig())
print(before == after_import, before == state(), before[0], before[1])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["True", "True"], out.stdout
    assert out.stdout.split()[3] == "True"        # progress bars were on, and still are


def test_quiet_restores_what_was_there():
    from transformers.utils import logging
    was = logging.get_verbosity()
    logging.set_verbosity_info()
    try:
        with hf.quiet():
            assert logging.get_verbosity() == logging.ERROR and not logging.is_progress_bar_enabled()
        assert logging.get_verbosity() == logging.INFO and logging.is_progress_bar_enabled()
    finally:
        logging.set_verbosity(was)


def test_write_checkpoint_leaves_the_global_random_stream_alone(tmp_path):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    presets.write_checkpoint("tiny", tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), state)
    # and its bytes still do not depend on the caller's seed
    torch.manual_seed(999)
    presets.write_checkpoint("tiny", tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_bench_run_restores_the_seed_and_determinism(monkeypatch):
    """bench.run seeds torch and turns on deterministic algorithms for itself; afterwards (here: stopped right
    after it set them, by a stub) both are back as they were."""
    from omni_ref.tools import bench
    seen = {}

    def stop(preset):
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        seen["draw"] = torch.rand(1)
        raise RuntimeError("stop here")
    monkeypatch.setattr(bench.presets, "cached_checkpoint", stop)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        torch.manual_seed(5)
        state = torch.random.get_rng_state()
        with pytest.raises(RuntimeError, match="stop here"):
            bench.run("tiny")
        assert seen["deterministic"] is True and torch.equal(seen["draw"], torch.rand(1, generator=torch.Generator()
                                                                                       .manual_seed(0)))
        assert torch.are_deterministic_algorithms_enabled() is False
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        torch.use_deterministic_algorithms(was)
