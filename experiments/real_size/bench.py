"""The real Qwen3-VL-2B architecture, random weights, on CPU: what proves the real path before a GPU.

    python experiments/real_size/bench.py [--threads N] [--lora-images 4] [--workdir DIR] [--keep]

Slow: 4 to 8 minutes on 2 cores; up to 20 GiB of RAM (the LoRA step; 13 GiB with
--gradient-checkpointing), 8 GiB of disk while it runs. Not a test, not in CI. See README.md.

1. Meta device (no memory, no weights): Qwen3VLModel from the published 2B and 8B configurations,
   parameters counted (vision / language model; no LM head: the backbone loads Qwen3VLModel) and the
   LoRA adapters of ``BackboneConfig.lora_target_modules`` injected by the backbone's own code; the
   adapted module names and the adapter parameter count are checked against what the config's
   dimensions give (r x (in + out) per adapted Linear, computed here from the config, not the model).
2. The 2B model built with random weights in fp32 and saved with ``save_pretrained`` beside a
   processor whose tokenizer puts Qwen's special tokens at their real ids (below), then loaded the way
   a run loads it: ``build(BackboneConfig, name_or_path=<dir>, ...)`` -> ``Qwen3VLBackbone``.
3. Frozen, fp32, no_grad: the processor on two real-size photos (1200x1600 and 1080x1080) at the
   default 448^2 budget (tokens per image), then extraction with pooling mean, last and vision.
4. train=lora with the default target regex: one step (forward, triplet loss through the default head,
   backward, AdamW) on four real-size photos; every adapter checked for a gradient and an update.

Peak memory is the process's resident high-water mark (VmHWM, reset at each stage's start through
/proc/self/clear_refs), plus resource.getrusage's ru_maxrss at the end.

Why the tokenizer is not charfeat's tiny one as is: ``tiny.build_tokenizer`` numbers the special tokens
after the 256 byte symbols (<|image_pad|> = 261), and a tiny config is then given those ids. The real
config says image_token_id 151655 and an embedding table of 151936 rows, and the weights are built
from the real config unchanged, so the tokenizer is made to fit the config: the same byte-level
alphabet with no merges, padded with never-produced filler entries up to id 151642, then Qwen's
special tokens at their real ids 151643..151656. A prompt therefore tokenizes into one token per
byte (the real BPE gives fewer text tokens); images, which are what costs here, are exact.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from charfeat.config import (AdamWConfig, BackboneConfig, HeadConfig, Pooling, TripletLossConfig,  # noqa: E402
                             build)
from charfeat.models.backbone.flops import QWEN3_VL_SIZES, forward_flops  # noqa: E402
from charfeat.models.backbone.tiny import CHAT_TEMPLATE, build_image_processor  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Published configurations (config.json of Qwen/Qwen3-VL-{2B,8B}-Instruct), written out.
# ---------------------------------------------------------------------------------------------------
# Qwen's special tokens and their ids in the real vocabulary (151643 BPE tokens come first).
QWEN_SPECIAL_TOKENS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656,
}
TOKEN_IDS = {"image_token_id": 151655, "video_token_id": 151656,
             "vision_start_token_id": 151652, "vision_end_token_id": 151653}


def published_config(size: str) -> dict:
    """config.json of Qwen3-VL-{2B,8B}-Instruct, in transformers 5's spelling (rope_parameters)."""
    text = {"2b": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       intermediate_size=6144, tie_word_embeddings=True),
            "8b": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=12288, tie_word_embeddings=False)}[size]
    vision = {"2b": dict(depth=24, hidden_size=1024, intermediate_size=4096, deepstack_visual_indexes=[5, 11, 17]),
              "8b": dict(depth=27, hidden_size=1152, intermediate_size=4304, deepstack_visual_indexes=[8, 16, 24])}[size]
    tie = text.pop("tie_word_embeddings")
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "tie_word_embeddings": tie,
        **TOKEN_IDS,
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": 151936,
            "head_dim": 128,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 262144,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "tie_word_embeddings": tie,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True},
            **text,
        },
        "vision_config": {
            "model_type": "qwen3_vl",
            "hidden_act": "gelu_pytorch_tanh",
            "num_heads": 16,
            "in_channels": 3,
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "num_position_embeddings": 2304,
            "out_hidden_size": text["hidden_size"],
            **vision,
        },
    }


