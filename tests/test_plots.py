"""The computing helpers behind notebook 02's figures (omni_ref/plots.py); the plot_* functions only draw."""
import pytest
import torch
from torch import nn

from omni_ref import presets
from omni_ref.tools import plots
from omni_ref.processor.vision import VisionSettings, normalize, patchify
from omni_ref.vision_encoder import to_block_order


def test_from_block_order_inverts_to_block_order():
    grid = torch.arange(6 * 8 * 3).reshape(6, 8, 3)
    rows = to_block_order(grid, 2)
    assert rows[:4, 0].tolist() == [grid[0, 0, 0], grid[0, 1, 0], grid[1, 0, 0], grid[1, 1, 0]]   # one block
    assert torch.equal(plots.from_block_order(rows, 6, 8, 2), grid)
    with pytest.raises(ValueError, match="do not form an 6 x 6 grid"):
        plots.from_block_order(rows, 6, 6, 2)


def test_unpatchify_gives_back_the_normalised_frames():
    s = VisionSettings(patch_size=4, merge_size=2, temporal_patch_size=2)
    frames = torch.randint(0, 256, (4, 3, 16, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    rows, grid = patchify(normalize(frames, s), s)                                # (t*h*w, 3*2*4*4)
    back = plots.unpatchify(rows, grid, s)                                        # (4, 16, 24, 3) in 0..1
    torch.testing.assert_close(back, frames.permute(0, 2, 3, 1).float() / 255, atol=1e-5, rtol=0)


def test_window_mask_and_spans():
    assert plots.window_spans([3, 2]) == [(0, 3), (3, 5)]
    mask = plots.window_mask([3, 2])
    want = torch.zeros(5, 5, dtype=torch.bool)
    want[:3, :3] = want[3:, 3:] = True
    assert torch.equal(mask, want)


def test_modality_runs():
    T = torch.tensor
    masks = {"text": T([1, 1, 0, 0, 0, 1], dtype=torch.bool), "audio": T([0, 0, 1, 1, 0, 0], dtype=torch.bool),
             "image": T([0, 0, 0, 0, 1, 0], dtype=torch.bool)}
    assert plots.modality_runs(masks) == [("text", 0, 2), ("audio", 2, 4), ("image", 4, 5), ("text", 5, 6)]
    masks["image"][0] = True
    with pytest.raises(ValueError, match="exactly one modality"):
        plots.modality_runs(masks)


def test_record_outputs_sees_each_call_and_unhooks():
    lin = nn.Linear(2, 3)
    with plots.record_outputs({"lin": lin}) as seen:
        lin(torch.ones(1, 2))
        lin(torch.zeros(4, 2))
    lin(torch.ones(1, 2))                                   # after the block: no longer recorded
    assert [o.shape for o in seen["lin"]] == [(1, 3), (4, 3)]
    torch.testing.assert_close(seen["lin"][1][0], lin.bias.detach())
    assert not lin._forward_hooks


@pytest.fixture(scope="module")
def tiny_thinker():
    import omni_ref
    return omni_ref.load(presets.cached_checkpoint("tiny"), components=("thinker",)).thinker


def test_deepstack_effect_is_zero_before_the_first_visual_token_and_measured_after(tiny_thinker):
    cfg = tiny_thinker.config
    n_image = 4                                               # a 4x4 patch grid -> 2x2 = 4 merged tokens
    ids = torch.tensor([[1, 2, 3, cfg.vision_start_token_id] + [cfg.image_token_id] * n_image
                        + [cfg.vision_end_token_id, 4, 5, 6]])
    v = cfg.vision_config
    pixels = torch.randn(16, v.in_channels * v.temporal_patch_size * v.patch_size ** 2,
                         generator=torch.Generator().manual_seed(0))
    effect = plots.deepstack_effect(tiny_thinker, ids, torch.ones_like(ids), pixel_values=pixels,
                                    image_grid_thw=torch.tensor([[1, 4, 4]]))
    levels = len(v.deepstack_visual_indexes)
    assert len(effect.added_norm) == len(effect.hidden_norm) == levels
    assert len(effect.change_visual) == cfg.text_config.num_hidden_layers
    assert effect.change_visual[0] == 0.0                     # layer 0's output is taken before level 0 is added
    assert effect.change_visual[1] > 0 and effect.change_text_after[1] > 0 and effect.logits_change > 0
    # Causal attention: earlier tokens never see deepstack. Not bit-exact: the experts multiply the tokens routed
    # to them as one matrix, and later tokens' changed routing changes those matrices' shapes (float rounding).
    assert effect.change_before < 1e-5
    with pytest.raises(ValueError, match="no image or video"):
        plots.deepstack_effect(tiny_thinker, ids[:, :3], torch.ones_like(ids[:, :3]))


# ---- notebooks 03 and 04: routing by modality, the nucleus size, the figures draw ---------------------------

def test_nucleus_size_is_what_apply_top_p_keeps():
    from omni_ref.sampling import apply_top_p
    g = torch.Generator().manual_seed(1)
    for logits in (torch.randn(300, generator=g), -1.2 * torch.log(torch.arange(1, 301.0)), torch.zeros(10)):
        for p in (0.01, 0.5, 0.9, 0.99):
            kept = int(torch.isfinite(apply_top_p(logits[None], p)).sum())
            assert plots.nucleus_size(torch.softmax(logits, -1), p) == kept, (p, kept)
    assert plots.nucleus_size(torch.tensor([0.7, 0.2, 0.1]), 0.7) == 1     # reaching p exactly is enough
    assert plots.nucleus_size(torch.tensor([0.7, 0.2, 0.1]), 0.71) == 2


def test_routing_and_sampling_figures_draw(tiny_thinker):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omni_ref.generate import thinker_generate
    ids = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = tiny_thinker(input_ids=ids)
    k = tiny_thinker.config.text_config.num_experts_per_tok
    figs = [plots.plot_router_token(out.routing[0].router_probs[0, 0], k),
            plots.plot_sampling_filters({"logits": out.logits[0, -1]}, top_k=5)]
    trace = []
    thinker_generate(tiny_thinker, ids, max_new_tokens=3, trace=trace)
    figs.append(plots.plot_decode_trace(trace))
    assert all(f.axes for f in figs)
    for f in figs:
        plt.close(f)


# ---- the architecture and the stage timings (notebooks 00 and 07) ----------------------------------------------

def test_architecture_shapes_are_the_real_configs():
    from omni_ref import presets
    s = plots.architecture_shapes(presets.config("real"), mel_frames=343, image_grid=(1, 12, 18))
    assert s["mel"] == "log-mel (128, 343)"
    assert s["audio"] == "audio tokens (45, 2048)"                 # 3 x 13 + 6 tokens; AuT output_dim 2048
    assert s["patches"] == "patches (216, 1536)"                   # 12 x 18 patches of 3 x 2 x 16 x 16
    assert s["image"] == "image tokens (54, 2048)"                 # merged 2 x 2
    assert s["deepstack"].startswith("deepstack 3 x (54, 2048)")
    assert s["handoff"] == "embeddings (T, 2048) + layer-24 states (T, 2048)"
    assert s["codes"] == "codes (16, F) x 2048 at 12.5 Hz" and s["wave"] == "wave (1, 1, 1920 F) at 24 kHz"


def test_log_ticks_label_one_two_five():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    assert plots.log_ticks(ax, 0.08, 60) == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]
    assert [t.get_text() for t in ax.get_yticklabels()][:3] == ["0.1", "0.2", "0.5"]
    plt.close(fig)


def test_architecture_and_timing_figures_draw():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omni_ref import presets
    from omni_ref.tools import latency
    stage = {"omni_ref": 0.010, "hf": 0.020, "runs": {"omni_ref": [0.009, 0.010, 0.011], "hf": [0.01, 0.02, 0.03]},
             "flag": {"omni_ref": None, "hf": "spread 100% is over 50%"}}
    stages = {"thinker_ttft": stage, "processor": {"omni_ref": 0.001, "hf": None}}
    steps = {"thinker": {"omni_ref": {"thinker_ttft": [0.05], "thinker_token": [0.01, 0.012]}, "hf": {}},
             "talker": {"omni_ref": {"talker_ttft": [0.02], "talker_step": [0.03]},
                        "hf": {"talker_ttft": [0.02], "talker_step": [0.04]}}}
    figs = [plots.plot_architecture(presets.config("real")),
            plots.plot_parameter_sizes(latency.module_sizes(presets.build_meta("tiny"))),
            plots.plot_stage_times(stages), plots.plot_step_times(steps)]
    assert all(f.axes for f in figs)
    for f in figs:
        plt.close(f)


# ---- notebooks 01 and 02 (issue 9): AuT's conv reach, the position grid, the log-mel and token-cost figures ----

def test_conv_reach_is_the_window_of_three_stride_2_convolutions(tiny_thinker):
    reach = plots.conv_reach(tiny_thinker.audio_tower, 100)                 # (frames, steps)
    frame, step = torch.arange(100)[:, None], torch.arange(13)[None, :]
    assert torch.equal(reach, (frame >= 8 * step - 7) & (frame <= 8 * step + 7))
    assert plots.conv_reach(tiny_thinker.audio_tower, 43).shape == (43, 6)


def test_attention_window_figure_draws_no_bar_where_nothing_changed():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    response = torch.zeros(20)
    response[:8] = torch.linspace(0.1, 1.0, 8)                             # window 0 partly, window 1 not at all
    fig = plots.plot_attention_windows([10, 10], [5, 5, 5, 5], response=response)
    bottom = fig.axes[1]
    assert len(bottom.patches) == 8                                        # one bar per changed token, no floor bars
    assert [t.get_text() for t in bottom.texts] == ["0 exactly:\nno token changed"]   # only window 1 is unchanged
    plt.close(fig)


def test_processor_and_position_figures_draw():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from omni_ref.processor.audio import AudioSettings, mel_filter_bank
    T = 7
    positions = torch.tensor([[0, 1, 2, 2, 2, 2, 4], [0, 1, 2, 2, 3, 3, 4], [0, 1, 2, 3, 2, 3, 4]])
    image = torch.tensor([0, 0, 1, 1, 1, 1, 0], dtype=torch.bool)
    fig = plots.plot_position_grid(positions, {"text": ~image, "image": image}, [str(i) for i in range(T)])
    assert len(fig.axes[0].texts) == 3 * T and len(fig.axes[0].lines) == 2   # every id written; run start and end
    filters = mel_filter_bank(AudioSettings())
    power = np.abs(np.random.default_rng(0).normal(size=201)) ** 2
    mel = filters.T @ power
    log_spec = np.maximum(np.log10(mel), np.log10(mel).max() - 8)
    figs = [fig, plots.plot_mel_steps(np.linspace(0, 8000, 201), filters, power, mel, log_spec,
                                      float(log_spec.min()), frame=3),
            plots.plot_token_costs(np.arange(0, 2, 0.1), list(range(20)), [100, 1000], {"square": [9, 900]}, 12544)]
    assert all(f.axes for f in figs)
    for f in figs:
        plt.close(f)


# ---- notebooks 05 and 06: Talker, MTP and Code2Wav figures ---------------------------------------------------

def test_envelope_keeps_min_and_max_of_every_window():
    lo, hi = plots.envelope(torch.tensor([0.0, 3.0, -1.0, 2.0, 5.0]), 2)
    assert lo.tolist() == [0.0, -1.0, 5.0] and hi.tolist() == [3.0, 2.0, 5.0]   # last window padded with itself


def test_residual_dependencies_are_a_strict_triangle():
    from omni_ref.model import init_random_weights
    from omni_ref.talker import Talker
    talker = Talker(presets.config("tiny").talker_config).eval()
    init_random_weights(talker, seed=3)
    hidden = torch.randn(1, 1, talker.config.text_config.hidden_size, generator=torch.Generator().manual_seed(4))
    dep = plots.residual_dependencies(talker, hidden, code0=5)
    n = talker.config.num_code_groups
    later = torch.ones(n, n, dtype=torch.bool).triu(1)
    assert dep.shape == (n, n)
    assert (dep[~later] == 0).all()            # forcing code q never moves codes 0..q
    assert (dep[later] > 0).all()              # and always moves the logits of every later code


def test_talker_and_code2wav_figures_draw():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omni_ref.code2wav import chunk_spans
    from omni_ref.talker import ASSISTANT_SEGMENTS
    segments = [("user text: text_projection", 0, 3), ("user media: hidden_projection", 3, 10)] + [
        (s, 10 + i, 11 + i) for i, s in enumerate(ASSISTANT_SEGMENTS)]
    wave = torch.sin(torch.arange(6 * 1920 - 555) / 7.0)
    figs = [plots.plot_talker_prompt(segments, 2),
            plots.plot_frame_codes(torch.randint(0, 2048, (4, 8)), torch.ones(4, 4).triu(1), n_frames=3),
            plots.plot_waveform_frames(wave, 1920, 555, 24000, zoom=(2, 4)),
            plots.plot_chunk_spans(chunk_spans(50, 10, 25), 50, 1920, 555)]
    assert len(figs[0].axes[1].patches) == 2 * len(ASSISTANT_SEGMENTS)     # a text side and a codec side each
    assert len(figs[1].axes[0].texts) == 4 * 3                              # one code id per cell shown
    assert len(figs[3].axes[0].patches) == 2 * 5                            # context and kept part per chunk
    for f in figs:
        plt.close(f)


# ---- notebook 09: the whole pipeline streaming ----------------------------------------------

def test_stream_timeline_figure_draws_what_was_timed():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from omni_ref.tools.timeline import STAGES, Timeline
    # Three packets of 4 frames (the first 555 samples short, 296.9 ms): the second arrives at 0.6 s,
    # 103 ms after the first packet's audio has been played.
    audio = [(0.2, 4 * 1920 - 555), (0.6, 4 * 1920), (0.7, 4 * 1920)]
    tl = Timeline({s: [] for s in STAGES}, audio, end_s=0.7)
    tl.intervals = {"Thinker": [(0.0, 0.05)], "Talker": [(0.05, 0.08), (0.3, 0.32)],
                    "MTP": [(0.08, 0.1)], "Code2Wav": [(0.1, 0.2)]}
    fig = plots.plot_stream_timeline(tl)
    lanes, play = fig.axes
    bars = [c.get_paths() for c in lanes.collections]
    assert [len(b) for b in bars] == [1, 2, 1, 1]                       # one bar per call
    assert [t.get_text() for t in lanes.texts] == [" first packet 200 ms"]
    assert lanes.get_xlabel() == "" and play.get_xlabel().endswith("(s)") and play.get_ylabel()
    (rx, ry), (cx, cy) = plots.received_and_played(tl)
    assert ry[-1] == pytest.approx(tl.audio_s) and cy[1:3] == [0.0, pytest.approx(tl.audio_s)]
    assert cx[1] == 0.2                                                 # playback starts there
    marker, received, cursor = play.lines
    assert list(marker.get_xdata()) == [0.2, 0.2]                       # the first packet, marked
    assert received.get_xydata()[:, 1].max() == pytest.approx(tl.audio_s)
    assert list(cursor.get_xdata()) == cx
    dry, = play.collections                                             # the dry spell, shaded
    x = dry.get_paths()[0].vertices[:, 0]
    assert 0.2 + 7125 / 24000 - 0.01 < x.min() and x.max() < 0.6 + 0.01
    plt.close(fig)
