"""The latency side of the analytic model (latency.py): roofline arithmetic on hand-made weights, its
monotonicity, batching over concurrent requests, active vs total bytes of the real model, and a self-check of
the report's Table 2 as transcribed (twice: here and in latency.TABLE_2)."""
import pytest

import omni_ref
from omni_ref.tools import latency

HW = latency.Hardware(flops=1e12, bandwidth=1e11)        # round numbers to compute by hand


def test_decode_arithmetic_by_hand():
    # 1e9 dense + 8e9 in experts, 2 of 8 used: 3e9 active. bf16: 6e9 bytes / 1e11 B/s = 60 ms;
    # compute 2 x 3e9 / 1e12 = 6 ms, so memory bound: 60 ms per token.
    w = latency.DecoderWeights("toy", dense=10**9, experts=8 * 10**9, top_k=2, num_experts=8)
    assert w.active == 3 * 10**9
    t = latency.decode_seconds(w, HW, "bf16")
    assert t["memory_s"] == pytest.approx(0.060) and t["compute_s"] == pytest.approx(0.006)
    assert t["seconds"] == pytest.approx(0.060)
    # Passes multiply: the MTP runs once per residual codebook.
    dense = latency.DecoderWeights("mtp", dense=10**8, passes=15)
    assert latency.decode_seconds(dense, HW, "fp32")["seconds"] == pytest.approx(15 * 4e8 / 1e11)


def test_prefill_arithmetic_by_hand():
    # One token touches k/E of the experts; 1000 tokens of 2-of-8 routing touch 1 - 0.75^1000 ~ all of them.
    assert latency.experts_touched(1, 2, 8) == pytest.approx(0.25)
    assert latency.experts_touched(2, 2, 8) == pytest.approx(1 - 0.75 ** 2)
    w = latency.DecoderWeights("toy", dense=10**9, experts=8 * 10**9, top_k=2, num_experts=8)
    one = latency.prefill_seconds(w, 1, HW)
    assert one["seconds"] == pytest.approx(latency.decode_seconds(w, HW)["seconds"])   # one token = one step
    big = latency.prefill_seconds(w, 1000, HW)
    assert big["memory_s"] == pytest.approx(9e9 * 2 / 1e11)          # every weight read once: 180 ms
    assert big["compute_s"] == pytest.approx(2 * 3e9 * 1000 / 1e12)   # 6 s: compute bound
    assert big["seconds"] == pytest.approx(6.0)


def test_codec_and_table_formulas_by_hand():
    # 5e8 FLOPs per frame = 0.5 ms; 1e8 bf16 weights = 2 ms per call, shared by the frames of a call.
    assert latency.codec_seconds_per_frame(5e8, 10**8, 1, HW, "bf16") == pytest.approx(2e-3)      # bytes bound
    assert latency.codec_seconds_per_frame(5e8, 10**8, 10, HW, "bf16") == pytest.approx(0.5e-3)   # compute bound
    assert latency.first_packet(1, 2, 3, 4, 5) == 15
    assert latency.real_time_factor(0.010, 0.020, 0.005, 0.005) == pytest.approx(0.5)


