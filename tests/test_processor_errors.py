"""Bad inputs to omni_ref.Processor: each one stops with a message that says what was wrong and what to do."""
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omni_ref import presets
from omni_ref.processor import MediaNotFoundError, Processor, ProcessorError

DATA = presets.REPO_DIR / "data"
AUDIO = "<|audio_start|><|audio_pad|><|audio_end|>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def proc(tiny_dir):
    return Processor.from_pretrained(tiny_dir)


def ask(proc, *parts):
    """apply_chat_template on one user message made of `parts`, tokenized (which loads the media)."""
    return proc.apply_chat_template([{"role": "user", "content": list(parts)}], tokenize=True, return_dict=True)


def test_unknown_part_type(proc):
    with pytest.raises(ProcessorError, match=r"message 0 \(user\), part 1 has type 'pdf'; the known part types are "
                                             r"text, image, video, audio\. Write it as e\.g\."):
        ask(proc, {"type": "text", "text": "Read this"}, {"type": "pdf", "pdf": "paper.pdf"})
    with pytest.raises(ProcessorError, match="has type None"):
        ask(proc, {"text": "a part without a type"})


def test_media_part_without_its_media(proc):
    with pytest.raises(ProcessorError, match=r"is an image part without the image itself: write \{'type': 'image', "
                                             r"'image': <path or array>\}"):
        ask(proc, {"type": "image"})
    # for the prompt text alone a bare part is fine: the template writes the placeholder
    assert "<|image_pad|>" in proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}])


@pytest.mark.parametrize("kind, name", [("image", "no_such.png"), ("audio", "no_such.wav"), ("video", "no_such_dir")])
def test_missing_file(proc, kind, name):
    with pytest.raises(MediaNotFoundError, match=f"{kind} file not found: '{name}'. Check the path"):
        ask(proc, {"type": kind, kind: name})
    assert issubclass(MediaNotFoundError, FileNotFoundError)


def test_url_is_refused_offline(proc):
    with pytest.raises(ProcessorError, match="is a URL, and omni-ref runs offline: download the file first"):
        ask(proc, {"type": "image", "image": "https://example.com/cat.png"})


def test_audio_at_another_sample_rate(proc, tmp_path):
    path = tmp_path / "8k.wav"
    sf.write(path, np.zeros(8000, np.float32), 8000)
    with pytest.raises(ProcessorError, match=r"is sampled at 8000 Hz but the model expects 16000 Hz\. Resample it "
                                             r"first, e\.g\. `sox in\.wav -r 16000 out\.wav`"):
        ask(proc, {"type": "audio", "audio": str(path)})
    with pytest.raises(ProcessorError, match=r"sampled at 44100 Hz but the model expects 16000 Hz: resample it first"):
        proc(text=AUDIO, audio=np.zeros(44100, np.float32), sampling_rate=44100)


def test_stereo_audio(proc, tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.zeros((16000, 2), np.float32), 16000)
    with pytest.raises(ProcessorError, match=r"is stereo \(2 channels\); the model hears one channel\. Mix it down "
                                             r"first, e\.g\. `sox in\.wav -c 1 out\.wav`"):
        ask(proc, {"type": "audio", "audio": str(path)})
    with pytest.raises(ProcessorError, match=r"has shape \(16000, 2\), which looks like 2 channels \(stereo or more\)"
                                             r"; the model hears one channel\. Pass a 1-D array, e\.g\. "
                                             r"wave\.mean\(axis=1\)"):
        proc(text=AUDIO, audio=np.zeros((16000, 2), np.float32))


def test_empty_audio(proc, tmp_path):
    with pytest.raises(ProcessorError, match=r"audio is empty \(0 samples\): pass at least some sound, or drop the "
                                             r"audio part"):
        proc(text=AUDIO, audio=np.zeros(0, np.float32))
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(ProcessorError, match=r"is empty \(0 samples\)"):
        ask(proc, {"type": "audio", "audio": str(path)})


def test_integer_audio(proc):
    with pytest.raises(ProcessorError, match=r"integer array \(int16\); the model expects floats in \[-1, 1\]\. "
                                             r"Convert it, e\.g\. wave\.astype\(np\.float32\) / 32768"):
        proc(text=AUDIO, audio=np.zeros(1600, np.int16))


def test_image_smaller_than_one_patch(proc):
    tiny = Image.new("RGB", (12, 40))
    with pytest.raises(ProcessorError, match=r"image is 12x40 pixels, smaller than one 16x16 patch: it carries too "
                                             r"little to see\. Use a larger picture, or upscale it yourself"):
        ask(proc, {"type": "image", "image": tiny})


def test_bad_image_array(proc):
    with pytest.raises(ProcessorError, match=r"image array has dtype float64; pass uint8 pixels 0\.\.255"):
        proc(text=IMAGE, images=[np.zeros((32, 32, 3))])
    with pytest.raises(ProcessorError, match=r"has shape \(32, 32, 4\); pass \(height, width, 3\) RGB"):
        proc(text=IMAGE, images=[np.zeros((32, 32, 4), np.uint8)])


def test_video_with_no_frames(proc, tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(ProcessorError, match=r"video folder '.*' has no frames: put the frames in '.*frames' as "
                                             r"\.jpg/\.jpeg/\.png/\.bmp/\.webp files, named so that they sort in time"):
        ask(proc, {"type": "video", "video": str(tmp_path)})
    with pytest.raises(ProcessorError, match=r"video has no frames \(an empty list\): pass at least one frame"):
        ask(proc, {"type": "video", "video": []})
    with pytest.raises(ProcessorError, match=r"video has no frames: pass at least one frame"):
        proc(text=VIDEO, videos=[np.zeros((0, 32, 32, 3), np.uint8)])


def test_video_file_needs_frames(proc, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00")
    with pytest.raises(ProcessorError, match=r"is a file; decoding video files needs ffmpeg, which omni-ref does not "
                                             r"use\. Extract the frames and sound once"):
        ask(proc, {"type": "video", "video": str(clip)})


def test_sampling_needs_the_videos_frame_rate(proc):
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(ProcessorError, match=r"to sample the video at fps=2 its own frame rate must be known: put "
                                             r"\"fps\" in the frame folder's meta\.json, or pass video_metadata"):
        proc(text=VIDEO, videos=[frames], fps=2, do_sample_frames=True)
    out = proc(text=VIDEO, videos=[frames], fps=2, do_sample_frames=True, video_metadata=[{"fps": 4}])
    assert out["video_grid_thw"][0, 0].item() == 2   # 8 frames at 4 fps = 2 s -> 4 frames -> 2 pairs


def test_more_media_than_placeholders(proc):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ProcessorError, match=r"2 image input\(s\) were given but the text has 1 <\|image_pad\|> "
                                             r"placeholder\(s\); there are more image parts\. Each image needs one "
                                             r"<\|vision_start\|><\|image_pad\|><\|vision_end\|> in the text"):
        proc(text=f"Two pictures: {IMAGE}", images=[image, image])
    with pytest.raises(ProcessorError, match=r"0 audio input\(s\) were given but the text has 1 <\|audio_pad\|> "
                                             r"placeholder\(s\); there are more audio placeholders"):
        proc(text=AUDIO)


def test_ragged_batch_without_padding(proc):
    with pytest.raises(ProcessorError, match="the prompts have different lengths; pass padding=True"):
        proc(text=["a", "a much longer prompt"], padding=False)
