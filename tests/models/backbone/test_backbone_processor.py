import json

from charfeat.models.backbone.processor import Qwen3VLImageTextProcessor
from charfeat.models.backbone.tiny import CHAT_TEMPLATE, build_tokenizer


def test_processor_loads_from_saved_tiny_dir(tiny_path, make_image):
    processor = Qwen3VLImageTextProcessor.from_pretrained(tiny_path)
    image_processor = processor.image_processor
    assert type(image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert (image_processor.patch_size, image_processor.temporal_patch_size, image_processor.merge_size) == (16, 2, 2)
    assert list(image_processor.image_mean) == [0.5] * 3 and list(image_processor.image_std) == [0.5] * 3
    assert processor.chat_template == CHAT_TEMPLATE
    out = processor(images=[make_image(96, 96, 0)], text=["<|vision_start|><|image_pad|><|vision_end|>hi"],
                    return_tensors="pt")
    assert {"pixel_values", "image_grid_thw", "mm_token_type_ids"} <= set(out)
    assert out["image_grid_thw"].tolist() == [[1, 6, 6]]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (out["input_ids"] == image_pad).sum() == 9  # 96x96 -> 9 LLM tokens


def test_processor_loads_a_real_checkpoint_layout(tmp_path, make_image):
    """Real Qwen3-VL repos: preprocessor_config.json naming Qwen3VLProcessor, a video config, chat_template.json."""
    build_tokenizer().save_pretrained(tmp_path)
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3,
              "image_std": [0.5] * 3, "processor_class": "Qwen3VLProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {**common, "size": {"longest_edge": 16777216, "shortest_edge": 65536},
         "image_processor_type": "Qwen2VLImageProcessorFast"}))
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(
        {**common, "size": {"longest_edge": 25165824, "shortest_edge": 4096},
         "video_processor_type": "Qwen3VLVideoProcessor"}))
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))

    processor = Qwen3VLImageTextProcessor.from_pretrained(tmp_path)
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert processor.image_processor.size.shortest_edge == 65536
    assert processor.chat_template == CHAT_TEMPLATE
    out = processor(images=[make_image(224, 224, 0)], text=["<|image_pad|>"], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 16, 16]]  # 224^2 is raised to the 256^2 minimum