def test_batched_decode_reads_the_experts_any_token_touches():
    # 4 requests decode together: each multiplies its 3e9 active weights (compute 2 x 3e9 x 4 / 1e12
    # = 24 ms); the step reads the dense 1e9 once, and the experts one of 4 tokens uses: 68.4 %.
    w = latency.DecoderWeights("toy", dense=10**9, experts=8 * 10**9, top_k=2, num_experts=8)
    t = latency.decode_seconds(w, HW, "bf16", batch=4)
    assert latency.experts_touched(4, 2, 8) == pytest.approx(0.68359375)
    assert t["memory_s"] == pytest.approx((1e9 + 8e9 * 0.68359375) * 2 / 1e11)      # 129.4 ms
    assert t["compute_s"] == pytest.approx(0.024) and t["seconds"] == pytest.approx(t["memory_s"])
    # A large batch reads every expert once and becomes compute bound: 1000 x 6 ms.
    big = latency.decode_seconds(w, HW, "bf16", batch=1000)
    assert big["memory_s"] == pytest.approx(9e9 * 2 / 1e11) and big["seconds"] == pytest.approx(6.0)
    # A dense decoder (the MTP) reads the same bytes whatever the batch: memory time is flat.
    mtp = latency.DecoderWeights("mtp", dense=10**8, passes=15)
    flat = [latency.decode_seconds(mtp, HW, batch=b)["memory_s"] for b in (1, 6)]
    assert flat[0] == flat[1]
    # The codec: 10 requests' frames in one call compute 10 x 0.5 ms, read the 2 ms of weights once.
    assert latency.codec_seconds_per_frame(5e8, 10**8, 1, HW, batch=10) == pytest.approx(5e-3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="whole number of requests"):
            latency.decode_seconds(w, HW, batch=bad)


def test_more_bandwidth_or_flops_is_never_slower():
    w = latency.DecoderWeights("toy", dense=10**9, experts=8 * 10**9, top_k=2, num_experts=8)
    for tokens in (1, 10, 1000):
        times = [latency.prefill_seconds(w, tokens, latency.Hardware(flops=f, bandwidth=b))["seconds"]
                 for f, b in ((1e12, 1e11), (1e12, 2e11), (2e12, 2e11))]
        assert times[0] >= times[1] >= times[2]
    slow, fast = (latency.decode_seconds(w, latency.Hardware(1e12, b))["seconds"] for b in (1e11, 1e12))
    assert fast == pytest.approx(slow / 10)            # memory bound: time scales with 1 / bandwidth


@pytest.fixture(scope="module")
def real():
    return omni_ref.presets.build_meta("real")


def test_active_vs_total_bytes_of_the_real_model(real):
    w = latency.decoder_weights(real)
    th = w["Thinker"]
    # Table 1's 3,353,556,992 active Thinker LM parameters count the 152064 x 2048 embedding table in full;
    # a token reads one row of it.
    assert th.active == 3_353_556_992 - 152_064 * 2048 + 2048
    assert th.dense + th.experts + 152_064 * 2048 - 2048 == 30_532_646_912
    assert (th.top_k, th.num_experts) == (8, 128)
    # Decode reads ~10% of the Thinker's weights: the MoE's point.
    total_bytes = latency.weight_bytes(th.dense + th.experts, "bf16")
    assert 0.09 < latency.weight_bytes(th.active, "bf16") / total_bytes < 0.11
    assert w["MTP"].passes == 15 and w["MTP"].experts == 0


def test_analytic_table_2_rows_are_consistent(real):
    rows = latency.analytic_table_2(real)
    assert set(rows) == set(latency.PAPER_TABLE_2)
    parts = [rows[k] for k in ("preprocess_s", "thinker_ttft_s", "talker_ttft_s", "mtp_s", "codec_s")]
    assert rows["first_packet_s"] == pytest.approx(sum(parts))
    # A roofline is a lower bound: every modelled stage is faster than the report measured.
    for k in ("thinker_ttft_s", "talker_ttft_s", "mtp_s", "codec_s", "rtf"):
        assert rows[k] < latency.PAPER_TABLE_2[k], k
    assert rows["thinker_tok_s"] > 75 and rows["talker_tok_s"] > 140
    assert round(rows["thinker_tok_s"]) == 551            # 3.04e9 bytes x 2 / 3.35e12 B/s = 1.82 ms per token