def make_config(size: str):
    from transformers import Qwen3VLConfig

    raw = published_config(size)
    config = Qwen3VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    # The same sizes as charfeat's FLOP model (flops.QWEN3_VL_SIZES): one source must not drift from the other.
    t, v = config.text_config, config.vision_config
    mine = (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.intermediate_size,
            v.depth, v.hidden_size, v.intermediate_size, list(v.deepstack_visual_indexes))
    assert mine == tuple(QWEN3_VL_SIZES[size]), (size, mine, QWEN3_VL_SIZES[size])
    assert sum(t.rope_parameters["mrope_section"]) == t.head_dim // 2
    return config


def build_real_id_tokenizer():
    """charfeat's tiny byte-level tokenizer (no merges), with Qwen's special tokens at their real ids."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    first_special = min(QWEN_SPECIAL_TOKENS.values())
    for i in range(len(vocab), first_special):  # never produced: no merges lead to them
        vocab[f"<|filler_{i}|>"] = i
    vocab.update(QWEN_SPECIAL_TOKENS)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>", eos_token="<|im_end|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    for token, expected in QWEN_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == expected, (token, tokenizer.convert_tokens_to_ids(token))
    return tokenizer


# ---------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------
def hwm_mib() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def rss_mib(kind: str = "VmRSS") -> float:
    """Resident memory in MiB: VmRSS (all), RssAnon (heap: activations, built tensors) or RssFile
    (file pages: the memory-mapped safetensors weights)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{kind}:\s+(\d+) kB", text).group(1)) / 1024


def rss_parts() -> str:
    return (f"RSS {rss_mib() / 1024:.2f} GiB = heap {rss_mib('RssAnon') / 1024:.2f} + mapped files "
            f"{rss_mib('RssFile') / 1024:.2f}")


class Stage:
    """Wall time and the resident high-water mark of one stage (reset at its start)."""

    results: list[dict] = []

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            self.reset = False
        self.rss0 = rss_mib()
        self.load0 = os.getloadavg()[0]
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        print(f"\n== {self.name} (RSS at start {self.rss0 / 1024:.2f} GiB, load average {self.load0:.2f})", flush=True)
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        self.peak = hwm_mib()
        note = "" if self.reset else " (process-wide: VmHWM could not be reset)"
        print(f"   {self.name}: {self.seconds:.1f} s wall, {self.cpu:.1f} s CPU, peak RSS {self.peak / 1024:.2f} GiB"
              f"{note}; at the end {rss_parts()}", flush=True)
        Stage.results.append({"stage": self.name, "seconds": self.seconds, "cpu_seconds": self.cpu,
                              "peak_rss_gib": self.peak / 1024, "start_rss_gib": self.rss0 / 1024,
                              "load_average_at_start": self.load0})
        return False


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


# ---------------------------------------------------------------------------------------------------
# LoRA expectations from the config alone
# ---------------------------------------------------------------------------------------------------
def expected_text_lora(config, r: int) -> tuple[set[str], int]:
    """Module names and adapter parameters the default regex should give: every q/k/v/o and
    gate/up/down projection of every language-model layer, r x (in + out) each."""
    t = config.text_config
    d, q, kv, ffn = t.hidden_size, t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim, \
        t.intermediate_size
    shapes = {"self_attn.q_proj": (d, q), "self_attn.k_proj": (d, kv), "self_attn.v_proj": (d, kv),
              "self_attn.o_proj": (q, d), "mlp.gate_proj": (d, ffn), "mlp.up_proj": (d, ffn),
              "mlp.down_proj": (ffn, d)}
    names = {f"language_model.layers.{i}.{m}" for i in range(t.num_hidden_layers) for m in shapes}
    params = t.num_hidden_layers * sum(r * (i + o) for i, o in shapes.values())
    return names, params


