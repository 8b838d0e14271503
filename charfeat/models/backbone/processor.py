"""Image+text processor for Qwen3-VL that works without torchvision.

transformers' own `Qwen3VLProcessor` insists on a video processor, and every video processor needs
torchvision, which is not installable beside our torch. charfeat only embeds still images, so this
subclass drops the video processor and loads images with the PIL backend.
"""

from __future__ import annotations

import os

from transformers import Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class Qwen3VLImageTextProcessor(Qwen3VLProcessor):
    """`Qwen3VLProcessor` without video support.

    Its `from_pretrained` reads both directories saved by charfeat (processor_config.json) and real
    Qwen3-VL checkpoints (preprocessor_config.json naming `Qwen3VLProcessor`): sub-processors are
    found from this constructor's signature, not from the class named in the files. The image
    processor is always the PIL one, so features do not change if torchvision appears later.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the tokenizer as usual, but force the PIL image processor (no torchvision)."""
        subfolder = kwargs.pop("subfolder", "")
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [load_image_processor(pretrained_model_name_or_path, subfolder=subfolder, **kwargs), tokenizer]


def load_image_processor(pretrained_model_name_or_path, **kwargs) -> Qwen2VLImageProcessorPil:
    """The checkpoint's image processor alone (its settings file only: no tokenizer), the PIL one."""
    return Qwen2VLImageProcessorPil.from_pretrained(os.fspath(pretrained_model_name_or_path), **kwargs)