# Table 2 of the report (arXiv 2509.17765) as transcribed: (audio, video) per row, columns 1 / 4 / 6 concurrent.
TABLE_2 = {
    "preprocess": [(72, 160), (94, 180), (100, 200)],
    "thinker_ttft": [(88, 160), (468, 866), (673, 1330)],
    "talker_ttft": [(57, 210), (145, 450), (376, 734)],
    "mtp": [(14, 14), (16, 16), (18, 18)],
    "codec": [(3, 3), (5, 5), (5, 5)],
    "overall": [(234, 547), (728, 1517), (1172, 2284)],
    "thinker_tok_s": [75, 63, 53], "talker_tok_s": [140, 125, 110], "rtf": [0.47, 0.56, 0.66],
}


def test_paper_overall_row_is_the_sum_of_its_rows():
    rows = ("preprocess", "thinker_ttft", "talker_ttft", "mtp", "codec")
    sums = [[sum(TABLE_2[r][col][m] for r in rows) for m in (0, 1)] for col in range(3)]
    overall = [list(x) for x in TABLE_2["overall"]]
    # Every cell adds up except 6-concurrent video: its rows sum to 2287 ms, the report prints 2284.
    assert sums[:2] == overall[:2] and sums[2][0] == overall[2][0]
    assert (sums[2][1], overall[2][1]) == (2287, 2284)
    p = latency.PAPER_TABLE_2
    assert 1000 * p["first_packet_s"] == pytest.approx(234) == 1000 * latency.first_packet(
        p["preprocess_s"], p["thinker_ttft_s"], p["talker_ttft_s"], p["mtp_s"], p["codec_s"])


def test_paper_rtf_follows_its_definition():
    rtf = [latency.real_time_factor(1 / th, 1 / tk, m / 1000, c / 1000)
           for th, tk, m, c in zip(TABLE_2["thinker_tok_s"], TABLE_2["talker_tok_s"],
                                   [x[0] for x in TABLE_2["mtp"]], [x[0] for x in TABLE_2["codec"]])]
    assert [round(r, 2) for r in rtf[:2]] == TABLE_2["rtf"][:2]       # 0.47 and 0.56 exactly
    assert round(rtf[2], 2) == 0.64                                   # the report prints 0.66 for 6-concurrent


def test_the_two_transcriptions_of_table_2_agree():
    ms = {"preprocess": "preprocess_s", "thinker_ttft": "thinker_ttft_s",
          "talker_ttft": "talker_ttft_s", "mtp": "mtp_s", "codec": "codec_s",
          "overall": "first_packet_s"}
    for col, c in enumerate(latency.TABLE_2_CONCURRENCY):
        for m, input in enumerate(("audio", "video")):
            cell = latency.TABLE_2[(input, c)]
            assert list(cell) == list(latency.TABLE_2_ROWS)
            for row, key in ms.items():
                assert 1000 * cell[key] == pytest.approx(TABLE_2[row][col][m]), (input, c, row)
            for row in ("thinker_tok_s", "talker_tok_s", "rtf"):
                assert cell[row] == TABLE_2[row][col], (input, c, row)
    assert latency.PAPER_TABLE_2 is latency.TABLE_2[("audio", 1)]


def test_preprocessing_is_the_papers_row_between_its_columns():
    assert [latency.paper_preprocess_s("video", c) for c in (1, 4, 6)] == [0.160, 0.180, 0.200]
    assert latency.paper_preprocess_s("audio", 5) == pytest.approx(0.097)   # halfway, 94 to 100 ms
    assert latency.paper_preprocess_s("audio", 2) == pytest.approx(0.072 + 22e-3 / 3)
    assert latency.paper_preprocess_s("audio", 9) == 0.100                    # beyond 6: the 6 cell


