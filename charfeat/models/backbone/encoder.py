"""Images and record texts -> Qwen3-VL model inputs, apart from the model.

The processor, the chat template and the pixel budget are all a DataLoader worker needs to turn
decoded images into input ids and pixel patches; keeping them out of `Qwen3VLBackbone` lets a
worker hold (or unpickle) this small object instead of a model of several GB.
"""

from __future__ import annotations

import functools
import unicodedata

import torch

from charfeat.config import InputFormat


def system_instruction(instruction: str) -> str:
    """An instruction as Qwen3-VL-Embedding's own code puts it in the system turn: stripped, with a
    full stop added when it does not end in punctuation ("Represent the user's input" gets one)."""
    text = instruction.strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text


class InputEncoder:
    """A `Qwen3VLImageTextProcessor` of the checkpoint in ``files``, in the input format of
    ``backbone.format``: see `chat_text`. ``min_pixels``/``max_pixels`` override its pixel range.

    The processor is read on first use: its tokenizer (a large fraction of a second for Qwen3-VL's)
    is not needed by a run whose features are all cached, such as a sweep's later jobs. The pixel
    budget, part of every feature's cache key, comes from the image processor's settings alone.
    """

    def __init__(self, files: str, revision: str | None, input_format: InputFormat, prompt: str, instruction: str,
                 min_pixels: int | None, max_pixels: int | None):
        from charfeat.models.backbone.processor import load_image_processor

        self.files, self.revision, self.input_format, self.prompt = files, revision, input_format, prompt
        self.instruction = system_instruction(instruction)
        size = load_image_processor(files, revision=revision).size
        lo = size.shortest_edge if min_pixels is None else min_pixels
        hi = size.longest_edge if max_pixels is None else max_pixels
        if lo > hi:
            raise ValueError(f"min_pixels={lo} exceeds max_pixels={hi}")
        self.pixel_budget = (int(lo), int(hi))

    @functools.cached_property
    def processor(self):
        """The processor, read now; its image processor resizes to ``pixel_budget``."""
        from transformers.image_utils import SizeDict

        from charfeat.models.backbone.processor import Qwen3VLImageTextProcessor

        processor = Qwen3VLImageTextProcessor.from_pretrained(self.files, revision=self.revision)
        lo, hi = self.pixel_budget
        processor.image_processor.size = SizeDict(shortest_edge=lo, longest_edge=hi)
        return processor

    def chat_text(self, text: str | None = None) -> str:
        """The chat-template text of one image and its record text (``text``), in ``backbone.format``:

        - chat: one user turn [image, record text + "\\n"?, prompt], no generation prompt;
        - embedding: as Qwen3-VL-Embedding's own code does, a system turn holding the instruction, a
          user turn [image, record text?], then the generation prompt ``<|im_start|>assistant\\n``,
          whose last token is the one the model was trained to pool.
        """
        content = [{"type": "image"}]
        if self.input_format == InputFormat.embedding:
            if text:
                content.append({"type": "text", "text": text})
            messages = [{"role": "system", "content": [{"type": "text", "text": self.instruction}]},
                        {"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text:
            content.append({"type": "text", "text": text + "\n"})
        content.append({"type": "text", "text": self.prompt})
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def image_tokens(self, image) -> int:
        """LLM tokens an image becomes after resizing to the pixel budget."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        proc = self.processor.image_processor
        factor = proc.patch_size * proc.merge_size
        lo, hi = self.pixel_budget
        height, width = smart_resize(image.height, image.width, factor=factor, min_pixels=lo, max_pixels=hi)
        return (height // factor) * (width // factor)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one encoder per backbone; record texts repeat
    def text_tokens(self, text: str | None) -> int:
        """Tokens of the chat text around one image placeholder (the image's own tokens not counted)."""
        return len(self.processor.tokenizer(self.chat_text(text), add_special_tokens=False)["input_ids"]) - 1

    def sequence_length(self, image, text: str | None = None) -> int:
        """The length of one image's input row, exactly: what batches are sorted and sized by."""
        return self.text_tokens(text) + self.image_tokens(image)

    def preprocess(self, images: list, texts: list[str | None] | None = None) -> dict[str, torch.Tensor]:
        """PIL images (+ one record text each) -> model inputs (input_ids, attention_mask,
        mm_token_type_ids, pixel_values, image_grid_thw)."""
        if not images:
            raise ValueError("preprocess needs at least one image")
        if texts is None:
            texts = [None] * len(images)
        if len(texts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts")
        batch = self.processor(
            images=[image.convert("RGB") for image in images],
            text=[self.chat_text(text) for text in texts],
            padding=True,
            return_tensors="pt",
        )
        return dict(batch)