def expected_vision_lora(config, r: int) -> int:
    """Adapter parameters of the README's vision extension (attn.qkv, attn.proj, mlp.linear_fc1/2 of every block)."""
    v = config.vision_config
    h, ffn = v.hidden_size, v.intermediate_size
    return v.depth * r * ((h + 3 * h) + (h + h) + (h + ffn) + (ffn + h))


VISION_REGEX = r"|visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))"


def pattern_names(names) -> list[str]:
    """Distinct module names with layer numbers replaced by N."""
    return sorted({re.sub(r"\.\d+\.", ".N.", n) for n in names})


def lora_on_meta(size: str, defaults: BackboneConfig) -> dict:
    """Qwen3VLModel of `size` on the meta device; parameters counted; the backbone's own _add_lora run on it."""
    from peft.tuners.lora import LoraLayer
    from transformers import Qwen3VLModel

    from charfeat.models.backbone.model import Qwen3VLBackbone

    config = make_config(size)
    out = {"size": size}
    for label, regex in (("default", defaults.lora_target_modules),
                         ("default+vision", defaults.lora_target_modules + VISION_REGEX)):
        with torch.device("meta"):
            model = Qwen3VLModel(config)
        if label == "default":
            out["params"] = sum(p.numel() for p in model.parameters())
            out["vision_params"] = sum(p.numel() for p in model.visual.parameters())
            out["text_params"] = sum(p.numel() for p in model.language_model.parameters())
            linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
            regex_hits = {n for n, _ in model.named_modules() if re.fullmatch(regex, n)}
            out["linear_not_targeted"] = pattern_names(set(linear) - regex_hits)
        with torch.device("meta"):  # adapters are created on the meta device too
            Qwen3VLBackbone._add_lora(types.SimpleNamespace(model=model), defaults.lora_r, defaults.lora_alpha,
                                      defaults.lora_dropout, regex)
        adapted = {n for n, m in model.named_modules() if isinstance(m, LoraLayer)}
        adapter_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert adapter_params == trainable
        names, expected = expected_text_lora(config, defaults.lora_r)
        if label == "default":
            assert adapted == names, (sorted(adapted - names)[:5], sorted(names - adapted)[:5])
            assert adapted == regex_hits
            out["adapted"] = adapted
        else:
            expected += expected_vision_lora(config, defaults.lora_r)
        assert adapter_params == expected, (label, adapter_params, expected)
        out[f"lora_{label}"] = adapter_params
        out[f"lora_{label}_expected"] = expected
        out[f"lora_{label}_modules"] = len(adapted)
        del model
    return out


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------
def photo(width: int, height: int, seed: int) -> Image.Image:
    """A synthetic photo-sized RGB image: smooth colour gradients plus noise (content does not change cost)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * rng.uniform(120, 255, 3)
    noise = rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


EXTRACT_IMAGES = [("1200x1600 portrait", 1200, 1600), ("1080x1080 square", 1080, 1080)]
LORA_EXTRA_IMAGES = [("3024x4032 12 MP phone", 3024, 4032), ("1920x1080 landscape", 1920, 1080)]


# ---------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lora-images", type=int, default=4, choices=(2, 4))
    parser.add_argument("--workdir", default=None, help="where the 8.5 GB random model goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the saved model (default: removed at the end)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="extraction passes per pooling mode (best kept)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import peft
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"{args.threads} thread(s); fp32; {os.cpu_count()} CPUs visible")
    defaults = BackboneConfig()
    summary: dict = {"threads": args.threads}

    # 1. meta device ------------------------------------------------------------------------------
    with Stage("meta: 2B and 8B parameter and adapter counts"):
        meta = {size: lora_on_meta(size, defaults) for size in ("2b", "8b")}
    for size, m in meta.items():
        print(f"   {size}: Qwen3VLModel {m['params'] / 1e9:.3f} B parameters (vision {m['vision_params'] / 1e6:.1f} M, "
              f"language model {m['text_params'] / 1e6:.1f} M; no LM head); LoRA r={defaults.lora_r} default regex: "
              f"{m['lora_default_modules']} modules, {m['lora_default']:,} parameters (expected from the config "
              f"{m['lora_default_expected']:,}); + vision blocks: {m['lora_default+vision']:,} "
              f"(expected {m['lora_default+vision_expected']:,})")
        print(f"      Linear modules the default regex leaves out: {', '.join(m['linear_not_targeted'])}")
    print("   adapted (2B, first of each kind): " + ", ".join(sorted(n for n in meta["2b"]["adapted"]
                                                                    if ".layers.0." in n)))
    summary["meta"] = {s: {k: v for k, v in m.items() if k != "adapted"} for s, m in meta.items()}

    # 2. build and save the random 2B ---------------------------------------------------------------
    from transformers import Qwen3VLModel

    from charfeat.models.backbone.processor import Qwen3VLImageTextProcessor

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="charfeat-real2b-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "qwen3-vl-2b-random"
    free = shutil.disk_usage(workdir).free
    print(f"\nmodel directory {model_dir} ({gib(free)} free there)")
    if free < 12 * 2**30 and not model_dir.exists():
        sys.exit(f"need ~9 GiB free in {workdir} for the fp32 checkpoint; {gib(free)} free: use --workdir")
    try:
        if not model_dir.exists():
            with Stage("build the random 2B (fp32) and save it"):
                t0 = time.perf_counter()
                tokenizer = build_real_id_tokenizer()
                # Qwen3-VL's real preprocessor values and its real pixel range (65536 .. 16777216); the
                # backbone's max_pixels (448^2 by default) narrows it, as it does for the real checkpoint.
                processor = Qwen3VLImageTextProcessor(image_processor=build_image_processor(65536, 16777216),
                                                      tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
                print(f"   tokenizer: {len(tokenizer):,} entries, <|image_pad|> = "
                      f"{tokenizer.convert_tokens_to_ids('<|image_pad|>')} ({time.perf_counter() - t0:.1f} s)")
                t0 = time.perf_counter()
                torch.manual_seed(0)
                model = Qwen3VLModel(make_config("2b"))
                built = time.perf_counter() - t0
                n_params = sum(p.numel() for p in model.parameters())
                print(f"   built {n_params / 1e9:.3f} B parameters in {built:.1f} s "
                      f"(the meta count: {meta['2b']['params'] / 1e9:.3f} B)")
                assert n_params == meta["2b"]["params"]
                t0 = time.perf_counter()
                model.save_pretrained(model_dir, max_shard_size="2GB")
                processor.save_pretrained(model_dir)
                saved = time.perf_counter() - t0
                del model
            size_on_disk = sum(f.stat().st_size for f in model_dir.iterdir())
            print(f"   saved in {saved:.1f} s: {gib(size_on_disk)} on disk")
            summary["build"] = {"build_s": built, "save_s": saved, "disk_gib": size_on_disk / 2**30}
        gc.collect()
        saved_config = json.loads((model_dir / "config.json").read_text())
        print("   saved config.json: " + json.dumps({k: saved_config[k] for k in TOKEN_IDS}))

        # 3. frozen: processor and extraction ------------------------------------------------------------
        images = [photo(w, h, seed) for seed, (_, w, h) in enumerate(EXTRACT_IMAGES)]
        with Stage("frozen backbone: construct (weights not read yet)"):
            backbone = build(BackboneConfig, name_or_path=str(model_dir), dtype="float32", feature_cache=None,
                             pooling="mean")
            assert not backbone.loaded
        lo, hi = backbone.pixel_budget
        print(f"   pixel budget {lo}..{hi} (max = 448^2 = {448 * 448}); image_token_id {backbone.image_token_id}")

        with Stage("processor: 2 real-size images"):
            t0 = time.perf_counter()
            inputs = backbone.preprocess(images)
            proc_s = time.perf_counter() - t0
        grid = inputs["image_grid_thw"].tolist()
        per_image = []
        for (label, w, h), thw, row_ids, row_mask in zip(EXTRACT_IMAGES, grid, inputs["input_ids"],
                                                         inputs["attention_mask"]):
            merged = thw[0] * thw[1] * thw[2] // 4
            tokens = int((row_ids == backbone.image_token_id).sum())
            assert tokens == merged == backbone.encoder.image_tokens(images[len(per_image)])
            text_tokens = int(row_mask.sum()) - tokens
            per_image.append({"image": label, "resized": f"{thw[2] * 16}x{thw[1] * 16}", "patches": thw[1] * thw[2],
                              "image_tokens": tokens, "text_tokens": text_tokens, "sequence": int(row_mask.sum())})
            print(f"   {label} -> {thw[2] * 16}x{thw[1] * 16}: {thw[1] * thw[2]} patches, {tokens} image tokens + "
                  f"{text_tokens} template/prompt tokens")
        print(f"   processor: {proc_s:.2f} s for 2 images ({proc_s / 2:.2f} s per image); pixel_values "
              f"{tuple(inputs['pixel_values'].shape)}")
        summary["processor"] = {"seconds_per_image": proc_s / 2, "images": per_image}

        with Stage("frozen backbone: load the weights (first use), then touch every one"):
            t0 = time.perf_counter()
            backbone.model  # noqa: B018 - the lazy load: from_pretrained memory-maps the safetensors files
            load_s = time.perf_counter() - t0
            with torch.no_grad():  # the pages arrive when first read: from the page cache here (just written)
                for param in backbone.model.parameters():
                    param.sum()
            touch_s = time.perf_counter() - t0 - load_s
        print(f"   from_pretrained {load_s:.1f} s, reading every weight once {touch_s:.1f} s")
        dtypes = {p.dtype for p in backbone.model.parameters()}
        assert dtypes == {torch.float32} and not any(p.requires_grad for p in backbone.parameters())
        assert not backbone.model.training
        summary["frozen_load_s"] = load_s
        summary["frozen_touch_s"] = touch_s

        flops = 0.0
        config = backbone.config
        for row in per_image:
            w, h = map(int, row["resized"].split("x"))
            flops += forward_flops(config, h, w, text_tokens=row["text_tokens"])["total"]
        summary["forward_tflop_2_images"] = flops / 1e12

        with Stage("extraction warm-up: 1 image, pooling mean"):
            with torch.no_grad():
                backbone(**backbone.preprocess(images[1:]))
        extraction = {}
        embeddings = {}
        for pooling in (Pooling.mean, Pooling.last, Pooling.vision):
            backbone.pooling = pooling
            walls, cpus = [], []
            with Stage(f"extraction: 2 images, pooling {pooling}, x{args.repeats}") as stage:
                with torch.no_grad():
                    for _ in range(args.repeats):
                        t0, c0 = time.perf_counter(), time.process_time()
                        emb = backbone(**inputs)
                        walls.append(time.perf_counter() - t0)
                        cpus.append(time.process_time() - c0)
            assert emb.shape == (2, config.text_config.hidden_size) and emb.dtype == torch.float32
            assert torch.isfinite(emb).all()
            embeddings[str(pooling)] = emb
            best = min(range(len(walls)), key=walls.__getitem__)
            seconds = walls[best]
            extraction[str(pooling)] = {"seconds_per_image": seconds / 2, "cpu_seconds_per_image": cpus[best] / 2,
                                        "all_seconds_per_image": [w / 2 for w in walls],
                                        "peak_rss_gib": stage.peak / 1024, "gflops": flops / seconds / 1e9}
            print(f"   {seconds / 2:.2f} s per image (best of {args.repeats}: "
                  f"{', '.join(f'{w / 2:.2f}' for w in walls)}; CPU {cpus[best] / 2:.2f} s); "
                  f"{flops / seconds / 1e9:.0f} GFLOP/s ({flops / 1e12:.2f} TFLOP for the 2 images); "
                  f"|embedding| {[round(x, 2) for x in emb.norm(dim=1).tolist()]}")
        assert not torch.allclose(embeddings["mean"], embeddings["last"])
        assert not torch.allclose(embeddings["mean"], embeddings["vision"])
        summary["extraction"] = extraction
        del backbone, inputs, embeddings, emb
        gc.collect()

        # 4. one LoRA step -------------------------------------------------------------------------------
        lora_images = images + [photo(w, h, 10 + i) for i, (_, w, h) in enumerate(LORA_EXTRA_IMAGES)]
        lora_images = lora_images[:args.lora_images]
        labels = torch.tensor([0, 1, 0, 1][:args.lora_images])
        with Stage("train=lora backbone: construct (reads the weights, injects adapters)"):
            backbone = build(BackboneConfig, name_or_path=str(model_dir), dtype="float32", feature_cache=None,
                             train="lora", gradient_checkpointing=args.gradient_checkpointing)
        from peft.tuners.lora import LoraLayer

        adapted = {n for n, m in backbone.model.named_modules() if isinstance(m, LoraLayer)}
        expected_names, expected_params = expected_text_lora(config, defaults.lora_r)
        trainable = {n: p for n, p in backbone.named_parameters() if p.requires_grad}
        n_trainable = sum(p.numel() for p in trainable.values())
        assert adapted == expected_names, (sorted(adapted - expected_names)[:5], sorted(expected_names - adapted)[:5])
        assert all("lora_" in n for n in trainable) and n_trainable == expected_params, (n_trainable, expected_params)
        assert n_trainable == meta["2b"]["lora_default"]
        print(f"   {len(adapted)} adapted modules = {config.text_config.num_hidden_layers} layers x 7 projections; "
              f"{n_trainable:,} adapter parameters (expected {expected_params:,}); e.g. "
              + ", ".join(sorted(adapted)[:3]))
        head = build(HeadConfig)(in_dim=backbone.hidden_size)
        # 4 images, 2 labels: miner "all" takes every triplet within the margin (up to 8 here), where
        # the default semihard miner could find none among random-weight embeddings
        loss_fn = build(TripletLossConfig, miner="all")
        params = list(trainable.values()) + list(head.parameters())
        optimizer = build(AdamWConfig)(params)
        backbone.train()
        head.train()
        before = {n: p.detach().clone() for n, p in trainable.items() if "lora_B" in n}
        with Stage(f"LoRA step: {len(lora_images)} images (processor, forward, loss, backward, AdamW)") as stage:
            t0, c0 = time.perf_counter(), time.process_time()
            batch = backbone.preprocess(lora_images)
            t1 = time.perf_counter()
            weights = {q.untyped_storage().data_ptr() for q in backbone.parameters()}
            held: dict[int, int] = {}

            def pack(tensor):  # what autograd keeps for the backward, weights (memory-mapped) left out
                ptr = tensor.untyped_storage().data_ptr()
                if ptr not in weights:
                    held[ptr] = tensor.untyped_storage().nbytes()
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                features = backbone(**batch)
            t2 = time.perf_counter()
            after_forward = rss_parts()
            loss, mined = loss_fn(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            t3 = time.perf_counter()
            after_backward = rss_parts()
            optimizer.step()
            t4, cpu_step = time.perf_counter(), time.process_time() - c0
        lora_rss = stage.peak / 1024
        tokens = [int(m.sum()) for m in batch["attention_mask"]]
        with_grad = [n for n, p in trainable.items() if p.grad is not None]
        b_nonzero = [n for n, p in trainable.items() if "lora_B" in n and p.grad is not None and p.grad.abs().sum() > 0]
        updated = [n for n, p in trainable.items() if "lora_B" in n and not torch.equal(p.detach(), before[n])]
        n_b = len(before)
        print(f"   sequences {tokens} tokens; loss {loss.item():.4f} over {mined} triplets")
        saved_gib = sum(held.values()) / 2**30
        print(f"   tensors autograd keeps for the backward (activations, weights excluded): {saved_gib:.2f} GiB "
              f"({saved_gib * 2**30 / sum(tokens) / 2**20:.2f} MiB per token)")
        print(f"   after the forward: {after_forward}; after the backward: {after_backward}")
        print(f"   processor {t1 - t0:.2f} s, forward {t2 - t1:.1f} s, loss+backward {t3 - t2:.1f} s, "
              f"AdamW {t4 - t3:.2f} s: {t4 - t0:.1f} s per step, {(t4 - t0) / len(lora_images):.1f} s per image "
              f"(CPU {cpu_step:.1f} s)")
        print(f"   gradients: {len(with_grad)}/{len(trainable)} adapter tensors have one; lora_B non-zero in "
              f"{len(b_nonzero)}/{n_b}; lora_B updated by the step in {len(updated)}/{n_b} "
              "(lora_A's first gradient is zero: lora_B starts at zero)")
        assert len(with_grad) == len(trainable) and len(b_nonzero) == n_b and len(updated) == n_b
        summary["lora"] = {"images": len(lora_images), "tokens": tokens, "processor_s": t1 - t0,
                           "forward_s": t2 - t1, "backward_s": t3 - t2, "optimizer_s": t4 - t3,
                           "step_s": t4 - t0, "cpu_s": cpu_step, "seconds_per_image": (t4 - t0) / len(lora_images),
                           "peak_rss_gib": lora_rss, "saved_for_backward_gib": saved_gib,
                           "rss_after_forward": after_forward,
                           "rss_after_backward": after_backward, "adapter_params": n_trainable, "adapted_modules": len(adapted),
                           "gradient_checkpointing": args.gradient_checkpointing, "loss": loss.item(),
                           "triplets": mined}
        del backbone, head, optimizer, params, trainable, before, features, loss
        gc.collect()
    finally:
        if not args.keep and model_dir.exists():
            shutil.rmtree(model_dir, ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            print(f"\nremoved {model_dir}")

    # summary ------------------------------------------------------------------------------------------
    ru_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    peak = max(r["peak_rss_gib"] for r in Stage.results)
    summary["stages"] = Stage.results
    summary["peak_rss_gib"] = peak
    print("\n" + "=" * 100)
    print(f"SUMMARY: Qwen3-VL-2B architecture, random weights, CPU fp32, {args.threads} thread(s)")
    print("-" * 100)
    for row in per_image:
        print(f"  processor  {row['image']:<22} -> {row['resized']:>9}: {row['image_tokens']:4d} image tokens "
              f"(+{row['text_tokens']} text)")
    print(f"  processor  {summary['processor']['seconds_per_image']:.2f} s per image")
    for pooling, r in extraction.items():
        print(f"  extract    pooling {pooling:<7} {r['seconds_per_image']:6.2f} s per image (CPU "
              f"{r['cpu_seconds_per_image']:.2f} s)  {r['gflops']:5.0f} GFLOP/s  peak RSS {r['peak_rss_gib']:.2f} GiB")
    lo_ = summary["lora"]
    print(f"  LoRA step  {lo_['images']} images: {lo_['step_s']:.1f} s ({lo_['seconds_per_image']:.1f} s per image: "
          f"forward {lo_['forward_s']:.1f}, backward {lo_['backward_s']:.1f}, AdamW {lo_['optimizer_s']:.2f}) "
          f"CPU {lo_['cpu_s']:.1f} s, peak RSS {lo_['peak_rss_gib']:.2f} GiB, kept for the backward "
          f"{lo_['saved_for_backward_gib']:.2f} GiB"
          f"{', gradient checkpointing' if lo_['gradient_checkpointing'] else ''})")
    print(f"  weights    frozen from_pretrained {summary['frozen_load_s']:.1f} s + first read of every weight "
          f"{summary['frozen_touch_s']:.1f} s")
    for size, m in summary["meta"].items():
        print(f"  {size} meta    Qwen3VLModel {m['params']:,} params (vision {m['vision_params']:,}, LM "
              f"{m['text_params']:,}); LoRA default {m['lora_default']:,} in {m['lora_default_modules']} modules; "
              f"+vision {m['lora_default+vision']:,}")
    print("-" * 100)
    for r in Stage.results:
        print(f"  {r['stage']:<72} {r['seconds']:6.1f} s wall {r['cpu_seconds']:6.1f} s CPU  peak RSS "
              f"{r['peak_rss_gib']:5.2f} GiB  load {r['load_average_at_start']:.1f}")
    print(f"  peak RSS over all stages {peak:.2f} GiB; getrusage ru_maxrss at exit {ru_max:.2f} GiB "
          "(since the last high-water reset)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