def test_the_video_prompt_is_what_the_processor_makes_of_10_s_of_640_x_360():
    from omni_ref.processor.vision import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, smart_resize
    h, w = smart_resize(360, 640, 32, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    assert (h, w) == (352, 640)
    pairs = 10 * 2 // 2                           # 10 s at 2 fps, two frames per temporal patch
    video = latency.PROMPTS["video"]
    assert video.video_tokens == pairs * (h // 32) * (w // 32) == 2200
    assert video.audio_tokens == latency.PROMPTS["audio"].audio_tokens == 125    # the same sound
    assert (latency.PROMPTS["audio"].tokens, video.tokens) == (160, 2360)


# The 1-request audio roofline as notebook 07 prints it: concurrency=1 must not change a digit.
ONE_REQUEST = {"thinker_ttft_s": 0.018428775628618995, "talker_ttft_s": 0.0018900891671040259,
               "mtp_s": 0.0007231694328358209, "codec_s": 0.00012896512059701491,
               "first_packet_s": 0.09317099934915585, "thinker_tok_s": 550.6007029343968,
               "talker_tok_s": 5796.824666257942, "rtf": 0.03551051224626866}


def test_one_request_is_the_batch_1_roofline(real):
    rows = latency.analytic_table_2(real, concurrency=1)
    for k, v in ONE_REQUEST.items():
        assert rows[k] == pytest.approx(v, rel=1e-9), k
    assert rows == latency.analytic_table_2(real)


@pytest.fixture(scope="module")
def columns(real):
    return {(i, c): latency.analytic_table_2(real, input=i, concurrency=c)
            for i in ("audio", "video") for c in range(1, 9)}


def test_more_requests_are_never_faster(columns):
    for i in ("audio", "video"):
        for c in range(1, 8):
            a, b = columns[(i, c)], columns[(i, c + 1)]
            for k in latency.TABLE_2_ROWS[:6] + ("rtf",):
                assert b[k] >= a[k], (i, c, k)
            for k in ("thinker_tok_s", "talker_tok_s"):
                assert b[k] < a[k], (i, c, k)


def test_concurrency_by_hand(real, columns):
    # 4 Thinker tokens in one step: the dense 1.23 B, and 1 - (120/128)^4 = 22.8 % of 29 B experts.
    w = latency.decoder_weights(real)["Thinker"]
    read = w.dense + w.experts * (1 - (1 - 8 / 128) ** 4)
    assert 1 / columns[("audio", 4)]["thinker_tok_s"] == pytest.approx(2 * read / 3.35e12)
    rates = [round(columns[("audio", c)]["thinker_tok_s"]) for c in (1, 4, 6)]
    assert rates == [551, 214, 159]
    # Video: 4 prompts of 2360 tokens are 9440 tokens of prefill, compute bound (2 x 3.04 B x 9440
    # FLOPs), after the vision tower's 4 x 4 x 2200 patches and AuT's 4 x 125 tokens.
    vis = sum(p.numel() for p in real.thinker.visual.parameters())
    aut = sum(p.numel() for p in real.thinker.audio_tower.parameters())
    by_hand = (2 * w.active * 4 * 2360 + 2 * vis * 4 * 4 * 2200 + 2 * aut * 4 * 125) / 989e12
    assert columns[("video", 4)]["thinker_ttft_s"] == pytest.approx(by_hand)
    for col in columns.values():
        assert col["first_packet_s"] == pytest.approx(sum(col[k] for k in latency.TABLE_2_ROWS[:5]))


def test_the_roofline_is_below_every_column_of_the_paper(columns):
    for (i, c), paper in latency.TABLE_2.items():
        ours = columns[(i, c)]
        for k in ("thinker_ttft_s", "talker_ttft_s", "mtp_s", "codec_s", "first_packet_s", "rtf"):
            assert ours[k] < paper[k], (i, c, k)
        for k in ("thinker_tok_s", "talker_tok_s"):
            assert ours[k] > paper[k], (i, c, k)


def test_bad_columns_are_refused(real):
    with pytest.raises(ValueError, match="Table 2 has the columns"):
        latency.analytic_table_2(real, input="image")
    with pytest.raises(ValueError, match="whole number of requests"):
        latency.analytic_table_2(real, concurrency=0)
